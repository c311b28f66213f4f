using Interp.Experiments;
using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp merge OUT</c>: merges the shards of a sharded run (<c>interp run NAME --shard i/n --out OUT</c>). The
/// experiment's script runs once more with <c>--merge OUT</c>: it checks that every shard is present and completed with
/// the same settings, seed and model, reads their per-unit rows (<c>OUT/shards/&lt;table&gt;/shard=&lt;i&gt;/</c>), and writes
/// the tables, figures, manifest.json and report that the single-process run writes.
/// </summary>
public sealed class MergeCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<MergeCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var dir = new Argument<string>("out") { Description = "The folder the shards wrote into (their --out)" };
        var command = new Command("merge", "Merge the shards of a run (interp run NAME --shard i/n --out OUT) into its tables, figures and report") { dir };
        command.SetAction((parse, ct) => MergeAsync(parse.GetValue(dir)!, ct));
        return command;
    }

    /// <summary>Merges the shards in <paramref name="directory"/>; the exit code is the merge script's.</summary>
    public Task<int> MergeAsync(string directory, CancellationToken cancellationToken) => Guard(() =>
    {
        if (!Directory.Exists(directory)) throw new InterpException($"{directory} does not exist: nothing to merge");
        var first = ShardSet.Any(directory);
        // A script run by path is merged by the same path; a catalogue experiment by its name.
        var script = first.Options.GetValueOrDefault("script") is { } path && File.Exists(path) ? ExperimentCatalog.Find(path) : ExperimentCatalog.Find(first.Experiment);
        return ScriptLauncher.RunAsync(script, ["--merge", directory], Console.Out, Console.Error, cancellationToken);
    });
}

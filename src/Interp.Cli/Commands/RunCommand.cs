using Interp.Experiments;
using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp run EXPERIMENT|SCRIPT.cs [--model PATH] [--out DIR] [--seed N] [--prompts FILE] [--set key=value]… [--help]</c>:
/// runs an experiment script (<c>experiments/EXPERIMENT.cs</c>, or any script by path) as its own program, which writes
/// its Parquet tables, PNG figures, manifest.json and report into <c>artifacts/runs/EXPERIMENT-TIMESTAMP/</c> (or
/// <c>--out</c>). Every option after the name goes to the script; <c>--help</c> there lists its settings. The exit code is
/// the script's: 0 completed, 1 failed, 130 cancelled (Ctrl+C); the manifest says which.
/// </summary>
public sealed class RunCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<RunCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var name = new Argument<string>("experiment") { Description = "Experiment name (see `interp list`) or the path of a script (.cs)" };
        var command = new Command("run", "Run an experiment script as its own program. Options after the name go to the script: " +
            "--model PATH, --out DIR, --seed N, --device D, --prompts FILE, --set key=value (repeatable), --help (its settings)") { name };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction((parse, ct) => RunScriptAsync(parse.GetValue(name)!, [.. parse.UnmatchedTokens], ct));
        return command;
    }

    /// <summary>Runs the script <paramref name="nameOrPath"/> with <paramref name="args"/>.</summary>
    public Task<int> RunScriptAsync(string nameOrPath, string[] args, CancellationToken cancellationToken) =>
        Guard(() => ScriptLauncher.RunAsync(ExperimentCatalog.Find(nameOrPath), args, Console.Out, Console.Error, cancellationToken));
}

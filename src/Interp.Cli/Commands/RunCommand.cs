using System.CommandLine;
using Interp.Experiments;
using Interp.Loading;
using Interp.Training;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp run EXPERIMENT [--model PATH] [--out DIR] [--seed N] [--set key=value]…</c>: runs one experiment into
/// <c>artifacts/runs/EXPERIMENT-TIMESTAMP/</c> (or <c>--out</c>): Parquet tables, PNG figures, manifest.json and a report.
/// Exit code 0 when completed, 1 when failed, 130 when cancelled (Ctrl+C); the manifest says which.
/// </summary>
public sealed class RunCommand(CliConsole console, IOptions<InterpOptions> options, ILogger<RunCommand> logger, ILoggerFactory loggers)
    : VerbBase(console, options, logger)
{
    private readonly Option<string?> _model = new("--model", "-m") { Description = "Model to analyse (default: the built-in model)" };
    private readonly Option<string?> _out = new("--out", "-o") { Description = "Output folder (default: artifacts/runs/EXPERIMENT-TIMESTAMP)" };
    private readonly Option<int?> _seed = new("--seed") { Description = "Seed for every random draw (default from configuration)" };
    private readonly Option<string?> _device = DeviceOption();
    private readonly Option<string[]> _set = new("--set") { Description = "Experiment option key=value (repeatable)", AllowMultipleArgumentsPerToken = false };

    /// <inheritdoc />
    public override Command Build()
    {
        var name = new Argument<string>("experiment") { Description = "Experiment name (see `interp list`)" };
        var command = new Command("run", "Run an experiment and write its tables, figures, manifest and report") { name, _model, _out, _seed, _device, _set };
        command.SetAction((parse, ct) => Guard(() => RunAsync(ExperimentCatalog.Find(parse.GetValue(name)!), parse, ct)));
        return command;
    }

    /// <summary>Options for a script that runs one experiment with the same command-line options as <c>interp run</c>.</summary>
    public Command BuildForScript(IExperiment experiment)
    {
        var command = new RootCommand($"{experiment.Name}: {experiment.Description}") { _model, _out, _seed, _device, _set };
        command.SetAction((parse, ct) => Guard(() => RunAsync(experiment, parse, ct)));
        return command;
    }

    private async Task<int> RunAsync(IExperiment experiment, ParseResult parse, CancellationToken ct)
    {
        var settings = new Dictionary<string, string>();
        foreach (var pair in parse.GetValue(_set) ?? [])
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0) throw new InterpException($"--set expects key=value, got '{pair}'");
            settings[pair[..eq]] = pair[(eq + 1)..];
        }
        string? modelPath = parse.GetValue(_model);
        var runOptions = new ExperimentRunOptions
        {
            ModelPath = modelPath,
            DefaultModel = () => BuiltInModel.Load(Logger),
            OutputDirectory = parse.GetValue(_out),
            ArtifactsRoot = Options.ArtifactsRoot,
            Seed = parse.GetValue(_seed) ?? Options.Seed,
            Device = parse.GetValue(_device) ?? Options.Device,
            Options = settings,
            Progress = ProgressDisplay.ForConsole(Console.Error),
        };
        ApplyThreads();
        var result = await new ExperimentRunner(loggers.CreateLogger<ExperimentRunner>()).RunAsync(experiment, runOptions, ct);
        var m = result.Manifest;
        await Console.Out.WriteLineAsync($"{m.Experiment}: {m.Status.ToString().ToLowerInvariant()} — {m.Artifacts.Count} files in {result.OutputDirectory}");
        foreach (var k in m.KeyNumbers) await Console.Out.WriteLineAsync($"  {k.Name} = {k.Value.ToString(k.Format, System.Globalization.CultureInfo.InvariantCulture)}  ({k.Description})");
        if (m.Status == RunStatus.Failed) await Console.Error.WriteLineAsync($"error: {m.Error}");
        return m.Status switch { RunStatus.Completed => 0, RunStatus.Cancelled => 130, _ => 1 };
    }
}

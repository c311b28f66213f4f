using System.CommandLine;
using Interp.Loading;
using Interp.Models;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TorchSharp;

namespace Interp.Experiments;

/// <summary>What an experiment script is: its name, one line on what it shows, and whether it analyses a model.</summary>
/// <param name="Name">The name used on the command line and in run folders, e.g. <c>ablation</c>.</param>
/// <param name="Description">One line saying what the experiment shows.</param>
/// <param name="UsesModel">True when it analyses a model (the built-in one unless <c>--model</c> names another).</param>
public sealed record ExperimentInfo(string Name, string Description, bool UsesModel = true)
{
    /// <summary>
    /// True when the experiment splits its work into units (<see cref="ExperimentContext.Units"/>) and gathers per-unit
    /// rows (<see cref="ExperimentContext.GatherAsync{T}"/>), so that it runs as shards (<c>--shard i/n</c>) and a merge.
    /// </summary>
    public bool Shards { get; init; }
}

/// <summary>
/// The entry point of an experiment script (<c>experiments/*.cs</c>, or any program of a researcher's own): parses
/// <c>--model</c>, <c>--out</c>, <c>--seed</c>, <c>--device</c>, <c>--prompts FILE</c>, <c>--sae DIR</c> and <c>--set key=value</c>, binds
/// the settings record (<see cref="ExperimentSettings"/>: an unknown key or bad value exits 1 naming it and listing the
/// valid ones), and runs the study through <see cref="ExperimentRunner"/> inside a Microsoft.Extensions.Hosting host
/// (configuration from <c>INTERP_</c> environment variables: <c>INTERP_Interp__Seed</c>, <c>__Device</c>,
/// <c>__ArtifactsRoot</c>, <c>__Threads</c>; logging to stderr). <c>--help</c> lists the settings with their defaults.
/// Exit code 0 when completed, 1 when failed, 130 when cancelled (Ctrl+C), as the manifest records.
/// </summary>
public static class Experiment
{
    /// <summary>
    /// Set by <c>interp run</c> to its process id: the script then stops at once (SIGKILL to itself) if that process dies,
    /// so that killing <c>interp run</c> kills the run, never leaving it running on unseen.
    /// </summary>
    public const string LauncherVariable = "INTERP_LAUNCHER_PID";

    /// <summary>Runs <paramref name="run"/> as the experiment <paramref name="info"/> with the command line <paramref name="args"/>.</summary>
    public static Task<int> RunAsync<TSettings>(string[] args, ExperimentInfo info, Func<ExperimentContext, TSettings, CancellationToken, Task> run)
        where TSettings : new() => RunAsync(args, info, run, Console.Out, Console.Error);

    /// <summary><see cref="RunAsync{TSettings}(string[], ExperimentInfo, Func{ExperimentContext, TSettings, CancellationToken, Task})"/> writing to the given writers.</summary>
    public static async Task<int> RunAsync<TSettings>(string[] args, ExperimentInfo info, Func<ExperimentContext, TSettings, CancellationToken, Task> run,
        TextWriter output, TextWriter error) where TSettings : new()
    {
        NativeEnvironment.Apply();   // before anything loads libtorch
        LauncherWatch.Start();
        // Ctrl+C and SIGTERM cancel the run from the first instruction on. System.CommandLine registers its own handler
        // only once the action first awaits — after the manifest says "running" and libtorch has loaded (up to a second):
        // a signal in that window ended the process under the run, leaving a manifest that still said "running".
        using var interrupted = new CancellationTokenSource();
        using var signals = InterruptSignals.Cancel(interrupted);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, ContentRootPath = AppContext.BaseDirectory });
        builder.Configuration.AddEnvironmentVariables("INTERP_");
        builder.Logging.AddConfiguration(builder.Configuration.GetSection("Logging"));
        builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        using var host = builder.Build();
        var defaults = builder.Configuration.GetSection(RunDefaults.Section).Get<RunDefaults>() ?? new RunDefaults();
        var logger = host.Services.GetService(typeof(ILoggerFactory)) is ILoggerFactory f ? f.CreateLogger(info.Name) : null;

        var model = new Option<string?>("--model", "-m") { Description = "Model to analyse: a llama2.c .bin, a Hugging Face folder or an Interp model folder (default: the built-in model)" };
        var outDir = new Option<string?>("--out", "-o") { Description = "Output folder (default: artifacts/runs/NAME-TIMESTAMP)" };
        var seed = new Option<int?>("--seed") { Description = "Seed for every random draw (default 0, or INTERP_Interp__Seed)" };
        var device = new Option<string?>("--device") { Description = "Device for the weights (cpu, cuda:0, …)" };
        var prompts = new Option<string?>("--prompts") { Description = "A prompt set (JSON Lines): the same as --set prompts=FILE" };
        var sae = new Option<string?>("--sae") { Description = "An SAE folder in SAELens's format, for scripts that read one: the same as --set sae=DIR" };
        var set = new Option<string[]>("--set") { Description = "A setting key=value (repeatable; the settings are listed below)" };
        var shard = new Option<string?>("--shard") { Description = "Run shard i of n (i/n) of the experiment's work units into --out DIR; `interp merge DIR` then writes the tables, figures and report" };
        var merge = new Option<string?>("--merge") { Description = "Merge the completed shards in DIR (the settings, seed and model are the shards')" };
        var command = new RootCommand($"{info.Name}: {info.Description}\n\nSettings (--set key=value; defaults in parentheses):\n{ExperimentSettings.List<TSettings>()}")
            { model, outDir, seed, device, prompts, sae, set, shard, merge };
        command.SetAction(async (parse, invocationToken) =>
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(invocationToken, interrupted.Token);
            var ct = linked.Token;
            try
            {
                var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var pair in parse.GetValue(set) ?? [])
                {
                    int eq = pair.IndexOf('=');
                    if (eq <= 0) throw new InterpException($"--set expects key=value, got '{pair}'");
                    pairs[pair[..eq].Trim()] = pair[(eq + 1)..];
                }
                if (parse.GetValue(prompts) is { } file) pairs["prompts"] = file;
                if (parse.GetValue(sae) is { } saeDir) pairs["sae"] = saeDir;
                ShardSpec? shardSpec = parse.GetValue(shard) is { } shardText ? ShardSpec.Parse(shardText) : null;
                ShardSet? shards = null;
                if (parse.GetValue(merge) is { } mergeDir)
                {
                    // The merge runs with the shards' settings, seed, model and device: given again, they could only disagree.
                    if (pairs.Count > 0 || parse.GetValue(model) is not null || parse.GetValue(seed) is not null || parse.GetValue(outDir) is not null || shardSpec is not null)
                        throw new InterpException("--merge DIR takes no other options: the settings, seed, model and device are the shards' (shards/manifest-<i>.json)");
                    shards = ShardSet.Load(mergeDir);
                    if (shards.First.Experiment != info.Name)
                        throw new InterpException($"{mergeDir} holds shards of {shards.First.Experiment}, not of {info.Name}: merge it with interp merge {mergeDir}");
                }
                if ((shardSpec is not null || shards is not null) && !info.Shards)
                    throw new InterpException($"experiment {info.Name} does not shard: its work is not split into units; run it without --shard (shardable: ablation, activation_patching, head_attribution, …; see interp list)");
                var settings = shards is not null ? ExperimentSettings.FromJson<TSettings>(shards.First.Settings, info.Name) : ExperimentSettings.Bind<TSettings>(pairs, info.Name);
                if (defaults.Threads > 0) torch.set_num_threads(defaults.Threads);
                string? modelPath = shards is null ? parse.GetValue(model)
                    : shards.First.Options.GetValueOrDefault("model") is { } recorded && !recorded.StartsWith('(') ? recorded : null;
                var runOptions = new ExperimentRunOptions
                {
                    ModelPath = modelPath,
                    DefaultModel = () => BuiltInModel.Load(logger),
                    OutputDirectory = parse.GetValue(outDir),
                    ArtifactsRoot = defaults.ArtifactsRoot,
                    Seed = shards?.First.Seed ?? parse.GetValue(seed) ?? defaults.Seed,
                    Device = (shards is null ? null : shards.First.Options.GetValueOrDefault("device")) ?? parse.GetValue(device) ?? defaults.Device,
                    Settings = ExperimentSettings.ToJson(settings),
                    Progress = ProgressDisplay.ForConsole(error),
                    Shard = shardSpec,
                    Merge = shards,
                };
                var experiment = new ScriptExperiment<TSettings>(info, settings, run);
                var result = await new ExperimentRunner(logger).RunAsync(experiment, runOptions, ct);
                var m = result.Manifest;
                if (m.Shard is { } done)
                    await output.WriteLineAsync($"{m.Experiment} shard {done.Index}/{done.Count}: {m.Status.ToString().ToLowerInvariant()} — units {(done.Done.Length == 0 ? "none" : $"{done.Done[0]}…{done.Done[^1]}")} of {done.Units}, {done.Rows:N0} rows in {result.OutputDirectory}/{ShardFiles.Folder}");
                else
                    await output.WriteLineAsync($"{m.Experiment}: {m.Status.ToString().ToLowerInvariant()} — {m.Artifacts.Count} files in {result.OutputDirectory}");
                foreach (var k in m.KeyNumbers)
                    await output.WriteLineAsync($"  {k.Name} = {k.Value.ToString(k.Format, System.Globalization.CultureInfo.InvariantCulture)}  ({k.Description})");
                if (m.Status == RunStatus.Failed) await error.WriteLineAsync($"error: {m.Error}");
                return m.Status switch { RunStatus.Completed => 0, RunStatus.Cancelled => 130, _ => 1 };
            }
            catch (InterpException ex)
            {
                await error.WriteLineAsync($"error: {ex.Message}");
                return 1;
            }
        });
        return await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = output, Error = error, ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });
    }

    private sealed class ScriptExperiment<TSettings>(ExperimentInfo info, TSettings settings, Func<ExperimentContext, TSettings, CancellationToken, Task> run) : IExperiment
    {
        public string Name => info.Name;
        public string Description => info.Description;
        public bool UsesModel => info.UsesModel;
        public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) => run(context, settings, cancellationToken);
    }
}

/// <summary>
/// Defaults of every run and of the <c>interp</c> command, from the <c>Interp</c> configuration section (the CLI's
/// appsettings.json, and <c>INTERP_Interp__Seed=3</c>, … for scripts and the CLI alike).
/// </summary>
public sealed class RunDefaults
{
    /// <summary>The configuration section name.</summary>
    public const string Section = "Interp";
    /// <summary>Device for the model weights ("cpu", or e.g. "cuda:0").</summary>
    public string Device { get; set; } = "cpu";
    /// <summary>Root folder of generated outputs; runs go to <c>{ArtifactsRoot}/runs/</c>.</summary>
    public string ArtifactsRoot { get; set; } = "artifacts";
    /// <summary>Default seed of experiment runs.</summary>
    public int Seed { get; set; }
    /// <summary>Number of CPU threads torch may use (0 = torch's default).</summary>
    public int Threads { get; set; }
}

using System.Globalization;
using System.Reflection;
using Interp.Loading;
using Interp.Models;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace Interp.Experiments;

/// <summary>How to run an experiment.</summary>
public sealed record ExperimentRunOptions
{
    /// <summary>Model to analyse; null means <see cref="DefaultModel"/>.</summary>
    public string? ModelPath { get; init; }
    /// <summary>Loads the built-in default model when no <see cref="ModelPath"/> is given.</summary>
    public Func<LoadedModel>? DefaultModel { get; init; }
    /// <summary>Output folder; null means <c>{ArtifactsRoot}/runs/{experiment}-{timestamp}</c>.</summary>
    public string? OutputDirectory { get; init; }
    /// <summary>Root of generated outputs.</summary>
    public string ArtifactsRoot { get; init; } = "artifacts";
    /// <summary>Seed of every random draw.</summary>
    public int Seed { get; init; }
    /// <summary>Device for the model.</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>The experiment's bound settings, recorded in the manifest (<see cref="ExperimentSettings.ToJson{T}"/>).</summary>
    public System.Text.Json.Nodes.JsonObject? Settings { get; init; }
    /// <summary>Receives progress reports.</summary>
    public IProgress<ExperimentProgress>? Progress { get; init; }
    /// <summary>
    /// Run only this shard's units into <see cref="OutputDirectory"/> (required: every shard of a run writes into the same
    /// folder): its manifest is <c>shards/manifest-&lt;i&gt;.json</c>, its output the per-unit partition; no report.
    /// </summary>
    public ShardSpec? Shard { get; init; }
    /// <summary>Merge these (checked) shards: the run writes into their folder the tables, figures, manifest and report of the whole run.</summary>
    public ShardSet? Merge { get; init; }
}

/// <summary>The outcome of a run.</summary>
public sealed record RunResult(string OutputDirectory, RunManifest Manifest);

/// <summary>
/// Runs an <see cref="IExperiment"/>: creates the run folder, keeps <c>manifest.json</c> current, and always ends
/// with a status (completed, cancelled or failed) and a report of whatever was finished.
/// </summary>
public sealed class ExperimentRunner(ILogger? logger = null)
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <summary>Runs <paramref name="experiment"/>. Cancellation and failures are recorded, not thrown.</summary>
    public async Task<RunResult> RunAsync(IExperiment experiment, ExperimentRunOptions options, CancellationToken cancellationToken = default)
    {
        var started = DateTimeOffset.UtcNow;
        string runId = $"{experiment.Name}-{started:yyyyMMdd-HHmmss}";
        if (options.Shard is not null && options.Merge is not null) throw new InterpException("a run is either one shard (--shard) or the merge (--merge), not both");
        string dir;
        if (options.Shard is { } shard)
        {
            // Every shard writes into the one folder of the run: no fresh sibling folder, as a plain run gets.
            dir = options.OutputDirectory ?? throw new InterpException($"a shard run needs --out DIR: the {shard.Count} shards of a run write into one folder");
            runId += $"-shard{shard.Index}";
            CreateFolder(Path.Combine(dir, ShardFiles.Folder));
        }
        else if (options.Merge is { } merge) dir = merge.Directory;
        else dir = CreateRunDirectory(options.OutputDirectory ?? Path.Combine(options.ArtifactsRoot, "runs", runId));
        var manifest = new RunManifest
        {
            FileName = options.Shard is { } s ? ShardFiles.Manifest(s.Index) : "manifest.json",
            // Which shard from the first save: a shard killed before it split its units still names itself.
            Shard = options.Shard is { } own ? new ShardInfo(own.Index, own.Count, 0, []) : null,
            RunId = runId,
            Experiment = experiment.Name,
            Seed = options.Seed,
            Started = started,
            Settings = options.Settings?.DeepClone().AsObject() ?? new(),
            Options = RunOptions(experiment, options),
            Versions = Versions(),
            Native = new() { ["weight_products"] = Gemm.Describe(), ["settings"] = NativeEnvironment.Describe(), ["allocator"] = NativeEnvironment.DescribeAllocator(), ["torchsharp_library"] = NativeLoader.Outcome ?? "not loaded" },
        };
        try { manifest.Save(dir); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot write to the output folder {dir}: {ex.Message}", ex);
        }
        _logger.LogInformation("Running {Experiment} into {Directory}", experiment.Name, dir);

        Func<LoadedModel>? load = !experiment.UsesModel ? null
            : options.ModelPath is not null ? () => ModelLoader.Load(options.ModelPath, new ModelLoadOptions { Device = options.Device })
            : options.DefaultModel ?? throw new InterpException($"experiment {experiment.Name} needs a model: pass --model PATH");
        var context = new ExperimentContext(dir, manifest, load, _logger, options.Progress, options.Shard, options.Merge);
        torch.manual_seed(options.Seed);
        try
        {
            try { await TorchThread.RunAsync(() => experiment.RunAsync(context, cancellationToken)); }
            catch (ShardCompletedException) { }   // the shard's rows are written: the rest is the merge's
            if (options.Shard is not null && manifest.Shard?.Table is null)
                throw new InterpException($"experiment {experiment.Name} ended without gathering its per-unit rows (ExperimentContext.Units and GatherAsync): it cannot run as a shard");
            manifest.Status = RunStatus.Completed;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            manifest.Status = RunStatus.Cancelled;
            _logger.LogWarning("{Experiment} was cancelled; finished artefacts are kept in {Directory}", experiment.Name, dir);
        }
        catch (Exception ex)
        {
            manifest.Status = RunStatus.Failed;
            // Our own errors and I/O errors (a full disk, a folder made read-only) say all in their message.
            manifest.Error = ex is InterpException or IOException or UnauthorizedAccessException ? ex.Message : ex.ToString();
            _logger.LogError("{Experiment} failed: {Error}", experiment.Name, ex.Message);
        }
        finally
        {
            manifest.Ended = DateTimeOffset.UtcNow;
            try
            {
                if (options.Shard is null)   // a shard writes no report: the report is the merge's
                {
                    RunReport.Write(dir, manifest, context.Report);
                    manifest.Artifacts.RemoveAll(a => a.Kind == "report");
                    manifest.Artifacts.Add(new RunArtifact("report.md", "report", "the report (Markdown)"));
                    manifest.Artifacts.Add(new RunArtifact("report.html", "report", "the report (HTML)"));
                }
                manifest.Save(dir);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // The folder stopped accepting writes: what was written stays complete; say so instead of crashing.
                _logger.LogError("{Experiment}: cannot write the report or manifest into {Directory}: {Error}", experiment.Name, dir, ex.Message);
                manifest.Status = RunStatus.Failed;
                manifest.Error ??= $"cannot write the report or manifest into {dir}: {ex.Message}";
            }
            context.LoadedModelOrNull?.Dispose();
        }
        return new RunResult(dir, manifest);
    }

    private static Dictionary<string, string> RunOptions(IExperiment experiment, ExperimentRunOptions options)
    {
        var recorded = new Dictionary<string, string> { ["model"] = options.ModelPath ?? (experiment.UsesModel ? "(built-in default)" : "(none)"), ["device"] = options.Device };
        // A file-based program (`dotnet run script.cs`, `interp run`) knows its script: the merge of its shards runs the same one.
        if (options.Shard is not null && AppContext.GetData("EntryPointFilePath") is string script) recorded["script"] = script;
        if (options.Merge is { } merge) recorded["merged_from"] = $"{merge.Count} shards ({ShardFiles.Folder}/manifest-0 … {merge.Count - 1}.json)";
        return recorded;
    }

    private static void CreateFolder(string dir)
    {
        try { Directory.CreateDirectory(dir); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot create the output folder {dir}: {ex.Message}", ex);
        }
    }

    private static string CreateRunDirectory(string requested)
    {
        string dir = requested;
        // A second run within the same second gets its own folder instead of overwriting the first.
        for (int i = 2; Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any(); i++) dir = $"{requested}-{i}";
        try { Directory.CreateDirectory(dir); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot create the output folder {dir}: {ex.Message}", ex);
        }
        return dir;
    }

    private static Dictionary<string, string> Versions() => new()
    {
        ["interp"] = typeof(ExperimentRunner).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown",
        ["torchsharp"] = typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown",
        ["libtorch"] = torch.__version__ ?? "unknown",
        ["dotnet"] = Environment.Version.ToString(),
        ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
        ["cpu_threads"] = torch.get_num_threads().ToString(CultureInfo.InvariantCulture),
    };
}

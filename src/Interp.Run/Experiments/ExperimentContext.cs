using Interp.Loading;
using Interp.Models;
using Interp.Plots;
using Interp.Results;
using Microsoft.Extensions.Logging;
using ScottPlot;

namespace Interp.Experiments;

/// <summary>Progress of a running experiment: a stage name and the fraction done (0–1) when known.</summary>
public sealed record ExperimentProgress(string Stage, double? Fraction = null);

/// <summary>
/// What an experiment sees while it runs: its output folder, the model (loaded on first use), its seed and
/// options, and the calls that write tables, figures and report lines. Every artefact is written atomically and
/// recorded in <c>manifest.json</c> as soon as it is complete, so an interrupted run loses nothing already written.
/// </summary>
public sealed class ExperimentContext
{
    private readonly RunManifest _manifest;
    private readonly Func<LoadedModel>? _loadModel;
    private readonly IProgress<ExperimentProgress>? _progress;
    private readonly ShardSet? _merge;
    private LoadedModel? _model;
    private int? _units;

    internal ExperimentContext(string outputDirectory, RunManifest manifest, Func<LoadedModel>? loadModel, ILogger logger,
        IProgress<ExperimentProgress>? progress, ShardSpec? shard = null, ShardSet? merge = null)
    {
        OutputDirectory = outputDirectory;
        _manifest = manifest;
        _loadModel = loadModel;
        Logger = logger;
        _progress = progress;
        Shard = shard;
        _merge = merge;
    }

    /// <summary>The shard this process runs (<c>--shard i/n</c>), or null when it runs the whole experiment or merges.</summary>
    public ShardSpec? Shard { get; }
    /// <summary>True when this process merges the shards of a run (<c>interp merge OUT</c>): it does no units, and <see cref="GatherAsync{T}"/> reads every shard's rows.</summary>
    public bool IsMerge => _merge is not null;

    /// <summary>The run's folder.</summary>
    public string OutputDirectory { get; }
    /// <summary>The run identifier (the <c>run_id</c> column of every table).</summary>
    public string RunId => _manifest.RunId;
    /// <summary>The seed for every random draw.</summary>
    public int Seed => _manifest.Seed;
    /// <summary>The model path (or "(built-in default)") and the device the run was started with.</summary>
    public IReadOnlyDictionary<string, string> Options => _manifest.Options;
    /// <summary>Logger.</summary>
    public ILogger Logger { get; }
    /// <summary>Report items in order.</summary>
    internal List<ReportItem> Report { get; } = new();

    /// <summary>The model under analysis, loaded on first use and recorded (with its hash) in the manifest.</summary>
    public LoadedModel Model
    {
        get
        {
            if (_model is not null) return _model;
            if (_loadModel is null) throw new InterpException($"experiment {_manifest.Experiment} asked for a model, but none was configured");
            _model = _loadModel();
            _manifest.Model = new ModelInfo(_model.Source, _model.Format, _model.Model.Config.Name,
                File.Exists(_model.Source) || Directory.Exists(_model.Source) ? ModelHash.Compute(_model.Source) : "",
                _model.Model.ParameterCount);
            _manifest.Save(OutputDirectory);
            return _model;
        }
    }

    internal LoadedModel? LoadedModelOrNull => _model;

    /// <summary>
    /// The work units this process does, out of <paramref name="count"/> (a number the settings alone decide: sequence
    /// chunks, prompt chunks, …): all of them in a plain run, the shard's contiguous share in a shard run
    /// (<see cref="ShardSpec.Range"/>), none in a merge. Called once, before the units' work; the rows of every unit
    /// then go to <see cref="GatherAsync{T}"/>, and everything after it (aggregates, tables, figures, the report) runs on
    /// the rows of all units, in the plain run and in the merge alike — which is why their tables are the same.
    /// </summary>
    /// <exception cref="InterpException">Called twice, or with no units.</exception>
    public IReadOnlyList<int> Units(int count)
    {
        if (_units is not null) throw new InterpException($"experiment {_manifest.Experiment} asked for its units twice (ExperimentContext.Units)");
        if (count < 1) throw new InterpException($"experiment {_manifest.Experiment} has no work units ({count}): nothing to do");
        _units = count;
        if (_merge is not null)
        {
            if (_merge.First.Shard!.Units != count)
                throw new InterpException($"{_merge.Directory}: the shards split {_merge.First.Shard.Units} units, but these settings make {count}");
            return [];
        }
        if (Shard is not { } shard) return Enumerable.Range(0, count).ToArray();
        var (start, end) = shard.Range(count);
        int[] done = Enumerable.Range(start, end - start).ToArray();
        _manifest.Shard = new ShardInfo(shard.Index, shard.Count, count, done);
        _manifest.Save(OutputDirectory);
        Logger.LogInformation("Shard {Shard}: units {Start}…{End} of {Count}", shard, start, end - 1, count);
        return done;
    }

    /// <summary>The experiment's number of work units (all of them, not this process's share), once <see cref="Units"/> was asked.</summary>
    /// <exception cref="InterpException">Read before <see cref="Units"/>.</exception>
    public int UnitCount => _units ?? throw new InterpException($"experiment {_manifest.Experiment} read its unit count before asking for its units (ExperimentContext.Units)");

    /// <summary>
    /// <see cref="Units"/> for <paramref name="items"/> sequences (prompts, pairs, …) in chunks of <paramref name="unitSize"/>
    /// (the last one shorter): ⌈items / unitSize⌉ units, each with the first item it holds and how many.
    /// </summary>
    /// <exception cref="InterpException"><paramref name="unitSize"/> is below 1 (the setting <c>unit_size</c>), or there are no items.</exception>
    public IReadOnlyList<WorkUnit> Chunks(long items, int unitSize)
    {
        if (unitSize < 1) throw new InterpException($"setting 'unit_size' must be at least 1, got {unitSize}");
        int count = checked((int)((items + unitSize - 1) / unitSize));
        return Units(count).Select(u => new WorkUnit(u, u * unitSize, (int)Math.Min(unitSize, items - (long)u * unitSize))).ToArray();
    }

    /// <summary>
    /// The per-unit rows of every unit. In a plain run: <paramref name="rows"/> themselves. In a shard run: writes them as
    /// the shard's partition <c>shards/&lt;table&gt;/shard=&lt;i&gt;/part.parquet</c> (atomically; a re-run replaces it) and
    /// ends the shard's run. In a merge: reads every shard's partition and returns their rows in unit order (shard 0's
    /// first: the shards' ranges ascend), as the plain run produced them.
    /// </summary>
    /// <exception cref="InterpException">Called before <see cref="Units"/>; a row of a unit this process did not do;
    /// in a merge, a shard's partition missing or unreadable, or a model other than the shards'.</exception>
    public async Task<IReadOnlyList<T>> GatherAsync<T>(string table, IReadOnlyList<T> rows, CancellationToken cancellationToken = default) where T : IUnitRow
    {
        if (_units is not { } count) throw new InterpException($"experiment {_manifest.Experiment} gathered rows before asking for its units (ExperimentContext.Units)");
        if (!FileNames.IsPlain(table) || table.Contains('=') || table.StartsWith('.'))
            throw new InterpException($"per-unit table name '{table}' must be a plain folder name (no '=', '/' or leading '.')");
        if (_merge is not null) return await ReadShardsAsync<T>(table, count, cancellationToken);
        if (Shard is not { } shard) return rows;
        var (start, end) = shard.Range(count);
        if (rows.FirstOrDefault(r => r.Unit < start || r.Unit >= end) is { } stray)
            throw new InterpException($"shard {shard} did units {start}…{end - 1}, but a row of unit {stray.Unit} was gathered");
        string path = Path.Combine(OutputDirectory, ShardFiles.Partition(table, shard.Index));
        await ParquetRecords.ToTable(rows).WriteAsync(path, cancellationToken);
        _manifest.Shard = _manifest.Shard! with { Table = table, Rows = rows.Count };
        _manifest.Save(OutputDirectory);
        Logger.LogInformation("Shard {Shard}: wrote {Rows:N0} rows of {Table} ({Path})", shard, rows.Count, table, ShardFiles.Partition(table, shard.Index));
        throw new ShardCompletedException();
    }

    private async Task<IReadOnlyList<T>> ReadShardsAsync<T>(string table, int count, CancellationToken cancellationToken) where T : IUnitRow
    {
        var merge = _merge!;
        string expected = merge.First.Model?.Sha256 ?? "", actual = _manifest.Model?.Sha256 ?? "";
        if (expected != actual)
            throw new InterpException($"{merge.Directory}: the shards ran model {merge.First.Model?.Source} (sha256 {expected}), but the merge loaded {_manifest.Model?.Source} (sha256 {actual})");
        var all = new List<T>();
        foreach (var m in merge.Shards)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var info = m.Shard!;
            if (info.Table != table)
                throw new InterpException($"{merge.Directory}: shard {info.Index} wrote per-unit table '{info.Table ?? "(none)"}', but the merge reads '{table}'");
            string path = Path.Combine(merge.Directory, ShardFiles.Partition(table, info.Index));
            if (!File.Exists(path))
                throw new InterpException($"{merge.Directory}: shard {info.Index} of {merge.Count} is recorded as completed, but its partition {ShardFiles.Partition(table, info.Index)} is missing: re-run the shard");
            var part = await ParquetRecords.ReadAsync<T>(path, cancellationToken);
            if (part.Count != info.Rows)
                throw new InterpException($"{path} holds {part.Count} rows, but shard {info.Index}'s manifest recorded {info.Rows}: the partition was replaced by another run; re-run the shard");
            var (start, end) = new ShardSpec(info.Index, merge.Count).Range(count);
            if (part.FirstOrDefault(r => r.Unit < start || r.Unit >= end) is { } stray)
                throw new InterpException($"{path}: a row of unit {stray.Unit}, outside shard {info.Index}'s units {start}…{end - 1}");
            all.AddRange(part);
        }
        Logger.LogInformation("Merged {Rows:N0} rows of {Table} from {Count} shards", all.Count, table, merge.Count);
        return all;
    }

    /// <summary>Writes a table (a <c>run_id</c> column is appended) and records it.</summary>
    public async Task WriteTableAsync(string fileName, ParquetTable table, string description, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        RefuseInShard(fileName);
        string path = ArtifactPath(fileName, ".parquet");
        table.Add(Columns.RunId, Enumerable.Repeat(RunId, (int)table.RowCount).ToArray());
        await table.WriteAsync(path, cancellationToken);
        Record(new RunArtifact(fileName, "table", description, table.RowCount));
        Logger.LogInformation("Wrote {File} ({Rows:N0} rows)", fileName, table.RowCount);
    }

    /// <summary>Saves a figure as PNG, records it, and shows it in the report with its one-line caption.</summary>
    public void SaveFigure(string fileName, Plot plot, string caption, int width = 900, int height = 600)
    {
        RefuseInShard(fileName);
        string path = ArtifactPath(fileName, ".png");
        Figures.SavePng(plot, path, width, height);
        Report.Add(new ReportItem.Figure(fileName, caption));
        Record(new RunArtifact(fileName, "figure", caption));
        Logger.LogInformation("Wrote {File}", fileName);
    }

    /// <summary>Adds a headline number to the manifest and the report.</summary>
    public void AddNumber(string name, double value, string description, string format = "0.000")
    {
        _manifest.KeyNumbers.Add(new KeyNumber(name, value, description, format));
        _manifest.Save(OutputDirectory);
    }

    /// <summary>
    /// Adds an interactive view to <c>report.html</c> (<see cref="AttentionView"/>, <see cref="TokenValuesView"/>,
    /// <see cref="HeatmapView"/>, <see cref="LogitLensView"/>, <see cref="FeatureView"/>). Its data is read now from the
    /// tables it names, which the run must have written (<see cref="WriteTableAsync"/>), so a view shows exactly what its
    /// tables hold; above the <see cref="ReportViewLimits"/> it shows a part and says so.
    /// </summary>
    /// <exception cref="InterpException">A table the view names was not written by this run, lacks a column the view
    /// reads, or holds rows the view cannot place (named in the message).</exception>
    public Task AddViewAsync(ReportView view, CancellationToken cancellationToken = default) => AddViewAsync(view, new ReportViewLimits(), cancellationToken);

    /// <inheritdoc cref="AddViewAsync(ReportView, CancellationToken)"/>
    public async Task AddViewAsync(ReportView view, ReportViewLimits limits, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(view);
        RefuseInShard($"the view '{view.Title}'");
        foreach (var table in view.Tables)
            if (!_manifest.Artifacts.Any(a => a.Kind == "table" && a.File == table))
                throw new InterpException($"the {view.Kind} view '{view.Title}' reads {table}, which this run has not written (write it with WriteTableAsync first)");
        int index = Report.Count(r => r is ReportItem.View);
        string html = await ReportViewData.SectionAsync(OutputDirectory, view, index, limits, cancellationToken);
        Report.Add(new ReportItem.View(view, html));
        Logger.LogInformation("Added the {Kind} view '{Title}' ({Size:N0} bytes of HTML)", view.Kind, view.Title, html.Length);
    }

    /// <summary>Adds a paragraph (Markdown) to the report.</summary>
    public void AddText(string markdown) => Report.Add(new ReportItem.Text(markdown));

    /// <summary>
    /// Processes <paramref name="model"/>'s weights as TransformerLens's <c>from_pretrained</c> does
    /// (the steps of <see cref="WeightProcessingOptions.Default"/> that the model accepts, <see cref="WeightProcessing.Applicable"/>)
    /// and adds a report line naming the steps actually applied (e.g. centring the writing weights is skipped for RMSNorm
    /// models, centring the unembedding under a logit soft cap) and <paramref name="consequence"/>.
    /// </summary>
    public void ProcessWeights(HookedTransformer model, string consequence)
    {
        var applied = model.ProcessWeights(model.Applicable(WeightProcessingOptions.Default));
        AddText($"Weights processed as TransformerLens's `from_pretrained` does ({applied.Describe()}): {consequence}");
    }

    /// <summary>Reports progress to whoever runs the experiment (a progress bar in the CLI).</summary>
    public void ReportProgress(string stage, double? fraction = null) => _progress?.Report(new ExperimentProgress(stage, fraction));

    // A shard writes only its per-unit rows: the tables and figures are the merge's, made from every unit.
    private void RefuseInShard(string fileName)
    {
        if (Shard is { } shard)
            throw new InterpException($"experiment {_manifest.Experiment} wrote {fileName} in shard {shard}: a shard writes only its per-unit rows (ExperimentContext.GatherAsync); tables and figures come from the merge");
    }

    private void Record(RunArtifact artifact)
    {
        _manifest.Artifacts.RemoveAll(a => a.File == artifact.File);
        _manifest.Artifacts.Add(artifact);
        _manifest.Save(OutputDirectory);
    }

    /// <summary>Output names come from code or user input: they must be plain file names inside the run folder.</summary>
    private string ArtifactPath(string fileName, string extension)
    {
        // Names starting with '.' are reserved for the temporary files that atomic writes rename into place.
        if (!FileNames.IsPlain(fileName) || fileName.StartsWith('.') || !fileName.EndsWith(extension, StringComparison.Ordinal))
            throw new InterpException($"artefact name '{fileName}' must be a plain file name ending in {extension} inside the run folder");
        return Path.Combine(OutputDirectory, fileName);
    }
}

/// <summary>One item of a run's report.</summary>
public abstract record ReportItem
{
    /// <summary>A Markdown paragraph.</summary>
    public sealed record Text(string Markdown) : ReportItem;
    /// <summary>A figure file with its caption.</summary>
    public sealed record Figure(string File, string Caption) : ReportItem;
    /// <summary>An interactive view of <c>report.html</c>: its definition and its HTML section, data included.</summary>
    public sealed record View(ReportView Definition, string Html) : ReportItem;
}

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
    private LoadedModel? _model;

    internal ExperimentContext(string outputDirectory, RunManifest manifest, Func<LoadedModel>? loadModel, ILogger logger,
        IProgress<ExperimentProgress>? progress)
    {
        OutputDirectory = outputDirectory;
        _manifest = manifest;
        _loadModel = loadModel;
        Logger = logger;
        _progress = progress;
    }

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

    /// <summary>Writes a table (a <c>run_id</c> column is appended) and records it.</summary>
    public async Task WriteTableAsync(string fileName, ParquetTable table, string description, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        string path = ArtifactPath(fileName, ".parquet");
        table.Add(Columns.RunId, Enumerable.Repeat(RunId, (int)table.RowCount).ToArray());
        await table.WriteAsync(path, cancellationToken);
        Record(new RunArtifact(fileName, "table", description, table.RowCount));
        Logger.LogInformation("Wrote {File} ({Rows:N0} rows)", fileName, table.RowCount);
    }

    /// <summary>Saves a figure as PNG, records it, and shows it in the report with its one-line caption.</summary>
    public void SaveFigure(string fileName, Plot plot, string caption, int width = 900, int height = 600)
    {
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
}

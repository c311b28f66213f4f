using System.Text.Json;
using System.Text.Json.Serialization;
using Interp.Loading;

namespace Interp.Experiments;

/// <summary>Where a run stands; written to <c>manifest.json</c> in lower case (<c>running</c>, <c>completed</c>, …).</summary>
[JsonConverter(typeof(RunStatusJsonConverter))]
public enum RunStatus
{
    /// <summary>Still running (or killed before it could say otherwise).</summary>
    Running,
    /// <summary>Finished; every artefact is written.</summary>
    Completed,
    /// <summary>Stopped by the user; the artefacts listed are complete.</summary>
    Cancelled,
    /// <summary>Stopped by an error (see <see cref="RunManifest.Error"/>); the artefacts listed are complete.</summary>
    Failed,
}

/// <summary>Reads and writes <see cref="RunStatus"/> as its lower-case name.</summary>
public sealed class RunStatusJsonConverter() : JsonStringEnumConverter<RunStatus>(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false);

/// <summary>One file a run wrote.</summary>
public sealed record RunArtifact(string File, string Kind, string Description, long? Rows = null);

/// <summary>A headline number of a run, shown in the report.</summary>
public sealed record KeyNumber(string Name, double Value, string Description, string Format);

/// <summary>The model a run analysed.</summary>
public sealed record ModelInfo(string Source, string Format, string Name, string Sha256, long Parameters);

/// <summary>
/// <c>manifest.json</c> of a run: what ran on which model with which options and versions, when, how it ended,
/// and every artefact written so far. Rewritten atomically after each artefact, so it is always valid.
/// </summary>
public sealed class RunManifest
{
    /// <summary>Run identifier; every table's <c>run_id</c> column holds it.</summary>
    public required string RunId { get; init; }
    /// <summary>Experiment name.</summary>
    public required string Experiment { get; init; }
    /// <summary>Status.</summary>
    public RunStatus Status { get; set; } = RunStatus.Running;
    /// <summary>The error, when <see cref="Status"/> is Failed.</summary>
    public string? Error { get; set; }
    /// <summary>The model, when the experiment uses one.</summary>
    public ModelInfo? Model { get; set; }
    /// <summary>How the run was started: the model path (or the built-in model) and the device.</summary>
    public Dictionary<string, string> Options { get; init; } = new();
    /// <summary>The experiment's settings as bound (every setting, given or default, with its JSON type).</summary>
    public System.Text.Json.Nodes.JsonObject Settings { get; init; } = new();
    /// <summary>Seed of every random draw in the run.</summary>
    public int Seed { get; init; }
    /// <summary>Versions of the toolkit and its engines.</summary>
    public Dictionary<string, string> Versions { get; init; } = new();
    /// <summary>
    /// The native set-up numbers depend on: <c>weight_products</c> (the BLAS of the forward pass's weight products,
    /// <see cref="Models.Gemm.Describe"/>) and <c>settings</c> (the native environment, <see cref="Models.NativeEnvironment.Describe"/>), <c>allocator</c> (<see cref="Models.NativeEnvironment.DescribeAllocator"/>).
    /// </summary>
    public Dictionary<string, string> Native { get; init; } = new();
    /// <summary>Start time (UTC).</summary>
    public DateTimeOffset Started { get; init; }
    /// <summary>End time (UTC), once ended.</summary>
    public DateTimeOffset? Ended { get; set; }
    /// <summary>Files written, in order.</summary>
    public List<RunArtifact> Artifacts { get; init; } = new();
    /// <summary>Headline numbers.</summary>
    public List<KeyNumber> KeyNumbers { get; init; } = new();
    /// <summary>For one shard of a sharded run (<c>--shard i/n</c>): which shard and what it did; null otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ShardInfo? Shard { get; set; }

    /// <summary>Where in the run folder the manifest is written: <c>manifest.json</c>, or a shard's <c>shards/manifest-&lt;i&gt;.json</c>.</summary>
    [JsonIgnore]
    public string FileName { get; init; } = "manifest.json";

    /// <summary>JSON options: snake_case, indented.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        // Explicit: apps that default to trimming-safe JSON (e.g. `dotnet run file.cs`) disable reflection otherwise.
        TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
    };

    /// <summary>Atomically writes the manifest into <paramref name="directory"/> (as <see cref="FileName"/>).</summary>
    public void Save(string directory) =>
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, Json));

    /// <summary>Reads a run's manifest.</summary>
    public static RunManifest Load(string directory) =>
        JsonSerializer.Deserialize<RunManifest>(File.ReadAllText(Path.Combine(directory, "manifest.json")), Json)
        ?? throw new InterpException($"{directory}/manifest.json is empty");
}

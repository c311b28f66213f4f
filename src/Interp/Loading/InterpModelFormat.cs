using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Interp.Models;
using TorchSharp;

namespace Interp.Loading;

/// <summary>
/// The project's own model format: a directory holding <c>interp-model.json</c> (format tag, version, the
/// <see cref="ModelConfig"/>, the tokenizer to use, the SHA-256 of the weights file, free-form metadata) and <c>model.safetensors</c> (the weights
/// under TransformerLens names). Trained models round-trip through it exactly.
/// </summary>
public static class InterpModelFormat
{
    /// <summary>File name of the manifest that marks a directory as this format.</summary>
    public const string ManifestFile = "interp-model.json";
    /// <summary>File name of the weights.</summary>
    public const string WeightsFile = "model.safetensors";
    private const string FormatTag = "interp-model";
    private const int Version = 1;

    /// <summary>JSON options for configs: snake_case keys (d_model, n_layers, …) and enums as strings.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        MaxDepth = 32,
        // Enum values by name only: a number such as "act": 598 would deserialize to an undefined value.
        Converters =
        {
            new JsonStringEnumConverter<NormKind>(allowIntegerValues: false), new JsonStringEnumConverter<PositionalKind>(allowIntegerValues: false),
            new JsonStringEnumConverter<RotaryStyle>(allowIntegerValues: false), new JsonStringEnumConverter<MlpKind>(allowIntegerValues: false),
            new JsonStringEnumConverter<Activation>(allowIntegerValues: false), new JsonStringEnumConverter<BlockKind>(allowIntegerValues: false),
            new JsonStringEnumConverter<HeadKind>(allowIntegerValues: false),
        },
        // Explicit: apps that default to trimming-safe JSON (e.g. `dotnet run file.cs`) disable reflection otherwise.
        TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
    };

    /// <summary>True when <paramref name="directory"/> holds a model in this format.</summary>
    public static bool IsInterpModel(string directory) => File.Exists(Path.Combine(directory, ManifestFile));

    /// <summary>
    /// Saves <paramref name="model"/> into <paramref name="directory"/> (created if needed). <paramref name="tokenizer"/>
    /// is "gpt2", a tokenizer file name inside the directory, or null. Each file is written atomically.
    /// </summary>
    public static void Save(HookedTransformer model, string directory, string? tokenizer = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var config = JsonSerializer.SerializeToNode(model.Config, Json);
        SaveFiles(directory, model.state_dict(), ManifestFile, FormatTag, Version, config, metadata, Json, ("tokenizer", tokenizer));
    }

    /// <summary>Throws when the weights file's SHA-256 is not the one <paramref name="manifestFile"/> recorded.</summary>
    internal static void VerifyWeights(string weightsPath, string sha, string manifestFile)
    {
        if (ModelHash.Compute(weightsPath) is var actual && !string.Equals(actual, sha, StringComparison.OrdinalIgnoreCase))
            throw new ModelFileException(weightsPath, null, $"its SHA-256 {actual} differs from the weights_sha256 {sha} recorded in {manifestFile}: the file was changed or damaged after it was saved");
    }

    /// <summary>
    /// Writes <paramref name="weights"/> to <see cref="WeightsFile"/>, then the manifest (format, version, config, the
    /// <paramref name="extra"/> entries, the weights' SHA-256, metadata): the shared layout of the project's model folders.
    /// </summary>
    internal static void SaveFiles(string directory, IEnumerable<KeyValuePair<string, torch.Tensor>> weights, string manifestFile, string format, int version,
        JsonNode? config, IReadOnlyDictionary<string, string>? metadata, JsonSerializerOptions json, params (string Key, string? Value)[] extra)
    {
        Directory.CreateDirectory(directory);
        string weightsPath = Path.Combine(directory, WeightsFile);
        SafeTensorsWriter.Write(weightsPath, weights, metadata);
        var manifest = new JsonObject { ["format"] = format, ["version"] = version, ["config"] = config };
        foreach (var (key, value) in extra) manifest[key] = value;
        manifest["weights_sha256"] = ModelHash.Compute(weightsPath);
        manifest["metadata"] = JsonSerializer.SerializeToNode(metadata ?? new Dictionary<string, string>(), json);
        AtomicFile.WriteAllText(Path.Combine(directory, manifestFile), manifest.ToJsonString(json));
    }

    /// <summary>Reads the manifest: the config and the tokenizer entry.</summary>
    public static (ModelConfig Config, string? Tokenizer) ReadManifest(string directory)
    {
        var manifest = ReadEntries(directory);
        return (manifest.Config, manifest.Tokenizer);
    }

    private sealed record Entries(ModelConfig Config, string? Tokenizer, string? WeightsSha256);

    private static Entries ReadEntries(string directory)
    {
        string path = Path.Combine(directory, ManifestFile);
        var info = new FileInfo(path);
        if (!info.Exists) throw new ModelFileException(path, null, "not found");
        if (info.Length > 16 << 20) throw new ModelFileException(path, null, "manifest larger than 16 MiB");
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 32, AllowDuplicateProperties = false });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelFileException(path, null, "is not a JSON object");
            JsonChecks.EnsureValidStrings(root, path);
            JsonElement? Entry(string key) => root.TryGetProperty(key, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;
            string? Text(string key) => Entry(key) is not { } value ? null
                : value.ValueKind == JsonValueKind.String ? value.GetString()
                : throw new ModelFileException(path, key, $"must be a string, not {value.ValueKind}");

            if (Entry("format") is not { ValueKind: JsonValueKind.String } format || format.GetString() != FormatTag)
                throw new ModelFileException(path, "format", $"must be \"{FormatTag}\"");
            if (Entry("version") is not { ValueKind: JsonValueKind.Number } version || !version.TryGetInt32(out int v) || v != Version)
                throw new ModelFileException(path, "version", $"unsupported version {Entry("version")?.GetRawText() ?? "(none)"}; this build reads version {Version}");
            if (Entry("config") is not { ValueKind: JsonValueKind.Object } configElement)
                throw new ModelFileException(path, "config", "missing, or not a JSON object");
            var config = configElement.Deserialize<ModelConfig>(Json) ?? throw new ModelFileException(path, "config", "missing");
            if (config.Name is null) throw new ModelFileException(path, "config", "\"name\" must be a string");
            try { config.Validate(); }
            catch (InvalidModelConfigException ex)
            {
                // At the manifest's own spelling of the field: config.rotary_base for RotaryBase.
                string key = ex.Field is null ? "config" : "config." + JsonNamingPolicy.SnakeCaseLower.ConvertName(ex.Field);
                throw new ModelFileException(path, key, ex.Message, ex);
            }
            return new Entries(config, Text("tokenizer"), Text("weights_sha256"));
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            throw new ModelFileException(path, null, $"is not a valid {FormatTag} manifest: {ex.Message}", ex);
        }
    }

    /// <summary>Loads a model saved by <see cref="Save"/>.</summary>
    public static HookedTransformer Load(string directory) => Load(directory, ReadManifest(directory).Config);

    /// <summary>Loads the weights in <paramref name="directory"/> into a model of <paramref name="config"/> (read with <see cref="ReadManifest"/>).</summary>
    public static HookedTransformer Load(string directory, ModelConfig config)
    {
        string weightsPath = Path.Combine(directory, WeightsFile);
        if (!File.Exists(weightsPath)) throw new ModelFileException(weightsPath, null, "not found");
        using var file = SafeTensorsFile.Open(weightsPath);
        // The manifest records the weights' hash: a damaged or swapped weights file is an error, not a silently different model.
        string? sha = File.Exists(Path.Combine(directory, ManifestFile)) ? ReadEntries(directory).WeightsSha256 : null;
        if (sha is not null) VerifyWeights(weightsPath, sha, ManifestFile);
        // Before the model allocates anything: the config must not ask for more than the weights can justify.
        LoadBudget.Check(config, file.Tensors.Sum(t => t.ElementCount), Path.Combine(directory, ManifestFile));
        var model = new HookedTransformer(config);
        try
        {
            using var scope = torch.NewDisposeScope();
            var expected = WeightLoader.ExpectedShapes(model);
            var weights = new Dictionary<string, torch.Tensor>();
            foreach (var info in file.Tensors)
            {
                if (!expected.TryGetValue(info.Name, out var shape))
                    throw new ModelFileException(weightsPath, info.Name, $"the config in {ManifestFile} has no such weight; the config disagrees with the weights");
                if (!info.DType.IsFloatingPoint())
                    throw new ModelFileException(weightsPath, info.Name, $"has dtype {info.DType.HeaderName()}, but model weights must be floating point (F32, F16, BF16 or F64)");
                weights[info.Name] = file.ReadTensor(info.Name, shape);
            }
            WeightLoader.Load(model, weights, weightsPath);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }
}

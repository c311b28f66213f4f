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
        Directory.CreateDirectory(directory);
        string weights = Path.Combine(directory, WeightsFile);
        SafeTensorsWriter.Write(weights, model.state_dict(), metadata);
        var manifest = new JsonObject
        {
            ["format"] = FormatTag,
            ["version"] = Version,
            ["config"] = JsonSerializer.SerializeToNode(model.Config, Json),
            ["tokenizer"] = tokenizer,
            ["weights_sha256"] = ModelHash.Compute(weights),
            ["metadata"] = JsonSerializer.SerializeToNode(metadata ?? new Dictionary<string, string>(), Json),
        };
        AtomicFile.WriteAllText(Path.Combine(directory, ManifestFile), manifest.ToJsonString(Json));
    }

    /// <summary>Reads the manifest: the config and the tokenizer entry.</summary>
    public static (ModelConfig Config, string? Tokenizer) ReadManifest(string directory)
    {
        string path = Path.Combine(directory, ManifestFile);
        var info = new FileInfo(path);
        if (!info.Exists) throw new ModelFileException(path, null, "not found");
        if (info.Length > 16 << 20) throw new ModelFileException(path, null, "manifest larger than 16 MiB");
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { MaxDepth = 32 }) as JsonObject
                       ?? throw new ModelFileException(path, null, "is not a JSON object");
            if ((string?)root["format"] != FormatTag) throw new ModelFileException(path, "format", $"must be \"{FormatTag}\"");
            if ((int?)root["version"] != Version) throw new ModelFileException(path, "version", $"unsupported version {root["version"]}; this build reads version {Version}");
            var config = root["config"]?.Deserialize<ModelConfig>(Json) ?? throw new ModelFileException(path, "config", "missing");
            try { config.Validate(); }
            catch (InterpException ex) { throw new ModelFileException(path, "config", ex.Message, ex); }
            return (config, (string?)root["tokenizer"]);
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
        var model = new HookedTransformer(config);
        try
        {
            string weightsPath = Path.Combine(directory, WeightsFile);
            if (!File.Exists(weightsPath)) throw new ModelFileException(weightsPath, null, "not found");
            using var file = SafeTensorsFile.Open(weightsPath);
            using var scope = torch.NewDisposeScope();
            var expected = WeightLoader.ExpectedShapes(model);
            var weights = new Dictionary<string, torch.Tensor>();
            foreach (var info in file.Tensors)
            {
                if (!expected.TryGetValue(info.Name, out var shape))
                    throw new ModelFileException(weightsPath, info.Name, $"the config in {ManifestFile} has no such weight; the config disagrees with the weights");
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

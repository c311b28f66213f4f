using System.Text.Json;
using System.Text.Json.Serialization;
using Interp.Models;
using TorchSharp;

namespace Interp.Loading;

/// <summary>
/// A saved <see cref="HookedLstm"/>: a directory holding <c>interp-lstm.json</c> (format tag, version, the
/// <see cref="LstmConfig"/>, the SHA-256 of the weights, free-form metadata) and <c>model.safetensors</c> (the weights
/// under the model's own names: <c>W_E</c>, <c>lstm.weight_ih_l0</c>, …, <c>W_U</c>, <c>b_U</c>). Round-trips exactly.
/// </summary>
public static class LstmModelFormat
{
    /// <summary>File name of the manifest.</summary>
    public const string ManifestFile = "interp-lstm.json";
    /// <summary>File name of the weights.</summary>
    public const string WeightsFile = InterpModelFormat.WeightsFile;
    private const string FormatTag = "interp-lstm";
    private const int Version = 1;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        MaxDepth = 32,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver(),
    };

    /// <summary>Saves <paramref name="model"/> into <paramref name="directory"/> (created if needed); weights first, manifest last, each atomically.</summary>
    public static void Save(HookedLstm model, string directory, IReadOnlyDictionary<string, string>? metadata = null)
    {
        InterpModelFormat.SaveFiles(directory, model.state_dict(), ManifestFile, FormatTag, Version, JsonSerializer.SerializeToNode(model.Config, Json), metadata, Json);
    }

    /// <summary>Loads a model saved by <see cref="Save"/>; a wrong, missing, extra or damaged entry is an error naming it.</summary>
    public static HookedLstm Load(string directory)
    {
        string path = Path.Combine(directory, ManifestFile);
        var (config, sha) = ReadManifest(path);
        string weightsPath = Path.Combine(directory, WeightsFile);
        if (!File.Exists(weightsPath)) throw new ModelFileException(weightsPath, null, "not found");
        InterpModelFormat.VerifyWeights(weightsPath, sha, ManifestFile);
        using var file = SafeTensorsFile.Open(weightsPath);
        var model = new HookedLstm(config);
        try
        {
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var expected = model.state_dict();
            foreach (var info in file.Tensors)
                if (!expected.ContainsKey(info.Name))
                    throw new ModelFileException(weightsPath, info.Name, $"{config.Name} has no such weight (it has {string.Join(", ", expected.Keys)})");
            foreach (var (name, parameter) in expected)
            {
                if (!file.Contains(name)) throw new ModelFileException(weightsPath, name, "missing");
                if (!file.GetInfo(name).DType.IsFloatingPoint())
                    throw new ModelFileException(weightsPath, name, $"has dtype {file.GetInfo(name).DType.HeaderName()}, but weights must be floating point");
                var value = file.ReadTensor(name, parameter.shape);
                if (!value.isfinite().all().item<bool>()) throw new ModelFileException(weightsPath, name, "holds NaN or infinite values");
                parameter.copy_(value);
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    private static (LstmConfig Config, string Sha) ReadManifest(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new ModelFileException(path, null, "not found");
        if (info.Length > 1 << 20) throw new ModelFileException(path, null, "manifest larger than 1 MiB");
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 32, AllowDuplicateProperties = false });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelFileException(path, null, "is not a JSON object");
            string? Text(string key) => root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            if (Text("format") != FormatTag) throw new ModelFileException(path, "format", $"must be \"{FormatTag}\"");
            if (!root.TryGetProperty("version", out var version) || version.ValueKind != JsonValueKind.Number || !version.TryGetInt32(out int v) || v != Version)
                throw new ModelFileException(path, "version", $"unsupported; this build reads version {Version}");
            if (!root.TryGetProperty("config", out var configElement) || configElement.ValueKind != JsonValueKind.Object)
                throw new ModelFileException(path, "config", "missing, or not a JSON object");
            var config = configElement.Deserialize<LstmConfig>(Json) ?? throw new ModelFileException(path, "config", "missing");
            try { config.Validate(); }
            catch (InvalidModelConfigException ex)
            {
                throw new ModelFileException(path, ex.Field is null ? "config" : "config." + JsonNamingPolicy.SnakeCaseLower.ConvertName(ex.Field), ex.Message, ex);
            }
            return (config, Text("weights_sha256") ?? throw new ModelFileException(path, "weights_sha256", "missing"));
        }
        catch (JsonException ex)
        {
            throw new ModelFileException(path, ex.Path is { Length: > 1 } p ? p.TrimStart('$', '.') : null, $"is not a valid {FormatTag} manifest: {ex.Message}", ex);
        }
    }
}

using System.Text.Json;
using Interp.Hooks;
using Interp.Loading;

namespace Interp.Saes;

/// <summary>The activation function of an SAE (SAELens's <c>architecture</c>).</summary>
public enum SaeArchitecture
{
    /// <summary><c>relu(pre)</c>.</summary>
    Standard,
    /// <summary><c>relu(pre) · (pre &gt; threshold)</c>, with a learned per-feature threshold.</summary>
    JumpRelu,
    /// <summary>Keep the <c>k</c> largest pre-activations of each position, then relu.</summary>
    TopK,
}

/// <summary>
/// An SAE's configuration as SAELens saves it in <c>cfg.json</c>: the 6.x layout (model fields under <c>metadata</c>,
/// <c>architecture</c> at the top level) or the older flat layout (<c>hook_name</c> and <c>activation_fn_str</c> at the
/// top level).
/// </summary>
/// <param name="DIn">Width of the activations the SAE reads (<c>d_in</c>).</param>
/// <param name="DSae">Number of features (<c>d_sae</c>).</param>
/// <param name="Architecture">The activation function.</param>
/// <param name="HookName">The model hook point the SAE reads and replaces.</param>
/// <param name="ApplyBDecToInput">Whether encode subtracts <c>b_dec</c> from its input first.</param>
/// <param name="DType">The dtype the config names (the SAE here always computes in float32).</param>
/// <param name="Device">The device the config names (informational).</param>
/// <param name="K">TopK only: features kept per position.</param>
/// <param name="ModelName">The model the SAE was trained on, when the config says.</param>
public sealed record SaeConfig(
    int DIn,
    int DSae,
    SaeArchitecture Architecture,
    string HookName,
    bool ApplyBDecToInput,
    string DType,
    string Device,
    int? K,
    string? ModelName)
{
    /// <summary>Largest cfg.json accepted.</summary>
    public const long MaxBytes = 1 << 20;

    private const int MaxDepth = 16;

    /// <summary>Reads and checks <paramref name="path"/> (a SAELens <c>cfg.json</c>).</summary>
    /// <exception cref="ModelFileException">The file is too large, not JSON, or a key is missing, mistyped or unsupported.</exception>
    public static SaeConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new ModelFileException(path, null, "does not exist");
        long length = new FileInfo(path).Length;
        if (length > MaxBytes) throw new ModelFileException(path, null, $"is {length} bytes; refusing an SAE config over {MaxBytes} bytes");
        using var doc = JsonChecks.ParseObject(path, File.ReadAllBytes(path), MaxDepth);
        return Parse(path, doc.RootElement);
    }

    private static SaeConfig Parse(string path, JsonElement root)
    {
        JsonElement? metadata = null;
        if (root.TryGetProperty("metadata", out var m))
        {
            if (m.ValueKind != JsonValueKind.Object) throw new ModelFileException(path, "metadata", $"must be an object, not {m.ValueKind}");
            metadata = m;
        }

        int dIn = PositiveInt(path, root, "d_in");
        int dSae = PositiveInt(path, root, "d_sae");

        const string hookKey = HookNames.SaeLeaf.ConfigKey, metadataHookKey = "metadata." + hookKey;
        string? hookName = metadata is { } md ? OptionalString(path, md, hookKey, metadataHookKey) : null;
        hookName ??= OptionalString(path, root, hookKey, hookKey)
            ?? throw new ModelFileException(path, metadataHookKey, "missing: the config must name the hook point the SAE reads");
        if (hookName.Length == 0) throw new ModelFileException(path, metadataHookKey, "is empty");

        string? modelName = metadata is { } md2 ? OptionalString(path, md2, "model_name", "metadata.model_name") : null;
        modelName ??= OptionalString(path, root, "model_name", "model_name");

        bool applyBDec = OptionalBool(path, root, "apply_b_dec_to_input") ?? true;
        string dtype = OptionalString(path, root, "dtype", "dtype") ?? "float32";
        if (dtype is not ("float32" or "torch.float32" or "float16" or "torch.float16" or "bfloat16" or "torch.bfloat16" or "float64" or "torch.float64"))
            throw new ModelFileException(path, "dtype", $"'{dtype}' is not a floating-point dtype this toolkit knows");
        string device = OptionalString(path, root, "device", "device") ?? "cpu";

        string normalize = OptionalString(path, root, "normalize_activations", "normalize_activations") ?? "none";
        if (normalize != "none")
            throw new ModelFileException(path, "normalize_activations", $"'{normalize}' is not supported yet (only \"none\")");
        string reshape = OptionalString(path, root, "reshape_activations", "reshape_activations") ?? "none";
        if (reshape != "none")
            throw new ModelFileException(path, "reshape_activations", $"'{reshape}' is not supported yet (only \"none\")");

        var architecture = ReadArchitecture(path, root, out string archKey);
        int? k = null;
        if (architecture == SaeArchitecture.TopK)
        {
            if (root.TryGetProperty("k", out _)) k = PositiveInt(path, root, "k");
            else if (root.TryGetProperty("activation_fn_kwargs", out var kwargs) && kwargs.ValueKind == JsonValueKind.Object && kwargs.TryGetProperty("k", out _))
                k = PositiveInt(path, kwargs, "k", "activation_fn_kwargs.k");
            else throw new ModelFileException(path, "k", $"missing: {archKey} is topk, which needs k");
            if (k > dSae) throw new ModelFileException(path, "k", $"is {k}, more than d_sae = {dSae}");
            if (OptionalBool(path, root, "rescale_acts_by_decoder_norm") == true)
                throw new ModelFileException(path, "rescale_acts_by_decoder_norm", "true is not supported yet");
        }
        return new SaeConfig(dIn, dSae, architecture, hookName, applyBDec, dtype, device, k, modelName);
    }

    private static SaeArchitecture ReadArchitecture(string path, JsonElement root, out string key)
    {
        key = "architecture";
        string? arch = OptionalString(path, root, "architecture", "architecture");
        if (arch is null)
        {
            key = "activation_fn_str";
            arch = OptionalString(path, root, "activation_fn_str", "activation_fn_str") ?? "relu";
            return arch switch
            {
                "relu" => SaeArchitecture.Standard,
                "topk" => SaeArchitecture.TopK,
                _ => throw new ModelFileException(path, key, $"'{arch}' is not supported (relu or topk)"),
            };
        }
        return arch switch
        {
            "standard" => SaeArchitecture.Standard,
            "jumprelu" => SaeArchitecture.JumpRelu,
            "topk" => SaeArchitecture.TopK,
            _ => throw new ModelFileException(path, key, $"'{arch}' is not supported (standard, jumprelu or topk)"),
        };
    }

    private static int PositiveInt(string path, JsonElement obj, string name, string? key = null)
    {
        key ??= name;
        if (!obj.TryGetProperty(name, out var v)) throw new ModelFileException(path, key, "missing");
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n))
            throw new ModelFileException(path, key, $"must be an integer, not {Describe(v)}");
        if (n <= 0) throw new ModelFileException(path, key, $"must be positive, not {n}");
        return n;
    }

    private static string? OptionalString(string path, JsonElement obj, string name, string key)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String) throw new ModelFileException(path, key, $"must be a string, not {Describe(v)}");
        return v.GetString()!;
    }

    private static bool? OptionalBool(string path, JsonElement obj, string name)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelFileException(path, name, $"must be true or false, not {Describe(v)}"),
        };
    }

    private static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{Truncate(v.GetString()!)}\"",
        JsonValueKind.Number => $"the number {Truncate(v.GetRawText())}",
        _ => v.ValueKind.ToString().ToLowerInvariant(),
    };

    private static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "…";
}

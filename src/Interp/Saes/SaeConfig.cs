using System.Text.Json;
using System.Text.Json.Nodes;
using Interp.Hooks;
using Interp.Loading;

namespace Interp.Saes;

/// <summary>The SAE's architecture (SAELens's <c>architecture</c>): its encoder's activation and, for transcoders, what it writes.</summary>
public enum SaeArchitecture
{
    /// <summary><c>relu(pre)</c>.</summary>
    Standard,
    /// <summary><c>relu(pre) · (pre &gt; threshold)</c>, with a learned per-feature threshold.</summary>
    JumpRelu,
    /// <summary>Keep the <c>k</c> largest pre-activations of each position, then relu.</summary>
    TopK,
    /// <summary>A gate <c>(x W_enc + b_gate) &gt; 0</c> times the magnitude <c>relu(x (W_enc · exp r_mag) + b_mag)</c>.</summary>
    Gated,
    /// <summary>A standard (relu) encoder whose decoder writes a different hook point (<c>hook_name_out</c>, width d_out).</summary>
    Transcoder,
    /// <summary>A transcoder plus a linear skip path <c>x W_skipᵀ</c>.</summary>
    SkipTranscoder,
    /// <summary>A transcoder with a JumpReLU encoder.</summary>
    JumpReluTranscoder,
}

/// <summary>How an SAE normalises its input (SAELens's <c>normalize_activations</c>).</summary>
public enum SaeNormalization
{
    /// <summary>No normalisation.</summary>
    None,
    /// <summary>Trained on inputs scaled to mean norm √d_in; at inference the factor is folded into the weights, so
    /// the forward is the identity here, as in SAELens's disk loader.</summary>
    ExpectedAverageOnlyIn,
    /// <summary>Each input is scaled to norm √d_in, and the output scaled back.</summary>
    ConstantNormRescale,
    /// <summary>Each input is centred and divided by (its unbiased std + 1e-5); the output gets std and mean back.</summary>
    LayerNorm,
}

/// <summary>
/// An SAE's configuration as SAELens saves it in <c>cfg.json</c>: the 6.x layout (model fields under <c>metadata</c>,
/// <c>architecture</c> at the top level) or an older one (v3–v5 flat <c>hook_name</c>/<c>activation_fn_str</c>; v2
/// <c>hook_point</c>/<c>activation_fn</c>/boolean <c>normalize_activations</c>), defaulted as SAELens's
/// <c>handle_pre_6_0_config</c> does.
/// </summary>
/// <param name="DIn">Width of the activations the SAE reads (<c>d_in</c>; for <c>hook_z</c>, n_heads × d_head).</param>
/// <param name="DSae">Number of features (<c>d_sae</c>).</param>
/// <param name="Architecture">The architecture.</param>
/// <param name="HookName">The model hook point the SAE reads (and, unless a transcoder, replaces).</param>
/// <param name="ApplyBDecToInput">Whether encode subtracts <c>b_dec</c> from its input first (never for transcoders).</param>
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

    /// <summary>The SAELens version written into the configs this toolkit saves.</summary>
    public const string WrittenSaeLensVersion = "6.18.0";

    private const int MaxDepth = 16;
    private const string HookKey = "hook_name";
    private readonly int _dOut;

    /// <summary>Input normalisation.</summary>
    public SaeNormalization Normalization { get; init; } = SaeNormalization.None;

    /// <summary>The SAE reads attention <c>hook_z</c> [..., n_heads, d_head] flattened to [..., n_heads × d_head]
    /// (<c>reshape_activations: "hook_z"</c>) and writes its output back in that shape.</summary>
    public bool ReshapeHookZ { get; init; }

    /// <summary>TopK only: pre-activations are multiplied by each feature's decoder norm before the top k are chosen,
    /// and activations divided by it again before decoding.</summary>
    public bool RescaleActsByDecoderNorm { get; init; }

    /// <summary>Width of the output: d_in, except for transcoders (<c>d_out</c>).</summary>
    public int DOut { get => _dOut == 0 ? DIn : _dOut; init => _dOut = value; }

    /// <summary>Transcoders only: the hook point whose activation the transcoder's output replaces.</summary>
    public string? HookNameOut { get; init; }

    /// <summary>The <c>metadata</c> object as read (model name, context size, prepend_bos, …), kept for saving; never null.</summary>
    public JsonObject Metadata { get; init; } = new();

    /// <summary>True for the transcoder architectures.</summary>
    public bool IsTranscoder => Architecture is SaeArchitecture.Transcoder or SaeArchitecture.SkipTranscoder or SaeArchitecture.JumpReluTranscoder;

    /// <summary>True when the encoder thresholds its pre-activations (JumpReLU and the JumpReLU transcoder).</summary>
    public bool HasThreshold => Architecture is SaeArchitecture.JumpRelu or SaeArchitecture.JumpReluTranscoder;

    /// <summary>SAELens's name for the architecture.</summary>
    public string ArchitectureName => ArchitectureKey(Architecture);

    private static string ArchitectureKey(SaeArchitecture architecture) => architecture switch
    {
        SaeArchitecture.Standard => "standard",
        SaeArchitecture.JumpRelu => "jumprelu",
        SaeArchitecture.TopK => "topk",
        SaeArchitecture.Gated => "gated",
        SaeArchitecture.Transcoder => "transcoder",
        SaeArchitecture.SkipTranscoder => "skip_transcoder",
        SaeArchitecture.JumpReluTranscoder => "jumprelu_transcoder",
        _ => throw new InvalidOperationException($"unknown architecture {architecture}"),
    };

    /// <summary>SAELens's name for the normalisation.</summary>
    public string NormalizationName => Normalization switch
    {
        SaeNormalization.None => "none",
        SaeNormalization.ExpectedAverageOnlyIn => "expected_average_only_in",
        SaeNormalization.ConstantNormRescale => "constant_norm_rescale",
        SaeNormalization.LayerNorm => "layer_norm",
        _ => throw new InvalidOperationException($"unknown normalization {Normalization}"),
    };

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

    /// <summary>The config as SAELens 6.x writes it (<c>SAE.save_model</c>): the SAE's own fields, <c>metadata</c>, then <c>architecture</c>.</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["d_in"] = DIn,
            ["d_sae"] = DSae,
            ["dtype"] = DType.StartsWith("torch.", StringComparison.Ordinal) ? DType["torch.".Length..] : DType,
            ["device"] = Device,
            ["apply_b_dec_to_input"] = ApplyBDecToInput,
            ["normalize_activations"] = NormalizationName,
            ["reshape_activations"] = ReshapeHookZ ? HookNames.SaeLeaf.ReshapeHookZ : "none",
        };
        if (Architecture == SaeArchitecture.TopK)
        {
            o["k"] = K;
            o["rescale_acts_by_decoder_norm"] = RescaleActsByDecoderNorm;
        }
        if (IsTranscoder)
        {
            o["d_out"] = DOut;
            o["hook_name_out"] = HookNameOut;
        }
        var metadata = (JsonObject)Metadata.DeepClone();
        metadata[HookKey] = HookName;
        if (ModelName is not null) metadata["model_name"] = ModelName;
        metadata.TryAdd("sae_lens_version", WrittenSaeLensVersion);
        metadata.TryAdd("sae_lens_training_version", WrittenSaeLensVersion);
        o["metadata"] = metadata;
        o["architecture"] = ArchitectureName;
        return o;
    }

    private static SaeConfig Parse(string path, JsonElement root)
    {
        JsonElement? metadata = null;
        // SAELens 6 writes "metadata"; a few 6.x pre-releases wrote "meta".
        foreach (var key in new[] { "metadata", "meta" })
        {
            if (!root.TryGetProperty(key, out var m) || m.ValueKind == JsonValueKind.Null) continue;
            if (m.ValueKind != JsonValueKind.Object) throw new ModelFileException(path, key, $"must be an object, not {m.ValueKind}");
            metadata = m;
            break;
        }

        int dIn = PositiveInt(path, root, "d_in");
        int dSae = PositiveInt(path, root, "d_sae");

        // 6.x: metadata.hook_name; v3–v5: hook_name; v2: hook_point.
        string? hookName = metadata is { } md ? OptionalString(path, md, HookKey, "metadata." + HookKey) : null;
        hookName ??= OptionalString(path, root, HookKey, HookKey) ?? OptionalString(path, root, "hook_point", "hook_point")
            ?? throw new ModelFileException(path, "metadata." + HookKey, "missing: the config must name the hook point the SAE reads");
        if (hookName.Length == 0) throw new ModelFileException(path, "metadata." + HookKey, "is empty");

        string? modelName = metadata is { } md2 ? OptionalString(path, md2, "model_name", "metadata.model_name") : null;
        modelName ??= OptionalString(path, root, "model_name", "model_name");

        bool applyBDec = OptionalBool(path, root, "apply_b_dec_to_input") ?? true;
        string dtype = OptionalString(path, root, "dtype", "dtype") ?? "float32";
        if (dtype is not ("float32" or "torch.float32" or "float16" or "torch.float16" or "bfloat16" or "torch.bfloat16" or "float64" or "torch.float64"))
            throw new ModelFileException(path, "dtype", $"'{dtype}' is not a floating-point dtype this toolkit knows");
        string device = OptionalString(path, root, "device", "device") ?? "cpu";

        var normalization = ReadNormalization(path, root);
        string? reshape = OptionalString(path, root, "reshape_activations", "reshape_activations");
        // Pre-6 configs have no key: SAELens (handle_pre_6_0_config) defaults it to hook_z for a hook_z hook. A 6.x
        // config without it takes SAEConfig's default, none.
        reshape ??= IsZ(hookName) && IsPre6(path, root, metadata) ? HookNames.SaeLeaf.ReshapeHookZ : "none";
        bool reshapeHookZ = reshape switch
        {
            "none" => false,
            HookNames.SaeLeaf.ReshapeHookZ => true,
            _ => throw new ModelFileException(path, "reshape_activations", $"'{Truncate(reshape)}' is not one of none, {HookNames.SaeLeaf.ReshapeHookZ}"),
        };
        if (reshapeHookZ && !IsZ(hookName))
            throw new ModelFileException(path, "reshape_activations", $"is {HookNames.SaeLeaf.ReshapeHookZ}, but the hook point '{hookName}' is not an attention {HookNames.SaeLeaf.ReshapeHookZ}");
        if (OptionalBool(path, root, "finetuning_scaling_factor") == true)
            throw new ModelFileException(path, "finetuning_scaling_factor", "true is not supported (SAELens 6 dropped it too)");

        var architecture = ReadArchitecture(path, root, out string archKey);
        int? k = null;
        bool rescale = false;
        if (architecture == SaeArchitecture.TopK)
        {
            if (root.TryGetProperty("k", out _)) k = PositiveInt(path, root, "k");
            else if (root.TryGetProperty("activation_fn_kwargs", out var kwargs) && kwargs.ValueKind == JsonValueKind.Object && kwargs.TryGetProperty("k", out _))
                k = PositiveInt(path, kwargs, "k", "activation_fn_kwargs.k");
            else throw new ModelFileException(path, "k", $"missing: {archKey} is topk, which needs k");
            if (k > dSae) throw new ModelFileException(path, "k", $"is {k}, more than d_sae = {dSae}");
            rescale = OptionalBool(path, root, "rescale_acts_by_decoder_norm") ?? false;
        }

        int dOut = dIn;
        string? hookOut = null;
        bool transcoder = architecture is SaeArchitecture.Transcoder or SaeArchitecture.SkipTranscoder or SaeArchitecture.JumpReluTranscoder;
        if (transcoder)
        {
            dOut = PositiveInt(path, root, "d_out");
            hookOut = OptionalString(path, root, "hook_name_out", "hook_name_out")
                ?? (metadata is { } md3 ? OptionalString(path, md3, "hook_name_out", "metadata.hook_name_out") : null)
                ?? throw new ModelFileException(path, "hook_name_out", $"missing: a {archKey} '{ArchitectureKey(architecture)}' needs the hook point it writes");
            if (hookOut.Length == 0) throw new ModelFileException(path, "hook_name_out", "is empty");
            if (normalization is SaeNormalization.ConstantNormRescale or SaeNormalization.LayerNorm)
                throw new ModelFileException(path, "normalize_activations", "a transcoder's output cannot be de-normalised (SAELens skips it); only none or expected_average_only_in");
            if (reshapeHookZ) throw new ModelFileException(path, "reshape_activations", $"{HookNames.SaeLeaf.ReshapeHookZ} reshaping is not defined for transcoders");
            applyBDec = false; // b_dec has width d_out; SAELens's transcoder never subtracts it.
        }

        var meta = new JsonObject();
        if (metadata is { } md4) foreach (var p in md4.EnumerateObject()) meta[p.Name] = JsonNode.Parse(p.Value.GetRawText());
        else
        {
            // Pre-6 flat configs: lift the model fields SAELens moves under metadata.
            foreach (var key in new[] { "model_name", "hook_head_index", "context_size", "prepend_bos", "dataset_path", "model_from_pretrained_kwargs",
                         "sae_lens_training_version", "neuronpedia_id", "model_class_name", "exclude_special_tokens", "seqpos_slice" })
                if (root.TryGetProperty(key, out var v)) meta[key] = JsonNode.Parse(v.GetRawText());
            if (!meta.ContainsKey("hook_head_index") && root.TryGetProperty("hook_point_head_index", out var head)) meta["hook_head_index"] = JsonNode.Parse(head.GetRawText());
            meta.TryAdd("prepend_bos", true);   // handle_pre_6_0_config's default
        }
        meta.Remove(HookKey);
        meta.Remove("model_name");

        return new SaeConfig(dIn, dSae, architecture, hookName, applyBDec, dtype, device, k, modelName)
        {
            Normalization = normalization,
            ReshapeHookZ = reshapeHookZ,
            RescaleActsByDecoderNorm = rescale,
            DOut = dOut,
            HookNameOut = hookOut,
            Metadata = meta,
        };
    }

    private static bool IsZ(string hookName) => HookNames.Is(hookName, HookNames.Z);

    /// <summary>
    /// Whether SAELens's <c>handle_config_defaulting</c> treats the config as pre-6: no <c>sae_lens_version</c> (top level,
    /// else <c>metadata</c>), or one below 6. A version whose major part is not a number counts as pre-6.
    /// </summary>
    private static bool IsPre6(string path, JsonElement root, JsonElement? metadata)
    {
        string? version = OptionalString(path, root, "sae_lens_version", "sae_lens_version");
        if (string.IsNullOrEmpty(version) && metadata is { } md) version = OptionalString(path, md, "sae_lens_version", "metadata.sae_lens_version");
        if (string.IsNullOrEmpty(version)) return true;
        string major = new(version.TrimStart('v').TakeWhile(char.IsAsciiDigit).ToArray());
        return !int.TryParse(major, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int m) || m < 6;
    }

    private static SaeNormalization ReadNormalization(string path, JsonElement root)
    {
        const string key = "normalize_activations";
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return SaeNormalization.None;
        // v2 wrote a boolean: true meant the April-update scaling.
        if (v.ValueKind == JsonValueKind.True) return SaeNormalization.ExpectedAverageOnlyIn;
        if (v.ValueKind == JsonValueKind.False) return SaeNormalization.None;
        if (v.ValueKind != JsonValueKind.String) throw new ModelFileException(path, key, $"must be a string, not {Describe(v)}");
        return v.GetString() switch
        {
            "none" => SaeNormalization.None,
            "expected_average_only_in" => SaeNormalization.ExpectedAverageOnlyIn,
            "constant_norm_rescale" => SaeNormalization.ConstantNormRescale,
            "layer_norm" => SaeNormalization.LayerNorm,
            var s => throw new ModelFileException(path, key, $"'{Truncate(s!)}' is not one of none, expected_average_only_in, constant_norm_rescale, layer_norm"),
        };
    }

    private static SaeArchitecture ReadArchitecture(string path, JsonElement root, out string key)
    {
        key = "architecture";
        string? arch = OptionalString(path, root, "architecture", "architecture");
        // Pre-6 configs name the activation instead (v3–v5 activation_fn_str, v2 activation_fn); "architecture",
        // when present there, says standard/gated/jumprelu and the activation picks topk.
        string? activationKey = root.TryGetProperty("activation_fn_str", out _) ? "activation_fn_str" : root.TryGetProperty("activation_fn", out _) ? "activation_fn" : null;
        string? activation = activationKey is null ? null : OptionalString(path, root, activationKey, activationKey);
        if (activation is not null && activation is not ("relu" or "topk"))
            throw new ModelFileException(path, activationKey, $"'{Truncate(activation)}' is not supported (relu or topk)");
        if (arch is null || (arch == "standard" && activation == "topk"))
        {
            if (activation == "topk") { key = activationKey!; return SaeArchitecture.TopK; }
            return SaeArchitecture.Standard;
        }
        return arch switch
        {
            "standard" => SaeArchitecture.Standard,
            "jumprelu" => SaeArchitecture.JumpRelu,
            "topk" => SaeArchitecture.TopK,
            "gated" => SaeArchitecture.Gated,
            "transcoder" => SaeArchitecture.Transcoder,
            "skip_transcoder" => SaeArchitecture.SkipTranscoder,
            "jumprelu_transcoder" => SaeArchitecture.JumpReluTranscoder,
            _ => throw new ModelFileException(path, key,
                $"'{Truncate(arch)}' is not supported (standard, jumprelu, topk, gated, transcoder, skip_transcoder or jumprelu_transcoder)"),
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

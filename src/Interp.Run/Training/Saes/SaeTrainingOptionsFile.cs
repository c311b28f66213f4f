using System.Text.Json;
using Interp.Saes;

namespace Interp.Training.Saes;

/// <summary>
/// Reads <see cref="SaeTrainingOptions"/> from a JSON object whose keys are the options' SAELens-style names (the names
/// <see cref="SaeTrainingOptions.Validate"/> reports: <c>architecture</c>, <c>d_sae</c>, <c>k</c>, <c>lr</c>,
/// <c>training_tokens</c>, …); a key not listed in <see cref="Keys"/>, a value of the wrong type or an invalid value is an
/// error naming the file and the key. Keys left out keep their defaults.
/// </summary>
public static class SaeTrainingOptionsFile
{
    /// <summary>Every key the file may hold.</summary>
    public static IReadOnlyList<string> Keys { get; } =
    [
        "architecture", "d_sae", "k", "l1_coefficient", "l1_warm_up_steps", "aux_k_coefficient", "jumprelu_init_threshold",
        "jumprelu_bandwidth", "l0_coefficient", "lr", "adam_beta1", "adam_beta2", "lr_warm_up_steps", "lr_decay_steps", "lr_end",
        "gradient_clip_norm", "train_batch_size_tokens", "training_tokens", "context_size", "store_batch_size_prompts", "buffer_tokens",
        "prepend_bos", "b_dec_init_method", "decoder_init_norm", "apply_b_dec_to_input", "normalize_activations",
        "n_batches_for_norm_estimate", "dead_feature_window", "feature_sampling_window", "checkpoint_every_steps", "log_every_steps", "seed",
    ];

    /// <summary>The options in <paramref name="path"/>, on top of <paramref name="defaults"/> (or the defaults), validated.</summary>
    /// <exception cref="InterpException">The file is missing, not a JSON object, or a key is unknown, mistyped or invalid.</exception>
    public static SaeTrainingOptions Load(string path, SaeTrainingOptions? defaults = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new InterpException($"SAE training options {path}: no such file");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InterpException($"SAE training options {path}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InterpException($"SAE training options {path}: must be a JSON object");
            var o = defaults ?? new SaeTrainingOptions();
            foreach (var p in doc.RootElement.EnumerateObject())
                o = Apply(o, p.Name, p.Value, path);
            try { return o.Validate(); }
            catch (ArgumentException e) { throw new InterpException($"{path}: {e.Message}"); }
        }
    }

    private static SaeTrainingOptions Apply(SaeTrainingOptions o, string key, JsonElement v, string path)
    {
        InterpException Bad(string what) => new($"SAE training options {path}: key \"{key}\" {what}");
        int Int() => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw Bad($"must be an integer, not {Describe(v)}");
        long Long() => v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long i) ? i : throw Bad($"must be an integer, not {Describe(v)}");
        double Num() => v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw Bad($"must be a number, not {Describe(v)}");
        bool Bool() => v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad($"must be true or false, not {Describe(v)}") };
        string Str() => v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Bad($"must be a string, not {Describe(v)}");
        return key switch
        {
            "architecture" => o with
            {
                Architecture = Str() switch
                {
                    "standard" => SaeArchitecture.Standard,
                    "topk" => SaeArchitecture.TopK,
                    "jumprelu" => SaeArchitecture.JumpRelu,
                    var s => throw Bad($"is '{s}', not one of standard, topk, jumprelu"),
                },
            },
            "d_sae" => o with { DSae = v.ValueKind == JsonValueKind.Null ? null : Int() },
            "k" => o with { K = Int() },
            "l1_coefficient" => o with { L1Coefficient = Num() },
            "l1_warm_up_steps" => o with { SparsityWarmUpSteps = Int() },
            "aux_k_coefficient" => o with { AuxKCoefficient = Num() },
            "jumprelu_init_threshold" => o with { JumpReluInitThreshold = Num() },
            "jumprelu_bandwidth" => o with { JumpReluBandwidth = Num() },
            "l0_coefficient" => o with { L0Coefficient = Num() },
            "lr" => o with { LearningRate = Num() },
            "adam_beta1" => o with { AdamBeta1 = Num() },
            "adam_beta2" => o with { AdamBeta2 = Num() },
            "lr_warm_up_steps" => o with { LrWarmUpSteps = Int() },
            "lr_decay_steps" => o with { LrDecaySteps = Int() },
            "lr_end" => o with { LrEndFraction = Num() },
            "gradient_clip_norm" => o with { GradientClipNorm = Num() },
            "train_batch_size_tokens" => o with { BatchSizeTokens = Int() },
            "training_tokens" => o with { TrainingTokens = Long() },
            "context_size" => o with { ContextSize = v.ValueKind == JsonValueKind.Null ? null : Int() },
            "store_batch_size_prompts" => o with { StoreBatchSizePrompts = Int() },
            "buffer_tokens" => o with { BufferTokens = Int() },
            "prepend_bos" => o with { PrependBos = Bool() },
            "b_dec_init_method" => o with
            {
                BDecInit = Str() switch { "zeros" => SaeBDecInit.Zeros, "mean" => SaeBDecInit.Mean, var s => throw Bad($"is '{s}', not one of zeros, mean") },
            },
            "decoder_init_norm" => o with { DecoderInitNorm = Num() },
            "apply_b_dec_to_input" => o with { ApplyBDecToInput = Bool() },
            "normalize_activations" => o with
            {
                NormalizeActivations = Str() switch
                {
                    "none" => SaeNormalization.None,
                    "expected_average_only_in" => SaeNormalization.ExpectedAverageOnlyIn,
                    var s => throw Bad($"is '{s}', not one of none, expected_average_only_in"),
                },
            },
            "n_batches_for_norm_estimate" => o with { NormEstimateBatches = Int() },
            "dead_feature_window" => o with { DeadFeatureWindow = Int() },
            "feature_sampling_window" => o with { FeatureSamplingWindow = Int() },
            "checkpoint_every_steps" => o with { CheckpointEverySteps = Int() },
            "log_every_steps" => o with { LogEverySteps = Int() },
            "seed" => o with { Seed = Long() },
            _ => throw new InterpException($"SAE training options {path}: unknown key \"{key}\" (known: {string.Join(", ", Keys)})"),
        };
    }

    private static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{v.GetString()}\"",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        _ => v.ValueKind.ToString().ToLowerInvariant(),
    };
}

using Interp.Saes;

namespace Interp.Training.Saes;

/// <summary>What the trainer does with <c>b_dec</c> before the first step (SAELens's <c>b_dec_init_method</c>).</summary>
public enum SaeBDecInit
{
    /// <summary>Zeros (SAELens's default).</summary>
    Zeros,
    /// <summary>The mean of the first buffer of (scaled) activations.</summary>
    Mean,
}

/// <summary>
/// Hyperparameters of <see cref="SaeTrainer"/>, named and defaulted as SAELens 6's
/// <c>LanguageModelSAERunnerConfig</c> and training SAE configs are (keys in <c>snake_case</c> in the errors are those
/// names). <see cref="Validate"/> rejects every value that makes no sense, naming the option.
/// </summary>
public sealed record SaeTrainingOptions
{
    /// <summary>SAE architecture to train: standard (L1), TopK or JumpReLU.</summary>
    public SaeArchitecture Architecture { get; init; } = SaeArchitecture.Standard;
    /// <summary>Number of features (<c>d_sae</c>); null: 8 × d_in.</summary>
    public int? DSae { get; init; }
    /// <summary>TopK: features kept per token (<c>k</c>; SAELens's default 100, capped here at d_sae).</summary>
    public int K { get; init; } = 100;
    /// <summary>Standard: the L1 coefficient (SAELens default 1.0 with lp_norm 1).</summary>
    public double L1Coefficient { get; init; } = 1.0;
    /// <summary>Standard: steps over which the L1 (or JumpReLU: L0) coefficient ramps linearly from 0 to its value.</summary>
    public int SparsityWarmUpSteps { get; init; }
    /// <summary>TopK: weight of the AuxK loss on dead features (SAELens uses 1; 0 turns it off).</summary>
    public double AuxKCoefficient { get; init; } = 1.0;
    /// <summary>JumpReLU: initial threshold (SAELens <c>jumprelu_init_threshold</c> 0.001).</summary>
    public double JumpReluInitThreshold { get; init; } = 0.001;
    /// <summary>JumpReLU: width of the rectangle kernel of the straight-through estimator (<c>jumprelu_bandwidth</c> 0.001).</summary>
    public double JumpReluBandwidth { get; init; } = 0.001;
    /// <summary>JumpReLU: the L0 penalty coefficient (<c>l0_coefficient</c> 1.0).</summary>
    public double L0Coefficient { get; init; } = 1.0;

    /// <summary>Peak learning rate of Adam (SAELens default 3e-4).</summary>
    public double LearningRate { get; init; } = 3e-4;
    /// <summary>Adam β₁ (SAELens 0.9).</summary>
    public double AdamBeta1 { get; init; } = 0.9;
    /// <summary>Adam β₂ (SAELens 0.999).</summary>
    public double AdamBeta2 { get; init; } = 0.999;
    /// <summary>Steps of linear learning-rate warm-up from 0 (SAELens <c>lr_warm_up_steps</c>, default 0).</summary>
    public int LrWarmUpSteps { get; init; }
    /// <summary>Final steps over which the learning rate decays linearly to <see cref="LrEndFraction"/> × peak (SAELens <c>lr_decay_steps</c>, default 0).</summary>
    public int LrDecaySteps { get; init; }
    /// <summary>The learning rate at the end of the decay as a fraction of the peak (SAELens: lr_end = lr / 10).</summary>
    public double LrEndFraction { get; init; } = 0.1;
    /// <summary>Gradients are clipped to this total norm (SAELens clips to 1.0); 0: no clipping.</summary>
    public double GradientClipNorm { get; init; } = 1.0;

    /// <summary>Tokens (activations) per training step (<c>train_batch_size_tokens</c>, SAELens 4096).</summary>
    public int BatchSizeTokens { get; init; } = 4096;
    /// <summary>Total activations to train on (<c>training_tokens</c>).</summary>
    public long TrainingTokens { get; init; } = 2_000_000;
    /// <summary>Tokens per context window fed to the model, BOS included (<c>context_size</c>); null: min(128, n_ctx).</summary>
    public int? ContextSize { get; init; }
    /// <summary>Context windows per model forward while filling the buffer (<c>store_batch_size_prompts</c>).</summary>
    public int StoreBatchSizePrompts { get; init; } = 16;
    /// <summary>Activations the shuffling buffer holds; each refill replaces half (SAELens's <c>n_batches_in_buffer</c> × store batch).</summary>
    public int BufferTokens { get; init; } = 65_536;
    /// <summary>Prepend BOS to every context window (and separate documents by it), as SAELens does by default.</summary>
    public bool PrependBos { get; init; } = true;

    /// <summary>How <c>b_dec</c> starts.</summary>
    public SaeBDecInit BDecInit { get; init; } = SaeBDecInit.Zeros;
    /// <summary>Decoder rows are initialised to this norm and W_enc to W_decᵀ (SAELens <c>decoder_init_norm</c> 0.1).</summary>
    public double DecoderInitNorm { get; init; } = 0.1;
    /// <summary>Subtract <c>b_dec</c> from the input before encoding (<c>apply_b_dec_to_input</c>, SAELens default true).</summary>
    public bool ApplyBDecToInput { get; init; } = true;
    /// <summary>
    /// <see cref="SaeNormalization.None"/> or <see cref="SaeNormalization.ExpectedAverageOnlyIn"/>: scale training inputs by
    /// √d_in / mean‖x‖ (estimated over <see cref="NormEstimateBatches"/> batches) and fold the factor into the saved weights.
    /// </summary>
    public SaeNormalization NormalizeActivations { get; init; } = SaeNormalization.None;
    /// <summary>Training batches whose mean norm estimates the scaling factor.</summary>
    public int NormEstimateBatches { get; init; } = 20;

    /// <summary>A feature that has not fired for this many steps is dead (SAELens <c>dead_feature_window</c> 1000).</summary>
    public int DeadFeatureWindow { get; init; } = 1000;
    /// <summary>Steps over which feature firing frequencies are counted for <c>sparsity.safetensors</c> (SAELens <c>feature_sampling_window</c> 2000).</summary>
    public int FeatureSamplingWindow { get; init; } = 2000;
    /// <summary>Save a checkpoint every this many steps (0: none besides the final save and a cancellation).</summary>
    public int CheckpointEverySteps { get; init; }
    /// <summary>Report progress every this many steps (and at the last step).</summary>
    public int LogEverySteps { get; init; } = 50;
    /// <summary>Seed of the weights' initialisation and the buffer's shuffling.</summary>
    public long Seed { get; init; } = 42;

    /// <summary>The number of optimiser steps: training tokens ÷ batch size, rounded down (at least 1).</summary>
    public int TotalSteps => (int)Math.Max(1, TrainingTokens / BatchSizeTokens);

    /// <summary>d_sae for an input of width <paramref name="dIn"/>.</summary>
    public int DSaeFor(int dIn) => DSae ?? 8 * dIn;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first option that makes no sense.</summary>
    public SaeTrainingOptions Validate()
    {
        static void Require(bool ok, string key, string message)
        {
            if (!ok) throw new ArgumentException($"SAE training option {key}: {message}");
        }
        Require(Architecture is SaeArchitecture.Standard or SaeArchitecture.TopK or SaeArchitecture.JumpRelu, "architecture",
            $"{Architecture} cannot be trained here (standard, topk or jumprelu)");
        Require(DSae is null or > 0, "d_sae", $"must be positive, got {DSae}");
        Require(K > 0, "k", $"must be positive, got {K}");
        Require(DSae is null || Architecture != SaeArchitecture.TopK || K <= DSae, "k", $"{K} is more than d_sae = {DSae}");
        Require(double.IsFinite(L1Coefficient) && L1Coefficient >= 0, "l1_coefficient", $"must be ≥ 0, got {L1Coefficient}");
        Require(SparsityWarmUpSteps >= 0, "l1_warm_up_steps", $"must be ≥ 0, got {SparsityWarmUpSteps}");
        Require(double.IsFinite(AuxKCoefficient) && AuxKCoefficient >= 0, "aux_k_coefficient", $"must be ≥ 0, got {AuxKCoefficient}");
        Require(JumpReluInitThreshold > 0 && double.IsFinite(JumpReluInitThreshold), "jumprelu_init_threshold", $"must be positive, got {JumpReluInitThreshold}");
        Require(JumpReluBandwidth > 0 && double.IsFinite(JumpReluBandwidth), "jumprelu_bandwidth", $"must be positive, got {JumpReluBandwidth}");
        Require(double.IsFinite(L0Coefficient) && L0Coefficient >= 0, "l0_coefficient", $"must be ≥ 0, got {L0Coefficient}");
        Require(LearningRate > 0 && double.IsFinite(LearningRate), "lr", $"must be positive, got {LearningRate}");
        Require(AdamBeta1 is >= 0 and < 1, "adam_beta1", $"must lie in [0, 1), got {AdamBeta1}");
        Require(AdamBeta2 is >= 0 and < 1, "adam_beta2", $"must lie in [0, 1), got {AdamBeta2}");
        Require(LrWarmUpSteps >= 0, "lr_warm_up_steps", $"must be ≥ 0, got {LrWarmUpSteps}");
        Require(LrDecaySteps >= 0, "lr_decay_steps", $"must be ≥ 0, got {LrDecaySteps}");
        Require(LrEndFraction is >= 0 and <= 1, "lr_end", $"must be a fraction of lr in [0, 1], got {LrEndFraction}");
        Require(GradientClipNorm >= 0 && double.IsFinite(GradientClipNorm), "gradient_clip_norm", $"must be ≥ 0, got {GradientClipNorm}");
        Require(BatchSizeTokens > 0, "train_batch_size_tokens", $"must be positive, got {BatchSizeTokens}");
        Require(TrainingTokens >= BatchSizeTokens, "training_tokens", $"{TrainingTokens} is less than one batch of {BatchSizeTokens} tokens");
        Require(ContextSize is null or >= 2, "context_size", $"must be at least 2 (BOS + one token), got {ContextSize}");
        Require(StoreBatchSizePrompts > 0, "store_batch_size_prompts", $"must be positive, got {StoreBatchSizePrompts}");
        Require(BufferTokens >= 2 * BatchSizeTokens, "buffer_tokens", $"{BufferTokens} must hold at least two batches of {BatchSizeTokens} (half is refilled at a time)");
        Require(LrWarmUpSteps + LrDecaySteps <= TotalSteps, "lr_warm_up_steps + lr_decay_steps",
            $"{LrWarmUpSteps} + {LrDecaySteps} exceeds the {TotalSteps} steps of training");
        Require(DecoderInitNorm > 0 && double.IsFinite(DecoderInitNorm), "decoder_init_norm", $"must be positive, got {DecoderInitNorm}");
        Require(NormalizeActivations is SaeNormalization.None or SaeNormalization.ExpectedAverageOnlyIn, "normalize_activations",
            $"{NormalizeActivations} is not supported for training (none or expected_average_only_in)");
        Require(NormEstimateBatches > 0, "n_batches_for_norm_estimate", $"must be positive, got {NormEstimateBatches}");
        Require(DeadFeatureWindow > 0, "dead_feature_window", $"must be positive, got {DeadFeatureWindow}");
        Require(FeatureSamplingWindow > 0, "feature_sampling_window", $"must be positive, got {FeatureSamplingWindow}");
        Require(CheckpointEverySteps >= 0, "checkpoint_every_steps", $"must be ≥ 0, got {CheckpointEverySteps}");
        Require(LogEverySteps > 0, "log_every_steps", $"must be positive, got {LogEverySteps}");
        return this;
    }

    /// <summary>The learning rate of 1-based <paramref name="step"/>: linear warm-up, constant, then a linear decay over the last steps.</summary>
    public double LearningRateAt(int step)
    {
        if (LrWarmUpSteps > 0 && step <= LrWarmUpSteps) return LearningRate * step / LrWarmUpSteps;
        int decayStart = TotalSteps - LrDecaySteps;
        if (LrDecaySteps > 0 && step > decayStart)
        {
            double t = (double)(step - decayStart) / LrDecaySteps;   // (0, 1]
            return LearningRate * (1 - t * (1 - LrEndFraction));
        }
        return LearningRate;
    }

    /// <summary>The sparsity coefficient's warm-up factor at 1-based <paramref name="step"/> (SAELens: min(1, step / warm_up)).</summary>
    public double SparsityWarmUpAt(int step) => SparsityWarmUpSteps == 0 ? 1 : Math.Min(1.0, (double)step / SparsityWarmUpSteps);
}

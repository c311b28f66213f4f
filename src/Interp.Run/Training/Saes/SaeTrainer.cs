using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Saes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Training.Saes;

/// <summary>What the saved SAE says about where it was trained (SAELens's <c>metadata</c>).</summary>
/// <param name="HookName">The hook point it reads and replaces.</param>
/// <param name="ModelName">The model's name.</param>
/// <param name="ContextSize">Tokens per context window.</param>
/// <param name="PrependBos">Whether every window started with BOS.</param>
/// <param name="DatasetPath">The corpus.</param>
public sealed record SaeTrainingTarget(string HookName, string? ModelName, int ContextSize, bool PrependBos, string DatasetPath);

/// <summary>
/// Trains an SAE as SAELens 6's <c>SAETrainer</c> does: per step a batch of activations (scaled by the
/// <c>expected_average_only_in</c> factor √d_in / mean‖x‖ when asked), the architecture's loss
/// (<see cref="TrainingSae"/>), Adam (β₁ 0.9, β₂ 0.999 by default; no weight decay) with the learning-rate schedule
/// of <see cref="SaeTrainingOptions.LearningRateAt"/>, gradients clipped to norm 1. It tracks which features fire
/// (dead: none in the last <c>dead_feature_window</c> steps, the mask TopK's AuxK loss uses) and how often (the firing
/// fraction over the last one to two <c>feature_sampling_window</c>s, saved as <c>sparsity.safetensors</c> =
/// log10(fraction + 1e-10)). Checkpoints go to <c>out/checkpoints/&lt;tokens&gt;/</c>, each written in a temporary
/// folder and renamed into place; the final SAE to <c>out/</c> (every file written whole and renamed, cfg.json last).
/// Both are SAELens 6 inference SAEs with the scaling factor folded into the weights and
/// <c>normalize_activations: "none"</c>, as SAELens saves them. Cancellation saves a checkpoint, then throws
/// <see cref="OperationCanceledException"/>.
/// </summary>
public sealed class SaeTrainer
{
    /// <summary>The checkpoint folder under the output folder.</summary>
    public const string CheckpointsFolder = "checkpoints";

    private readonly SaeTrainingOptions _options;
    private readonly ILogger _logger;

    /// <summary>A trainer with <paramref name="options"/> (validated here).</summary>
    /// <exception cref="ArgumentException">An option is invalid; the message names it.</exception>
    public SaeTrainer(SaeTrainingOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Validate();
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The trained module of the last <see cref="Train"/> call (disposed with the next call), for inspection and tests.</summary>
    public TrainingSae? Trained { get; private set; }

    /// <summary>The scaling factor of the last <see cref="Train"/> call.</summary>
    public double ScalingFactor { get; private set; } = 1.0;

    /// <summary>
    /// Trains on <paramref name="model"/>'s activations at <paramref name="hookName"/> over <paramref name="corpus"/>, and
    /// saves into <paramref name="outDir"/>. BOS is the tokenizer's, else <paramref name="bos"/>.
    /// </summary>
    /// <exception cref="InterpException">The hook is unknown or unsuitable, the corpus holds no window, or the model has no BOS while prepend_bos is on.</exception>
    public SaeTrainingResult TrainOnModel(HookedTransformer model, string hookName, ISaeTokenSource corpus, string outDir,
        int? bos = null, IProgress<SaeTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(corpus);
        int context = _options.ContextSize ?? Math.Min(128, model.Config.NCtx);
        int? bosId = model.Tokenizer?.BosId ?? bos;
        using var buffer = new ActivationBuffer(model, hookName, corpus, context, _options.StoreBatchSizePrompts, _options.BufferTokens,
            bosId, _options.PrependBos, _options.Seed + 1, cancellationToken);
        _logger.LogInformation("Training a {Architecture} SAE on {Model} at {Hook} (d_in {DIn}) over {Corpus}, context {Context}",
            _options.Architecture, model.Config.Name, hookName, buffer.DIn, corpus.Description, context);
        var target = new SaeTrainingTarget(hookName, model.Config.Name, context, _options.PrependBos, corpus.Description);
        var result = Train(buffer, target, outDir, progress, cancellationToken);
        _logger.LogInformation("Model forwards: {Tokens:N0} tokens in {Seconds:F1} s", buffer.TokensForwarded, buffer.ForwardTime.TotalSeconds);
        return result;
    }

    /// <summary>Trains on <paramref name="source"/> and saves into <paramref name="outDir"/> (see the class summary).</summary>
    /// <exception cref="OperationCanceledException">Cancelled; a checkpoint of the steps so far was saved first.</exception>
    public SaeTrainingResult Train(IActivationSource source, SaeTrainingTarget target, string outDir,
        IProgress<SaeTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(target);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        var o = _options;
        int dIn = source.DIn, dSae = o.DSaeFor(dIn);
        if (o.Architecture == SaeArchitecture.TopK && o.K > dSae)
            throw new ArgumentException($"SAE training option k: {o.K} is more than d_sae = {dSae}");
        using var gradMode = enable_grad();
        var clock = Stopwatch.StartNew();
        Trained?.Dispose();
        Trained = null;

        ScalingFactor = o.NormalizeActivations == SaeNormalization.ExpectedAverageOnlyIn ? EstimateScalingFactor(source, cancellationToken) : 1.0;
        if (ScalingFactor != 1.0) _logger.LogInformation("Activation scaling factor √d_in / mean‖x‖ = {Factor:G6}", ScalingFactor);
        using var scale = ScalingFactor.ToScalar();

        var sae = new TrainingSae(dIn, dSae, o, o.Seed);
        Trained = sae;
        if (o.BDecInit == SaeBDecInit.Mean)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var first = source.NextBatch(o.BatchSizeTokens);
            if (ScalingFactor != 1.0) first.mul_(scale);
            sae.BDec.copy_(first.mean([0]));
        }

        using var optimizer = new AdamWOptimizer(sae.Parameters(), o.LearningRate, o.AdamBeta1, o.AdamBeta2, eps: 1e-8, weightDecay: 0);
        var stats = new FeatureStats(dSae);
        try
        {
            int steps = o.TotalSteps;
            SaeTrainingProgress? last = null;
            for (int step = 1; step <= steps; step++)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    string dir = SaveCheckpoint(sae, target, outDir, stats, (long)(step - 1) * o.BatchSizeTokens);
                    _logger.LogWarning("Cancelled after {Steps} steps; checkpoint saved to {Directory}", step - 1, dir);
                    cancellationToken.ThrowIfCancellationRequested();
                }
                double lr = o.LearningRateAt(step);
                optimizer.LearningRate = lr;
                bool report = step == steps || step % o.LogEverySteps == 0;
                using (var scope = NewDisposeScope())
                {
                    Tensor x;
                    try { x = source.NextBatch(o.BatchSizeTokens); }
                    catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                    {
                        // Cancelled while the buffer was filling: nothing of this step happened yet.
                        string dir = SaveCheckpoint(sae, target, outDir, stats, (long)(step - 1) * o.BatchSizeTokens);
                        _logger.LogWarning("Cancelled after {Steps} steps; checkpoint saved to {Directory}", step - 1, dir);
                        throw;
                    }
                    if (ScalingFactor != 1.0) x.mul_(scale);
                    double coefficient = o.SparsityWarmUpAt(step) * (o.Architecture == SaeArchitecture.JumpRelu ? o.L0Coefficient : o.L1Coefficient);
                    var losses = sae.Step(x, coefficient, o.Architecture == SaeArchitecture.TopK ? stats.DeadMask(o.DeadFeatureWindow) : null);
                    optimizer.ZeroGrad();
                    losses.Loss.backward();
                    if (o.GradientClipNorm > 0) ClipGradients(sae.Parameters(), o.GradientClipNorm);
                    optimizer.Step();
                    var fired = losses.Acts.gt(Scalars.Zero);   // [batch, d_sae]
                    stats.Record(fired, o.FeatureSamplingWindow);
                    if (!double.IsFinite(losses.Mse))
                        throw new InterpException($"SAE training diverged at step {step}: MSE is {losses.Mse} (lower lr or check the activations)");
                    if (report)
                    {
                        double l0 = fired.sum(-1, type: ScalarType.Float64).mean().item<double>();
                        double ev = Sae.ExplainedVariance(x, losses.Output);
                        last = new SaeTrainingProgress(step, steps, (long)step * o.BatchSizeTokens, losses.Mse, l0, ev,
                            stats.DeadCount(o.DeadFeatureWindow), lr, clock.Elapsed);
                        progress?.Report(last);
                        _logger.LogInformation("step {Step}/{Steps}: mse {Mse:G4}, L0 {L0:F1}, explained variance {Ev:F3}, dead {Dead}, lr {Lr:G3}",
                            step, steps, losses.Mse, l0, ev, last.DeadFeatures, lr);
                    }
                }
                if (o.CheckpointEverySteps > 0 && step % o.CheckpointEverySteps == 0 && step < steps)
                    SaveCheckpoint(sae, target, outDir, stats, (long)step * o.BatchSizeTokens);
            }
            using (var sparsity = stats.LogSparsity())
            using (var final = sae.ToSae(BuildConfig(target, dIn, dSae), ScalingFactor))
                final.Save(outDir, sparsity);
            int dense = stats.DenseCount(0.1);
            _logger.LogInformation("Saved the SAE to {Directory} ({Seconds:F1} s)", outDir, clock.Elapsed.TotalSeconds);
            return new SaeTrainingResult(outDir, steps, (long)steps * o.BatchSizeTokens, ScalingFactor, last!, dense, clock.Elapsed);
        }
        finally
        {
            stats.Dispose();
        }
    }

    /// <summary>√d_in / mean‖x‖ over <see cref="SaeTrainingOptions.NormEstimateBatches"/> batches (SAELens's <c>estimate_norm_scaling_factor</c>).</summary>
    private double EstimateScalingFactor(IActivationSource source, CancellationToken ct)
    {
        double sum = 0;
        long count = 0;
        for (int b = 0; b < _options.NormEstimateBatches; b++)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var x = source.NextBatch(_options.BatchSizeTokens);
            sum += x.to(ScalarType.Float64).norm(1, keepdim: false).sum().item<double>();   // Σ over tokens of ‖x‖
            count += x.shape[0];
        }
        double mean = sum / count;
        if (!(mean > 0)) throw new InterpException($"cannot normalise activations: their mean norm is {mean}");
        return Math.Sqrt(source.DIn) / mean;
    }

    /// <summary>Scales every gradient by min(1, max / (‖g‖ + 1e-6)), ‖g‖ the norm of all gradients together (torch's clip_grad_norm_).</summary>
    private static void ClipGradients(IEnumerable<TorchSharp.Modules.Parameter> parameters, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToArray();
        double total = Math.Sqrt(grads.Sum(g => g.to(ScalarType.Float64).pow(Scalars.Two).sum().item<double>()));
        double coefficient = maxNorm / (total + 1e-6);
        if (coefficient >= 1) return;
        using var c = coefficient.ToScalar();
        foreach (var g in grads) g.mul_(c);
    }

    /// <summary>The inference config of the SAE being trained: SAELens 6 fields, normalisation folded ("none").</summary>
    private SaeConfig BuildConfig(SaeTrainingTarget target, int dIn, int dSae)
    {
        var metadata = new JsonObject
        {
            ["model_class_name"] = "HookedTransformer",
            ["hook_head_index"] = null,
            ["model_from_pretrained_kwargs"] = new JsonObject(),
            ["prepend_bos"] = target.PrependBos,
            ["exclude_special_tokens"] = false,
            ["dataset_path"] = target.DatasetPath,
            ["context_size"] = target.ContextSize,
            ["seqpos_slice"] = new JsonArray((JsonNode?)null),
            ["sequence_separator_token"] = "bos",
        };
        return new SaeConfig(dIn, dSae, _options.Architecture, target.HookName, _options.ApplyBDecToInput, "float32", "cpu",
            _options.Architecture == SaeArchitecture.TopK ? _options.K : null, target.ModelName)
        {
            Normalization = SaeNormalization.None,
            ReshapeHookZ = HookNames.Is(target.HookName, HookNames.Z),
            Metadata = metadata,
        };
    }

    private string SaveCheckpoint(TrainingSae sae, SaeTrainingTarget target, string outDir, FeatureStats stats, long tokens)
    {
        string root = Path.Combine(outDir, CheckpointsFolder);
        Directory.CreateDirectory(root);
        string dir = Path.Combine(root, tokens.ToString(CultureInfo.InvariantCulture));
        string tmp = Path.Combine(root, $".{tokens}.tmp-{Guid.NewGuid():N}");
        try
        {
            using (var sparsity = stats.LogSparsity())
            using (var s = sae.ToSae(BuildConfig(target, sae.DIn, sae.DSae), ScalingFactor))
                s.Save(tmp, sparsity);
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            Directory.Move(tmp, dir);
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        }
        _logger.LogInformation("Checkpoint at {Tokens:N0} tokens: {Directory}", tokens, dir);
        return dir;
    }

    /// <summary>Per-feature firing counts: steps since each feature last fired, and firing counts over the sampling windows.</summary>
    private sealed class FeatureStats(int dSae) : IDisposable
    {
        private Tensor _sinceFired = zeros(dSae, ScalarType.Int64).DetachFromDisposeScope();
        private Tensor _current = zeros(dSae, ScalarType.Float64).DetachFromDisposeScope();
        private Tensor _previous = zeros(dSae, ScalarType.Float64).DetachFromDisposeScope();
        private long _currentTokens, _previousTokens;
        private int _stepsInWindow;

        public void Record(Tensor fired, int window)
        {
            using var scope = NewDisposeScope();
            var any = fired.any(0);
            _sinceFired.add_(Scalars.One, Scalars.One).masked_fill_(any, Scalars.Zero);
            _current.add_(fired.sum(0, type: ScalarType.Float64), Scalars.One);
            _currentTokens += fired.shape[0];
            if (++_stepsInWindow < window) return;
            (_previous, _current) = (_current, _previous);
            _current.zero_();
            _previousTokens = _currentTokens;
            _currentTokens = 0;
            _stepsInWindow = 0;
        }

        public Tensor DeadMask(int window)
        {
            using var w = window.ToScalar();
            return _sinceFired.gt(w);
        }

        public int DeadCount(int window)
        {
            using var mask = DeadMask(window);
            return (int)mask.sum().item<long>();
        }

        /// <summary>Firing fraction of each feature over the current and the previous window.</summary>
        private Tensor Fraction()
        {
            long tokens = Math.Max(1, _currentTokens + _previousTokens);
            using var n = ((double)tokens).ToScalar();
            return _current.add(_previous, Scalars.One).div(n);
        }

        public int DenseCount(double threshold)
        {
            using var scope = NewDisposeScope();
            using var t = threshold.ToScalar();
            return (int)Fraction().gt(t).sum().item<long>();
        }

        /// <summary>log10(fraction + 1e-10), float32 [d_sae], as SAELens saves it.</summary>
        public Tensor LogSparsity()
        {
            using var scope = NewDisposeScope();
            using var eps = 1e-10.ToScalar();
            return Fraction().add(eps, Scalars.One).log10().to(ScalarType.Float32).MoveToOuterDisposeScope();
        }

        public void Dispose()
        {
            _sinceFired.Dispose();
            _current.Dispose();
            _previous.Dispose();
        }
    }
}

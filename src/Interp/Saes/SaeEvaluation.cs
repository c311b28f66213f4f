using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>Settings of <see cref="SaeEvaluation.Run"/>.</summary>
/// <param name="BatchSize">Sequences per forward pass.</param>
/// <param name="ExcludeFirstPosition">Leave position 0 (BOS) out of the sparsity and reconstruction metrics, as SAELens's
/// evals do with <c>exclude_special_tokens</c>; the downstream CE/KL always use every position.</param>
/// <param name="DenseThreshold">A feature active on more than this fraction of positions counts as dense.</param>
public sealed record SaeEvalOptions(int BatchSize = 8, bool ExcludeFirstPosition = false, double DenseThreshold = 0.1)
{
    internal void Validate()
    {
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "batch size must be at least 1");
        if (DenseThreshold is <= 0 or >= 1 || double.IsNaN(DenseThreshold))
            throw new ArgumentOutOfRangeException(nameof(DenseThreshold), DenseThreshold, "the dense threshold is a fraction in (0, 1)");
    }
}

/// <summary>
/// SAELens's evals of one SAE on a token set (<c>sae_lens.evals</c>), with SAELens's names. Sparsity: <c>L0</c> (features
/// &gt; 0 per position), <c>L1</c> (sum of activations). Reconstruction, over positions: <c>ExplainedVariance</c> =
/// 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² (the conventional R², total variance about the per-dimension mean over all positions,
/// summed over dimensions: SAELens's definition after its fix), <c>ExplainedVarianceLegacy</c> = the mean over positions
/// of 1 − ‖x − x̂‖² / ‖x − x̄‖² (SAELens before 5.8), <c>Mse</c> (Σ over dimensions, mean over positions),
/// <c>CosineSimilarity</c>, <c>L2Ratio</c> = mean ‖x̂‖/‖x‖, <c>RelativeReconstructionBias</c> = E‖x̂‖² / E[x̂·x] (Gao et
/// al.). Downstream, next-token CE (logits at p predict token p + 1) clean, with the SAE spliced without the error
/// term, and with the hook zero-ablated: <c>CeLossScore</c> = (CE_zero − CE_sae) / (CE_zero − CE_clean); KL(clean ‖ x)
/// per position, summed over the vocabulary: <c>KlDivScore</c> = (KL_zero − KL_sae) / KL_zero. Features: the fractions
/// never active (dead) and active on more than <see cref="SaeEvalOptions.DenseThreshold"/> of positions (dense).
/// For a transcoder, x is the activation at its output hook and x̂ its output.
/// </summary>
public sealed record SaeEvalResult(
    string HookName,
    string Architecture,
    int DSae,
    long Positions,
    double L0,
    double L1,
    double ExplainedVariance,
    double ExplainedVarianceLegacy,
    double Mse,
    double CosineSimilarity,
    double L2Ratio,
    double RelativeReconstructionBias,
    double CeLossClean,
    double CeLossWithSae,
    double CeLossZeroAblated,
    double CeLossScore,
    double KlDivWithSae,
    double KlDivZeroAblated,
    double KlDivScore,
    double DeadFraction,
    double DenseFraction)
{
    /// <summary>Per-feature firing fraction over the evaluated positions, [d_sae].</summary>
    public required double[] FeatureDensity { get; init; }

    /// <summary>The <c>sae_eval</c> table: one row per result, a column per metric.</summary>
    public static ParquetTable ToTable(IEnumerable<SaeEvalResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        var rows = new ParquetColumns();
        foreach (var r in results)
            rows.Row(("hook_name", r.HookName), ("architecture", r.Architecture), ("d_sae", r.DSae), ("positions", r.Positions),
                ("l0", r.L0), ("l1", r.L1), ("explained_variance", r.ExplainedVariance), ("explained_variance_legacy", r.ExplainedVarianceLegacy),
                ("mse", r.Mse), ("cossim", r.CosineSimilarity), ("l2_ratio", r.L2Ratio), ("relative_reconstruction_bias", r.RelativeReconstructionBias),
                ("ce_loss_without_sae", r.CeLossClean), ("ce_loss_with_sae", r.CeLossWithSae), ("ce_loss_with_ablation", r.CeLossZeroAblated),
                ("ce_loss_score", r.CeLossScore), ("kl_div_with_sae", r.KlDivWithSae), ("kl_div_with_ablation", r.KlDivZeroAblated),
                ("kl_div_score", r.KlDivScore), ("dead_fraction", r.DeadFraction), ("dense_fraction", r.DenseFraction));
        return rows.ToTable();
    }

    /// <summary>This result as a one-row <c>sae_eval</c> table.</summary>
    public ParquetTable ToTable() => ToTable([this]);
}

/// <summary>
/// The sums <see cref="SaeEvaluation"/> reduces to its metrics, over one set of positions (a batch, a work unit of a
/// sharded run): float64 running sums, and per position the squared residual and the input (float32, positions ×
/// d_out), which the legacy explained variance needs once the mean over all positions is known. Statistics of disjoint
/// sets <see cref="Combine"/> into the statistics of their union, so a sweep split across processes reduces to the same
/// metrics.
/// </summary>
public sealed record SaeEvalStatistics
{
    /// <summary>Positions in the sparsity and reconstruction sums.</summary>
    public required long Positions { get; init; }
    /// <summary>Σ‖x − x̂‖².</summary>
    public required double SumResidual { get; init; }
    /// <summary>Σ‖x‖².</summary>
    public required double SumNormSq { get; init; }
    /// <summary>Σ L0.</summary>
    public required double SumL0 { get; init; }
    /// <summary>Σ L1.</summary>
    public required double SumL1 { get; init; }
    /// <summary>Σ cos(x, x̂) (0 where a norm is 0).</summary>
    public required double SumCos { get; init; }
    /// <summary>Σ ‖x̂‖/‖x‖ (0 where ‖x‖ is 0).</summary>
    public required double SumRatio { get; init; }
    /// <summary>Σ‖x̂‖².</summary>
    public required double SumReconSq { get; init; }
    /// <summary>Σ x̂·x.</summary>
    public required double SumReconDot { get; init; }
    /// <summary>Σ x per dimension, [d_out].</summary>
    public required double[] SumX { get; init; }
    /// <summary>Positions each feature fired on, [d_sae].</summary>
    public required long[] Fired { get; init; }
    /// <summary>‖x − x̂‖² per position, [positions].</summary>
    public required double[] Residuals { get; init; }
    /// <summary>x per position, row-major [positions · d_out].</summary>
    public required float[] Inputs { get; init; }
    /// <summary>Σ next-token CE clean, with the SAE spliced, with the hook zero-ablated.</summary>
    public required double CeClean { get; init; }
    /// <inheritdoc cref="CeClean"/>
    public required double CeSae { get; init; }
    /// <inheritdoc cref="CeClean"/>
    public required double CeZero { get; init; }
    /// <summary>Σ KL(clean ‖ with the SAE) and KL(clean ‖ zero-ablated) over every position.</summary>
    public required double KlSae { get; init; }
    /// <inheritdoc cref="KlSae"/>
    public required double KlZero { get; init; }
    /// <summary>Predicted tokens in the CE sums.</summary>
    public required long Predicted { get; init; }
    /// <summary>Positions in the KL sums (every position).</summary>
    public required long PositionsAll { get; init; }

    /// <summary>The statistics of the union of disjoint position sets, summed in the order given (the per-position rows in that order).</summary>
    /// <exception cref="InterpException">No part, or parts of different widths.</exception>
    public static SaeEvalStatistics Combine(IReadOnlyList<SaeEvalStatistics> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0) throw new InterpException("SAE evaluation: no statistics to combine");
        var first = parts[0];
        var sumX = new double[first.SumX.Length];
        var fired = new long[first.Fired.Length];
        double residual = 0, normSq = 0, l0 = 0, l1 = 0, cos = 0, ratio = 0, reconSq = 0, reconDot = 0, ceClean = 0, ceSae = 0, ceZero = 0, klSae = 0, klZero = 0;
        long positions = 0, predicted = 0, all = 0;
        foreach (var p in parts)
        {
            if (p.SumX.Length != sumX.Length || p.Fired.Length != fired.Length)
                throw new InterpException($"SAE evaluation: statistics of d_out {p.SumX.Length} and d_sae {p.Fired.Length} do not combine with d_out {sumX.Length} and d_sae {fired.Length}");
            p.Validate();
            positions += p.Positions; predicted += p.Predicted; all += p.PositionsAll;
            residual += p.SumResidual; normSq += p.SumNormSq; l0 += p.SumL0; l1 += p.SumL1; cos += p.SumCos; ratio += p.SumRatio;
            reconSq += p.SumReconSq; reconDot += p.SumReconDot;
            ceClean += p.CeClean; ceSae += p.CeSae; ceZero += p.CeZero; klSae += p.KlSae; klZero += p.KlZero;
            for (int i = 0; i < sumX.Length; i++) sumX[i] += p.SumX[i];
            for (int f = 0; f < fired.Length; f++) fired[f] += p.Fired[f];
        }
        return new SaeEvalStatistics
        {
            Positions = positions, SumResidual = residual, SumNormSq = normSq, SumL0 = l0, SumL1 = l1, SumCos = cos, SumRatio = ratio,
            SumReconSq = reconSq, SumReconDot = reconDot, SumX = sumX, Fired = fired,
            Residuals = [.. parts.SelectMany(p => p.Residuals)], Inputs = [.. parts.SelectMany(p => p.Inputs)],
            CeClean = ceClean, CeSae = ceSae, CeZero = ceZero, KlSae = klSae, KlZero = klZero, Predicted = predicted, PositionsAll = all,
        };
    }

    internal void Validate()
    {
        if (Residuals.Length != Positions || Inputs.Length != Positions * SumX.Length)
            throw new InterpException($"SAE evaluation statistics of {Positions} positions hold {Residuals.Length} residuals and {Inputs.Length} input values (expected {Positions} and {Positions * SumX.Length})");
    }
}

/// <summary>Evaluates an SAE spliced into a model: sparsity, reconstruction and downstream loss (see <see cref="SaeEvalResult"/>).</summary>
public static class SaeEvaluation
{
    /// <summary>Evaluates <paramref name="sae"/> on <paramref name="tokens"/> [batch, pos] (no padding), in batches.</summary>
    /// <exception cref="InterpException">The model has no next-token logits (an encoder), or the SAE does not fit it.</exception>
    public static SaeEvalResult Run(HookedTransformer model, Sae sae, Tensor tokens, SaeEvalOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new SaeEvalOptions();
        return Finish(sae, Accumulate(model, sae, tokens, options, cancellationToken), options);
    }

    /// <summary>
    /// The sums of <see cref="Run"/> over <paramref name="tokens"/> [batch, pos], for <see cref="SaeEvalStatistics.Combine"/>
    /// with other token sets and <see cref="Finish"/>.
    /// </summary>
    /// <exception cref="InterpException">The model has no next-token logits (an encoder), or the SAE does not fit it.</exception>
    public static SaeEvalStatistics Accumulate(HookedTransformer model, Sae sae, Tensor tokens, SaeEvalOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        options ??= new SaeEvalOptions();
        options.Validate();
        model.EnsureUnembed("SAE evaluation (CE loss)");
        model.EnsureCausal("SAE evaluation (the next-token CE loss)");
        tokens = model.ValidateTokens(tokens);
        if (tokens.shape[1] < 2) throw new InterpException("SAE evaluation needs sequences of at least 2 tokens (the CE loss predicts token p + 1)");
        var c = sae.Config;
        string readAt = c.HookName, writeAt = c.IsTranscoder ? c.HookNameOut! : c.HookName;
        // Fail on a bad hook or width before the first pass.
        using (model.WithSaes(sae)) { }

        var acc = new Accumulator(c.DSae, c.DOut);
        double ceClean = 0, ceSae = 0, ceZero = 0, klSae = 0, klZero = 0;
        long predicted = 0, positionsAll = 0;
        long n = tokens.shape[0];
        for (long start = 0; start < n; start += options.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var batch = tokens.narrow(0, start, Math.Min(options.BatchSize, n - start));   // [b, pos]
            var (clean, cache) = model.RunWithCache(batch, name => name == readAt || name == writeAt);
            using var owned = cache;
            Tensor spliced;
            using (model.WithSaes(sae)) spliced = model.forward(batch);
            var zero = model.RunWithHooks(batch, (writeAt, (a, _) => zeros_like(a)));

            var x = cache[readAt];
            var target = cache[writeAt];
            var acts = sae.Encode(x);                       // [b, pos, d_sae] (hook_z: from [b, pos, h, d])
            var recon = sae.Reconstruct(x);                 // the target's shape
            long first = options.ExcludeFirstPosition ? 1 : 0;
            if (first >= batch.shape[1]) throw new InterpException("ExcludeFirstPosition leaves no position of a 1-token sequence");
            var keep = TensorIndex.Slice(first, null);
            acc.Add(
                target[TensorIndex.Colon, keep].reshape(-1, c.DOut),     // [b·pos', d_out]
                recon[TensorIndex.Colon, keep].reshape(-1, c.DOut),
                acts[TensorIndex.Colon, keep].reshape(-1, c.DSae));     // [b·pos', d_sae]

            var cleanLoss = Metrics.PerTokenLoss(clean, batch).to(ScalarType.Float64);   // [b, pos − 1]
            ceClean += cleanLoss.sum().item<double>();
            ceSae += Metrics.PerTokenLoss(spliced, batch).to(ScalarType.Float64).sum().item<double>();
            ceZero += Metrics.PerTokenLoss(zero, batch).to(ScalarType.Float64).sum().item<double>();
            predicted += cleanLoss.NumberOfElements;
            var logP = nn.functional.log_softmax(clean.to(ScalarType.Float64), -1);   // [b, pos, vocab]
            klSae += Kl(logP, spliced).sum().item<double>();
            klZero += Kl(logP, zero).sum().item<double>();
            positionsAll += batch.shape[0] * batch.shape[1];
        }
        return acc.Statistics(ceClean, ceSae, ceZero, klSae, klZero, predicted, positionsAll);
    }

    /// <summary>The metrics of <paramref name="sae"/> from the sums over every evaluated position.</summary>
    /// <exception cref="InterpException">The statistics cover no position, or are not of this SAE's widths.</exception>
    public static SaeEvalResult Finish(Sae sae, SaeEvalStatistics statistics, SaeEvalOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(statistics);
        options ??= new SaeEvalOptions();
        options.Validate();
        var c = sae.Config;
        if (statistics.SumX.Length != c.DOut || statistics.Fired.Length != c.DSae)
            throw new InterpException($"SAE evaluation: statistics of d_out {statistics.SumX.Length} and d_sae {statistics.Fired.Length}, but the SAE at {c.HookName} has d_out {c.DOut} and d_sae {c.DSae}");
        statistics.Validate();
        var m = Summarise(statistics, options.DenseThreshold);
        var st = statistics;
        double meanCeClean = st.CeClean / st.Predicted, meanCeSae = st.CeSae / st.Predicted, meanCeZero = st.CeZero / st.Predicted;
        double meanKlSae = st.KlSae / st.PositionsAll, meanKlZero = st.KlZero / st.PositionsAll;
        return new SaeEvalResult(c.HookName, c.ArchitectureName, c.DSae, m.Positions, m.L0, m.L1, m.ExplainedVariance, m.ExplainedVarianceLegacy,
            m.Mse, m.CosineSimilarity, m.L2Ratio, m.RelativeReconstructionBias,
            meanCeClean, meanCeSae, meanCeZero, (meanCeZero - meanCeSae) / (meanCeZero - meanCeClean),
            meanKlSae, meanKlZero, (meanKlZero - meanKlSae) / meanKlZero, m.Dead, m.Dense)
        { FeatureDensity = m.Density };
    }

    /// <summary>KL(softmax(clean) ‖ softmax(other)) per position, summed over the vocabulary: [b, pos].</summary>
    private static Tensor Kl(Tensor cleanLogP, Tensor other)
    {
        var otherLogP = nn.functional.log_softmax(other.to(ScalarType.Float64), -1);
        return (cleanLogP.exp() * (cleanLogP - otherLogP)).sum(-1);
    }

    private sealed record Summary(long Positions, double L0, double L1, double ExplainedVariance, double ExplainedVarianceLegacy, double Mse,
        double CosineSimilarity, double L2Ratio, double RelativeReconstructionBias, double Dead, double Dense, double[] Density);

    private static Summary Summarise(SaeEvalStatistics s, double denseThreshold)
    {
        long n = s.Positions;
        int dOut = s.SumX.Length, dSae = s.Fired.Length;
        if (n == 0) throw new InterpException("SAE evaluation saw no position");
        var mean = s.SumX.Select(v => v / n).ToArray();
        double meanSq = mean.Sum(v => v * v);
        double total = s.SumNormSq / n - meanSq;
        // Legacy: per position 1 − ‖x − x̂‖² / ‖x − x̄‖².
        double legacy = 0;
        for (long p = 0; p < n; p++)
        {
            double d2 = 0;
            for (int i = 0; i < dOut; i++) { double d = s.Inputs[p * dOut + i] - mean[i]; d2 += d * d; }
            legacy += 1 - s.Residuals[p] / d2;
        }
        var density = s.Fired.Select(f => (double)f / n).ToArray();
        return new Summary(n, s.SumL0 / n, s.SumL1 / n, 1 - (s.SumResidual / n) / total, legacy / n, s.SumResidual / n,
            s.SumCos / n, s.SumRatio / n, s.SumReconSq / s.SumReconDot,
            density.Count(d => d == 0) / (double)dSae, density.Count(d => d > denseThreshold) / (double)dSae, density);
    }

    /// <summary>Running sums in float64 over the batches of one <see cref="Accumulate"/>.</summary>
    private sealed class Accumulator(int dSae, int dOut)
    {
        private readonly double[] _sumX = new double[dOut];
        private readonly long[] _fired = new long[dSae];
        private readonly List<float> _inputs = new();
        private readonly List<double> _residuals = new();
        private double _sumResidual, _sumNormSq, _sumL0, _sumL1, _sumCos, _sumRatio, _sumReconSq, _sumReconDot;
        private long _n;

        public void Add(Tensor x, Tensor recon, Tensor acts)
        {
            using var scope = NewDisposeScope();
            var a = x.to(ScalarType.Float64);
            var b = recon.to(ScalarType.Float64);
            var diff = a - b;
            var residual = (diff * diff).sum(-1);                    // [n]
            var normA = a.norm(-1);
            var normB = b.norm(-1);
            _residuals.AddRange(residual.data<double>().ToArray());
            _sumResidual += residual.sum().item<double>();
            _sumNormSq += (a * a).sum().item<double>();
            var sx = a.sum([0L]).data<double>().ToArray();
            for (int i = 0; i < dOut; i++) _sumX[i] += sx[i];
            _sumL0 += Sae.L0(acts).sum().item<long>();
            _sumL1 += acts.to(ScalarType.Float64).sum().item<double>();
            _sumCos += ((a * b).sum(-1) / (normA * normB)).nan_to_num().sum().item<double>();
            _sumRatio += (normB / normA).nan_to_num().sum().item<double>();
            _sumReconSq += (b * b).sum().item<double>();
            _sumReconDot += (a * b).sum().item<double>();
            var fired = acts.gt(Scalars.Zero).sum([0L], type: ScalarType.Int64).data<long>().ToArray();
            for (int f = 0; f < dSae; f++) _fired[f] += fired[f];
            _inputs.AddRange(x.to(ScalarType.Float32).contiguous().data<float>().ToArray());
            _n += x.shape[0];
        }

        public SaeEvalStatistics Statistics(double ceClean, double ceSae, double ceZero, double klSae, double klZero, long predicted, long positionsAll) => new()
        {
            Positions = _n, SumResidual = _sumResidual, SumNormSq = _sumNormSq, SumL0 = _sumL0, SumL1 = _sumL1, SumCos = _sumCos, SumRatio = _sumRatio,
            SumReconSq = _sumReconSq, SumReconDot = _sumReconDot, SumX = _sumX, Fired = _fired, Residuals = [.. _residuals], Inputs = [.. _inputs],
            CeClean = ceClean, CeSae = ceSae, CeZero = ceZero, KlSae = klSae, KlZero = klZero, Predicted = predicted, PositionsAll = positionsAll,
        };
    }
}

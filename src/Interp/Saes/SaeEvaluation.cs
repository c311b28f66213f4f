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

/// <summary>Evaluates an SAE spliced into a model: sparsity, reconstruction and downstream loss (see <see cref="SaeEvalResult"/>).</summary>
public static class SaeEvaluation
{
    /// <summary>Evaluates <paramref name="sae"/> on <paramref name="tokens"/> [batch, pos] (no padding), in batches.</summary>
    /// <exception cref="InterpException">The model has no next-token logits (an encoder), or the SAE does not fit it.</exception>
    public static SaeEvalResult Run(HookedTransformer model, Sae sae, Tensor tokens, SaeEvalOptions? options = null, CancellationToken cancellationToken = default)
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

        var m = acc.Finish(options.DenseThreshold);
        double meanCeClean = ceClean / predicted, meanCeSae = ceSae / predicted, meanCeZero = ceZero / predicted;
        double meanKlSae = klSae / positionsAll, meanKlZero = klZero / positionsAll;
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

    /// <summary>Running sums in float64. The legacy explained variance needs the mean over all positions first, so the
    /// per-position residual and input rows are kept (float32, positions × d_out).</summary>
    private sealed class Accumulator(int dSae, int dOut)
    {
        private readonly double[] _sumX = new double[dOut];
        private readonly long[] _fired = new long[dSae];
        private readonly List<float[]> _inputs = new();
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
            var rows = x.to(ScalarType.Float32).contiguous().data<float>().ToArray();
            _inputs.Add(rows);
            _n += x.shape[0];
        }

        public Summary Finish(double denseThreshold)
        {
            if (_n == 0) throw new InterpException("SAE evaluation saw no position");
            var mean = _sumX.Select(s => s / _n).ToArray();
            double meanSq = mean.Sum(v => v * v);
            double total = _sumNormSq / _n - meanSq;
            // Legacy: per position 1 − ‖x − x̂‖² / ‖x − x̄‖².
            double legacy = 0;
            int p = 0;
            foreach (var rows in _inputs)
                for (int r = 0; r < rows.Length / dOut; r++, p++)
                {
                    double d2 = 0;
                    for (int i = 0; i < dOut; i++) { double d = rows[r * dOut + i] - mean[i]; d2 += d * d; }
                    legacy += 1 - _residuals[p] / d2;
                }
            var density = _fired.Select(f => (double)f / _n).ToArray();
            return new Summary(_n, _sumL0 / _n, _sumL1 / _n, 1 - (_sumResidual / _n) / total, legacy / _n, _sumResidual / _n,
                _sumCos / _n, _sumRatio / _n, _sumReconSq / _sumReconDot,
                density.Count(d => d == 0) / (double)dSae, density.Count(d => d > denseThreshold) / (double)dSae, density);
        }
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>How an earlier head's message reaches a later head.</summary>
public enum CompositionKind
{
    /// <summary>Q-composition: the earlier head's output feeds the later head's queries, OV₁·QK₂.</summary>
    Q,
    /// <summary>K-composition: the earlier head's output feeds the later head's keys, OV₁·QK₂ᵀ (induction heads).</summary>
    K,
    /// <summary>V-composition: the earlier head's output feeds the later head's values, OV₁·OV₂.</summary>
    V,
}

/// <summary>
/// Composition scores between heads ("A Mathematical Framework for Transformer Circuits"; TransformerLens's
/// <c>all_composition_scores</c>): ‖W_A·W_B‖_F / (‖W_A‖_F·‖W_B‖_F) with W_A the earlier head's message circuit
/// W_V·W_O and W_B the later head's pattern circuit (Q), its transpose (K) or its message circuit (V), all d_model ×
/// d_model. The score is 1 when W_B reads exactly what W_A writes and falls towards the baseline of random matrices
/// (<see cref="Baseline"/>) when the two are unrelated.
/// </summary>
public static class Composition
{
    /// <summary>
    /// The score of every (earlier head → later head) pair, [from_layer, from_head, to_layer, to_head] in float64,
    /// NaN where the "from" layer is not earlier than the "to" layer. Computed from the factors in d_head × d_head
    /// cores: with A₁ = Q₁·R₁ and B₂ᵀ = Q₂·R₂ (thin QR), ‖A₁·B₁·A₂·B₂‖ = ‖R₁·(B₁·A₂)·R₂ᵀ‖.
    /// </summary>
    /// <exception cref="InterpException">Q- or K-composition on a model with q/k norms, which has no pattern circuit (V-composition works).</exception>
    public static Tensor Scores(HookedTransformer model, CompositionKind kind)
    {
        if (kind != CompositionKind.V) PassChecks.PatternCircuit(model, $"{kind}-composition scores (Composition.Scores)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int layers = model.Config.NLayers, heads = model.Config.NHeads;
        using var left = HeadCircuits.Message(model);
        using var right = Reader(model, kind);
        var result = full([layers, heads, layers, heads], Scalars.NaN, dtype: ScalarType.Float64);
        if (layers < 2) return result.MoveToOuterDisposeScope();

        var a1 = left.A.to(ScalarType.Float64);                        // [L, H, d, e]
        var b1 = left.B.to(ScalarType.Float64);                        // [L, H, e, d]
        var a2 = right.A.to(ScalarType.Float64);
        var b2 = right.B.to(ScalarType.Float64);
        var (_, r1) = linalg.qr(a1, linalg.QRMode.R);                   // [L, H, k, e]
        var (_, r2) = linalg.qr(b2.mT, linalg.QRMode.R);                // [L, H, k, e]
        var leftNorm = left.Norm().to(ScalarType.Float64);              // [L, H]
        var rightNorm = right.Norm().to(ScalarType.Float64);
        long e = a1.shape[^1], d = a1.shape[^2];
        for (int l1 = 0; l1 < layers - 1; l1++)
        {
            using var step = NewDisposeScope();
            int later = layers - l1 - 1;
            // Every B₁·A₂ at once as one 2-D product: [H·e, d] · [d, later·H·e] (broadcasting would copy B₁ per pair).
            var lhs = b1[l1].reshape(heads * e, d);
            var rhs = a2[(l1 + 1)..].permute(2, 0, 1, 3).reshape(d, later * heads * e);
            var middle = lhs.matmul(rhs).reshape(heads, e, later, heads, e).permute(0, 2, 3, 1, 4);   // [H, later, H, e, e]
            var core = r1[l1].unsqueeze(1).unsqueeze(1).matmul(middle).matmul(r2[(l1 + 1)..].mT.unsqueeze(0));
            var norms = core.pow(Scalars.Two).sum([-2, -1]).sqrt();                                           // [H, later, H]
            var denominator = leftNorm[l1].reshape(heads, 1, 1) * rightNorm[(l1 + 1)..].unsqueeze(0);
            result[l1, .., (l1 + 1).., ..] = norms / denominator;
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The later head's matrix that reads the earlier head's output: QK (Q), QKᵀ (K) or OV (V).</summary>
    private static FactoredMatrix Reader(HookedTransformer model, CompositionKind kind)
    {
        if (kind == CompositionKind.V) return HeadCircuits.Message(model);
        using var pattern = HeadCircuits.Pattern(model);
        return kind == CompositionKind.Q ? pattern[[]] : pattern.T;
    }

    /// <summary>
    /// The score of random matrices shaped like the model's (two d_model × d_model products of rank d_head with
    /// standard normal factors), over <paramref name="samples"/> seeded draws: its mean and standard deviation. The
    /// score is scale-free, so the scale of the random factors does not matter and the shapes alone set the baseline:
    /// for Gaussian factors E‖M₁M₂‖² / (E‖M₁‖²·E‖M₂‖²) = 1/d_model, so the baseline is close to 1/√d_model whatever
    /// d_head is (0.125 for d_model 64) — well above zero, which is why it is reported next to every score.
    /// </summary>
    public static (double Mean, double Std) Baseline(ModelConfig config, int samples = 256, long seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 2);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var generator = new Generator((ulong)seed);
        long d = config.DModel, e = config.HeadDim;
        Tensor Draw(params long[] shape) => randn(shape, dtype: ScalarType.Float64, generator: generator);
        using var first = new FactoredMatrix(Draw(samples, d, e), Draw(samples, e, d));
        using var second = new FactoredMatrix(Draw(samples, d, e), Draw(samples, e, d));
        using var product = first.Matmul(second);
        var scores = product.Norm() / (first.Norm() * second.Norm());
        return (scores.mean().item<double>(), scores.std().item<double>());
    }
}

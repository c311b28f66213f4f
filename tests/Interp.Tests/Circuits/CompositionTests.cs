using Interp.Loading;
using Interp.Analysis;
using Interp.Circuits;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Circuits;

/// <summary>Composition scores against dense d_model × d_model matrices, and the induction circuit of the built-in model.</summary>
public sealed class CompositionTests
{
    public static TheoryData<string> Models => new() { "gpt2-like, 3 layers", "llama-like (GQA)" };

    private static HookedTransformer Model(string name) => TestModels.Random(
        name.StartsWith("gpt2", StringComparison.Ordinal) ? TestModels.Gpt2Like with { NLayers = 3 } : TestModels.LlamaLike with { NLayers = 3 }, seed: 31);

    [Theory, MemberData(nameof(Models))]
    public void Scores_equal_the_dense_definition_for_every_earlier_later_pair(string name)
    {
        using var model = Model(name);
        using var scope = NewDisposeScope();
        var cfg = model.Config;
        int group = cfg.NHeads / cfg.KvHeads;
        // Dense float64 circuits straight from the weights: OV = W_V·W_O, QK = W_Q·W_Kᵀ, GQA by explicit index.
        Tensor W(Tensor t) => t.detach().to(ScalarType.Float64);
        Tensor Ov(int l, int h) => W(model.Blocks[l].Attn.W_V[h / group]).matmul(W(model.Blocks[l].Attn.W_O[h]));
        Tensor Qk(int l, int h) => W(model.Blocks[l].Attn.W_Q[h]).matmul(W(model.Blocks[l].Attn.W_K[h / group]).T);
        double Score(Tensor a, Tensor b) => (linalg.norm(a.matmul(b)) / (linalg.norm(a) * linalg.norm(b))).item<double>();

        foreach (var kind in Enum.GetValues<CompositionKind>())
        {
            var scores = Composition.Scores(model, kind);
            Assert.Equal([cfg.NLayers, cfg.NHeads, cfg.NLayers, cfg.NHeads], scores.shape);
            for (int l1 = 0; l1 < cfg.NLayers; l1++)
                for (int h1 = 0; h1 < cfg.NHeads; h1++)
                    for (int l2 = 0; l2 < cfg.NLayers; l2++)
                        for (int h2 = 0; h2 < cfg.NHeads; h2++)
                        {
                            double actual = scores[l1, h1, l2, h2].item<double>();
                            if (l1 >= l2) { Assert.True(double.IsNaN(actual), $"{kind} {l1}.{h1} → {l2}.{h2} is not earlier → later but scored {actual}"); continue; }
                            var reader = kind switch { CompositionKind.Q => Qk(l2, h2), CompositionKind.K => Qk(l2, h2).T, _ => Ov(l2, h2) };
                            double expected = Score(Ov(l1, h1), reader);
                            Assert.True(Math.Abs(expected - actual) < 1e-6, $"{kind} {l1}.{h1} → {l2}.{h2}: dense {expected} vs {actual}");
                        }
        }
    }

    /// <summary>
    /// For Gaussian factors E‖M₁M₂‖² = d³e² and E‖M₁‖² = E‖M₂‖² = d²e (M = A·B, A d × e, B e × d), so the score
    /// ‖M₁M₂‖/(‖M₁‖‖M₂‖) concentrates at 1/√d_model whatever d_head is. The measured mean must lie within four of its
    /// standard errors of that value (its bias at these sizes is well under one standard error: 0.177 − 0.00138 at
    /// d = 32, e = 8 over 4,096 draws).
    /// </summary>
    [Theory]
    [InlineData(32, 4, 5)]     // d_model 32, d_head 8
    [InlineData(64, 4, 6)]     // d_model 64, d_head 16
    [InlineData(64, 8, 7)]     // d_model 64, d_head 8: the same baseline, another rank
    public void Baseline_is_one_over_root_d_model_within_its_standard_error(int dModel, int heads, long seed)
    {
        var cfg = TestModels.Gpt2Like with { DModel = dModel, NHeads = heads };
        const int samples = 256;
        var (mean, std) = Composition.Baseline(cfg, samples, seed);
        Assert.Equal((mean, std), Composition.Baseline(cfg, samples, seed));   // seeded: reproducible
        double standardError = std / Math.Sqrt(samples), expected = 1 / Math.Sqrt(dModel);
        Assert.True(std > 0 && std < 0.2 * expected, $"std {std} of the random scores");
        Assert.True(Math.Abs(mean - expected) <= 4 * standardError,
            $"baseline {mean:F5} ± {standardError:F5} (standard error) is not 1/√{dModel} = {expected:F5}");
    }

    [Fact]
    public void A_one_layer_model_has_no_pairs()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like with { NLayers = 1 });
        using var scores = Composition.Scores(model, CompositionKind.K);
        Assert.True(scores.isnan().all().item<bool>());
    }

    [Fact]
    public void Built_in_previous_token_head_K_composes_most_with_an_induction_head()
    {
        using var loaded = BuiltInModel.Load();
        var model = loaded.Model;
        model.ProcessWeights(WeightProcessingOptions.Default);
        using var scope = NewDisposeScope();
        // Roles from behaviour, not from weights: previous-token heads of layer 0 (the built-in model has two, 0.54 each),
        // induction heads of layer 1.
        var input = HeadDetection.RepeatedRandomTokens(loaded, 32, 24, seed: 0, firstToken: InductionRecipe.FirstTokenFor(model.Config));
        var behaviour = HeadDetection.Score(model, input.Tokens, input.Half);
        var prev = behaviour.Best(HeadScoreKind.PreviousToken, 0);

        var k = Composition.Scores(model, CompositionKind.K);
        var (mean, std) = Composition.Baseline(model.Config);
        var pairs = from l1 in new[] { 0 } from h1 in new[] { 0, 1 } from h2 in new[] { 0, 1 } select (From: h1, To: h2, Score: k[l1, h1, 1, h2].item<double>());
        var largest = pairs.MaxBy(p => p.Score);
        Assert.True(behaviour.Values[HeadScoreKind.PreviousToken][0, largest.From] >= 0.5 * prev.Score);
        Assert.True(behaviour.Values[HeadScoreKind.Induction][1, largest.To] > 0.8);
        Assert.True(largest.Score > mean + 10 * std, $"K-composition {largest.Score} vs random baseline {mean} ± {std}");
        // Every induction head reads the previous-token head above random, and copies.
        var copying = CircuitScores.Copying(model);
        for (int h = 0; h < 2; h++)
        {
            if (behaviour.Values[HeadScoreKind.Induction][1, h] < 0.8) continue;
            Assert.True(k[prev.Layer, prev.Head, 1, h].item<double>() > mean + 5 * std);
            Assert.True(copying[1, h] > 0.7, $"head 1.{h} copying score {copying[1, h]}");
        }
    }
}

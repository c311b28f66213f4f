using Interp.Loading;
using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>Direct logit attribution: the components sum to the model's own logit, and the induction head carries the repeated half.</summary>
public sealed class HeadAttributionTests
{
    [Theory]
    [MemberData(nameof(AnalysisModels.WithProcessing), MemberType = typeof(AnalysisModels))]
    public void Components_sum_to_the_models_logit(string name, bool processed)
    {
        using var model = AnalysisModels.Build(name, processed);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = AnalysisModels.Tokens(model);
        var logits = model.forward(tokens);                      // the model's own logits, from a plain forward pass
        var a = HeadAttribution.Run(model, tokens);
        var expected = logits[.., ..^1].gather(-1, tokens[.., 1..].unsqueeze(-1)).squeeze(-1).to(ScalarType.Float64);
        double err = (a.Total() - expected).abs().max().item<double>();
        Assert.True(err < 1e-4, $"{name}: |Σ components − logit| = {err}");
        var cfg = model.Config;
        int expectedComponents = 1 + (model.PosEmbed is null ? 0 : 1) + cfg.NLayers * (cfg.NHeads + (cfg.UseBias ? 1 : 0) + (cfg.AttentionOnly ? 0 : 1))
                                 + (cfg.Norm == NormKind.LayerNorm ? 1 : 0) + (cfg.UseBias ? 1 : 0);
        Assert.Equal(expectedComponents, a.Components.Count);
        Assert.Equal([(long)expectedComponents, tokens.shape[0], tokens.shape[1] - 1], a.Values.shape);

        // A logit difference against arbitrary other tokens sums to the model's difference too.
        var wrong = (tokens[.., ..^1] * 7 + 3) % cfg.DVocab;
        var (runLogits, cache) = model.RunWithCache(tokens, HeadAttribution.CacheFilter);
        using (cache)
        {
            var d = HeadAttribution.NextToken(model, cache, runLogits, tokens, wrong);
            var expectedDiff = expected - logits[.., ..^1].gather(-1, wrong.unsqueeze(-1)).squeeze(-1).to(ScalarType.Float64);
            double diffErr = (d.Total() - expectedDiff).abs().max().item<double>();
            Assert.True(diffErr < 1e-4, $"{name}: logit difference |Σ − actual| = {diffErr}");
            // The cached run sums the per-head writes (hook_result) where the plain pass takes one product: two float32
            // summation orders, apart by some ulp of the logits' scale (the difference of two large logits is small, its
            // error is not): within 64 ulp (1.4e-5 for the built-in model with OpenBLAS's AVX-512 kernels).
            double logitErr = (d.Logit - expectedDiff).abs().max().item<double>(), scale = logits.abs().max().item<float>();
            Assert.True(logitErr < Math.Max(1e-5, 64 * scale * Math.Pow(2, -23)), $"{name}: |cached run's logit difference − plain forward's| = {logitErr} at logit scale {scale}");

            // One fixed pair of tokens at every position: the direction W_U[:, 3] − W_U[:, 4].
            var pair = HeadAttribution.Attribute(model, cache, runLogits, 3, 4);
            var expectedPair = (logits[.., .., 3] - logits[.., .., 4]).to(ScalarType.Float64);
            Assert.True((pair.Total() - expectedPair).abs().max().item<double>() < 1e-4, $"{name}: fixed pair");
        }
    }

    [Fact]
    public void A_head_contribution_is_its_normalised_write_read_by_the_unembedding()
    {
        // An independent reference for one head on gpt2-like weights with non-trivial LN gain and bias: centre the
        // head's write, divide by ln_final's scale recomputed from the final stream, multiply by w, dot with W_U[:, t].
        using var model = AnalysisModels.Build("gpt2", processed: false);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = AnalysisModels.Tokens(model);
        var (logits, cache) = model.RunWithCache(tokens, n => HeadAttribution.CacheFilter(n) || n.EndsWith("hook_resid_post"));
        using (cache)
        {
            var a = HeadAttribution.NextToken(model, cache, logits, tokens);
            int layer = 1, head = 2;
            var write = cache[HookNames.Result(layer)][.., .., head].to(ScalarType.Float64);             // [batch, pos, d_model]
            var final = cache[HookNames.ResidPost(model.Config.NLayers - 1)].to(ScalarType.Float64);
            var centred = final - final.mean([-1], keepdim: true);
            var scale = (centred.pow(2).mean([-1], keepdim: true) + model.Config.NormEps).sqrt();
            var normed = (write - write.mean([-1], keepdim: true)) / scale * model.LnFinal!.W.to(ScalarType.Float64);
            var wU = model.Unembed.W_U.to(ScalarType.Float64);
            var targets = tokens[.., 1..];
            for (int b = 0; b < tokens.shape[0]; b++)
                for (int p = 0; p < targets.shape[1]; p++)
                {
                    double expected = (normed[b, p] * wU[.., targets[b, p].item<long>()]).sum().item<double>();
                    double actual = a.Values[a.IndexOf(new ResidualComponent(ComponentKind.Head, layer, head)), b, p].item<double>();
                    Assert.Equal(expected, actual, 1e-5);
                }
        }
    }

    [Fact]
    public void Built_in_model_induction_head_found_by_behaviour_ranks_first_on_the_repeated_half()
    {
        using var loaded = BuiltInModel.Load();
        var model = loaded.Model;
        model.ProcessWeights(WeightProcessingOptions.Default);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = HeadDetection.RepeatedRandomTokens(loaded, 32, 24, seed: 11, InductionRecipe.FirstTokenFor(model.Config));
        var induction = HeadDetection.Score(model, input.Tokens, input.Half).Best(HeadScoreKind.Induction);
        var a = HeadAttribution.Run(model, input.Tokens);
        var map = a.HeadMap(model.Config, RepeatedHalves.Of(input).Repeated);
        var ranked = Enumerable.Range(0, 2).SelectMany(l => Enumerable.Range(0, 2).Select(h => (l, h))).OrderByDescending(x => map[x.l, x.h]).ToArray();
        Assert.Equal((induction.Layer, induction.Head), ranked[0]);
        Assert.True(map[induction.Layer, induction.Head] > 1.0, $"induction head attribution {map[induction.Layer, induction.Head]}");
    }

    [Fact]
    public void Bad_requests_name_the_value_at_fault()
    {
        using var model = AnalysisModels.Build("gpt2", processed: false);
        using var scope = NewDisposeScope();
        var tokens = AnalysisModels.Tokens(model);
        var (logits, cache) = model.RunWithCache(tokens, HeadAttribution.CacheFilter);
        using (cache)
        {
            var bad = tokens[.., 1..].clone();
            bad[1, 3] = 50;
            var e = Assert.Throws<InterpException>(() => HeadAttribution.Attribute(model, cache, logits, bad));
            Assert.Contains("correct token id 50 at [batch 1, position 3] is outside the vocabulary [0, 50)", e.Message);
            e = Assert.Throws<InterpException>(() => HeadAttribution.Attribute(model, cache, logits, tokens[.., 1..], tokens[.., 2..]));
            Assert.Contains("wrong tokens [2, 10] must have the shape of the correct ones [2, 11]", e.Message);
            e = Assert.Throws<InterpException>(() => HeadAttribution.Attribute(model, cache, logits, cat([tokens, tokens[.., ..1]], 1)));
            Assert.Contains("correct tokens must be [batch 2, n ≤ 12]", e.Message);
        }
        // Without hook_result (RunWithCache's default) nor hook_z, the error names the missing hook.
        var (_, partial) = model.RunWithCache(tokens, n => n is HookNames.Embed or HookNames.PosEmbed or HookNames.LnFinalScale || n.EndsWith("mlp_out"));
        using (partial)
        {
            var e = Assert.Throws<HookException>(() => HeadAttribution.Attribute(model, partial, logits, tokens[.., 1..]));
            Assert.Contains("hook 'blocks.0.attn.hook_result': not in the cache, and neither is blocks.0.attn.hook_z", e.Message);
        }
    }
}

using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>The logit lens: the model itself at the last layer, each earlier stream read through its own normalisation.</summary>
public sealed class LogitLensTests
{
    public static TheoryData<string, bool> Models() => AnalysisModels.WithProcessing();

    [Theory]
    [MemberData(nameof(Models))]
    public void At_the_final_stream_the_lens_is_the_model_exactly(string name, bool processed)
    {
        using var model = AnalysisModels.Build(name, processed);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = AnalysisModels.Tokens(model);
        var logits = model.forward(tokens);
        var (_, cache) = model.RunWithCache(tokens, LogitLens.CacheFilter);
        using (cache)
        {
            var (lensLogits, layers) = LogitLens.Logits(model, cache);
            Assert.Equal(model.Config.NLayers + 1, layers.Count);
            Assert.Equal("final_post", layers[^1].Label);
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(lensLogits[^1], logits));            // bit for bit

            var lens = LogitLens.NextToken(model, cache, tokens);
            var targets = tokens[.., 1..].unsqueeze(-1);
            var probabilities = logits[.., ..^1].softmax(-1).gather(-1, targets).squeeze(-1).to(ScalarType.Float64);
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(lens.Probability[^1], probabilities));
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(lens.Logit[^1], logits[.., ..^1].gather(-1, targets).squeeze(-1)));

            // Rank by brute force: 1 + the number of tokens with a strictly larger logit, at every layer.
            for (int l = 0; l < layers.Count; l++)
                for (int b = 0; b < tokens.shape[0]; b++)
                    for (int p = 0; p < tokens.shape[1] - 1; p++)
                    {
                        var row = lensLogits[l, b, p].data<float>().ToArray();
                        float own = row[tokens[b, p + 1].item<long>()];
                        Assert.Equal(1 + row.Count(v => v > own), lens.Rank[l, b, p].item<double>());
                    }
        }
    }

    [Fact]
    public void An_earlier_stream_is_normalised_with_its_own_statistics()
    {
        // Independent reference: torch's layer_norm with ln_final's gain and shift on the stream entering block 1.
        using var model = AnalysisModels.Build("gpt2", processed: false);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = AnalysisModels.Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, LogitLens.CacheFilter);
        using (cache)
        {
            var (lensLogits, _) = LogitLens.Logits(model, cache);
            var stream = cache[HookNames.ResidPre(1)];
            var normed = nn.functional.layer_norm(stream, [model.Config.DModel], model.LnFinal!.W, model.LnFinal.B, model.Config.NormEps);
            var expected = normed.matmul(model.Unembed.W_U) + model.Unembed.b_U;
            TensorAssert.Close(expected, lensLogits[1], 1e-4, "lens at 1_pre");
            // The stack with apply_ln at the unembedding is the same normalisation.
            TensorAssert.Close(normed, cache.AccumulatedResid(model, applyLn: true).Values[1], 1e-5, "accumulated_resid(apply_ln)");
        }
    }

    [Fact]
    public void Bad_targets_are_clear_errors()
    {
        using var model = AnalysisModels.Build("gpt2", processed: false);
        using var scope = NewDisposeScope();
        var tokens = AnalysisModels.Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, LogitLens.CacheFilter);
        using (cache)
        {
            Assert.Contains("targets must be [batch 2, n ≤ 12]; got [2, 13]",
                Assert.Throws<InterpException>(() => LogitLens.Target(model, cache, cat([tokens, tokens[.., ..1]], 1))).Message);
            Assert.Contains("token id 77 at [batch 0, pos 0] is outside the vocabulary [0, 50)",
                Assert.Throws<InvalidTokensException>(() => LogitLens.Target(model, cache, full(2, 3, 77L))).Message);
            Assert.Contains("pos ≥ 2", Assert.Throws<InterpException>(() => LogitLens.NextToken(model, cache, tokens[.., ..1])).Message);
        }
    }
}

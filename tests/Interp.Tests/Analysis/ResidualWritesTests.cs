using Interp.Analysis;
using Interp.Hooks;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>Residual writes: norms, cosines and projections against the cached activations they describe.</summary>
public sealed class ResidualWritesTests
{
    [Theory]
    [InlineData("gpt2")]
    [InlineData("stories260K")]
    [InlineData("builtin")]
    public void Writes_are_measured_against_the_stream_they_join(string name)
    {
        using var model = AnalysisModels.Build(name, processed: false);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var cfg = model.Config;
        var tokens = AnalysisModels.Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, _ => true);
        using (cache)
        {
            var directions = ResidualWrites.UnembedDirections(model, tokens[.., 1..]);   // [batch, pos − 1, d_model]
            var writes = ResidualWrites.Measure(model, cache, directions);
            int expected = 1 + (model.PosEmbed is null ? 0 : 1) + cfg.NLayers * (cfg.NHeads + 1 + (cfg.AttentionOnly ? 0 : 1));
            Assert.Equal(expected, writes.Count);
            Assert.Null(writes[0].Cosine);                                                   // the token embedding joins nothing
            var n = tokens.shape[1] - 1;
            var unit = directions.to(ScalarType.Float64) / directions.to(ScalarType.Float64).norm(-1, keepdim: true);
            ResidualWrite Of(ComponentKind kind, int layer, int head = -1) => writes.Single(w => w.Component == new ResidualComponent(kind, layer, head));
            for (int l = 0; l < cfg.NLayers; l++)
            {
                var attnOut = cache[HookNames.AttnOut(l)][.., ..(int)n].to(ScalarType.Float64);
                var pre = cache[HookNames.ResidPre(l)][.., ..(int)n].to(ScalarType.Float64);
                var a = Of(ComponentKind.AttnOut, l);
                TensorAssert.Close(attnOut.norm(-1), a.Norm, 1e-9, "norm");
                TensorAssert.Close(nn.functional.cosine_similarity(attnOut, pre, -1), a.Cosine!, 1e-9, "cosine with resid_pre");
                // Projection is linear: the heads' projections plus b_O's are the layer's.
                var heads = Enumerable.Range(0, cfg.NHeads).Select(h => Of(ComponentKind.Head, l, h).Projection!).Aggregate((x, y) => x + y);
                var bias = (model.Blocks[l].Attn.b_O.to(ScalarType.Float64) * unit).sum(-1);
                TensorAssert.Close(a.Projection!, heads + bias, 1e-4, "Σ head projections + b_O");
                if (!cfg.AttentionOnly)
                    TensorAssert.Close(nn.functional.cosine_similarity(cache[HookNames.MlpOut(l)][.., ..(int)n].to(ScalarType.Float64),
                        cache[HookNames.ResidMid(l)][.., ..(int)n].to(ScalarType.Float64), -1), Of(ComponentKind.MlpOut, l).Cosine!, 1e-9, "mlp cosine with resid_mid");
            }
            Assert.All(writes.Where(w => w.Cosine is not null), w => Assert.True((w.Cosine!.abs() <= 1 + 1e-12).all().item<bool>()));

            // One direction for every position, and none at all.
            var single = ResidualWrites.Measure(model, cache, model.Unembed.W_U[.., 5]);
            Assert.Equal([tokens.shape[0], tokens.shape[1]], single[0].Norm.shape);
            Assert.Null(ResidualWrites.Measure(model, cache)[0].Projection);
        }
    }

    [Fact]
    public void Directions_of_the_wrong_shape_are_refused()
    {
        using var model = AnalysisModels.Build("gpt2", processed: false);
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(AnalysisModels.Tokens(model), ResidualWrites.CacheFilter);
        using (cache)
        {
            var e = Assert.Throws<InterpException>(() => ResidualWrites.Measure(model, cache, zeros(2, 3, 7)));
            Assert.Contains("directions must be [32] or [batch 2, n ≤ 12, 32]; got [2, 3, 7]", e.Message);
        }
    }
}

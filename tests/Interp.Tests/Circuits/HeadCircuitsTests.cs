using Interp.Circuits;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Circuits;

/// <summary>The pattern and message circuits reproduce the model's own attention scores and head writes exactly.</summary>
public sealed class HeadCircuitsTests
{
    public static TheoryData<string> Models => new() { "gpt2-like", "llama-like (rotary halves, GQA)", "llama-like (rotary pairs, partial)" };

    private static HookedTransformer Model(string name) => TestModels.Random(name switch
    {
        "gpt2-like" => TestModels.Gpt2Like with { UseBias = false },
        "llama-like (rotary halves, GQA)" => TestModels.LlamaLike,
        _ => TestModels.LlamaLike with { RotaryStyle = RotaryStyle.AdjacentPairs, RotaryDim = 4 },
    }, seed: 21);

    [Theory, MemberData(nameof(Models))]
    public void Pattern_circuit_gives_the_attention_scores(string name)
    {
        using var model = Model(name);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 1, 9);
        var (_, cache) = model.RunWithCache(tokens);
        using (cache)
        {
            var cfg = model.Config;
            for (int l = 0; l < cfg.NLayers; l++)
            {
                var x = model.Blocks[l].Ln1!.forward(cache[HookNames.ResidPre(l)])[0];        // the attention input [pos, d_model]
                var scores = cache[HookNames.AttnScores(l)][0];                               // [head, q, k]
                for (int i = 0; i < 9; i++)
                    for (int j = 0; j <= i; j++)
                    {
                        using var qk = HeadCircuits.PatternAtOffset(model, i - j);
                        for (int h = 0; h < cfg.NHeads; h++)
                        {
                            // x_i · QK(i − j) · x_jᵀ, computed through the factors only.
                            var viaCircuit = qk[l, h].LeftMatmul(x[i].unsqueeze(0)).Matmul(x[j].unsqueeze(1)).AB() / Math.Sqrt(cfg.HeadDim);
                            double expected = scores[h, i, j].item<float>(), actual = viaCircuit.item<float>();
                            Assert.True(Math.Abs(expected - actual) <= 1e-4 * (1 + Math.Abs(expected)), $"head {l}.{h} ({i}, {j}): {expected} vs {actual}");
                        }
                    }
            }
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Message_circuit_gives_each_heads_write(string name)
    {
        using var model = Model(name);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 1, 7);
        var (_, cache) = model.RunWithCache(tokens, n => true);
        using var ov = HeadCircuits.Message(model);
        using (cache)
        {
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                var x = model.Blocks[l].Ln1!.forward(cache[HookNames.ResidPre(l)])[0];         // [pos, d_model]
                for (int h = 0; h < model.Config.NHeads; h++)
                {
                    // result = pattern · (x · OV): what each position reads, moved through the message circuit.
                    var expected = cache[HookNames.Pattern(l)][0, h].matmul(ov[l, h].LeftMatmul(x).AB());
                    TensorAssert.Close(cache[HookNames.Result(l)][0, .., h], expected, 1e-4, $"head {l}.{h}");
                }
            }
        }
    }

    [Fact]
    public void Circuits_are_layer_by_head_and_low_rank()
    {
        using var model = Model("llama-like (rotary halves, GQA)");
        using var qk = HeadCircuits.Pattern(model);
        using var ov = HeadCircuits.Message(model);
        Assert.Equal([2L, 4, 32, 32], qk.Shape);
        Assert.Equal(8, qk.Rank);
        Assert.Equal([2L, 4, 32, 32], ov.Shape);
        // Grouped-query attention: query heads 0 and 1 share key head 0, so their circuits share the key factor.
        Assert.True(qk.B[0, 0].eq(qk.B[0, 1]).all().item<bool>());
        Assert.False(qk.B[0, 1].eq(qk.B[0, 2]).all().item<bool>());
        using var s = ov.Svd();
        Assert.Equal([2L, 4, 8], s.S.shape);
    }
}

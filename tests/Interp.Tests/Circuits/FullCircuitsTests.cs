using Interp.Circuits;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Circuits;

/// <summary>Full circuits through tokens and positions, their scores and spectra, against dense float64 matrices.</summary>
public sealed class FullCircuitsTests
{
    private static Tensor W(Tensor t) => t.detach().to(ScalarType.Float64);

    [Fact]
    public void Full_circuits_equal_the_dense_products()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 4);
        using var scope = NewDisposeScope();
        var attn = model.Blocks[1].Attn;
        var we = W(model.Embed.W_E);
        var qk = W(attn.W_Q[2]).matmul(W(attn.W_K[2]).T);
        var ov = W(attn.W_V[2]).matmul(W(attn.W_O[2]));
        using var pattern = FullCircuits.Pattern(model);
        using var message = FullCircuits.Message(model);
        using var positional = FullCircuits.PositionalPattern(model);
        Assert.Equal([2, 4, 50, 50], pattern.Shape);
        Assert.Equal([2, 4, 24, 24], positional.Shape);
        TensorAssert.Close(we.matmul(qk).matmul(we.T), W(pattern[1, 2].AB()), 1e-4);
        TensorAssert.Close(we.matmul(ov).matmul(W(model.Unembed.W_U)), W(message[1, 2].AB()), 1e-4);
        var wpos = W(model.PosEmbed!.W_pos);
        TensorAssert.Close(wpos.matmul(qk).matmul(wpos.T), W(positional[1, 2].AB()), 1e-4);
    }

    [Fact]
    public void Positional_pattern_of_a_rotary_model_is_a_clear_error()
    {
        using var model = TestModels.Random(TestModels.LlamaLike);
        var ex = Assert.Throws<InterpException>(() => FullCircuits.PositionalPattern(model));
        Assert.Contains("Rotary", ex.Message);
        Assert.Contains("PatternAtOffset", ex.Message);
    }

    [Fact]
    public void Eigenvalue_scores_and_full_spectra_match_dense_matrices()
    {
        using var model = TestModels.Random(TestModels.LlamaLike, seed: 12);   // GQA, untied unembedding
        using var scope = NewDisposeScope();
        var cfg = model.Config;
        var same = CircuitScores.SameToken(model);
        var copying = CircuitScores.Copying(model);
        var fullPattern = CircuitScores.FullSpectra(model, Circuit.Pattern);
        var fullMessage = CircuitScores.FullSpectra(model, Circuit.Message);
        var we = W(model.Embed.W_E);
        var wu = W(model.Unembed.W_U);
        int group = cfg.NHeads / cfg.KvHeads;
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < cfg.NHeads; h++)
            {
                var attn = model.Blocks[l].Attn;
                var p = we.matmul(W(attn.W_Q[h])).matmul(W(attn.W_K[h / group]).T).matmul(we.T);
                var m = we.matmul(W(attn.W_V[h / group])).matmul(W(attn.W_O[h])).matmul(wu);
                foreach (var (dense, score, spectrum, what) in new[] { (p, same[l, h], fullPattern[l, h], "pattern"), (m, copying[l, h], fullMessage[l, h], "message") })
                {
                    var eig = linalg.eigvals(dense);
                    double expected = real(eig).sum().item<double>() / eig.abs().sum().item<double>();
                    Assert.True(Math.Abs(expected - score) < 1e-6, $"{what} {l}.{h}: dense eigen score {expected} vs {score}");
                    var sv = linalg.svdvals(dense).narrow(0, 0, spectrum.SingularValues.Length).data<double>().ToArray();
                    for (int i = 0; i < sv.Length; i++)
                        Assert.True(Math.Abs(sv[i] - spectrum.SingularValues[i]) <= 1e-5 * sv[0], $"{what} {l}.{h} σ{i}: dense {sv[i]} vs {spectrum.SingularValues[i]}");
                    Assert.Equal(linalg.norm(dense).item<double>(), spectrum.FrobeniusNorm, 1e-6 * spectrum.FrobeniusNorm);
                }
            }
    }

    [Fact]
    public void Effective_rank_is_exact_on_known_spectra()
    {
        Assert.Equal(4, new CircuitSpectrum([2, 2, 2, 2]).EffectiveRank, 1e-12);
        Assert.Equal(1, new CircuitSpectrum([3, 0, 0]).EffectiveRank, 1e-12);
        Assert.Equal(0, new CircuitSpectrum([0, 0]).EffectiveRank);
        var s = new CircuitSpectrum([3, 4]);
        Assert.Equal(5, s.FrobeniusNorm, 1e-12);
        Assert.Equal(3, s.SpectralNorm);
        // Two values with weights 3/7 and 4/7: exp(entropy).
        Assert.Equal(Math.Exp(-(3.0 / 7 * Math.Log(3.0 / 7) + 4.0 / 7 * Math.Log(4.0 / 7))), s.EffectiveRank, 1e-12);
    }

    [Fact]
    public void Top_entries_stream_over_blocks_and_equal_a_dense_sort()
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(3);
        var a = randn([37, 5], generator: gen);
        var b = randn([5, 29], generator: gen);
        using var m = new FactoredMatrix(a, b);
        var dense = a.matmul(b).to(ScalarType.Float64).data<double>().ToArray();
        foreach (bool largest in new[] { true, false })
        {
            // 100 elements per block = 3 rows at a time: 13 blocks.
            var top = m.TopEntries(12, largest, blockElements: 100);
            var expected = dense.Select((v, i) => (v, i)).OrderBy(x => largest ? -x.v : x.v).Take(12).ToArray();
            Assert.Equal(expected.Select(x => ((long)(x.i / 29), (long)(x.i % 29))), top.Select(t => (t.Row, t.Column)));
            for (int i = 0; i < 12; i++) Assert.Equal(expected[i].v, top[i].Value, 1e-5);
        }
        using var batch = new FactoredMatrix(randn([2, 4, 3]), randn([2, 3, 4]));
        Assert.Contains("index it first", Assert.Throws<InterpException>(() => batch.TopEntries(3)).Message);
    }
}

using Interp.Circuits;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Circuits;

/// <summary>Copying scores against a dense computation, and on the built-in model's induction heads.</summary>
public sealed class CircuitScoresTests
{
    [Fact]
    public void Copying_score_matches_the_dense_eigenvalues_of_the_full_message_circuit()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 8);
        using var scope = NewDisposeScope();
        var scores = CircuitScores.Copying(model);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++)
            {
                var attn = model.Blocks[l].Attn;
                // Dense d_vocab × d_vocab matrix (fine at vocab 50): W_E · W_V · W_O · W_U, in float64.
                var full = model.Embed.W_E.detach().to(ScalarType.Float64).matmul(attn.W_V[h].detach().to(ScalarType.Float64))
                    .matmul(attn.W_O[h].detach().to(ScalarType.Float64)).matmul(model.Unembed.W_U.detach().to(ScalarType.Float64));
                var eig = linalg.eigvals(full);
                double expected = real(eig).sum().item<double>() / eig.abs().sum().item<double>();
                Assert.True(Math.Abs(expected - scores[l, h]) < 1e-4, $"head {l}.{h}: dense {expected} vs factored {scores[l, h]}");
            }
    }

    [Fact]
    public void Induction_heads_of_the_built_in_model_copy()
    {
        using var loaded = BuiltInModel.Load();
        var scores = CircuitScores.Copying(loaded.Model);
        // Both layer-1 heads do induction; their message circuits copy the attended token to the output.
        Assert.True(scores[1, 0] > 0.7, $"head 1.0 copying score {scores[1, 0]}");
        Assert.True(scores[1, 1] > 0.7, $"head 1.1 copying score {scores[1, 1]}");
    }
}

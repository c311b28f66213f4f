using Interp.Loading;
using Interp.Circuits;
using Interp.Models;
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
    public void The_induction_head_of_the_built_in_model_copies()
    {
        using var loaded = BuiltInModel.Load();
        using var scope = NewDisposeScope();
        var input = Interp.Analysis.HeadDetection.RepeatedRandomTokens(loaded, 32, 24, seed: 0, firstToken: InductionRecipe.FirstTokenFor(loaded.Model.Config));
        var ind = Interp.Analysis.HeadDetection.Score(loaded.Model, input.Tokens, input.Half).Best(Interp.Analysis.HeadScoreKind.Induction, 1);
        // Its message circuit copies the attended token to the output.
        var scores = CircuitScores.Copying(loaded.Model);
        Assert.True(scores[ind.Layer, ind.Head] > 0.7, $"head {ind.Layer}.{ind.Head} copying score {scores[ind.Layer, ind.Head]}");
    }

    [Fact]
    public void Full_message_circuits_give_the_same_copying_score_through_either_route()
    {
        using var model = TestModels.Random(TestModels.LlamaLike, seed: 2);   // GQA, untied unembedding
        using var scope = NewDisposeScope();
        var scores = CircuitScores.Copying(model);
        // The vocabulary-sized factors W_E·W_V and W_O·W_U, eigenvalues from their r × r product B·A.
        using var full = FullCircuits.Message(model);
        var eig = full.Eigenvalues();
        var viaFull = real(eig).sum(-1) / eig.abs().sum(-1);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++) Assert.Equal(viaFull[l, h].item<float>(), scores[l, h], 1e-4);
    }
}

/// <summary>Copying scores at GPT-2-small scale; alone in its collection so that the peak-memory reading is its own.</summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class CopyingScoresAtScaleTests
{
    [Fact]
    public void All_144_heads_of_a_gpt2_small_shaped_model_without_a_vocab_squared_matrix()
    {
        var cfg = new ModelConfig
        {
            Name = "gpt2-small-shaped", DModel = 768, NLayers = 12, NHeads = 12, DMlp = 3072, DVocab = 50257, NCtx = 1024,
            Norm = NormKind.LayerNorm, Positional = PositionalKind.Learned, Mlp = MlpKind.Standard,
        };
        using var model = new HookedTransformer(cfg);
        model.InitWeights(seed: 1);
        using var scope = NewDisposeScope();

        long before = PeakRss.Reset();
        var scores = CircuitScores.Copying(model);
        long growth = PeakRss.Read() - before;

        // One d_vocab × d_vocab float32 matrix is 50257² × 4 B = 10.1 GB; the whole computation must stay far below.
        Assert.True(growth < 2L << 30, $"peak resident memory grew by {growth / (1 << 20)} MiB");
        Assert.Equal([12, 12], new[] { scores.GetLength(0), scores.GetLength(1) });
        Assert.All(scores.Cast<double>(), s => Assert.InRange(s, -1, 1));

        // Two heads through the other route: vocabulary-sized factors W_E·W_V and W_O·W_U, eigenvalues of B·A.
        foreach (var (l, h) in new[] { (0, 0), (11, 7) })
        {
            using var step = NewDisposeScope();
            var attn = model.Blocks[l].Attn;
            using var full = new FactoredMatrix(model.Embed.W_E.detach().matmul(attn.W_V[h].detach()), attn.W_O[h].detach().matmul(model.Unembed.W_U.detach()));
            var eig = full.Eigenvalues();
            double expected = real(eig).sum().item<float>() / eig.abs().sum().item<float>();
            Assert.True(Math.Abs(expected - scores[l, h]) < 1e-3, $"head {l}.{h}: {expected} vs {scores[l, h]}");
        }
    }
}

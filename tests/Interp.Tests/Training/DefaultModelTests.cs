using Interp.Analysis;
using Interp.Loading;
using Interp.Tests.Experiments;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Training;

/// <summary>Training runs alone: it is the heaviest CPU work in the suite, and runs faster without neighbours.</summary>
[CollectionDefinition(nameof(TrainingCollection), DisableParallelization = true)]
public sealed class TrainingCollection;

/// <summary>The built-in model: the recipe trains the circuit, and the shipped weights are what the recipe produces.</summary>
[Collection(nameof(TrainingCollection))]
public sealed class DefaultModelTests
{
    [Fact]
    public async Task Reduced_training_makes_the_repeated_half_predictable()
    {
        using var tmp = new TempDir();
        var result = (await DefaultModelTraining.TrainAsync(tmp.Path, steps: 700)).Result;
        Assert.Equal(700, result.Loss.Length);
        // Random tokens cannot be predicted: ≈ ln 63 ≈ 4.14. Repeated ones can, once induction works.
        Assert.InRange(result.FirstHalfLoss[^1], 3.9, 4.8);
        Assert.True(result.RepeatedHalfLoss[^1] < 0.5 * result.FirstHalfLoss[^1],
            $"repeated-half loss {result.RepeatedHalfLoss[^1]:F3} should be well below first-half loss {result.FirstHalfLoss[^1]:F3}");
        Assert.True(result.RepeatedHalfLoss[0] > result.RepeatedHalfLoss[^1] + 1.0, "the repeated-half loss falls during training");
    }

    [Fact]
    public async Task Train_default_reproduces_the_shipped_model()
    {
        using var tmp = new TempDir();
        var report = await DefaultModelTraining.TrainAsync(tmp.Path);
        string shipped = Path.Combine(ExperimentScriptTests.RepoRoot(), BuiltInModel.RepositoryPath);
        var (shippedConfig, _) = InterpModelFormat.ReadManifest(shipped);
        Assert.Equal(InductionRecipe.ModelConfig, shippedConfig);

        using var fresh = ModelLoader.Load(tmp.Path);
        using var original = ModelLoader.Load(shipped);
        using var embedded = BuiltInModel.Load();
        using var scope = NewDisposeScope();
        var tokens = HeadDetection.RepeatedRandomTokens(8, 25, 1, 64, seed: 99, firstToken: 0);
        var expected = original.Model.forward(tokens);
        // Training is deterministic for a given CPU and thread count; elsewhere it agrees up to float noise.
        bool identical = ModelHash.Compute(Path.Combine(tmp.Path, InterpModelFormat.WeightsFile)) == ModelHash.Compute(Path.Combine(shipped, InterpModelFormat.WeightsFile));
        TensorAssert.Close(expected, fresh.Model.forward(tokens), identical ? 0.0 : 0.05, "retrained vs shipped logits");
        TensorAssert.Close(expected, embedded.Model.forward(tokens), 0.0, "embedded vs shipped logits");
        Assert.True(report.Scores.Best(HeadScoreKind.PreviousToken, 0).Score > 0.5);
        Assert.True(report.Scores.Best(HeadScoreKind.Induction, 1).Score > 0.5);
        Assert.True(File.Exists(Path.Combine(tmp.Path, "training_loss.parquet")));
    }
}

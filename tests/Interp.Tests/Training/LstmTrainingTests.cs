using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Training;

/// <summary>The LSTM's training: the built-in model's recipe, reproducible bit for bit.</summary>
[Collection(nameof(TrainingCollection))]
public sealed class LstmTrainingTests
{
    [Fact]
    public void Training_is_reproducible_bit_for_bit_and_the_seed_matters()
    {
        var (a, resultA) = LstmRecipe.Train(steps: 120);
        var (b, resultB) = LstmRecipe.Train(steps: 120);
        var (c, _) = LstmRecipe.Train(steps: 120, seed: 1);
        using (a) using (b) using (c)
        {
            Assert.Equal(resultA.Loss, resultB.Loss);
            Assert.Equal(resultA.RepeatedHalfLoss, resultB.RepeatedHalfLoss);
            var weightsA = a.state_dict();
            var weightsB = b.state_dict();
            var weightsC = c.state_dict();
            Assert.Equal(weightsA.Keys, weightsB.Keys);
            foreach (var (name, tensorA) in weightsA)
            {
                Assert.True(tensorA.eq(weightsB[name]).all().item<bool>(), $"{name} differs between two runs with the same seed");
                Assert.False(tensorA.eq(weightsC[name]).all().item<bool>(), $"{name} is the same under another seed");
            }
            // The loss falls from ≈ ln 64 on the recipe's data.
            Assert.InRange(resultA.Loss[0], 3.9, 4.6);
            Assert.True(resultA.Loss[^1] < resultA.Loss[0] - 0.1, $"loss {resultA.Loss[0]:F3} → {resultA.Loss[^1]:F3}");
            Assert.Equal(120, resultA.EvalSteps[^1]);
        }
    }

    [Fact]
    public void Head_dropout_is_refused_for_an_lstm()
    {
        using var model = LstmRecipe.CreateModel();
        var error = Assert.Throws<ArgumentException>(() => InductionTrainer.Train(model, LstmRecipe.Data, InductionRecipe.Training with { Steps = 1 }));
        Assert.Contains("no", error.Message);
        Assert.Contains("head dropout", error.Message);
    }
}

using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Training;

/// <summary>The scalar-safe AdamW against TorchSharp's own: the same floats, bit for bit.</summary>
public sealed class AdamWOptimizerTests
{
    [Theory]
    [InlineData(0.01, 0.9, 0.99)]
    [InlineData(0.0, 0.8, 0.999)]
    public void Steps_equal_TorchSharps_AdamW_bit_for_bit(double weightDecay, double beta1, double beta2)
    {
        using var ours = TestModels.Random(TestModels.Gpt2Like, seed: 3);
        using var theirs = TestModels.Random(TestModels.Gpt2Like, seed: 3);
        using var mine = new AdamWOptimizer(ours.parameters(), 1e-3, beta1, beta2, weightDecay: weightDecay);
        using var reference = optim.AdamW(theirs.parameters(), 1e-3, beta1, beta2, weight_decay: weightDecay);
        using var grad = enable_grad();
        for (int step = 1; step <= 12; step++)
        {
            double lr = 1e-3 * step;   // a schedule changes the rate between steps
            mine.LearningRate = lr;
            foreach (var group in reference.ParamGroups) group.LearningRate = lr;
            using var scope = NewDisposeScope();
            var tokens = TestModels.RandomTokens(TestModels.Gpt2Like.DVocab, 3, 10, seed: step);
            mine.ZeroGrad();
            Loss(ours, tokens).backward();
            mine.Step();
            reference.zero_grad();
            Loss(theirs, tokens).backward();
            reference.step();
        }
        var expected = theirs.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in ours.named_parameters())
            Assert.True(p.eq(expected[name]).all().item<bool>(), $"{name} differs from TorchSharp's AdamW after 12 steps (max |Δ| {(p - expected[name]).abs().max().item<float>():g3})");
        using var untrained = TestModels.Random(TestModels.Gpt2Like, seed: 3);
        Assert.False(ours.named_parameters().First().parameter.eq(untrained.named_parameters().First().parameter).all().item<bool>(), "the steps changed nothing");
    }

    [Theory]
    [InlineData(-1.0, 0.9, 0.99, 0.0, "learning rate")]
    [InlineData(1e-3, 1.0, 0.99, 0.0, "betas")]
    [InlineData(1e-3, 0.9, -0.1, 0.0, "betas")]
    [InlineData(1e-3, 0.9, 0.99, -0.5, "weight decay")]
    [InlineData(double.NaN, 0.9, 0.99, 0.0, "learning rate")]
    public void Bad_coefficients_are_refused_by_name(double lr, double beta1, double beta2, double weightDecay, string named)
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var error = Assert.Throws<ArgumentException>(() => new AdamWOptimizer(model.parameters(), lr, beta1, beta2, weightDecay: weightDecay));
        Assert.Contains(named, error.Message);
    }

    private static Tensor Loss(HookedTransformer model, Tensor tokens)
    {
        var logits = model.forward(tokens);
        return nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, model.Config.DVocab), tokens[.., 1..].reshape(-1));
    }
}

using Interp.Analysis;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>The metrics against hand-computed values, and their errors.</summary>
public sealed class MetricsTests
{
    // Two sequences of 3 tokens over a vocabulary of 4, with logits whose softmax is easy to write down.
    private static (Tensor Logits, Tensor Tokens) Example()
    {
        var logits = tensor(new float[]
        {
            0, 0, 0, 0,   1, 2, 3, 4,   9, 9, 9, 9,
            5, 0, 0, 0,   0, 0, 0, 0,   1, 1, 1, 1,
        }, [2, 3, 4]);
        var tokens = tensor(new long[] { 0, 3, 2, 1, 0, 2 }, [2, 3]);
        return (logits, tokens);
    }

    private static double LogSoftmax(double[] row, int index) => row[index] - Math.Log(row.Sum(Math.Exp));

    [Fact]
    public void Per_token_loss_is_minus_the_log_probability_of_the_next_token()
    {
        using var scope = NewDisposeScope();
        var (logits, tokens) = Example();
        var loss = Metrics.PerTokenLoss(logits, tokens);
        Assert.Equal([2L, 2L], loss.shape);
        double[] expected =
        [
            -LogSoftmax([0, 0, 0, 0], 3), -LogSoftmax([1, 2, 3, 4], 2),
            -LogSoftmax([5, 0, 0, 0], 0), -LogSoftmax([0, 0, 0, 0], 2),
        ];
        var actual = loss.to(ScalarType.Float64).data<double>().ToArray();
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], actual[i], 1e-5);

        // Loss over predicted positions [2, 3): the second column only.
        var second = Metrics.Loss(2)(logits, tokens).to(ScalarType.Float64).data<double>().ToArray();
        Assert.Equal(expected[1], second[0], 1e-5);
        Assert.Equal(expected[3], second[1], 1e-5);
        Assert.Equal((expected.Sum()) / 4, Metrics.Evaluate(Metrics.Loss(), logits, tokens), 1e-5);
    }

    [Fact]
    public void Logit_difference_reads_the_given_position()
    {
        using var scope = NewDisposeScope();
        var (logits, tokens) = Example();
        var diff = Metrics.LogitDiff(correct: 3, wrong: 0, position: 1)(logits, tokens).data<float>().ToArray();
        Assert.Equal([3f, 0f], diff);
        Assert.Equal([0f, 0f], Metrics.LogitDiff(1, 2)(logits, tokens).data<float>().ToArray());   // last position
    }

    [Fact]
    public void Bad_ranges_ids_and_metric_shapes_are_clear_errors()
    {
        using var scope = NewDisposeScope();
        var (logits, tokens) = Example();
        Assert.Contains("[3, 3) does not fit a sequence of 3 tokens", Assert.Throws<InterpException>(() => Metrics.Loss(3)(logits, tokens)).Message);
        Assert.Contains("correct token id 7 is outside the vocabulary [0, 4)", Assert.Throws<InterpException>(() => Metrics.LogitDiff(7, 0)(logits, tokens)).Message);
        Assert.Contains("position 5 is outside a sequence of 3 tokens", Assert.Throws<InterpException>(() => Metrics.LogitDiff(1, 0, 5)(logits, tokens)).Message);
        Metric scalar = (l, t) => l.sum();
        Assert.Contains("one value per sequence, shape [2]", Assert.Throws<InterpException>(() => Metrics.Evaluate(scalar, logits, tokens)).Message);
        Assert.Contains("logits must be [batch, pos, d_vocab]", Assert.Throws<InterpException>(() => Metrics.PerTokenLoss(logits[0], tokens)).Message);
    }
}

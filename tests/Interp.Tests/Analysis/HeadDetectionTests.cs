using Interp.Analysis;
using Interp.Hooks;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>Head scores against attention patterns whose scores are known exactly.</summary>
public sealed class HeadDetectionTests
{
    [Fact]
    public void Repeated_random_tokens_repeat_exactly_after_the_prefix()
    {
        using var scope = NewDisposeScope();
        var t = HeadDetection.RepeatedRandomTokens(3, 10, 5, 40, seed: 1, firstToken: 2);
        Assert.Equal([3L, 21], t.shape);
        Assert.True((t[.., 0] == 2).all().item<bool>());
        Assert.True(t[.., 1..11].eq(t[.., 11..]).all().item<bool>());
        Assert.True((t[.., 1..] >= 5).all().item<bool>() && (t[.., 1..] < 40).all().item<bool>());
        Assert.True(t.eq(HeadDetection.RepeatedRandomTokens(3, 10, 5, 40, seed: 1, firstToken: 2)).all().item<bool>(), "same seed, same tokens");
    }

    [Fact]
    public void Ideal_patterns_score_one_on_their_own_score_only()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        int half = 8, prefix = 1, n = prefix + 2 * half;
        var tokens = HeadDetection.RepeatedRandomTokens(2, half, 1, 50, seed: 3, firstToken: 0);
        // Each ideal head puts all its attention on one key per query (itself where the rule does not apply).
        Tensor Ideal(Func<int, int?> key)
        {
            var p = zeros(n, n);
            for (int q = 0; q < n; q++) p[q, key(q) ?? q] = 1;
            return p;
        }
        var previous = Ideal(q => q >= 1 ? q - 1 : null);
        var duplicate = Ideal(q => q >= prefix + half ? q - half : null);
        var induction = Ideal(q => q >= prefix + half ? q - half + 1 : null);
        using (model.Hooks((HookNames.Pattern(0), (pattern, _) =>
        {
            var c = pattern.clone();
            c[.., 0] = previous;
            c[.., 1] = duplicate;
            c[.., 2] = induction;
            return c;
        })))
        {
            var scores = HeadDetection.Score(model, tokens, half);
            Assert.Equal(1.0, scores.Values[HeadScoreKind.PreviousToken][0, 0], 1e-6);
            Assert.Equal(1.0, scores.Values[HeadScoreKind.DuplicateToken][0, 1], 1e-6);
            Assert.Equal(1.0, scores.Values[HeadScoreKind.Induction][0, 2], 1e-6);
            // The induction head attends to q − half + 1: never to q − 1 or q − half in the second copy.
            Assert.Equal(0.0, scores.Values[HeadScoreKind.DuplicateToken][0, 2], 1e-6);
            Assert.Equal((0, 2, 1.0), (scores.Best(HeadScoreKind.Induction).Layer, scores.Best(HeadScoreKind.Induction).Head, Math.Round(scores.Best(HeadScoreKind.Induction).Score, 6)));
            // A previous-token head attends to q − 1, which is never the induction target q − half + 1 (half > 2).
            Assert.Equal(0.0, scores.Values[HeadScoreKind.Induction][0, 0], 1e-6);
        }
    }
}

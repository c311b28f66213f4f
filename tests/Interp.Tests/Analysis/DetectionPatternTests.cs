using Interp.Loading;
using Interp.Analysis;
using Interp.Hooks;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>User-given detection patterns (TransformerLens's detect_head) against HeadDetection's own scores and hand-made attention.</summary>
public sealed class DetectionPatternTests
{
    [Fact]
    public void Detection_patterns_of_the_standard_scores_reproduce_them_on_the_built_in_model()
    {
        using var loaded = BuiltInModel.Load();
        using var scope = NewDisposeScope();
        var input = HeadDetection.RepeatedRandomTokens(loaded, 16, 20, seed: 4, InductionRecipe.FirstTokenFor(loaded.Model.Config));
        int pos = (int)input.Tokens.shape[1];
        var scores = HeadDetection.Score(loaded.Model, input.Tokens, input.Half);
        var detected = HeadDetection.Detect(loaded.Model, input.Tokens,
            [DetectionPatterns.PreviousToken(pos), DetectionPatterns.RepeatedDuplicate(input.Prefix, input.Half), DetectionPatterns.RepeatedInduction(input.Prefix, input.Half)]);
        var kinds = new[] { HeadScoreKind.PreviousToken, HeadScoreKind.DuplicateToken, HeadScoreKind.Induction };
        for (int i = 0; i < 3; i++)
            for (int l = 0; l < 2; l++)
                for (int h = 0; h < 2; h++)
                    Assert.Equal(scores.Values[kinds[i]][l, h], detected[i][l, h], 1e-6);

        // TransformerLens divides by every row's attention: the previous-token pattern has no target in row 0.
        var allRows = HeadDetection.Detect(loaded.Model, input.Tokens, DetectionPatterns.PreviousToken(pos), new DetectionOptions { TargetRowsOnly = false });
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++)
                Assert.Equal(scores.Values[HeadScoreKind.PreviousToken][l, h] * (pos - 1) / pos, allRows[l, h], 1e-6);
    }

    [Fact]
    public void Hand_made_attention_scores_exactly_with_and_without_exclusions()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        const int n = 12;
        var tokens = TestModels.RandomTokens(50, 2, n);
        // Head 0: half on itself, half two tokens back (all on itself where there is none). Head 1: all on BOS.
        var twoBack = zeros(n, n);
        for (int q = 0; q < n; q++)
        {
            if (q >= 2) { twoBack[q, q] = 0.5; twoBack[q, q - 2] = 0.5; }
            else twoBack[q, q] = 1;
        }
        var bos = zeros(n, n);
        bos[.., 0] = 1;
        using (model.Hooks((HookNames.Pattern(1), (p, _) => { var c = p.clone(); c[.., 0] = twoBack; c[.., 1] = bos; return c; })))
        {
            var plain = HeadDetection.Detect(model, tokens, DetectionPatterns.AttendBack(n, 2));
            Assert.Equal(0.5, plain[1, 0], 1e-6);
            Assert.Equal(1.0 / (n - 2), plain[1, 1], 1e-6);                                        // of rows 2 … n − 1, only row 2 finds its target (key 0 = BOS)
            var noSelf = HeadDetection.Detect(model, tokens, DetectionPatterns.AttendBack(n, 2), new DetectionOptions { ExcludeCurrentToken = true });
            Assert.Equal(1.0, noSelf[1, 0], 1e-6);
            var firstToken = HeadDetection.Detect(model, tokens, bos);
            Assert.Equal(1.0, firstToken[1, 1], 1e-6);
            Assert.Equal(1.5 / n, firstToken[1, 0], 1e-6);                                          // row 0 on itself = BOS, row 2 half on BOS
            // Without BOS, head 1 has no attention left in any scored row: no sequence counts.
            var noBos = HeadDetection.Detect(model, tokens, DetectionPatterns.AttendBack(n, 1), new DetectionOptions { ExcludeBos = true });
            Assert.True(double.IsNaN(noBos[1, 1]));
            Assert.Equal(0.0, noBos[1, 0], 1e-6);
        }
    }

    [Fact]
    public void Token_patterns_match_a_loop_over_positions()
    {
        using var scope = NewDisposeScope();
        var tokens = tensor(new long[] { 0, 5, 6, 5, 6, 7, 5, 6, 6, 9, 7, 5, 2, 2, 8, 3, 4, 5, 4, 4 }).reshape(2, 10);
        var dup = DetectionPatterns.DuplicateToken(tokens);
        var ind = DetectionPatterns.Induction(tokens);
        var t = tokens.data<long>().ToArray();
        for (int b = 0; b < 2; b++)
            for (int q = 0; q < 10; q++)
                for (int k = 0; k < 10; k++)
                {
                    long Tok(int p) => t[b * 10 + p];
                    Assert.Equal(k < q && Tok(k) == Tok(q) ? 1f : 0f, dup[b, q, k].item<float>());
                    Assert.Equal(k >= 1 && k <= q && Tok(k - 1) == Tok(q) ? 1f : 0f, ind[b, q, k].item<float>());
                }
        var back = DetectionPatterns.AttendBack(6, 2);
        for (int q = 0; q < 6; q++)
            for (int k = 0; k < 6; k++) Assert.Equal(k == q - 2 ? 1f : 0f, back[q, k].item<float>());
    }

    [Fact]
    public void Bad_detection_patterns_are_clear_errors()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(50, 2, 8);
        string Error(Tensor detection) => Assert.Throws<InterpException>(() => HeadDetection.Detect(model, tokens, detection)).Message;
        Assert.Contains("a detection pattern must have shape [8, 8] ([query_pos, key_pos]) or [2, 8, 8] ([batch, query_pos, key_pos]) to match tokens [2, 8]; got [8, 9]", Error(zeros(8, 9)));
        Assert.Contains("got [3, 8, 8]", Error(zeros(3, 8, 8)));
        Assert.Contains("got [8]", Error(zeros(8)));
        var ahead = DetectionPatterns.PreviousToken(8);
        ahead[2, 5] = 1;
        Assert.Contains("puts weight on key position 5 after query position 2", Error(ahead));
        Assert.Contains("is all zero", Error(zeros(8, 8)));
        Assert.Contains("values must be finite and ≥ 0", Error(-DetectionPatterns.PreviousToken(8)));
        Assert.Contains("0 ≤ offset < positions, got offset 8 for 8 positions", Assert.Throws<InterpException>(() => DetectionPatterns.AttendBack(8, 8)).Message);
    }
}

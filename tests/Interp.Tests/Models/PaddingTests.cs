using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// Right padding with an attention mask: a batch of prompts of different lengths gives, at every real position, the
/// logits and every activation of each prompt run alone, and no attention weight lands on a padded key.
/// </summary>
public class PaddingTests
{
    public static TheoryData<string> Architectures => new() { "gpt2", "llama", "attn-only", "neox", "gemma2", "bert" };

    private static readonly int[] Lengths = [5, 12, 8];
    private const double Tolerance = 1e-5;

    internal static HookedTransformer Build(string name) => name switch
    {
        "gpt2" => TestModels.Random(TestModels.Gpt2Like, seed: 3),
        "llama" => TestModels.Random(TestModels.LlamaLike, seed: 3),
        "attn-only" => TestModels.Random(TestModels.AttnOnlySinusoidal, seed: 3),
        "neox" => TestModels.Random(TestModels.NeoXLike, seed: 3),
        "gemma2" => TestModels.Random(TestModels.Gemma2Like, seed: 3),
        "bert" => TestModels.Random(TestModels.BertLike, seed: 3),
        _ => throw new ArgumentException(name),
    };

    /// <summary>Prompts of <paramref name="lengths"/> random tokens, and the same as one right-padded batch (pad id 0) with its 0/1 mask.</summary>
    internal static (Tensor[] Alone, Tensor Padded, Tensor Mask) Prompts(int vocab, int[] lengths, long seed = 11)
    {
        int max = lengths.Max();
        var all = TestModels.RandomTokens(vocab, lengths.Length, max, seed);
        var alone = lengths.Select((len, i) => all[i].narrow(0, 0, len).unsqueeze(0).clone()).ToArray();
        var padded = zeros(lengths.Length, max, dtype: ScalarType.Int64);
        var mask = zeros(lengths.Length, max, dtype: ScalarType.Int64);
        for (int i = 0; i < lengths.Length; i++)
        {
            padded[i].narrow(0, 0, lengths[i]).copy_(alone[i][0]);
            mask[i].narrow(0, 0, lengths[i]).fill_(1);
        }
        return (alone, padded, mask);
    }

    /// <summary>Row <paramref name="row"/> of a padded activation restricted to its first <paramref name="length"/> positions on every position axis.</summary>
    private static Tensor RealPart(Tensor activation, IReadOnlyList<string> axes, int row, int length)
    {
        var t = activation.narrow(0, row, 1);
        for (int a = 0; a < axes.Count; a++)
            if (axes[a] is "pos" or "query_pos" or "key_pos") t = t.narrow(a, 0, length);
        return t;
    }

    /// <summary>max |a − b|, with −∞ allowed where both are −∞ (the masked attention scores).</summary>
    private static double Diff(Tensor a, Tensor b)
    {
        var infA = a.isneginf();
        Assert.True(infA.eq(b.isneginf()).all().item<bool>(), "the −∞ entries differ");
        return TensorAssert.MaxAbsDiff(a.masked_fill(infA, 0.0f), b.masked_fill(infA, 0.0f));
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("neox")]
    [InlineData("gemma2")]
    public void LeftPaddedBatch_EqualsEachPromptAlone_PositionsStartAtTheFirstRealToken(string arch)
    {
        // Left padding, as batched generation uses: learned positions and rotary angles both count from each row's first
        // real token, so the last positions of every row equal the row alone.
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = Build(arch);
        var (alone, _, _) = Prompts(model.Config.DVocab, Lengths);
        int max = Lengths.Max();
        var padded = zeros(Lengths.Length, max, dtype: ScalarType.Int64);
        var mask = zeros(Lengths.Length, max, dtype: ScalarType.Int64);
        for (int i = 0; i < Lengths.Length; i++)
        {
            padded[i].narrow(0, max - Lengths[i], Lengths[i]).copy_(alone[i][0]);
            mask[i].narrow(0, max - Lengths[i], Lengths[i]).fill_(1);
        }
        var logits = model.forward(padded, mask);
        Assert.True(logits.isfinite().all().item<bool>(), "padded rows must stay finite");
        for (int i = 0; i < Lengths.Length; i++)
        {
            double d = TensorAssert.MaxAbsDiff(model.forward(alone[i]), logits.narrow(0, i, 1).narrow(1, max - Lengths[i], Lengths[i]));
            Assert.True(d <= Tolerance, $"{arch}: left-padded row {i} differs from the prompt alone by {d:g3}");
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void PaddedBatch_EqualsEachPromptAlone_AtEveryRealPosition(string arch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = Build(arch);
        var (alone, padded, mask) = Prompts(model.Config.DVocab, Lengths);
        var (logits, cache) = model.RunWithCache(padded, mask, _ => true);
        using (cache)
        {
            double worstLogit = 0, worstActivation = 0;
            string worstHook = "";
            for (int i = 0; i < alone.Length; i++)
            {
                var (aloneLogits, aloneCache) = model.RunWithCache(alone[i], _ => true);
                using (aloneCache)
                {
                    Assert.Equal(cache.Names, aloneCache.Names);
                    worstLogit = Math.Max(worstLogit, TensorAssert.MaxAbsDiff(aloneLogits, logits.narrow(0, i, 1).narrow(1, 0, Lengths[i])));
                    foreach (var hook in model.HookPoints)
                    {
                        // Float rounding grows with the values: the bound is 1e-5 for values up to 1, relative above.
                        var expected = aloneCache[hook.Name];
                        double scale = Math.Max(1, expected.masked_fill(expected.isneginf(), 0.0f).abs().max().item<float>());
                        double d = Diff(expected, RealPart(cache[hook.Name], hook.Axes, i, Lengths[i])) / scale;
                        if (d > worstActivation) (worstActivation, worstHook) = (d, hook.Name);
                    }
                }
            }
            Assert.True(worstLogit <= Tolerance, $"{arch}: logits at real positions differ from the prompts alone by max |Δ| = {worstLogit:g3}");
            Assert.True(worstActivation <= Tolerance, $"{arch}: activations at real positions differ by max |Δ|/max(1, |x|) = {worstActivation:g3} (at {worstHook})");
            Console.WriteLine($"padding {arch}: max |Δ| logits {worstLogit:g3}, activations (|Δ|/max(1, |x|)) {worstActivation:g3} ({worstHook})");

            // No query, real or padded, gives any weight to a padded key; every row still sums to one.
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                var pattern = cache[HookNames.Pattern(l)];                                    // [batch, head, q, k]
                for (int i = 0; i < alone.Length; i++)
                {
                    int len = Lengths[i], max = (int)padded.shape[1];
                    if (len < max)
                        Assert.Equal(0.0, pattern[i].narrow(2, len, max - len).abs().max().item<float>());
                    // Rows sum to one, except a padded query whose sliding window holds no real key: it attends nowhere (0).
                    int window = model.Blocks[l].Attn.Window;
                    var expected = Enumerable.Range(0, max).Select(q => q < len || window == 0 || q - (len - 1) < window ? 1f : 0f).ToArray();
                    TensorAssert.Close(tensor(expected).expand(model.Config.NHeads, max), pattern[i].sum([-1]), 1e-5, $"{arch} layer {l} row {i}: pattern rows sum to one");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void ForwardFrom_WithTheMask_ReproducesThePaddedRun(string arch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = Build(arch);
        var (_, padded, mask) = Prompts(model.Config.DVocab, Lengths);
        var (logits, cache) = model.RunWithCache(padded, mask, n => n == HookNames.ResidPre(1) || n == HookNames.ResidMid(0));
        using (cache)
        {
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(logits, model.ForwardFrom(1, cache[HookNames.ResidPre(1)], mask)));
            if (model.Config.HasResidMid)
                Assert.Equal(0.0, TensorAssert.MaxAbsDiff(logits, model.ForwardFromMid(0, cache[HookNames.ResidMid(0)], mask)));
            if (model.Config.Causal)
            {
                // Without the mask the padded queries see padding: real positions agree, padded ones need not. (An encoder's
                // real positions see every key, so there they differ too.)
                var unmasked = model.ForwardFrom(1, cache[HookNames.ResidPre(1)]);
                Assert.True(TensorAssert.MaxAbsDiff(logits[0].narrow(0, 0, Lengths[0]), unmasked[0].narrow(0, 0, Lengths[0])) <= Tolerance);
            }
        }
    }

    [Fact]
    public void AllOnesMask_GivesTheUnpaddedRunExactly()
    {
        using var scope = NewDisposeScope();
        using var model = Build("llama");
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 7);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(model.forward(tokens), model.forward(tokens, ones(2, 7, dtype: ScalarType.Bool))));
        Assert.Null(model.PaddingMask(null, 2, 7));
        Assert.Null(model.PaddingMask(ones(2, 7), 2, 7));
    }

    [Fact]
    public void GuardFinite_AcceptsThePaddingMask_InTheScores()
    {
        using var scope = NewDisposeScope();
        using var model = Build("gpt2");
        var (_, padded, mask) = Prompts(model.Config.DVocab, Lengths);
        using (model.GuardFinite()) model.forward(padded, mask);
    }

    [Fact]
    public void BadMasks_AreRefusedByName()
    {
        using var scope = NewDisposeScope();
        using var model = Build("gpt2");
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 4);
        var left = tensor(new long[] { 1, 1, 1, 1, 1, 0, 1, 1 }, [2, 4]);
        var e = Assert.Throws<InvalidTokensException>(() => model.forward(tokens, left));
        Assert.Contains("row 1: position 2 is a real token after padding that follows real tokens", e.Message);
        var empty = tensor(new long[] { 1, 1, 0, 0, 0, 0, 0, 0 }, [2, 4]);
        Assert.Contains("row 1 has no real token", Assert.Throws<InvalidTokensException>(() => model.forward(tokens, empty)).Message);
        Assert.Contains("[batch 2, pos 4], got [2, 3]", Assert.Throws<InvalidTokensException>(() => model.forward(tokens, ones(2, 3))).Message);
        var two = tensor(new long[] { 1, 1, 2, 0, 1, 0, 0, 0 }, [2, 4]);
        Assert.Contains("value 2 at [batch 0, pos 2]", Assert.Throws<InvalidTokensException>(() => model.forward(tokens, two)).Message);
    }
}

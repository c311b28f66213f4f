using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>What a cache will keep is known before it runs, and a cache that cannot fit is refused with the numbers.</summary>
public sealed class CacheBudgetTests
{
    public static TheoryData<string> Architectures => ["gpt2", "llama"];

    private static ModelConfig Config(string arch) => arch == "gpt2" ? TestModels.Gpt2Like : TestModels.LlamaLike;

    [Theory]
    [MemberData(nameof(Architectures))]
    public void The_estimate_is_what_the_cache_keeps(string arch)
    {
        using var model = TestModels.Random(Config(arch), seed: 2);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, 7, seed: 1);
        foreach (Func<string, bool>? filter in new Func<string, bool>?[] { null, _ => true, n => HookNames.Is(n, HookNames.Pattern) || n == HookNames.Embed })
        {
            var (activations, logits) = model.CacheBytes(3, 7, filter);
            var (l, cache) = model.RunWithCache(tokens, filter);
            using (cache)
            {
                Assert.Equal(cache.Bytes, activations);
                Assert.Equal(l.NumberOfElements * l.ElementSize, logits);
            }
        }
    }

    [Fact]
    public void A_cache_that_cannot_fit_is_refused_up_front_with_the_numbers()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 2);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 16, seed: 1);
        var (activations, logits) = model.CacheBytes(2, 16);
        MemoryBudget.AvailableOverride = () => activations / 2;
        try
        {
            var e = Assert.Throws<InterpException>(() => model.RunWithCache(tokens));
            Assert.Contains("[batch 2, pos 16]", e.Message);
            Assert.Contains(MemoryBudget.Format(activations), e.Message);
            Assert.Contains(MemoryBudget.Format(activations / 2), e.Message);
            Assert.Contains("names filter", e.Message);
            // A filter that keeps less than the budget runs.
            var (l, cache) = model.RunWithCache(tokens, n => n == HookNames.ResidPre(0));
            cache.Dispose();
            Assert.Equal([2, 16, model.Config.DVocab], l.shape);
        }
        finally { MemoryBudget.AvailableOverride = null; }
        // Measured for real, a small cache fits on this machine.
        Assert.True(MemoryBudget.AvailableBytes() is null or > 0);
        var (_, fits) = model.RunWithCache(tokens);
        fits.Dispose();
        Assert.True(activations + logits > 0);
    }
}

using Interp.Hooks;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Hooks;

/// <summary>Attaching, removing, replacing and naming hooks.</summary>
public sealed class HookMechanicsTests
{
    [Fact]
    public void Unknown_hook_name_lists_the_closest_valid_names()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var ex = Assert.Throws<UnknownHookException>(() => model.RunWithHooks(TestModels.RandomTokens(50, 1, 4), ("blocks.0.attn.hook_patern", (a, _) => null)));
        Assert.Contains("'blocks.0.attn.hook_patern'", ex.Message);
        Assert.Equal("blocks.0.attn.hook_pattern", ex.Suggestions[0]);
        Assert.Contains("blocks.0.attn.hook_pattern", ex.Message);
        Assert.All(model.HookPoints, h => Assert.False(h.IsActive));
    }

    [Fact]
    public void Hooks_are_removed_after_the_call_even_when_it_throws()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var tokens = TestModels.RandomTokens(50, 1, 4);
        Assert.Throws<InvalidOperationException>(() => model.RunWithHooks(tokens,
            (HookNames.ResidPre(0), (a, _) => null),
            (HookNames.Pattern(1), (a, _) => throw new InvalidOperationException("boom"))));
        Assert.All(model.HookPoints, h => Assert.False(h.IsActive));
    }

    [Fact]
    public void Using_scope_holds_hooks_until_disposed()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var tokens = TestModels.RandomTokens(50, 1, 4);
        int calls = 0;
        using (model.Hooks((HookNames.AttnOut(0), (a, _) => { calls++; return null; })))
        {
            model.forward(tokens).Dispose();
            model.forward(tokens).Dispose();
            Assert.True(model.GetHookPoint(HookNames.AttnOut(0)).IsActive);
        }
        model.forward(tokens).Dispose();
        Assert.Equal(2, calls);
        Assert.False(model.GetHookPoint(HookNames.AttnOut(0)).IsActive);
    }

    [Fact]
    public void A_hook_can_replace_an_activation_and_the_change_flows_downstream()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(50, 1, 6);
        // Replacing the final residual stream with zeros leaves ln_final's bias: logits = b · W_U + b_U everywhere.
        var logits = model.RunWithHooks(tokens, (HookNames.ResidPost(1), (a, _) => zeros_like(a)));
        var expected = (model.LnFinal!.B.matmul(model.Unembed.W_U) + model.Unembed.b_U).expand(1, 6, -1);
        TensorAssert.Close(expected, logits, 1e-5, "logits from a zero residual stream");
    }

    [Fact]
    public void Replacement_of_the_wrong_shape_names_the_hook_and_both_shapes()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var ex = Assert.Throws<HookException>(() => model.RunWithHooks(TestModels.RandomTokens(50, 1, 4),
            (HookNames.Z(0), (a, _) => zeros(3, 3))));
        Assert.Contains("blocks.0.attn.hook_z", ex.Message);
        Assert.Contains("[3, 3]", ex.Message);
        Assert.Contains("[1, 4, 4, 8]", ex.Message);
    }

    [Fact]
    public void Hook_result_is_computed_only_when_asked_for()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var tokens = TestModels.RandomTokens(50, 1, 4);
        var (_, all) = model.RunWithCache(tokens);
        using (all) Assert.DoesNotContain(all.Names, n => n.EndsWith("hook_result"));
        var (_, only) = model.RunWithCache(tokens, n => n == HookNames.Result(1));
        using (only)
        {
            Assert.Equal([HookNames.Result(1)], only.Names);
            Assert.Equal([1L, 4, 4, 32], only[HookNames.Result(1)].shape);
            Assert.Equal(only[HookNames.Result(1)].shape, only["result", 1].shape);
            var missing = Assert.Throws<HookException>(() => only[HookNames.Pattern(0)]);
            Assert.Contains("not in the cache", missing.Message);
        }
    }

    [Fact]
    public void Cached_tensors_outlive_the_forward_pass_and_are_freed_with_the_cache()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var (logits, cache) = model.RunWithCache(TestModels.RandomTokens(50, 1, 4));
        var pattern = cache[HookNames.Pattern(0)];
        Assert.False(pattern.IsInvalid);
        Assert.Equal(1.0, pattern.sum(-1).mean().item<float>(), 1e-5);
        cache.Dispose();
        Assert.True(pattern.IsInvalid);
        logits.Dispose();
    }
}

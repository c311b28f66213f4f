using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Hooks;

/// <summary>The NaN/Inf guard names the first hook in forward order where a non-finite value appears.</summary>
public sealed class FiniteCheckTests
{
    private static void Poison(Tensor weight, float value, params long[] index)
    {
        using var _ = no_grad();
        using var view = weight[index.Select(i => TensorIndex.Single(i)).ToArray()];
        view.fill_(value);
    }

    [Fact]
    public void A_nan_weight_is_reported_at_the_first_hook_that_reads_it()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        // W_V of layer 1, head 2: NaN reaches blocks.1.attn.hook_v first (q and k stay finite).
        Poison(model.Blocks[1].Attn.W_V, float.NaN, 2, 0, 0);
        using var tokens = TestModels.RandomTokens(50, 2, 6);
        var ex = Assert.Throws<NonFiniteActivationException>(() => model.RunChecked(tokens));
        Assert.Equal("blocks.1.attn.hook_v", ex.Location);
        Assert.Contains("non-finite activation at hook 'blocks.1.attn.hook_v' (the first hook in forward order where they appear)", ex.Message);
        Assert.Contains("NaN", ex.Message);
        Assert.Equal([0, 0, 2, 0], ex.FirstIndex); // [batch, pos, kv_head_index, d_head]: head 2, every position
        Assert.True(ex.Message.Contains("12 NaN and 0 ±Inf of 384 values; the first is NaN at [batch 0, pos 0, kv_head_index 2, d_head 0]"), ex.Message);
        Assert.Equal(2 * 6, ex.NaNCount); // d_head 0 of head 2, at every position of both sequences
        Assert.Equal(0, ex.InfCount);
    }

    [Fact]
    public void An_infinite_embedding_is_reported_at_hook_embed_with_its_token_position()
    {
        using var model = TestModels.Random(TestModels.LlamaLike);
        Poison(model.Embed.W_E, float.PositiveInfinity, 7, 3); // token 7, dimension 3
        using var tokens = tensor(new long[] { 1, 2, 7, 4 }, [1, 4]);
        var ex = Assert.Throws<NonFiniteActivationException>(() => model.RunChecked(tokens));
        Assert.Equal("hook_embed", ex.Location);
        Assert.Equal([0, 2, 3], ex.FirstIndex); // [batch 0, pos 2 (the token 7), d_model 3]
        Assert.Equal(1, ex.InfCount);
        Assert.Equal(0, ex.NaNCount);
        Assert.Contains("0 NaN and 1 ±Inf of 128 values; the first is Infinity at [batch 0, pos 2, d_model 3]", ex.Message);
    }

    [Fact]
    public void A_nan_unembedding_shows_up_only_in_the_logits()
    {
        using var model = TestModels.Random(TestModels.AttnOnlySinusoidal);
        Poison(model.Unembed.W_U, float.NaN, 0, 5); // d_model 0 → vocabulary entry 5
        using var tokens = TestModels.RandomTokens(50, 1, 3);
        var ex = Assert.Throws<NonFiniteActivationException>(() => model.RunChecked(tokens));
        Assert.Equal(NonFiniteActivationException.Logits, ex.Location);
        Assert.Contains("the logits (after the last hook point", ex.Message);
        Assert.Equal([0, 0, 5], ex.FirstIndex);
    }

    [Fact]
    public void A_finite_run_is_unchanged_and_leaves_no_hook_attached()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var tokens = TestModels.RandomTokens(50, 2, 5);
        using var plain = model.forward(tokens);
        using var checkedLogits = model.RunChecked(tokens);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(plain, checkedLogits));
        Assert.All(model.HookPoints, h => Assert.False(h.IsActive, h.Name));
        using (model.GuardFinite())
            Assert.All(model.HookPoints.Where(h => !h.Name.EndsWith(".hook_result", StringComparison.Ordinal)), h => Assert.True(h.IsActive, h.Name));
        Assert.All(model.HookPoints, h => Assert.False(h.IsActive, h.Name));
    }
}

using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>ForwardFrom(l, cached resid_pre of layer l) is the rest of the forward pass.</summary>
public sealed class ForwardFromTests
{
    public static TheoryData<string> Configs => new() { "gpt2", "llama", "attn-only" };

    private static ModelConfig Config(string name) => name switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        _ => TestModels.AttnOnlySinusoidal,
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void Forward_from_every_layer_on_the_cached_resid_pre_gives_the_logits(string config)
    {
        using var model = TestModels.Random(Config(config));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 3, 17);
        var (logits, cache) = model.RunWithCache(tokens);
        using (cache)
        {
            for (int l = 0; l < model.Config.NLayers; l++)
                TensorAssert.Close(logits, model.ForwardFrom(l, cache[HookNames.ResidPre(l)]), 1e-6, $"{config}, from layer {l}");
            // n_layers: only the final norm and the unembedding, on the last block's output.
            TensorAssert.Close(logits, model.ForwardFrom(model.Config.NLayers, cache[HookNames.ResidPost(model.Config.NLayers - 1)]), 1e-6, $"{config}, from the end");
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Forward_from_the_middle_of_every_layer_on_the_cached_resid_mid_gives_the_logits(string config)
    {
        using var model = TestModels.Random(Config(config));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 3, 17);
        var (logits, cache) = model.RunWithCache(tokens);
        using (cache)
        {
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                TensorAssert.Close(logits, model.ForwardFromMid(l, cache[HookNames.ResidMid(l)]), 1e-6, $"{config}, from the middle of layer {l}");
                // Only the hooks from that block's resid_mid on fire.
                AssertFiredFrom(model, HookNames.ResidMid(l), () => model.ForwardFromMid(l, cache[HookNames.ResidMid(l)]));
            }
        }
    }

    [Fact]
    public void Hooks_from_the_layer_on_fire_and_earlier_ones_do_not()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 2, 9);
        var (logits, cache) = model.RunWithCache(tokens, n => n == HookNames.ResidPre(1));
        using (cache)
        {
            AssertFiredFrom(model, HookNames.ResidPre(1), () => model.ForwardFrom(1, cache[HookNames.ResidPre(1)]));
            // A hook at resid_pre of the start layer replaces the input as in a full pass.
            var doubled = model.RunWithHooks(tokens, (HookNames.ResidPre(1), (x, _) => x * 2));
            using (model.Hooks((HookNames.ResidPre(1), (x, _) => x * 2)))
                TensorAssert.Close(doubled, model.ForwardFrom(1, cache[HookNames.ResidPre(1)]), 1e-6, "hooked resid_pre");
        }
    }

    [Fact]
    public void A_tensor_a_hook_returns_stays_the_hooks_after_the_pass_frees_each_blocks_intermediates()
    {
        // The pass disposes each block's intermediates when the block ends; a replacement the hook owns (here: one
        // tensor returned at every call, at a block's output and inside a block) must survive, pass after pass.
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 2, 9);
        var (_, cache) = model.RunWithCache(tokens, n => n == HookNames.ResidPost(0) || n == HookNames.MlpOut(1));
        using (cache)
        {
            var residPost = cache[HookNames.ResidPost(0)].clone();
            var mlpOut = cache[HookNames.MlpOut(1)].clone();
            var expected = model.forward(tokens);
            using (model.Hooks((HookNames.ResidPost(0), (x, p) => residPost), (HookNames.MlpOut(1), (x, p) => mlpOut)))
                for (int i = 0; i < 3; i++) TensorAssert.Close(expected, model.forward(tokens), 1e-6, $"pass {i}");
            Assert.False(residPost.IsInvalid);
            Assert.False(mlpOut.IsInvalid);
            TensorAssert.Close(cache[HookNames.ResidPost(0)], residPost, 0, "the hook's tensor is untouched");
        }
    }

    /// <summary>With a recording hook on every point, <paramref name="run"/> fires exactly the points from <paramref name="first"/> on, in order (hook_result aside: computed only when hooked).</summary>
    private static void AssertFiredFrom(HookedTransformer model, string first, Action run)
    {
        var fired = new List<string>();
        var hooks = model.HookPoints.Select(h => (h.Name, (HookFunction)((x, p) => { fired.Add(p.Name); return null; }))).ToArray();
        using (model.Hooks(hooks)) run();
        Assert.Equal(model.HookPoints.SkipWhile(h => h.Name != first).Where(h => !h.Name.EndsWith("hook_result")).Select(h => h.Name), fired.Where(n => !n.EndsWith("hook_result")));
    }

    [Fact]
    public void Bad_layer_or_shape_is_a_clear_error()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<InterpException>(() => model.ForwardFrom(3, zeros(1, 4, 32)));
        Assert.Contains("layer 3 is outside [0, 2]", ex.Message);
        ex = Assert.Throws<InterpException>(() => model.ForwardFrom(1, zeros(1, 4, 31)));
        Assert.Contains("blocks.1.hook_resid_pre must be [batch, pos, d_model = 32]", ex.Message);
        Assert.Contains("[1, 4, 31]", ex.Message);
        ex = Assert.Throws<InterpException>(() => model.ForwardFrom(0, zeros(1, 25, 32)));
        Assert.Contains("n_ctx = 24", ex.Message);

        ex = Assert.Throws<InterpException>(() => model.ForwardFromMid(2, zeros(1, 4, 32)));
        Assert.Contains("layer 2 is outside [0, 1]", ex.Message);
        ex = Assert.Throws<InterpException>(() => model.ForwardFromMid(1, zeros(1, 4, 31)));
        Assert.Contains("blocks.1.hook_resid_mid must be [batch, pos, d_model = 32]", ex.Message);
        using var attnOnly = TestModels.Random(TestModels.AttnOnlySinusoidal);
        ex = Assert.Throws<InterpException>(() => attnOnly.ForwardFromMid(0, zeros(1, 4, attnOnly.Config.DModel)));
        Assert.Contains("attention-only", ex.Message);
        Assert.Contains("no blocks.0.hook_resid_mid", ex.Message);
    }
}

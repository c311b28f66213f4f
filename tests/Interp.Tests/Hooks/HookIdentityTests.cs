using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Hooks;

/// <summary>Exact identities between cached activations, the plain forward pass and the residual-stream decomposition.</summary>
public sealed class HookIdentityTests
{
    public static TheoryData<string> Models => new() { "gpt2-tiny-random", "stories260K", "llama-like", "attn-only-sinusoidal" };

    private static HookedTransformer Load(string name) => name switch
    {
        "gpt2-tiny-random" => ModelLoader.Load(TestModels.Gpt2TinyDir).Model,
        "stories260K" => ModelLoader.Load(TestModels.StoriesBin).Model,
        "llama-like" => TestModels.Random(TestModels.LlamaLike),
        "attn-only-sinusoidal" => TestModels.Random(TestModels.AttnOnlySinusoidal),
        _ => throw new ArgumentException(name),
    };

    [Theory, MemberData(nameof(Models))]
    public void Cached_activations_are_the_plain_forward_pass_intermediates(string name)
    {
        using var model = Load(name);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 12);
        var plain = model.forward(tokens);
        var (logits, cache) = model.RunWithCache(tokens);
        using (cache)
        {
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(plain, logits));
            Assert.Equal(model.HookPoints.Count(h => !h.Name.EndsWith("hook_result")), cache.Count);
            foreach (var hook in model.HookPoints.Where(h => cache.Contains(h.Name)))
                Assert.Equal(model.HookShape(hook, 2, 12), cache[hook.Name].shape);

            // Recompute each stage from the cached input of that stage, with the model's weights.
            int last = model.Config.NLayers - 1;
            var final = model.LnFinal!.forward(cache[HookNames.ResidPost(last)]);
            TensorAssert.Close(plain, model.Unembed.forward(final), 1e-5, "unembed(ln_final(resid_post))");
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                var block = model.Blocks[l];
                if (l > 0) Assert.Equal(0.0, TensorAssert.MaxAbsDiff(cache[HookNames.ResidPost(l - 1)], cache[HookNames.ResidPre(l)]));
                TensorAssert.Close(cache[HookNames.AttnScores(l)].softmax(-1), cache[HookNames.Pattern(l)], 1e-6, "pattern = softmax(scores)");
                var attnOut = block.Attn.forward(block.Ln1!.forward(cache[HookNames.ResidPre(l)]));
                TensorAssert.Close(cache[HookNames.AttnOut(l)], attnOut, 1e-5, $"attn_out {l}");
                var afterAttn = cache[HookNames.ResidPre(l)] + cache[HookNames.AttnOut(l)];
                if (block.Mlp is null)
                {
                    TensorAssert.Close(cache[HookNames.ResidPost(l)], afterAttn, 1e-5, "resid_post = resid_pre + attn_out");
                    continue;
                }
                TensorAssert.Close(cache[HookNames.ResidMid(l)], afterAttn, 1e-5, "resid_mid");
                TensorAssert.Close(cache[HookNames.MlpOut(l)], block.Mlp.forward(block.Ln2!.forward(cache[HookNames.ResidMid(l)])), 1e-5, "mlp_out");
                TensorAssert.Close(cache[HookNames.ResidPost(l)], cache[HookNames.ResidMid(l)] + cache[HookNames.MlpOut(l)], 1e-5, "resid_post");
            }
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Final_residual_is_the_sum_of_every_component_write(string name)
    {
        using var model = Load(name);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 10);
        var (_, cache) = model.RunWithCache(tokens, n => true);
        using (cache)
        {
            var sum = cache[HookNames.Embed].clone();
            if (model.PosEmbed is not null) sum += cache[HookNames.PosEmbed];
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                sum += cache[HookNames.Result(l)].sum(2) + model.Blocks[l].Attn.b_O;
                if (model.Blocks[l].Mlp is not null) sum += cache[HookNames.MlpOut(l)];
            }
            int last = model.Config.NLayers - 1;
            TensorAssert.Close(cache[HookNames.ResidPost(last)], sum, 1e-4, "Σ component writes");
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Zeroing_a_heads_z_equals_removing_the_head(string name)
    {
        using var model = Load(name);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 10);
        int layer = model.Config.NLayers - 1, head = 1;
        var original = model.forward(tokens);
        var ablated = model.RunWithHooks(tokens, (HookNames.Z(layer), (z, _) =>
        {
            var copy = z.clone();
            copy[.., .., head] = zeros_like(copy[.., .., head]);
            return copy;
        }));
        // The same model with the head's output weights removed: it then writes nothing into the stream.
        using (no_grad()) model.Blocks[layer].Attn.W_O[head].zero_();
        var removed = model.forward(tokens);
        TensorAssert.Close(removed, ablated, 1e-5, "zeroed hook_z vs zeroed W_O");
        Assert.True(TensorAssert.MaxAbsDiff(original, ablated) > 1e-3, "the ablation should change the logits");
    }
}

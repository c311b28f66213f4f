using Interp.Hooks;
using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>gpt2-tiny-random against the reference outputs of an independent C implementation of GPT-2.</summary>
public sealed class Gpt2ReferenceTests
{
    private static string Ref(string file) => Path.Combine(TestModels.Gpt2TinyDir, "reference", file);

    private static long[] Tokens() =>
        File.ReadAllText(Ref("tokens.txt")).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    [Fact]
    public void Logits_residuals_and_patterns_match_the_independent_reference()
    {
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        Assert.Equal("huggingface-gpt2", loaded.Format);
        var ids = Tokens();
        Assert.Equal(40, ids.Length);
        using var scope = NewDisposeScope();
        var (logits, cache) = loaded.Model.RunWithCache(tensor(ids, [1, ids.Length]));
        using (cache)
        {
            TensorAssert.Close(TensorAssert.ReadRawFloats(Ref("logits.f32"), 40, 1000), logits[0], 2e-4, "logits");

            var resid = TensorAssert.ReadRawFloats(Ref("resid_pre.f32"), 4, 40, 64);
            for (int l = 0; l < 3; l++) TensorAssert.Close(resid[l], cache[HookNames.ResidPre(l)][0], 2e-4, $"resid_pre {l}");
            TensorAssert.Close(resid[3], cache[HookNames.ResidPost(2)][0], 2e-4, "resid_post 2");

            var attn = TensorAssert.ReadRawFloats(Ref("attn.f32"), 3, 4, 40, 40);
            for (int l = 0; l < 3; l++) TensorAssert.Close(attn[l], cache[HookNames.Pattern(l)][0], 1e-4, $"pattern {l}");
        }
    }
}

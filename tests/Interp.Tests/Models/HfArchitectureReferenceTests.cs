using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// Each random checkpoint of ../shared/models against its reference outputs (float64 implementations that follow the
/// Hugging Face transformers source): logits, the residual stream and the attention patterns, within the tolerances its
/// README gives (2e-4 logits and residuals, 1e-4 patterns).
/// </summary>
public sealed class HfArchitectureReferenceTests
{
    public static TheoryData<string, string, int, int> Decoders => new()
    {
        // folder, expected family, layers, vocab
        { "gpt_neox-tiny-random", "gpt_neox", 3, 512 },
        { "gemma2-tiny-random", "gemma2", 4, 512 },
        { "qwen2-tiny-random", "qwen2", 3, 512 },
        { "qwen3-tiny-random", "qwen3", 3, 512 },
        { "mistral-tiny-random", "mistral", 3, 512 },
        { "llama-tiny-random", "llama", 3, 512 },
    };

    internal static long[] Ints(string path, int line = 0) =>
        File.ReadAllLines(path)[line].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    [Theory]
    [MemberData(nameof(Decoders))]
    public void Decoder_logits_residuals_and_patterns_match_the_reference(string folder, string family, int layers, int vocab)
    {
        string dir = SharedData.Model(folder), reference = Path.Combine(dir, "reference");
        using var loaded = ModelLoader.Load(dir);
        var model = loaded.Model;
        Assert.Equal(family, model.Config.Family);
        Assert.Equal("huggingface-" + family, loaded.Format);
        var ids = Ints(Path.Combine(reference, "tokens.txt"));
        int T = ids.Length, d = model.Config.DModel, h = model.Config.NHeads;
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(tensor(ids, [1, T]));
        using (cache)
        {
            TensorAssert.Close(TensorAssert.ReadRawFloats(Path.Combine(reference, "logits.f32"), T, vocab), logits[0], 2e-4, $"{folder} logits");
            var resid = TensorAssert.ReadRawFloats(Path.Combine(reference, "resid.f32"), layers + 1, T, d);
            for (int l = 0; l < layers; l++) TensorAssert.Close(resid[l], cache[HookNames.ResidPre(l)][0], 2e-4, $"{folder} resid_pre {l}");
            TensorAssert.Close(resid[layers], cache[HookNames.ResidPost(layers - 1)][0], 2e-4, $"{folder} resid_post {layers - 1}");
            var attn = TensorAssert.ReadRawFloats(Path.Combine(reference, "attn.f32"), layers, h, T, T);
            for (int l = 0; l < layers; l++) TensorAssert.Close(attn[l], cache[HookNames.Pattern(l)][0], 1e-4, $"{folder} pattern {l}");
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("padded")]
    public void Bert_logits_hidden_states_and_patterns_match_the_reference(string input)
    {
        string dir = SharedData.Model("bert-tiny-random"), reference = Path.Combine(dir, "reference", input);
        using var loaded = ModelLoader.Load(dir);
        var model = loaded.Model;
        Assert.Equal("bert", model.Config.Family);
        Assert.False(model.Config.Causal);
        var ids = Ints(Path.Combine(reference, "tokens.txt"));
        var types = Ints(Path.Combine(reference, "token_type_ids.txt"));
        var mask = Ints(Path.Combine(reference, "attention_mask.txt"));
        int T = ids.Length, d = model.Config.DModel, h = model.Config.NHeads, layers = model.Config.NLayers;
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(tensor(ids, [1, T]), tensor(mask, [1, T]), tensor(types, [1, T]));
        using (cache)
        {
            // Every position, padded ones included: the reference computes them too (they attend to the real tokens).
            TensorAssert.Close(TensorAssert.ReadRawFloats(Path.Combine(reference, "logits.f32"), T, 512), logits[0], 2e-4, "bert logits");
            var resid = TensorAssert.ReadRawFloats(Path.Combine(reference, "resid.f32"), layers + 1, T, d);
            for (int l = 0; l < layers; l++) TensorAssert.Close(resid[l], cache[HookNames.ResidPre(l)][0], 2e-4, $"bert resid_pre {l}");
            TensorAssert.Close(resid[layers], cache[HookNames.NormalizedResidPost(layers - 1)][0], 2e-4, "bert normalized_resid_post");
            TensorAssert.Close(TensorAssert.ReadRawFloats(Path.Combine(reference, "last_hidden_state.f32"), T, d),
                cache[HookNames.NormalizedResidPost(layers - 1)][0], 1e-4, "bert last_hidden_state");
            var attn = TensorAssert.ReadRawFloats(Path.Combine(reference, "attn.f32"), layers, h, T, T);
            for (int l = 0; l < layers; l++) TensorAssert.Close(attn[l], cache[HookNames.Pattern(l)][0], 1e-4, $"bert pattern {l}");
        }
    }

    [Fact]
    public void MiniLM_last_hidden_state_mean_pooling_and_pooler_match_onnx_runtime()
    {
        string dir = SharedData.Model("all-MiniLM-L6-v2"), reference = Path.Combine(dir, "reference");
        using var loaded = ModelLoader.Load(dir);
        var model = loaded.Model;
        Assert.Equal(HeadKind.None, model.Config.Head);
        Assert.True(model.Config.Pooler);
        Assert.Equal(22_713_216, model.ParameterCount);
        const int B = 4, T = 14, D = 384;
        var ids = Enumerable.Range(0, B).SelectMany(b => Ints(Path.Combine(reference, "input_ids.txt"), b)).ToArray();
        var mask = Enumerable.Range(0, B).SelectMany(b => Ints(Path.Combine(reference, "attention_mask.txt"), b)).ToArray();
        using var scope = NewDisposeScope();
        // End to end from text: the folder's tokenizer.json, found by the loader, adds [CLS] … [SEP] as an encoder's default.
        string[] sentences =
        [
            "The cat sat on the mat.", "A mouse ran across the keyboard and the screen went dark.",
            "Interpretability tools open up transformer models.", "Python executes quickly.",
        ];
        using var batch = model.ToTokens(sentences);
        Assert.Equal(ids, batch.Tokens.data<long>().ToArray());
        Assert.Equal(mask, batch.AttentionMask.to(ScalarType.Int64).data<long>().ToArray());
        var maskT = tensor(mask, [B, T]);
        var (hidden, cache) = model.RunWithCache(batch.Tokens, batch.AttentionMask, HookNames.Pattern(0).Equals);
        using (cache)
        {
            var expected = TensorAssert.ReadRawFloats(Path.Combine(reference, "last_hidden_state.f32"), B, T, D);
            for (int b = 0; b < B; b++)
            {
                int len = (int)mask.Skip(b * T).Take(T).Sum();
                TensorAssert.Close(expected[b].narrow(0, 0, len), hidden[b].narrow(0, 0, len), 1e-4, $"MiniLM last_hidden_state row {b} (real positions)");
            }
            var m = maskT.to(ScalarType.Float32).unsqueeze(-1);
            var pooled = (hidden * m).sum(1) / m.sum(1);
            TensorAssert.Close(TensorAssert.ReadRawFloats(Path.Combine(reference, "mean_pooled.f32"), B, D), pooled, 1e-4, "MiniLM mean pooled");
            TensorAssert.Close(TensorAssert.ReadRawFloats(Path.Combine(reference, "pooler_output.f32"), B, D), model.Pool(hidden), 1e-4, "MiniLM pooler_output");
            var attn = TensorAssert.ReadRawFloats(Path.Combine(reference, "attn.f32"), B, 6, 12, T, T);
            TensorAssert.Close(attn.select(1, 0), cache[HookNames.Pattern(0)], 1e-4, "MiniLM layer-0 patterns");
        }
    }
}

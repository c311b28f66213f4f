using System.Buffers.Binary;
using System.Text.Json.Nodes;
using Interp.Loading;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Tests.Reliability;

/// <summary>
/// Valid model files of a few KB, the seeds the fuzzers mutate: Hugging Face GPT-2 and LLaMA directories, a llama2.c
/// checkpoint, a model in the project's own format, and the real 512-token llama2.c tokenizer.
/// </summary>
internal static class TinyModelFiles
{
    public const int D = 8, Layers = 1, Heads = 2, KvHeads = 1, Mlp = 16, Vocab = 16, Ctx = 8;

    private static Tensor Random(int seed, params long[] shape)
    {
        var random = new Random(seed);
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float)(random.NextDouble() - 0.5);
        return tensor(values, shape);
    }

    /// <summary>config.json of a GPT-2 with d_model 8, one layer, two heads, vocabulary 16 and context 8.</summary>
    public static JsonObject Gpt2Config() => new()
    {
        ["architectures"] = new JsonArray("GPT2LMHeadModel"),
        ["model_type"] = "gpt2", ["vocab_size"] = Vocab, ["n_positions"] = Ctx, ["n_ctx"] = Ctx, ["n_embd"] = D,
        ["n_layer"] = Layers, ["n_head"] = Heads, ["n_inner"] = null, ["activation_function"] = "gelu_new",
        ["layer_norm_epsilon"] = 1e-5, ["scale_attn_weights"] = true, ["tie_word_embeddings"] = true, ["torch_dtype"] = "float32",
    };

    /// <summary>The GPT-2's tensors under Hugging Face names.</summary>
    public static Dictionary<string, Tensor> Gpt2Tensors()
    {
        int s = 0;
        var t = new Dictionary<string, Tensor>
        {
            ["wte.weight"] = Random(++s, Vocab, D), ["wpe.weight"] = Random(++s, Ctx, D),
            ["ln_f.weight"] = Random(++s, D), ["ln_f.bias"] = Random(++s, D),
        };
        for (int l = 0; l < Layers; l++)
        {
            string p = $"h.{l}.";
            t[p + "ln_1.weight"] = Random(++s, D); t[p + "ln_1.bias"] = Random(++s, D);
            t[p + "ln_2.weight"] = Random(++s, D); t[p + "ln_2.bias"] = Random(++s, D);
            t[p + "attn.c_attn.weight"] = Random(++s, D, 3 * D); t[p + "attn.c_attn.bias"] = Random(++s, 3 * D);
            t[p + "attn.c_proj.weight"] = Random(++s, D, D); t[p + "attn.c_proj.bias"] = Random(++s, D);
            t[p + "mlp.c_fc.weight"] = Random(++s, D, 4 * D); t[p + "mlp.c_fc.bias"] = Random(++s, 4 * D);
            t[p + "mlp.c_proj.weight"] = Random(++s, 4 * D, D); t[p + "mlp.c_proj.bias"] = Random(++s, D);
        }
        return t;
    }

    /// <summary>config.json of a LLaMA with grouped-query attention (2 heads, 1 key/value head) and an untied head.</summary>
    public static JsonObject LlamaConfig() => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama", ["hidden_size"] = D, ["num_hidden_layers"] = Layers, ["num_attention_heads"] = Heads,
        ["num_key_value_heads"] = KvHeads, ["intermediate_size"] = Mlp, ["vocab_size"] = Vocab, ["max_position_embeddings"] = Ctx,
        ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 10000.0, ["tie_word_embeddings"] = false, ["hidden_act"] = "silu",
    };

    /// <summary>The LLaMA's tensors under Hugging Face names.</summary>
    public static Dictionary<string, Tensor> LlamaTensors()
    {
        int s = 100, e = D / Heads;
        var t = new Dictionary<string, Tensor>
        {
            ["model.embed_tokens.weight"] = Random(++s, Vocab, D), ["model.norm.weight"] = Random(++s, D),
            ["lm_head.weight"] = Random(++s, Vocab, D),
        };
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            t[p + "input_layernorm.weight"] = Random(++s, D);
            t[p + "post_attention_layernorm.weight"] = Random(++s, D);
            t[p + "self_attn.q_proj.weight"] = Random(++s, Heads * e, D);
            t[p + "self_attn.k_proj.weight"] = Random(++s, KvHeads * e, D);
            t[p + "self_attn.v_proj.weight"] = Random(++s, KvHeads * e, D);
            t[p + "self_attn.o_proj.weight"] = Random(++s, D, Heads * e);
            t[p + "mlp.gate_proj.weight"] = Random(++s, Mlp, D);
            t[p + "mlp.up_proj.weight"] = Random(++s, Mlp, D);
            t[p + "mlp.down_proj.weight"] = Random(++s, D, Mlp);
        }
        return t;
    }

    /// <summary>The bytes of a safetensors file holding <paramref name="tensors"/> (written by the project's writer).</summary>
    public static byte[] SafeTensorsBytes(Dictionary<string, Tensor> tensors, SafeTensorsDType dtype = SafeTensorsDType.F32,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        string tmp = Path.Combine(Path.GetTempPath(), $"interp-tiny-{Guid.NewGuid():N}.safetensors");
        try
        {
            SafeTensorsWriter.Write(tmp, tensors, metadata, dtype);
            return File.ReadAllBytes(tmp);
        }
        finally
        {
            File.Delete(tmp);
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>A llama2.c checkpoint (legacy version 0): 7 int32 header fields, then float32 weights.</summary>
    public static byte[] Llama2CBytes(bool sharedClassifier)
    {
        int e = D / Heads;
        long floats = (long)Vocab * D + Layers * D + Layers * D * (Heads * e) + 2L * Layers * D * (KvHeads * e) + Layers * (Heads * e) * D
                      + Layers * D + 3L * Layers * D * Mlp + D + 2L * Ctx * (e / 2) + (sharedClassifier ? 0 : (long)Vocab * D);
        var bytes = new byte[28 + 4 * floats];
        int[] header = [D, Mlp, Layers, Heads, KvHeads, sharedClassifier ? Vocab : -Vocab, Ctx];
        for (int i = 0; i < 7; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * i), header[i]);
        var random = new Random(7);
        for (long i = 0; i < floats; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(28 + 4 * i)), (float)(random.NextDouble() - 0.5));
        return bytes;
    }

    /// <summary>A GPT-2-like model of the project's own format: its manifest and its weights file.</summary>
    public static (byte[] Manifest, byte[] Weights) InterpModel()
    {
        var cfg = new ModelConfig
        {
            Name = "tiny", DModel = D, NLayers = Layers, NHeads = Heads, DMlp = Mlp, DVocab = Vocab, NCtx = Ctx,
            Norm = NormKind.LayerNorm, Positional = PositionalKind.Learned, Mlp = MlpKind.Standard,
        };
        string dir = Path.Combine(Path.GetTempPath(), $"interp-tiny-{Guid.NewGuid():N}");
        try
        {
            using var model = new HookedTransformer(cfg);
            model.InitWeights(3);
            InterpModelFormat.Save(model, dir);
            return (File.ReadAllBytes(Path.Combine(dir, InterpModelFormat.ManifestFile)), File.ReadAllBytes(Path.Combine(dir, InterpModelFormat.WeightsFile)));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

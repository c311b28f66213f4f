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

    // ---- The architectures of issue 13: two layers each, so that per-layer choices (sliding windows) have a layer to differ on. ----

    /// <summary>Layers of the architecture bases below.</summary>
    public const int ArchLayers = 2;

    /// <summary>Width of one head in the architecture bases (d_model / heads).</summary>
    public const int HeadDim = D / Heads;

    /// <summary>A valid Hugging Face model: its config.json and its tensors under Hugging Face names.</summary>
    public sealed record HfModel(string Name, JsonObject Config, Func<Dictionary<string, Tensor>> Tensors);

    /// <summary>Every architecture base: GPT-NeoX, Gemma 2, Qwen 3, Qwen 2, Mistral, Llama 3, BERT (masked LM) and BERT (base + pooler).</summary>
    public static IReadOnlyList<HfModel> Architectures() =>
    [
        new("gpt_neox", GptNeoXConfig(), GptNeoXTensors),
        new("gemma2", Gemma2Config(), Gemma2Tensors),
        new("qwen3", Qwen3Config(), () => LlamaFamilyTensors(300, qkNorm: true, qkvBias: false, lmHead: false)),
        new("qwen2", Qwen2Config(), () => LlamaFamilyTensors(400, qkNorm: false, qkvBias: true, lmHead: true)),
        new("mistral", MistralConfig(), () => LlamaFamilyTensors(500, qkNorm: false, qkvBias: false, lmHead: true)),
        new("llama3", Llama3Config(), () => LlamaFamilyTensors(600, qkNorm: false, qkvBias: false, lmHead: false)),
        new("bert-mlm", BertConfig("BertForMaskedLM"), () => BertTensors(maskedLm: true)),
        new("bert-pooler", BertConfig("BertModel"), () => BertTensors(maskedLm: false)),
    ];

    /// <summary>GPT-NeoX: parallel residual, rotary over half of each head (rotary_pct 0.5), untied embed_out.</summary>
    public static JsonObject GptNeoXConfig() => new()
    {
        ["architectures"] = new JsonArray("GPTNeoXForCausalLM"),
        ["model_type"] = "gpt_neox", ["hidden_size"] = D, ["num_hidden_layers"] = ArchLayers, ["num_attention_heads"] = Heads,
        ["intermediate_size"] = Mlp, ["vocab_size"] = Vocab, ["max_position_embeddings"] = Ctx, ["layer_norm_eps"] = 1e-5,
        ["rotary_pct"] = 0.5, ["rotary_emb_base"] = 10000, ["use_parallel_residual"] = true, ["hidden_act"] = "gelu",
        ["tie_word_embeddings"] = false, ["attention_bias"] = true, ["rope_scaling"] = null,
    };

    private static Dictionary<string, Tensor> GptNeoXTensors()
    {
        int s = 200;
        var t = new Dictionary<string, Tensor>
        {
            ["gpt_neox.embed_in.weight"] = Random(++s, Vocab, D), ["gpt_neox.final_layer_norm.weight"] = Random(++s, D),
            ["gpt_neox.final_layer_norm.bias"] = Random(++s, D), ["embed_out.weight"] = Random(++s, Vocab, D),
        };
        for (int l = 0; l < ArchLayers; l++)
        {
            string p = $"gpt_neox.layers.{l}.";
            t[p + "input_layernorm.weight"] = Random(++s, D); t[p + "input_layernorm.bias"] = Random(++s, D);
            t[p + "post_attention_layernorm.weight"] = Random(++s, D); t[p + "post_attention_layernorm.bias"] = Random(++s, D);
            t[p + "attention.query_key_value.weight"] = Random(++s, 3 * D, D); t[p + "attention.query_key_value.bias"] = Random(++s, 3 * D);
            t[p + "attention.dense.weight"] = Random(++s, D, D); t[p + "attention.dense.bias"] = Random(++s, D);
            t[p + "mlp.dense_h_to_4h.weight"] = Random(++s, Mlp, D); t[p + "mlp.dense_h_to_4h.bias"] = Random(++s, Mlp);
            t[p + "mlp.dense_4h_to_h.weight"] = Random(++s, D, Mlp); t[p + "mlp.dense_4h_to_h.bias"] = Random(++s, D);
        }
        return t;
    }

    /// <summary>Gemma 2: soft caps, query_pre_attn_scalar, a sliding window on the layers layer_types names, tied embeddings.</summary>
    public static JsonObject Gemma2Config() => new()
    {
        ["architectures"] = new JsonArray("Gemma2ForCausalLM"),
        ["model_type"] = "gemma2", ["hidden_size"] = D, ["num_hidden_layers"] = ArchLayers, ["num_attention_heads"] = Heads,
        ["num_key_value_heads"] = KvHeads, ["head_dim"] = HeadDim, ["intermediate_size"] = Mlp, ["vocab_size"] = Vocab,
        ["max_position_embeddings"] = Ctx, ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 10000.0, ["query_pre_attn_scalar"] = HeadDim,
        ["attn_logit_softcapping"] = 50.0, ["final_logit_softcapping"] = 30.0, ["sliding_window"] = 4,
        ["layer_types"] = new JsonArray("sliding_attention", "full_attention"),
        ["hidden_activation"] = "gelu_pytorch_tanh", ["hidden_act"] = "gelu_pytorch_tanh", ["tie_word_embeddings"] = true, ["attention_bias"] = false,
    };

    private static Dictionary<string, Tensor> Gemma2Tensors()
    {
        int s = 250;
        var t = new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = Random(++s, Vocab, D), ["model.norm.weight"] = Random(++s, D) };
        for (int l = 0; l < ArchLayers; l++)
        {
            string p = $"model.layers.{l}.";
            foreach (var norm in new[] { "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm" })
                t[p + norm + ".weight"] = Random(++s, D);
            AddAttentionAndMlp(t, p, ref s, qkNorm: false, qkvBias: false);
        }
        return t;
    }

    private static JsonObject LlamaFamilyConfig(string type, string architecture) => new()
    {
        ["architectures"] = new JsonArray(architecture),
        ["model_type"] = type, ["hidden_size"] = D, ["num_hidden_layers"] = ArchLayers, ["num_attention_heads"] = Heads,
        ["num_key_value_heads"] = KvHeads, ["intermediate_size"] = Mlp, ["vocab_size"] = Vocab, ["max_position_embeddings"] = Ctx,
        ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 10000.0, ["hidden_act"] = "silu",
    };

    /// <summary>Qwen 3: q/k RMSNorm per head, head_dim given, a sliding window from layer max_window_layers = 1 on, tied embeddings.</summary>
    public static JsonObject Qwen3Config()
    {
        var c = LlamaFamilyConfig("qwen3", "Qwen3ForCausalLM");
        c["head_dim"] = HeadDim; c["attention_bias"] = false; c["tie_word_embeddings"] = true;
        c["use_sliding_window"] = true; c["sliding_window"] = 4; c["max_window_layers"] = 1; c["rope_scaling"] = null;
        return c;
    }

    /// <summary>Qwen 2: q/k/v biases, no sliding window (use_sliding_window false), untied head.</summary>
    public static JsonObject Qwen2Config()
    {
        var c = LlamaFamilyConfig("qwen2", "Qwen2ForCausalLM");
        c["tie_word_embeddings"] = false; c["use_sliding_window"] = false; c["sliding_window"] = 8; c["max_window_layers"] = 1;
        return c;
    }

    /// <summary>Mistral: a sliding window of 4 on every layer, untied head.</summary>
    public static JsonObject MistralConfig()
    {
        var c = LlamaFamilyConfig("mistral", "MistralForCausalLM");
        c["sliding_window"] = 4; c["tie_word_embeddings"] = false;
        return c;
    }

    /// <summary>Llama 3: rope_scaling of rope_type llama3, tied embeddings.</summary>
    public static JsonObject Llama3Config()
    {
        var c = LlamaFamilyConfig("llama", "LlamaForCausalLM");
        c["head_dim"] = HeadDim; c["rope_theta"] = 500000.0; c["tie_word_embeddings"] = true; c["attention_bias"] = false; c["mlp_bias"] = false;
        c["rope_scaling"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 4,
        };
        return c;
    }

    private static Dictionary<string, Tensor> LlamaFamilyTensors(int seed, bool qkNorm, bool qkvBias, bool lmHead)
    {
        int s = seed;
        var t = new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = Random(++s, Vocab, D), ["model.norm.weight"] = Random(++s, D) };
        if (lmHead) t["lm_head.weight"] = Random(++s, Vocab, D);
        for (int l = 0; l < ArchLayers; l++)
        {
            string p = $"model.layers.{l}.";
            t[p + "input_layernorm.weight"] = Random(++s, D);
            t[p + "post_attention_layernorm.weight"] = Random(++s, D);
            AddAttentionAndMlp(t, p, ref s, qkNorm, qkvBias);
        }
        return t;
    }

    private static void AddAttentionAndMlp(Dictionary<string, Tensor> t, string p, ref int s, bool qkNorm, bool qkvBias)
    {
        t[p + "self_attn.q_proj.weight"] = Random(++s, Heads * HeadDim, D);
        t[p + "self_attn.k_proj.weight"] = Random(++s, KvHeads * HeadDim, D);
        t[p + "self_attn.v_proj.weight"] = Random(++s, KvHeads * HeadDim, D);
        t[p + "self_attn.o_proj.weight"] = Random(++s, D, Heads * HeadDim);
        if (qkvBias)
        {
            t[p + "self_attn.q_proj.bias"] = Random(++s, Heads * HeadDim);
            t[p + "self_attn.k_proj.bias"] = Random(++s, KvHeads * HeadDim);
            t[p + "self_attn.v_proj.bias"] = Random(++s, KvHeads * HeadDim);
        }
        if (qkNorm)
        {
            t[p + "self_attn.q_norm.weight"] = Random(++s, HeadDim);
            t[p + "self_attn.k_norm.weight"] = Random(++s, HeadDim);
        }
        t[p + "mlp.gate_proj.weight"] = Random(++s, Mlp, D);
        t[p + "mlp.up_proj.weight"] = Random(++s, Mlp, D);
        t[p + "mlp.down_proj.weight"] = Random(++s, D, Mlp);
    }

    /// <summary>BERT with two token types: <c>BertForMaskedLM</c> (bert. prefix, cls.predictions head) or <c>BertModel</c> (no prefix, pooler).</summary>
    public static JsonObject BertConfig(string architecture) => new()
    {
        ["architectures"] = new JsonArray(architecture),
        ["model_type"] = "bert", ["hidden_size"] = D, ["num_hidden_layers"] = ArchLayers, ["num_attention_heads"] = Heads,
        ["intermediate_size"] = Mlp, ["vocab_size"] = Vocab, ["max_position_embeddings"] = Ctx, ["type_vocab_size"] = 2,
        ["layer_norm_eps"] = 1e-12, ["hidden_act"] = "gelu", ["position_embedding_type"] = "absolute", ["pad_token_id"] = 0,
    };

    private static Dictionary<string, Tensor> BertTensors(bool maskedLm)
    {
        int s = maskedLm ? 700 : 800;
        string b = maskedLm ? "bert." : "";
        var t = new Dictionary<string, Tensor>
        {
            [b + "embeddings.word_embeddings.weight"] = Random(++s, Vocab, D), [b + "embeddings.position_embeddings.weight"] = Random(++s, Ctx, D),
            [b + "embeddings.token_type_embeddings.weight"] = Random(++s, 2, D),
            [b + "embeddings.LayerNorm.weight"] = Random(++s, D), [b + "embeddings.LayerNorm.bias"] = Random(++s, D),
        };
        for (int l = 0; l < ArchLayers; l++)
        {
            string p = $"{b}encoder.layer.{l}.";
            foreach (var x in new[] { "query", "key", "value" })
            {
                t[p + $"attention.self.{x}.weight"] = Random(++s, D, D);
                t[p + $"attention.self.{x}.bias"] = Random(++s, D);
            }
            t[p + "attention.output.dense.weight"] = Random(++s, D, D); t[p + "attention.output.dense.bias"] = Random(++s, D);
            t[p + "attention.output.LayerNorm.weight"] = Random(++s, D); t[p + "attention.output.LayerNorm.bias"] = Random(++s, D);
            t[p + "intermediate.dense.weight"] = Random(++s, Mlp, D); t[p + "intermediate.dense.bias"] = Random(++s, Mlp);
            t[p + "output.dense.weight"] = Random(++s, D, Mlp); t[p + "output.dense.bias"] = Random(++s, D);
            t[p + "output.LayerNorm.weight"] = Random(++s, D); t[p + "output.LayerNorm.bias"] = Random(++s, D);
        }
        if (maskedLm)
        {
            t["cls.predictions.transform.dense.weight"] = Random(++s, D, D); t["cls.predictions.transform.dense.bias"] = Random(++s, D);
            t["cls.predictions.transform.LayerNorm.weight"] = Random(++s, D); t["cls.predictions.transform.LayerNorm.bias"] = Random(++s, D);
            t["cls.predictions.bias"] = Random(++s, Vocab);
        }
        else
        {
            t["pooler.dense.weight"] = Random(++s, D, D); t["pooler.dense.bias"] = Random(++s, D);
        }
        return t;
    }

    /// <summary>
    /// Models of the project's own format that use the new config fields: Gemma-2-like (norms after sublayers, √d
    /// embedding scale, attention scale, both soft caps, a sliding window on layer 0, q/k norms), BERT-like (post-norm,
    /// bidirectional, token types, embedding norm, masked-LM head, pooler), NeoX-like (parallel blocks, partial rotary,
    /// Llama 3 rope scaling) and Qwen-2-like (q/k/v biases only).
    /// </summary>
    public static IReadOnlyList<(string Name, byte[] Manifest, byte[] Weights)> InterpArchitectures()
    {
        ModelConfig Tiny(string name) => new()
        {
            Name = name, DModel = D, NLayers = ArchLayers, NHeads = Heads, DMlp = Mlp, DVocab = Vocab, NCtx = Ctx,
        };
        var configs = new[]
        {
            Tiny("gemma2-like") with
            {
                Family = "gemma2", NKvHeads = KvHeads, DHead = HeadDim, Norm = NormKind.RMSNorm, Positional = PositionalKind.Rotary,
                NormAfterSublayers = true, EmbeddingScale = Math.Sqrt(D), AttnScale = 2, AttnScoresSoftCap = 50, OutputLogitsSoftCap = 30,
                SlidingWindow = 4, SlidingWindowLayers = [0], QkNorm = true, Mlp = MlpKind.Gated, Act = Activation.GeluTanh, UseBias = false,
            },
            Tiny("bert-like") with
            {
                Family = "bert", Norm = NormKind.LayerNorm, NormEps = 1e-12, Positional = PositionalKind.Learned, Causal = false,
                Block = BlockKind.PostNorm, EmbeddingNorm = true, NTokenTypes = 2, Head = HeadKind.MaskedLM, Pooler = true,
                Mlp = MlpKind.Standard, Act = Activation.Gelu, UseBias = true,
            },
            Tiny("neox-like") with
            {
                Family = "gpt_neox", Norm = NormKind.LayerNorm, Positional = PositionalKind.Rotary, RotaryDim = 2, Block = BlockKind.Parallel,
                RopeScaling = new RopeScaling(8, 1, 4, 4), Mlp = MlpKind.Standard, Act = Activation.Gelu, UseBias = true,
            },
            Tiny("qwen2-like") with
            {
                Family = "qwen2", NKvHeads = KvHeads, Norm = NormKind.RMSNorm, Positional = PositionalKind.Rotary, Mlp = MlpKind.Gated,
                Act = Activation.Silu, UseBias = false, QkvBias = true,
            },
        };
        return configs.Select(cfg =>
        {
            string dir = Path.Combine(Path.GetTempPath(), $"interp-tiny-{Guid.NewGuid():N}");
            try
            {
                using var model = new HookedTransformer(cfg);
                model.InitWeights(5);
                InterpModelFormat.Save(model, dir);
                return (cfg.Name, File.ReadAllBytes(Path.Combine(dir, InterpModelFormat.ManifestFile)), File.ReadAllBytes(Path.Combine(dir, InterpModelFormat.WeightsFile)));
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }
        }).ToArray();
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

using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Loading.Architectures;

/// <summary>
/// Gemma 2: LLaMA's names plus <c>pre_feedforward_layernorm</c> / <c>post_feedforward_layernorm</c>, with
/// <c>post_attention_layernorm</c> meaning the norm on attention's output (TransformerLens's <c>ln1_post</c>). Every
/// RMSNorm computes x·(1 + w); the stored w is an offset, so the adapter loads 1 + w as the gain. Embeddings × √d_model,
/// scores / √query_pre_attn_scalar, attention and final soft caps, GeGLU with tanh GELU, sliding windows on the layers
/// <c>layer_types</c> names (by default the even ones), head_dim from the config, tied embeddings.
/// </summary>
internal sealed class Gemma2Architecture : HfArchitecture
{
    public override string Family => "gemma2";
    public override IReadOnlyList<string> ModelTypes { get; } = ["gemma2"];

    public override ModelConfig ReadConfig(HfConfig hf, string name)
    {
        if (hf.Bool("attention_bias", false)) throw hf.Error("attention_bias", "Gemma 2 with attention biases is not supported");
        int d = hf.Int(null, "hidden_size");
        int layers = hf.Int(null, "num_hidden_layers");
        int? window = hf.Has("sliding_window") ? hf.OptionalInt("sliding_window") : 4096;
        var sliding = window is null ? [] : SlidingLayers(hf, layers, l => (l + 1) % 2 == 1);
        // hidden_activation is Gemma 2's own key; hidden_act is the older one it overrides.
        string actKey = hf.Has("hidden_activation") ? "hidden_activation" : "hidden_act";
        return new ModelConfig
        {
            Name = name,
            Family = Family,
            DModel = d,
            NLayers = layers,
            NHeads = hf.Int(null, "num_attention_heads"),
            NKvHeads = hf.Int(null, "num_key_value_heads"),
            DHead = hf.Int(256, "head_dim"),
            DMlp = hf.Int(null, "intermediate_size"),
            DVocab = hf.Int(null, "vocab_size"),
            NCtx = hf.Int(null, "max_position_embeddings"),
            Norm = NormKind.RMSNorm,
            NormEps = hf.Double("rms_norm_eps", 1e-6),
            NormAfterSublayers = true,
            EmbeddingScale = Math.Sqrt(d),
            AttnScale = Math.Sqrt(hf.Int(256, "query_pre_attn_scalar")),
            AttnScoresSoftCap = hf.Has("attn_logit_softcapping") ? PositiveCap(hf, "attn_logit_softcapping") : 50.0,
            OutputLogitsSoftCap = hf.Has("final_logit_softcapping") ? PositiveCap(hf, "final_logit_softcapping") : 30.0,
            Positional = PositionalKind.Rotary,
            RotaryStyle = RotaryStyle.Halves,
            RotaryBase = hf.Double("rope_theta", 10000.0),
            Mlp = MlpKind.Gated,
            Act = ReadActivation(hf, actKey, "gelu_pytorch_tanh"),
            UseBias = false,
            SlidingWindow = sliding.Length == 0 ? 0 : window!.Value,
            SlidingWindowLayers = sliding.Length == 0 || sliding.Length == layers ? null : sliding,
        };
    }

    private static double PositiveCap(HfConfig hf, string key)
    {
        double cap = hf.Double(key, 0);
        if (cap <= 0) throw hf.Error(key, $"must be positive (or null for no cap), got {cap}");
        return cap;
    }

    public override Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, HfConfig hf)
    {
        if (!hf.Bool("tie_word_embeddings", true) && ckpt.Contains("lm_head.weight"))
            throw new ModelFileException(ckpt.Directory, "lm_head.weight", "an untied Gemma 2 head is not supported");
        int d = cfg.DModel, h = cfg.NHeads, kv = cfg.KvHeads, e = cfg.HeadDim, f = cfg.DMlp, V = cfg.DVocab;
        // Gemma's RMSNorm multiplies by (1 + w): the gain is the stored offset plus one.
        // Hugging Face adds the 1 in float32 (1 + weight.float()); reading float32 here rounds a narrower model's gain once.
        Tensor Gain(string name) => ckpt.ReadFloat32(name, d).add(Scalars.One, Scalars.One);
        var w = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = ckpt.Read("model.embed_tokens.weight", V, d),
            ["ln_final.w"] = Gain("model.norm.weight"),
        };
        w["unembed.W_U"] = w["embed.W_E"].t(); // tied, and not scaled by √d_model
        ckpt.Ignore("lm_head.weight");
        for (int l = 0; l < cfg.NLayers; l++)
        {
            string src = $"model.layers.{l}.", dst = $"blocks.{l}.";
            w[dst + "ln1.w"] = Gain(src + "input_layernorm.weight");
            w[dst + "ln1_post.w"] = Gain(src + "post_attention_layernorm.weight");
            w[dst + "ln2.w"] = Gain(src + "pre_feedforward_layernorm.weight");
            w[dst + "ln2_post.w"] = Gain(src + "post_feedforward_layernorm.weight");
            w[dst + "attn.W_Q"] = InHeads(ckpt.Read(src + "self_attn.q_proj.weight", h * e, d), h, e, d);
            w[dst + "attn.W_K"] = InHeads(ckpt.Read(src + "self_attn.k_proj.weight", kv * e, d), kv, e, d);
            w[dst + "attn.W_V"] = InHeads(ckpt.Read(src + "self_attn.v_proj.weight", kv * e, d), kv, e, d);
            w[dst + "attn.W_O"] = OutHeads(ckpt.Read(src + "self_attn.o_proj.weight", d, h * e), h, e, d);
            w[dst + "mlp.W_gate"] = ckpt.Read(src + "mlp.gate_proj.weight", f, d).t();
            w[dst + "mlp.W_in"] = ckpt.Read(src + "mlp.up_proj.weight", f, d).t();
            w[dst + "mlp.W_out"] = ckpt.Read(src + "mlp.down_proj.weight", d, f).t();
            ckpt.Ignore(src + "self_attn.rotary_emb.inv_freq");
        }
        return w;
    }
}

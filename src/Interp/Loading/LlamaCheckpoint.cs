using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading;

/// <summary>
/// Hugging Face LLaMA checkpoints: <c>model.embed_tokens</c>, <c>model.layers.{i}.self_attn.{q,k,v,o}_proj</c>
/// ([out, in], y = W·x), <c>mlp.{gate,up,down}_proj</c>, <c>input_layernorm</c>, <c>post_attention_layernorm</c>,
/// <c>model.norm</c>, <c>lm_head</c> (tied to the embedding when absent or when <c>tie_word_embeddings</c>).
/// Hugging Face stores q/k permuted for half-rotation, so these models use <see cref="RotaryStyle.Halves"/>.
/// </summary>
public static class LlamaCheckpoint
{
    /// <summary>The model config a LLaMA <c>config.json</c> describes.</summary>
    public static ModelConfig ReadConfig(HfConfig hf, string name)
    {
        if (hf.Has("rope_scaling"))
            throw new ModelFileException(hf.Path, "rope_scaling", "rotary scaling is not supported; only plain rotary embeddings are");
        if (hf.Bool("attention_bias", false) || hf.Bool("mlp_bias", false))
            throw new ModelFileException(hf.Path, "attention_bias", "LLaMA variants with biases are not supported");
        string act = hf.String("hidden_act") ?? "silu";
        if (act is not ("silu" or "swish"))
            throw new ModelFileException(hf.Path, "hidden_act", $"unsupported activation '{act}' (LLaMA uses silu)");
        int d = hf.Int(null, "hidden_size");
        int heads = hf.Int(null, "num_attention_heads");
        return new ModelConfig
        {
            Name = name,
            DModel = d,
            NLayers = hf.Int(null, "num_hidden_layers"),
            NHeads = heads,
            NKvHeads = hf.Int(heads, "num_key_value_heads"),
            DHead = hf.Int(d % heads == 0 ? d / heads : null, "head_dim"),
            DMlp = hf.Int(null, "intermediate_size"),
            DVocab = hf.Int(null, "vocab_size"),
            NCtx = hf.Int(null, "max_position_embeddings"),
            Norm = NormKind.RMSNorm,
            NormEps = hf.Double("rms_norm_eps", 1e-6),
            Positional = PositionalKind.Rotary,
            RotaryStyle = RotaryStyle.Halves,
            RotaryBase = hf.Double("rope_theta", 10000.0),
            Mlp = MlpKind.Gated,
            Act = Activation.Silu,
            UseBias = false,
        };
    }

    /// <summary>Maps the checkpoint's tensors to TransformerLens names for <paramref name="cfg"/>.</summary>
    public static Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, bool tieEmbeddings)
    {
        int d = cfg.DModel, h = cfg.NHeads, kv = cfg.KvHeads, e = cfg.HeadDim, f = cfg.DMlp, V = cfg.DVocab;
        var w = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = ckpt.Read("model.embed_tokens.weight", V, d),
            ["ln_final.w"] = ckpt.Read("model.norm.weight", d),
        };
        w["unembed.W_U"] = !tieEmbeddings && ckpt.Contains("lm_head.weight")
            ? ckpt.Read("lm_head.weight", V, d).t()
            : w["embed.W_E"].t();
        if (tieEmbeddings) ckpt.Ignore("lm_head.weight");
        for (int l = 0; l < cfg.NLayers; l++)
        {
            string src = $"model.layers.{l}.", dst = $"blocks.{l}.";
            w[dst + "ln1.w"] = ckpt.Read(src + "input_layernorm.weight", d);
            w[dst + "ln2.w"] = ckpt.Read(src + "post_attention_layernorm.weight", d);
            // [head·d_head, d_model] → [head, d_model, d_head]
            w[dst + "attn.W_Q"] = ckpt.Read(src + "self_attn.q_proj.weight", h * e, d).view(h, e, d).transpose(1, 2);
            w[dst + "attn.W_K"] = ckpt.Read(src + "self_attn.k_proj.weight", kv * e, d).view(kv, e, d).transpose(1, 2);
            w[dst + "attn.W_V"] = ckpt.Read(src + "self_attn.v_proj.weight", kv * e, d).view(kv, e, d).transpose(1, 2);
            // [d_model, head·d_head] → [head, d_head, d_model]
            w[dst + "attn.W_O"] = ckpt.Read(src + "self_attn.o_proj.weight", d, h * e).t().reshape(h, e, d);
            w[dst + "mlp.W_gate"] = ckpt.Read(src + "mlp.gate_proj.weight", f, d).t();
            w[dst + "mlp.W_in"] = ckpt.Read(src + "mlp.up_proj.weight", f, d).t();
            w[dst + "mlp.W_out"] = ckpt.Read(src + "mlp.down_proj.weight", d, f).t();
            ckpt.Ignore(src + "self_attn.rotary_emb.inv_freq");
        }
        return w;
    }
}

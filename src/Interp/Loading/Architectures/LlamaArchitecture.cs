using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading.Architectures;

/// <summary>
/// LLaMA and the families that share its checkpoint names: Llama 2/3 (<c>llama</c>, with Llama 3's <c>rope_scaling</c>),
/// Mistral (a sliding window on every layer), Qwen 2 (q/k/v biases) and Qwen 3 (per-head q/k RMSNorm before rotary).
/// Names: <c>model.embed_tokens</c>, <c>model.layers.{i}.self_attn.{q,k,v,o}_proj</c> ([out, in], y = x·Wᵀ),
/// <c>self_attn.{q,k}_norm</c>, <c>mlp.{gate,up,down}_proj</c>, <c>input_layernorm</c>, <c>post_attention_layernorm</c>,
/// <c>model.norm</c>, <c>lm_head</c> (tied to the embedding when absent or when <c>tie_word_embeddings</c>).
/// Hugging Face stores q/k permuted for half-rotation, so these models use <see cref="RotaryStyle.Halves"/>.
/// </summary>
internal sealed class LlamaArchitecture : HfArchitecture
{
    public override string Family => "llama";
    public override IReadOnlyList<string> ModelTypes { get; } = ["llama", "mistral", "qwen2", "qwen3"];

    public override ModelConfig ReadConfig(HfConfig hf, string name)
    {
        string type = hf.ModelType!;
        var ropeScaling = ReadRopeScaling(hf);
        bool attentionBias = hf.Bool("attention_bias", false), mlpBias = hf.Bool("mlp_bias", false);
        if (type == "llama" && attentionBias != mlpBias)
            throw hf.Error("attention_bias", "LLaMA variants with biases on attention but not the MLP (or the reverse) are not supported");
        if (type is "mistral" or "qwen2" or "qwen3" && (attentionBias || mlpBias))
            throw hf.Error(attentionBias ? "attention_bias" : "mlp_bias", $"{type} checkpoints with extra biases are not supported");
        int d = hf.Int(null, "hidden_size");
        int heads = hf.Int(null, "num_attention_heads");
        int layers = hf.Int(null, "num_hidden_layers");
        int? headDimDefault = type == "qwen3" ? 128 : d % heads == 0 ? d / heads : null; // transformers' defaults
        var (window, windowLayers) = Window(hf, type, layers);
        return new ModelConfig
        {
            Name = name,
            Family = type,
            DModel = d,
            NLayers = layers,
            NHeads = heads,
            NKvHeads = hf.Int(heads, "num_key_value_heads"),
            DHead = hf.Int(headDimDefault, "head_dim"),
            DMlp = hf.Int(null, "intermediate_size"),
            DVocab = hf.Int(null, "vocab_size"),
            NCtx = hf.Int(null, "max_position_embeddings"),
            Norm = NormKind.RMSNorm,
            NormEps = hf.Double("rms_norm_eps", 1e-6),
            Positional = PositionalKind.Rotary,
            RotaryStyle = RotaryStyle.Halves,
            RotaryBase = hf.Double("rope_theta", 10000.0),
            RopeScaling = ropeScaling,
            Mlp = MlpKind.Gated,
            Act = ReadActivation(hf, "hidden_act", "silu"),
            UseBias = attentionBias && mlpBias,
            QkvBias = type == "qwen2",
            QkNorm = type == "qwen3",
            SlidingWindow = window,
            SlidingWindowLayers = windowLayers,
        };
    }

    /// <summary>
    /// The sliding window and its layers, as transformers reads each config: Mistral slides on every layer whenever
    /// <c>sliding_window</c> is set (its default is 4096); Qwen 2/3 only with <c>use_sliding_window</c>, on the layers from
    /// <c>max_window_layers</c> on (or those <c>layer_types</c> names); LLaMA never.
    /// </summary>
    private static (int Window, int[]? Layers) Window(HfConfig hf, string type, int layers)
    {
        switch (type)
        {
            case "mistral":
            {
                int? window = hf.Has("sliding_window") ? hf.OptionalInt("sliding_window") : 4096;
                if (window is null) return (0, null);
                var sliding = SlidingLayers(hf, layers, _ => true);
                return (window.Value, sliding.Length == layers ? null : sliding);
            }
            case "qwen2" or "qwen3":
            {
                if (!hf.Bool("use_sliding_window", false) || hf.OptionalInt("sliding_window") is not int window) return (0, null);
                int from = hf.NonNegativeInt("max_window_layers", 28); // 0: every layer slides
                var sliding = SlidingLayers(hf, layers, l => l >= from);
                return sliding.Length == 0 ? (0, null) : (window, sliding);
            }
            default:
            {
                var sliding = SlidingLayers(hf, layers, _ => false);
                if (sliding.Length == 0) return (0, null);
                return (hf.OptionalInt("sliding_window") ?? throw hf.Error("sliding_window", "layer_types names sliding layers but sliding_window is not set"), sliding);
            }
        }
    }

    /// <summary><c>rope_scaling</c>: null, <c>default</c>, or Llama 3's frequency rescaling; other kinds are refused.</summary>
    internal static RopeScaling? ReadRopeScaling(HfConfig hf)
    {
        var s = hf.Section("rope_scaling");
        if (s is null) return null;
        string kind = s.String("rope_type") ?? s.String("type") ?? throw hf.Error("rope_scaling", "has no rope_type");
        return kind switch
        {
            "default" => null,
            "llama3" => new RopeScaling(
                Positive(s, "factor"), Positive(s, "low_freq_factor"), Positive(s, "high_freq_factor"),
                s.Int(null, "original_max_position_embeddings")),
            _ => throw s.Error("rope_type", $"rotary scaling '{kind}' is not supported (supported: default, llama3)"),
        };
    }

    private static double Positive(HfConfig s, string key)
    {
        double v = s.Double(key, double.NaN);
        if (double.IsNaN(v)) throw s.Error(key, "missing");
        if (v <= 0) throw s.Error(key, $"must be positive, got {v}");
        return v;
    }

    public override Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, HfConfig hf)
    {
        bool tie = hf.Bool("tie_word_embeddings", false);
        int d = cfg.DModel, h = cfg.NHeads, kv = cfg.KvHeads, e = cfg.HeadDim, f = cfg.DMlp, V = cfg.DVocab;
        var w = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = ckpt.Read("model.embed_tokens.weight", V, d),
            ["ln_final.w"] = ckpt.Read("model.norm.weight", d),
        };
        w["unembed.W_U"] = !tie && ckpt.Contains("lm_head.weight") ? ckpt.Read("lm_head.weight", V, d).t() : w["embed.W_E"].t();
        if (tie) ckpt.Ignore("lm_head.weight");
        if (cfg.UseBias) w["unembed.b_U"] = zeros(V); // lm_head has no bias
        for (int l = 0; l < cfg.NLayers; l++)
        {
            string src = $"model.layers.{l}.", dst = $"blocks.{l}.";
            w[dst + "ln1.w"] = ckpt.Read(src + "input_layernorm.weight", d);
            w[dst + "ln2.w"] = ckpt.Read(src + "post_attention_layernorm.weight", d);
            w[dst + "attn.W_Q"] = InHeads(ckpt.Read(src + "self_attn.q_proj.weight", h * e, d), h, e, d);
            w[dst + "attn.W_K"] = InHeads(ckpt.Read(src + "self_attn.k_proj.weight", kv * e, d), kv, e, d);
            w[dst + "attn.W_V"] = InHeads(ckpt.Read(src + "self_attn.v_proj.weight", kv * e, d), kv, e, d);
            w[dst + "attn.W_O"] = OutHeads(ckpt.Read(src + "self_attn.o_proj.weight", d, h * e), h, e, d);
            if (cfg.UseBias || cfg.QkvBias)
            {
                w[dst + "attn.b_Q"] = ckpt.Read(src + "self_attn.q_proj.bias", h * e).view(h, e);
                w[dst + "attn.b_K"] = ckpt.Read(src + "self_attn.k_proj.bias", kv * e).view(kv, e);
                w[dst + "attn.b_V"] = ckpt.Read(src + "self_attn.v_proj.bias", kv * e).view(kv, e);
            }
            if (cfg.UseBias)
            {
                w[dst + "attn.b_O"] = ckpt.Read(src + "self_attn.o_proj.bias", d);
                w[dst + "mlp.b_in"] = ckpt.Read(src + "mlp.up_proj.bias", f);
                w[dst + "mlp.b_out"] = ckpt.Read(src + "mlp.down_proj.bias", d);
                // The gate's bias has no slot in TransformerLens's gated MLP (W_gate has no b_gate): refuse a non-zero one.
                if (ckpt.Contains(src + "mlp.gate_proj.bias") && ckpt.Read(src + "mlp.gate_proj.bias", f).abs().max().item<float>() != 0)
                    throw new ModelFileException(ckpt.Directory, src + "mlp.gate_proj.bias", "a non-zero gate bias is not supported");
            }
            if (cfg.QkNorm)
            {
                w[dst + "attn.q_norm.w"] = ckpt.Read(src + "self_attn.q_norm.weight", e);
                w[dst + "attn.k_norm.w"] = ckpt.Read(src + "self_attn.k_norm.weight", e);
            }
            w[dst + "mlp.W_gate"] = ckpt.Read(src + "mlp.gate_proj.weight", f, d).t();
            w[dst + "mlp.W_in"] = ckpt.Read(src + "mlp.up_proj.weight", f, d).t();
            w[dst + "mlp.W_out"] = ckpt.Read(src + "mlp.down_proj.weight", d, f).t();
            ckpt.Ignore(src + "self_attn.rotary_emb.inv_freq");
        }
        return w;
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading.Architectures;

/// <summary>
/// GPT-2: <c>wte</c>, <c>wpe</c>, <c>h.{i}.ln_1</c>, <c>h.{i}.attn.c_attn</c> (Conv1D layout, y = x·W + b, Q|K|V side by
/// side), <c>h.{i}.attn.c_proj</c>, <c>h.{i}.mlp.c_fc</c>/<c>c_proj</c>, <c>ln_f</c>, with or without a
/// <c>transformer.</c> prefix; <c>lm_head</c> is tied to <c>wte</c> when absent; mask buffers are ignored.
/// </summary>
internal sealed class Gpt2Architecture : HfArchitecture
{
    public override string Family => "gpt2";
    public override IReadOnlyList<string> ModelTypes { get; } = ["gpt2"];

    public override ModelConfig ReadConfig(HfConfig hf, string name)
    {
        if (!hf.Bool("scale_attn_weights", true) || hf.Bool("scale_attn_by_inverse_layer_idx", false))
            throw hf.Error("scale_attn_weights", "only GPT-2's standard 1/√d_head attention scaling is supported");
        int d = hf.Int(null, "n_embd", "hidden_size");
        return new ModelConfig
        {
            Name = name,
            Family = Family,
            DModel = d,
            NLayers = hf.Int(null, "n_layer", "num_hidden_layers"),
            NHeads = hf.Int(null, "n_head", "num_attention_heads"),
            DMlp = hf.Int(4 * d, "n_inner"),
            DVocab = hf.Int(null, "vocab_size"),
            NCtx = hf.Int(null, "n_positions", "n_ctx"),
            NormEps = hf.Double("layer_norm_epsilon", 1e-5),
            Norm = NormKind.LayerNorm,
            Positional = PositionalKind.Learned,
            Mlp = MlpKind.Standard,
            Act = ReadActivation(hf, "activation_function", "gelu_new"),
            UseBias = true,
        };
    }

    public override Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, HfConfig hf)
    {
        string p = ckpt.Contains("transformer.wte.weight") ? "transformer." : "";
        int d = cfg.DModel, h = cfg.NHeads, e = cfg.HeadDim, f = cfg.DMlp, V = cfg.DVocab;
        var w = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = ckpt.Read(p + "wte.weight", V, d),
            ["pos_embed.W_pos"] = ckpt.Read(p + "wpe.weight", cfg.NCtx, d),
            ["ln_final.w"] = ckpt.Read(p + "ln_f.weight", d),
            ["ln_final.b"] = ckpt.Read(p + "ln_f.bias", d),
        };
        w["unembed.W_U"] = ckpt.Contains("lm_head.weight") ? ckpt.Read("lm_head.weight", V, d).t() : w["embed.W_E"].t();
        w["unembed.b_U"] = zeros(V); // GPT-2's lm_head has no bias
        for (int l = 0; l < cfg.NLayers; l++)
        {
            string src = $"{p}h.{l}.", dst = $"blocks.{l}.";
            w[dst + "ln1.w"] = ckpt.Read(src + "ln_1.weight", d);
            w[dst + "ln1.b"] = ckpt.Read(src + "ln_1.bias", d);
            w[dst + "ln2.w"] = ckpt.Read(src + "ln_2.weight", d);
            w[dst + "ln2.b"] = ckpt.Read(src + "ln_2.bias", d);
            // c_attn: [d_model, 3·d_model] → Q|K|V, each [d_model, head·d_head] → [head, d_model, d_head]
            var qkv = ckpt.Read(src + "attn.c_attn.weight", d, 3 * d).split(d, 1);
            var qkvBias = ckpt.Read(src + "attn.c_attn.bias", 3 * d).split(d, 0);
            string[] names = ["Q", "K", "V"];
            for (int i = 0; i < 3; i++)
            {
                w[dst + "attn.W_" + names[i]] = qkv[i].reshape(d, h, e).permute(1, 0, 2);
                w[dst + "attn.b_" + names[i]] = qkvBias[i].reshape(h, e);
            }
            w[dst + "attn.W_O"] = ckpt.Read(src + "attn.c_proj.weight", d, d).reshape(h, e, d);
            w[dst + "attn.b_O"] = ckpt.Read(src + "attn.c_proj.bias", d);
            w[dst + "mlp.W_in"] = ckpt.Read(src + "mlp.c_fc.weight", d, f);
            w[dst + "mlp.b_in"] = ckpt.Read(src + "mlp.c_fc.bias", f);
            w[dst + "mlp.W_out"] = ckpt.Read(src + "mlp.c_proj.weight", f, d);
            w[dst + "mlp.b_out"] = ckpt.Read(src + "mlp.c_proj.bias", d);
            ckpt.Ignore(src + "attn.bias");
            ckpt.Ignore(src + "attn.masked_bias");
        }
        return w;
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading.Architectures;

/// <summary>
/// GPT-NeoX / Pythia: <c>gpt_neox.embed_in</c>, <c>gpt_neox.layers.{i}.{input,post_attention}_layernorm</c>,
/// <c>attention.query_key_value</c> (fused and grouped per head: rows [h·3e, h·3e + e) are head h's query, the next e
/// its key, the next e its value), <c>attention.dense</c>, <c>mlp.dense_h_to_4h</c> / <c>dense_4h_to_h</c>,
/// <c>gpt_neox.final_layer_norm</c> and an untied <c>embed_out</c>. Parallel blocks unless
/// <c>use_parallel_residual</c> is false; partial rotary over the first <c>rotary_pct</c> of each head (rotate-half).
/// Old files' <c>attention.bias</c>, <c>attention.masked_bias</c> and <c>attention.rotary_emb.inv_freq</c> buffers are ignored.
/// </summary>
internal sealed class GptNeoXArchitecture : HfArchitecture
{
    public override string Family => "gpt_neox";
    public override IReadOnlyList<string> ModelTypes { get; } = ["gpt_neox"];

    public override ModelConfig ReadConfig(HfConfig hf, string name)
    {
        if (!hf.Bool("attention_bias", true))
            throw hf.Error("attention_bias", "GPT-NeoX without attention biases is not supported (its MLP always has biases)");
        int d = hf.Int(null, "hidden_size");
        int heads = hf.Int(null, "num_attention_heads");
        if (d % heads != 0) throw hf.Error("hidden_size", $"{d} is not divisible by num_attention_heads {heads}");
        int dHead = d / heads;
        double pct = hf.Double("rotary_pct", 1.0);
        if (pct <= 0 || pct > 1) throw hf.Error("rotary_pct", $"must be in (0, 1], got {pct}");
        int rotary = (int)(dHead * pct); // transformers: int(head_size * rotary_pct)
        if (rotary < 2 || rotary % 2 != 0) throw hf.Error("rotary_pct", $"gives {rotary} rotary dimensions of {dHead}; need an even number ≥ 2");
        return new ModelConfig
        {
            Name = name,
            Family = Family,
            DModel = d,
            NLayers = hf.Int(null, "num_hidden_layers"),
            NHeads = heads,
            DMlp = hf.Int(null, "intermediate_size"),
            DVocab = hf.Int(null, "vocab_size"),
            NCtx = hf.Int(null, "max_position_embeddings"),
            Norm = NormKind.LayerNorm,
            NormEps = hf.Double("layer_norm_eps", 1e-5),
            Positional = PositionalKind.Rotary,
            RotaryStyle = RotaryStyle.Halves,
            RotaryDim = rotary,
            RotaryBase = hf.Has("rope_theta") ? hf.Double("rope_theta", 10000) : hf.Double("rotary_emb_base", 10000),
            RopeScaling = LlamaArchitecture.ReadRopeScaling(hf),
            Block = hf.Bool("use_parallel_residual", true) ? BlockKind.Parallel : BlockKind.PreNorm,
            Mlp = MlpKind.Standard,
            Act = ReadActivation(hf, "hidden_act", "gelu"),
            UseBias = true,
        };
    }

    public override Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, HfConfig hf)
    {
        int d = cfg.DModel, h = cfg.NHeads, e = cfg.HeadDim, f = cfg.DMlp, V = cfg.DVocab;
        var w = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = ckpt.Read("gpt_neox.embed_in.weight", V, d),
            ["ln_final.w"] = ckpt.Read("gpt_neox.final_layer_norm.weight", d),
            ["ln_final.b"] = ckpt.Read("gpt_neox.final_layer_norm.bias", d),
        };
        bool tie = hf.Bool("tie_word_embeddings", false);
        w["unembed.W_U"] = tie ? w["embed.W_E"].t() : ckpt.Read("embed_out.weight", V, d).t();
        if (tie) ckpt.Ignore("embed_out.weight");
        w["unembed.b_U"] = zeros(V); // embed_out has no bias
        for (int l = 0; l < cfg.NLayers; l++)
        {
            string src = $"gpt_neox.layers.{l}.", dst = $"blocks.{l}.";
            w[dst + "ln1.w"] = ckpt.Read(src + "input_layernorm.weight", d);
            w[dst + "ln1.b"] = ckpt.Read(src + "input_layernorm.bias", d);
            w[dst + "ln2.w"] = ckpt.Read(src + "post_attention_layernorm.weight", d);
            w[dst + "ln2.b"] = ckpt.Read(src + "post_attention_layernorm.bias", d);
            // [head·3·d_head, d_model] viewed per head: [head, 3, d_head, d_model]; [:, 0] queries, [:, 1] keys, [:, 2] values.
            var qkv = ckpt.Read(src + "attention.query_key_value.weight", 3 * d, d).view(h, 3, e, d);
            var qkvBias = ckpt.Read(src + "attention.query_key_value.bias", 3 * d).view(h, 3, e);
            string[] names = ["Q", "K", "V"];
            for (int i = 0; i < 3; i++)
            {
                w[dst + "attn.W_" + names[i]] = qkv.select(1, i).transpose(1, 2); // [head, d_model, d_head]
                w[dst + "attn.b_" + names[i]] = qkvBias.select(1, i);             // [head, d_head]
            }
            w[dst + "attn.W_O"] = OutHeads(ckpt.Read(src + "attention.dense.weight", d, d), h, e, d);
            w[dst + "attn.b_O"] = ckpt.Read(src + "attention.dense.bias", d);
            w[dst + "mlp.W_in"] = ckpt.Read(src + "mlp.dense_h_to_4h.weight", f, d).t();
            w[dst + "mlp.b_in"] = ckpt.Read(src + "mlp.dense_h_to_4h.bias", f);
            w[dst + "mlp.W_out"] = ckpt.Read(src + "mlp.dense_4h_to_h.weight", d, f).t();
            w[dst + "mlp.b_out"] = ckpt.Read(src + "mlp.dense_4h_to_h.bias", d);
            ckpt.Ignore(src + "attention.bias");
            ckpt.Ignore(src + "attention.masked_bias");
            ckpt.Ignore(src + "attention.rotary_emb.inv_freq");
        }
        return w;
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading.Architectures;

/// <summary>
/// BERT encoders, as <c>BertModel</c> (no prefix; a pooler when the file has one) or <c>BertForMaskedLM</c> (a
/// <c>bert.</c> prefix and the <c>cls.predictions</c> head, its decoder tied to the word embeddings): word + position
/// + token-type embeddings and their LayerNorm, post-LN blocks (<c>attention.output.LayerNorm</c> → ln1,
/// <c>output.LayerNorm</c> → ln2), bidirectional attention, absolute positions only.
/// </summary>
internal sealed class BertArchitecture : HfArchitecture
{
    public override string Family => "bert";
    public override IReadOnlyList<string> ModelTypes { get; } = ["bert"];

    public override ModelConfig ReadConfig(HfConfig hf, string name)
    {
        string positions = hf.String("position_embedding_type") ?? "absolute";
        if (positions != "absolute") throw hf.Error("position_embedding_type", $"'{positions}' is not supported (only absolute)");
        if (hf.Bool("is_decoder", false)) throw hf.Error("is_decoder", "BERT as a decoder is not supported");
        return new ModelConfig
        {
            Name = name,
            Family = Family,
            DModel = hf.Int(null, "hidden_size"),
            NLayers = hf.Int(null, "num_hidden_layers"),
            NHeads = hf.Int(null, "num_attention_heads"),
            DMlp = hf.Int(null, "intermediate_size"),
            DVocab = hf.Int(null, "vocab_size"),
            NCtx = hf.Int(null, "max_position_embeddings"),
            NTokenTypes = hf.Int(2, "type_vocab_size"),
            Norm = NormKind.LayerNorm,
            NormEps = hf.Double("layer_norm_eps", 1e-12),
            Positional = PositionalKind.Learned,
            Causal = false,
            Block = BlockKind.PostNorm,
            EmbeddingNorm = true,
            Mlp = MlpKind.Standard,
            Act = ReadActivation(hf, "hidden_act", "gelu"),
            UseBias = true,
            // Which head and pooler the file holds decides the output, as the architecture it was saved from did.
            Head = HeadKind.None,
        };
    }

    /// <summary>The config with the head and pooler that <paramref name="ckpt"/> holds.</summary>
    public override ModelConfig WithCheckpoint(ModelConfig cfg, CheckpointTensors ckpt) => cfg with
    {
        Head = ckpt.Contains("cls.predictions.bias") ? HeadKind.MaskedLM : HeadKind.None,
        Pooler = ckpt.Contains(Prefix(ckpt) + "pooler.dense.weight"),
    };

    private static string Prefix(CheckpointTensors ckpt) => ckpt.Contains("bert.embeddings.word_embeddings.weight") ? "bert." : "";

    public override Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, HfConfig hf)
    {
        string p = Prefix(ckpt);
        int d = cfg.DModel, h = cfg.NHeads, e = cfg.HeadDim, f = cfg.DMlp, V = cfg.DVocab;
        var w = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = ckpt.Read(p + "embeddings.word_embeddings.weight", V, d),
            ["pos_embed.W_pos"] = ckpt.Read(p + "embeddings.position_embeddings.weight", cfg.NCtx, d),
            ["token_type_embed.W_token_type"] = ckpt.Read(p + "embeddings.token_type_embeddings.weight", cfg.NTokenTypes, d),
            ["embed_ln.w"] = ckpt.Read(p + "embeddings.LayerNorm.weight", d),
            ["embed_ln.b"] = ckpt.Read(p + "embeddings.LayerNorm.bias", d),
        };
        ckpt.Ignore(p + "embeddings.position_ids");
        ckpt.Ignore(p + "embeddings.token_type_ids");
        for (int l = 0; l < cfg.NLayers; l++)
        {
            string src = $"{p}encoder.layer.{l}.", dst = $"blocks.{l}.";
            string[] names = ["Q", "K", "V"], hf3 = ["query", "key", "value"];
            for (int i = 0; i < 3; i++)
            {
                w[dst + "attn.W_" + names[i]] = InHeads(ckpt.Read(src + $"attention.self.{hf3[i]}.weight", h * e, d), h, e, d);
                w[dst + "attn.b_" + names[i]] = ckpt.Read(src + $"attention.self.{hf3[i]}.bias", h * e).view(h, e);
            }
            w[dst + "attn.W_O"] = OutHeads(ckpt.Read(src + "attention.output.dense.weight", d, h * e), h, e, d);
            w[dst + "attn.b_O"] = ckpt.Read(src + "attention.output.dense.bias", d);
            w[dst + "ln1.w"] = ckpt.Read(src + "attention.output.LayerNorm.weight", d);
            w[dst + "ln1.b"] = ckpt.Read(src + "attention.output.LayerNorm.bias", d);
            w[dst + "mlp.W_in"] = ckpt.Read(src + "intermediate.dense.weight", f, d).t();
            w[dst + "mlp.b_in"] = ckpt.Read(src + "intermediate.dense.bias", f);
            w[dst + "mlp.W_out"] = ckpt.Read(src + "output.dense.weight", d, f).t();
            w[dst + "mlp.b_out"] = ckpt.Read(src + "output.dense.bias", d);
            w[dst + "ln2.w"] = ckpt.Read(src + "output.LayerNorm.weight", d);
            w[dst + "ln2.b"] = ckpt.Read(src + "output.LayerNorm.bias", d);
        }
        if (cfg.Head == HeadKind.MaskedLM)
        {
            w["mlm_head.W"] = ckpt.Read("cls.predictions.transform.dense.weight", d, d).t();
            w["mlm_head.b"] = ckpt.Read("cls.predictions.transform.dense.bias", d);
            w["mlm_head.ln.w"] = ckpt.Read("cls.predictions.transform.LayerNorm.weight", d);
            w["mlm_head.ln.b"] = ckpt.Read("cls.predictions.transform.LayerNorm.bias", d);
            w["unembed.W_U"] = ckpt.Contains("cls.predictions.decoder.weight") ? ckpt.Read("cls.predictions.decoder.weight", V, d).t() : w["embed.W_E"].t();
            w["unembed.b_U"] = ckpt.Read("cls.predictions.bias", V);
            ckpt.Ignore("cls.predictions.decoder.bias"); // the same tensor as cls.predictions.bias when saved
        }
        if (cfg.Pooler)
        {
            w["pooler.W"] = ckpt.Read(p + "pooler.dense.weight", d, d).t();
            w["pooler.b"] = ckpt.Read(p + "pooler.dense.bias", d);
        }
        return w;
    }
}

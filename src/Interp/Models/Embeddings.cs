using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Token embedding W_E [d_vocab, d_model], times <see cref="ModelConfig.EmbeddingScale"/> (Gemma's √d_model); hook
/// <c>hook_embed</c> is the scaled embedding.
/// </summary>
public sealed class Embed : Component
{
    private readonly HookPoint _hook;
    private readonly Scalar? _scale;   // owned: see Scalars

    /// <summary>W_E [d_vocab, d_model].</summary>
    public Tensor W_E { get; }

    /// <summary>The factor the embedding is multiplied by (<see cref="ModelConfig.EmbeddingScale"/> rounded to float32); 1 for most models.</summary>
    public double Scale { get; }

    /// <summary>Creates the embedding.</summary>
    public Embed(ModelConfig cfg) : base("embed", "")
    {
        W_E = Weight("W_E", cfg.DVocab, cfg.DModel);
        // Rounded to float32 first, as Hugging Face builds Gemma's normalizer as a tensor of the hidden-state dtype.
        Scale = (float)cfg.EmbeddingScale;
        if (cfg.EmbeddingScale != 1.0) _scale = Scale.ToScalar();
        _hook = Declare(HookNames.Embed, "batch", "pos", "d_model");
    }

    /// <summary>tokens [batch, pos] → [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor tokens)
    {
        var embedded = ToStream(W_E.index_select(0, tokens.reshape(-1)).view(tokens.shape[0], tokens.shape[1], -1));
        return _hook.Run(_scale is null ? embedded : embedded.mul_(_scale));
    }

    /// <summary>Every token's embedding as the model adds it to the stream, W_E · <see cref="Scale"/> [d_vocab, d_model], detached (W_E itself when the scale is 1).</summary>
    public Tensor Scaled() => _scale is null ? W_E.detach() : W_E.detach().mul(_scale);

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing) _scale?.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>Token-type (segment) embedding W_token_type [n_token_types, d_model] (BERT); hook <c>hook_token_type_embed</c>.</summary>
public sealed class TokenTypeEmbed : Component
{
    private readonly HookPoint _hook;

    /// <summary>W_token_type [n_token_types, d_model].</summary>
    public Tensor W_token_type { get; }

    /// <summary>Creates the embedding.</summary>
    public TokenTypeEmbed(ModelConfig cfg) : base("token_type_embed", "")
    {
        W_token_type = Weight("W_token_type", cfg.NTokenTypes, cfg.DModel);
        _hook = Declare(HookNames.TokenTypeEmbed, "batch", "pos", "d_model");
    }

    /// <summary>token types [batch, pos] → [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor tokenTypes) =>
        _hook.Run(ToStream(W_token_type.index_select(0, tokenTypes.reshape(-1)).view(tokenTypes.shape[0], tokenTypes.shape[1], -1)));
}

/// <summary>
/// Position embedding added to the residual stream: a learned W_pos, or the original Transformer's fixed sinusoids
/// (PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(…)). Hook <c>hook_pos_embed</c> [batch, pos, d_model].
/// </summary>
public sealed class PosEmbed : Component
{
    private readonly HookPoint _hook;

    /// <summary>W_pos [n_ctx, d_model]: a parameter when learned, a constant when sinusoidal.</summary>
    public Tensor W_pos { get; }

    /// <summary>Creates the position embedding.</summary>
    public PosEmbed(ModelConfig cfg) : base("pos_embed", "")
    {
        W_pos = cfg.Positional == PositionalKind.Learned
            ? Weight("W_pos", cfg.NCtx, cfg.DModel)
            : Constant("W_pos", [cfg.NCtx, cfg.DModel], () => Sinusoids(cfg.NCtx, cfg.DModel));
        _hook = Declare(HookNames.PosEmbed, "batch", "pos", "d_model");
    }

    /// <summary>tokens [batch, pos] → [batch, pos, d_model] (the same rows for every batch entry).</summary>
    public override Tensor forward(Tensor tokens) => forward(tokens, null);

    /// <summary>
    /// tokens [batch, pos] → [batch, pos, d_model] at <paramref name="positions"/> [batch, pos] (null: 0…pos−1 in
    /// every row).
    /// </summary>
    public Tensor forward(Tensor tokens, Tensor? positions)
    {
        long batch = tokens.shape[0], pos = tokens.shape[1];
        if (positions is null) return _hook.Run(ToStream(W_pos.narrow(0, 0, pos)).unsqueeze(0).expand(batch, pos, -1));
        return _hook.Run(ToStream(W_pos.index_select(0, positions.reshape(-1)).view(batch, pos, -1)));
    }

    private static Tensor Sinusoids(int nCtx, int dModel)
    {
        var table = new float[nCtx * dModel];
        for (int p = 0; p < nCtx; p++)
            for (int i = 0; i < dModel / 2; i++)
            {
                double angle = p / Math.Pow(10000.0, 2.0 * i / dModel);
                table[p * dModel + 2 * i] = (float)Math.Sin(angle);
                table[p * dModel + 2 * i + 1] = (float)Math.Cos(angle);
            }
        return tensor(table, [nCtx, dModel]);
    }
}

/// <summary>
/// BERT's masked-LM head before the unembedding (TransformerLens's BertMLMHead): ln(act(x · W + b)); hooks
/// <c>mlm_head.hook_post</c> and the norm's <c>mlm_head.ln.*</c>.
/// </summary>
public sealed class MlmHead : Component
{
    private readonly Activation _act;
    private readonly HookPoint _post;

    /// <summary>W [d_model, d_model].</summary>
    public Tensor W { get; }
    /// <summary>b [d_model].</summary>
    public Tensor b { get; }
    /// <summary>The head's LayerNorm.</summary>
    public Norm Ln { get; }

    /// <summary>Creates the head.</summary>
    public MlmHead(ModelConfig cfg) : base("mlm_head", "mlm_head.")
    {
        _act = cfg.Act;
        W = Weight("W", cfg.DModel, cfg.DModel);
        b = Weight("b", cfg.DModel);
        _post = Declare(HookNames.MlmHeadPost, "batch", "pos", "d_model");
        register_module("ln", Ln = new Norm(cfg, HookNames.MlmHeadNorm + "."));
    }

    /// <inheritdoc />
    public override IEnumerable<HookPoint> HookPoints => base.HookPoints.Concat(Ln.HookPoints);

    /// <summary>[batch, pos, d_model] → [batch, pos, d_model], ready for the unembedding.</summary>
    public override Tensor forward(Tensor x) => Ln.forward(_post.Run(Mlp.Apply(_act, Gemm.MatMul(x, W, b))));
}

/// <summary>BERT's pooler: tanh(h[:, 0] · W + b), the [CLS] token's hidden state through one dense layer.</summary>
public sealed class Pooler : Component
{
    /// <summary>W [d_model, d_model].</summary>
    public Tensor W { get; }
    /// <summary>b [d_model].</summary>
    public Tensor b { get; }

    /// <summary>Creates the pooler.</summary>
    public Pooler(ModelConfig cfg) : base("pooler", "pooler.")
    {
        W = Weight("W", cfg.DModel, cfg.DModel);
        b = Weight("b", cfg.DModel);
    }

    /// <summary>Hidden states [batch, pos, d_model] → pooled [batch, d_model].</summary>
    public override Tensor forward(Tensor hidden) => Gemm.MatMul(hidden.select(1, 0), W, b).tanh();
}

/// <summary>Unembedding: logits = x · W_U + b_U, W_U [d_model, d_vocab].</summary>
public sealed class Unembed : Component
{
    /// <summary>W_U [d_model, d_vocab].</summary>
    public Tensor W_U { get; }
    /// <summary>b_U [d_vocab].</summary>
    public Tensor b_U { get; }

    /// <summary>Creates the unembedding.</summary>
    public Unembed(ModelConfig cfg) : base("unembed", "")
    {
        W_U = Weight("W_U", cfg.DModel, cfg.DVocab);
        b_U = Bias("b_U", cfg.UseBias, cfg.DVocab);
    }

    /// <summary>[batch, pos, d_model] → [batch, pos, d_vocab].</summary>
    public override Tensor forward(Tensor x) => Gemm.MatMul(x, W_U, b_U);
}

using Interp.Hooks;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>Token embedding W_E [d_vocab, d_model]; hook <c>hook_embed</c>.</summary>
public sealed class Embed : Component
{
    private readonly HookPoint _hook;

    /// <summary>W_E [d_vocab, d_model].</summary>
    public Tensor W_E { get; }

    /// <summary>Creates the embedding.</summary>
    public Embed(ModelConfig cfg) : base("embed", "")
    {
        W_E = Weight("W_E", cfg.DVocab, cfg.DModel);
        _hook = Declare(HookNames.Embed, "batch", "pos", "d_model");
    }

    /// <summary>tokens [batch, pos] → [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor tokens) =>
        _hook.Run(W_E.index_select(0, tokens.reshape(-1)).view(tokens.shape[0], tokens.shape[1], -1));
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
            : Constant("W_pos", Sinusoids(cfg.NCtx, cfg.DModel));
        _hook = Declare(HookNames.PosEmbed, "batch", "pos", "d_model");
    }

    /// <summary>tokens [batch, pos] → [batch, pos, d_model] (the same rows for every batch entry).</summary>
    public override Tensor forward(Tensor tokens)
    {
        long batch = tokens.shape[0], pos = tokens.shape[1];
        return _hook.Run(W_pos.narrow(0, 0, pos).unsqueeze(0).expand(batch, pos, -1));
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

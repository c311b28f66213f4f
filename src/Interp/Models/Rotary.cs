using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Rotary position embedding: rotates each pair of a head's first <c>RotaryDim</c> dimensions by the angle
/// pos · θ^(−2i/RotaryDim). The pairs are adjacent (2i, 2i+1) in llama2.c's convention and the two halves
/// (i, i + RotaryDim/2) in Hugging Face LLaMA's; the loader of each format sets the one its weights assume.
/// </summary>
public sealed class Rotary : nn.Module<Tensor, Tensor>
{
    private readonly RotaryStyle _style;
    private readonly int _dim;
    private readonly Tensor _cos, _sin; // [n_ctx, rotary_dim / 2]

    /// <summary>Precomputes the angle tables for every position up to n_ctx.</summary>
    public Rotary(ModelConfig cfg) : base("rotary")
    {
        _style = cfg.RotaryStyle;
        _dim = cfg.RotaryWidth;
        int half = _dim / 2;
        var cos = new float[cfg.NCtx * half];
        var sin = new float[cfg.NCtx * half];
        for (int p = 0; p < cfg.NCtx; p++)
            for (int i = 0; i < half; i++)
            {
                double angle = p * Math.Pow(cfg.RotaryBase, -2.0 * i / _dim);
                cos[p * half + i] = (float)Math.Cos(angle);
                sin[p * half + i] = (float)Math.Sin(angle);
            }
        _cos = tensor(cos, [cfg.NCtx, half]).DetachFromDisposeScope();
        _sin = tensor(sin, [cfg.NCtx, half]).DetachFromDisposeScope();
        register_buffer("cos", _cos, persistent: false);
        register_buffer("sin", _sin, persistent: false);
    }

    /// <summary>The angle tables are registered explicitly; skip TorchSharp's reflection-based registration.</summary>
    protected override void RegisterComponents() { }

    /// <summary>Rotates x [batch, pos, head, d_head]; the positions are 0..pos−1.</summary>
    public override Tensor forward(Tensor x)
    {
        long batch = x.shape[0], pos = x.shape[1], heads = x.shape[2], dHead = x.shape[3];
        var cos = _cos.narrow(0, 0, pos).view(1, pos, 1, -1); // [1, pos, 1, rotary_dim/2]
        var sin = _sin.narrow(0, 0, pos).view(1, pos, 1, -1);
        var rot = _dim == dHead ? x : x.narrow(-1, 0, _dim);
        Tensor rotated;
        if (_style == RotaryStyle.AdjacentPairs)
        {
            var pairs = rot.reshape(batch, pos, heads, _dim / 2, 2);
            var a = pairs.select(-1, 0);
            var b = pairs.select(-1, 1);
            rotated = stack([a * cos - b * sin, (a * sin).add(b * cos, Scalars.One)], -1).reshape(batch, pos, heads, _dim);
        }
        else
        {
            var a = rot.narrow(-1, 0, _dim / 2);
            var b = rot.narrow(-1, _dim / 2, _dim / 2);
            rotated = cat([a * cos - b * sin, (b * cos).add(a * sin, Scalars.One)], -1);
        }
        return _dim == dHead ? rotated : cat([rotated, x.narrow(-1, _dim, dHead - _dim)], -1);
    }
}

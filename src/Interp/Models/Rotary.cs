using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Rotary position embedding: rotates each pair of a head's first <c>RotaryDim</c> dimensions by the angle
/// position · θ^(−2i/RotaryDim) (with Llama 3's frequency rescaling when the config has one). The pairs are adjacent
/// (2i, 2i+1) in llama2.c's convention and the two halves (i, i + RotaryDim/2) in Hugging Face's; the adapter of each
/// format sets the one its weights assume. Angles are computed per pass from the positions, in float64, so that no
/// n_ctx-long table is stored and every sequence of a padded batch can start at its own first real token.
/// </summary>
public sealed class Rotary : nn.Module<Tensor, Tensor>
{
    private readonly RotaryStyle _style;
    private readonly int _dim;
    private readonly Tensor _invFreq; // float64 [rotary_dim / 2]

    /// <summary>Computes the inverse frequencies of <paramref name="cfg"/>.</summary>
    public Rotary(ModelConfig cfg) : base("rotary")
    {
        _style = cfg.RotaryStyle;
        _dim = cfg.RotaryWidth;
        // A load-budget plan (Component.Planning) must not allocate: d_head comes from an unchecked config there.
        _invFreq = (Component.Planning is null ? tensor(InverseFrequencies(cfg), ScalarType.Float64) : empty(0, ScalarType.Float64)).DetachFromDisposeScope();
        register_buffer("inv_freq", _invFreq, persistent: false);
    }

    /// <summary>The buffers are registered explicitly; skip TorchSharp's reflection-based registration.</summary>
    protected override void RegisterComponents() { }

    /// <summary>
    /// θ^(−2i/d) for i &lt; d/2; with Llama 3 scaling (transformers' <c>_compute_llama3_parameters</c>), wavelengths longer
    /// than original/low are divided by the factor, shorter than original/high kept, and those between interpolated.
    /// </summary>
    public static double[] InverseFrequencies(ModelConfig cfg)
    {
        int dim = cfg.RotaryWidth;
        var inv = new double[dim / 2];
        for (int i = 0; i < inv.Length; i++) inv[i] = Math.Pow(cfg.RotaryBase, -2.0 * i / dim);
        if (cfg.RopeScaling is { } s)
        {
            double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor, highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
            for (int i = 0; i < inv.Length; i++)
            {
                double wavelen = 2 * Math.PI / inv[i];
                if (wavelen > lowWavelen) inv[i] /= s.Factor;
                else if (wavelen >= highWavelen)
                {
                    double smooth = (s.OriginalMaxPositions / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
                }
            }
        }
        return inv;
    }

    /// <summary>
    /// cos and sin of the angles, each [batch or 1, pos, 1, rotary_dim/2] in <paramref name="dtype"/>, for
    /// <paramref name="positions"/> [batch, pos] (null: 0…pos−1 for every row).
    /// </summary>
    public (Tensor Cos, Tensor Sin) Angles(Tensor? positions, long pos, ScalarType dtype)
    {
        using var count = pos.ToScalar();
        var p = positions is null
            ? arange(Scalars.Zero, count, Scalars.One, ScalarType.Float64, _invFreq.device).unsqueeze(0)
            : positions.to(ScalarType.Float64, _invFreq.device);
        var angles = p.unsqueeze(-1) * _invFreq; // [batch or 1, pos, rotary_dim/2]
        return (angles.cos().to(dtype).unsqueeze(2), angles.sin().to(dtype).unsqueeze(2));
    }

    /// <summary>Rotates x [batch, pos, head, d_head] at positions 0…pos−1.</summary>
    public override Tensor forward(Tensor x)
    {
        var (cos, sin) = Angles(null, x.shape[1], x.dtype);
        return Apply(x, cos, sin);
    }

    /// <summary>Rotates x [batch, pos, head, d_head] by the angles <see cref="Angles"/> returned.</summary>
    public Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long batch = x.shape[0], pos = x.shape[1], heads = x.shape[2], dHead = x.shape[3];
        var rot = _dim == dHead ? x : x.narrow(-1, 0, _dim);
        Tensor rotated;
        if (_style == RotaryStyle.AdjacentPairs)
        {
            var pairs = rot.reshape(batch, pos, heads, _dim / 2, 2); // [batch, pos, head, rotary_dim/2, 2]
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

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
        _frequencies = Component.Planning is null ? InverseFrequencies(cfg) : [];
        _invFreq = (Component.Planning is null ? tensor(_frequencies, ScalarType.Float64) : empty(0, ScalarType.Float64)).DetachFromDisposeScope();
        register_buffer("inv_freq", _invFreq, persistent: false);
    }

    private readonly double[] _frequencies;

    /// <summary>
    /// The full-width rotation tables of positions 0…pos−1 ([1, pos, 1, rotary_dim] each, in the layout of
    /// <see cref="Rotate"/>), shared by every layer and model of the process with the same frequencies: most recent
    /// <see cref="TableCapacity"/> kept, each at most <see cref="MaxTableElements"/> long, larger ones built per call.
    /// </summary>
    private static readonly LinkedList<(TableKey Key, Tensor Cos, Tensor Sin)> Tables = new();
    private static readonly Lock TablesGate = new();
    private const int TableCapacity = 8;
    private const long MaxTableElements = 1L << 22;

    private sealed record TableKey(RotaryStyle Style, double[] Frequencies, long Pos, ScalarType Dtype, DeviceType Device, int Index)
    {
        public bool Equals(TableKey? other) => other is not null && Style == other.Style && Pos == other.Pos && Dtype == other.Dtype &&
            Device == other.Device && Index == other.Index && Frequencies.AsSpan().SequenceEqual(other.Frequencies);
        public override int GetHashCode() => HashCode.Combine(Style, Frequencies.Length, Pos, Dtype, Device, Index);
    }

    /// <summary>
    /// The rotation of every position as two tables [batch or 1, pos, 1, rotary_dim] for <see cref="Rotate"/>: cos of
    /// each pair's angle at both of its entries, and sin signed −sin at the pair's first entry and +sin at its second.
    /// For positions 0…pos−1 (<paramref name="positions"/> null) they are built once per length and shared.
    /// </summary>
    internal (Tensor Cos, Tensor Sin) RotationTables(Tensor? positions, long pos, ScalarType dtype)
    {
        if (positions is not null || pos * _dim > MaxTableElements) return Expand(Angles(positions, pos, dtype));
        var key = new TableKey(_style, _frequencies, pos, dtype, _invFreq.device_type, _invFreq.device_index);
        lock (TablesGate)
        {
            for (var node = Tables.First; node is not null; node = node.Next)
                if (node.Value.Key.Equals(key))
                {
                    if (node != Tables.First)
                    {
                        Tables.Remove(node);
                        Tables.AddFirst(node);
                    }
                    return (node.Value.Cos, node.Value.Sin);
                }
            (Tensor Cos, Tensor Sin) built;
            using (var scope = NewDisposeScope())
            {
                var (c, s) = Expand(Angles(null, pos, dtype));
                built = (c.DetachFromDisposeScope(), s.DetachFromDisposeScope());
            }
            Tables.AddFirst((key, built.Cos, built.Sin));
            // Dropped, not disposed: another thread's pass may still be using it; the finalizer frees it once unreachable.
            if (Tables.Count > TableCapacity) Tables.RemoveLast();
            return built;
        }
    }

    /// <summary>cos, sin [.., rotary_dim/2] of <see cref="Angles"/> → the full-width tables of <see cref="RotationTables"/>.</summary>
    private (Tensor Cos, Tensor Sin) Expand((Tensor Cos, Tensor Sin) half)
    {
        var (cos, sin) = half;
        if (_style == RotaryStyle.AdjacentPairs)
            return (stack([cos, cos], -1).flatten(-2), stack([sin.neg(), sin], -1).flatten(-2)); // (2i, 2i+1) share angle i
        return (cat([cos, cos], -1), cat([sin.neg(), sin], -1));                                  // (i, i + dim/2) share angle i
    }

    /// <summary>
    /// Rotates x [batch, pos, head, d_head] by tables of <see cref="RotationTables"/>: x·cos + partner(x)·sin, where
    /// partner swaps each pair's two entries, so that a pair (a, b) becomes (a·cos − b·sin, b·cos + a·sin), the same
    /// products and sums, rounded the same, as rotating a and b one by one.
    /// </summary>
    internal Tensor Rotate(Tensor x, (Tensor Cos, Tensor Sin) tables)
    {
        long batch = x.shape[0], pos = x.shape[1], heads = x.shape[2], dHead = x.shape[3];
        var rot = _dim == dHead ? x : x.narrow(-1, 0, _dim);
        var partner = _style == RotaryStyle.AdjacentPairs
            ? rot.reshape(batch, pos, heads, _dim / 2, 2).flip(-1).view(batch, pos, heads, _dim)   // (b, a) for each pair (a, b)
            : rot.roll(_dim / 2, -1);                                                              // [second half, first half]
        var rotated = (rot * tables.Cos).add(partner * tables.Sin, Scalars.One);
        return _dim == dHead ? rotated : cat([rotated, x.narrow(-1, _dim, dHead - _dim)], -1);
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
    public Tensor Apply(Tensor x, Tensor cos, Tensor sin) => Rotate(x, Expand((cos, sin)));
}

using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>
/// A low-rank matrix product <c>A·B</c> kept as its two factors, <c>A</c> [..., m, r] and <c>B</c> [..., r, n],
/// with leading dims (such as [layer, head]) that broadcast between the factors. Circuit matrices like a head's
/// QK (<c>W_E·W_Q·W_Kᵀ·W_Eᵀ</c>, vocab × vocab) are far too big to materialise but have rank at most
/// <c>d_head</c>; everything here (SVD, eigenvalues, norm, products) works from the factors and never forms the
/// m × n matrix unless <see cref="AB"/> is asked for.
/// </summary>
/// <remarks>
/// <para>Ownership: the matrix owns its own handles to the two factors (views of the tensors passed in, sharing their
/// storage, no copy) and <see cref="Dispose"/> frees those handles; the tensors the caller passed stay the caller's.
/// The handles are created in the current <see cref="DisposeScope"/>, like any tensor: a matrix built inside a scope
/// dies with it unless <see cref="MoveToOuterDisposeScope"/> or <see cref="DetachFromDisposeScope"/> is called.
/// Every method that returns a tensor or a new matrix creates it in the caller's current scope and leaves no
/// temporaries behind.</para>
/// <para>Errors in shapes (inner dims that differ, leading dims that do not broadcast, a non-square matrix where a
/// square one is needed, an index out of range) throw <see cref="InterpException"/> naming the shapes.</para>
/// </remarks>
public sealed partial class FactoredMatrix : IDisposable
{
    private readonly long[] _leadingDims;
    private bool _disposed;

    /// <summary>
    /// Wraps <paramref name="a"/> [..., m, r] and <paramref name="b"/> [..., r, n] as the product a·b. The leading
    /// dims broadcast (e.g. a [layer, head, m, r] with b [head, r, n]); both factors are kept as broadcast views.
    /// </summary>
    /// <exception cref="InterpException">A factor has fewer than 2 dims or an empty matrix dim, the inner dims differ,
    /// the leading dims do not broadcast, or the dtypes or devices differ or are not floating point.</exception>
    public FactoredMatrix(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        long[] sa = a.shape, sb = b.shape;
        if (sa.Length < 2 || sb.Length < 2)
            throw new InterpException($"FactoredMatrix: factors must be [..., m, r] and [..., r, n]; got A {Fmt(sa)} and B {Fmt(sb)}");
        if (sa[^1] != sb[^2])
            throw new InterpException($"FactoredMatrix: inner dims differ: A {Fmt(sa)} has {sa[^1]} columns but B {Fmt(sb)} has {sb[^2]} rows");
        if (sa[^2] < 1 || sa[^1] < 1 || sb[^1] < 1)
            throw new InterpException($"FactoredMatrix: empty factor: A {Fmt(sa)}, B {Fmt(sb)}");
        var leading = Broadcast(sa[..^2], sb[..^2])
            ?? throw new InterpException($"FactoredMatrix: leading dims of A {Fmt(sa)} and B {Fmt(sb)} do not broadcast ({Fmt(sa[..^2])} vs {Fmt(sb[..^2])})");
        if (a.dtype != b.dtype || !a.is_floating_point())
            throw new InterpException($"FactoredMatrix: factors must share one floating-point dtype; got A {a.dtype} {Fmt(sa)} and B {b.dtype} {Fmt(sb)}");
        if (a.device_type != b.device_type || a.device_index != b.device_index)
            throw new InterpException($"FactoredMatrix: factors are on different devices: A {Fmt(sa)} on {a.device}, B {Fmt(sb)} on {b.device}");

        _leadingDims = leading;
        Rows = sa[^2];
        Rank = sa[^1];
        Columns = sb[^1];
        // expand() is a view (stride 0 along broadcast dims): broadcasting costs no memory, and a new handle is
        // what lets this matrix own and dispose its factors without touching the caller's tensors.
        A = a.expand([.. leading, Rows, Rank]);
        B = b.expand([.. leading, Rank, Columns]);
    }

    /// <summary>The left factor [..., m, r], broadcast to <see cref="LeadingDims"/>. Owned by this matrix: do not dispose it.</summary>
    public Tensor A { get; }

    /// <summary>The right factor [..., r, n], broadcast to <see cref="LeadingDims"/>. Owned by this matrix: do not dispose it.</summary>
    public Tensor B { get; }

    /// <summary>The number of rows m of each product matrix.</summary>
    public long Rows { get; }

    /// <summary>The number of columns n of each product matrix.</summary>
    public long Columns { get; }

    /// <summary>The inner dimension r of the factors: an upper bound on the rank of each product matrix.</summary>
    public long Rank { get; }

    /// <summary>The leading (batch) dims, e.g. [layer, head]; empty for a single matrix. Returns a fresh copy.</summary>
    public long[] LeadingDims => (long[])_leadingDims.Clone();

    /// <summary>The shape of the product <c>A·B</c>: [..leading dims, m, n]. Returns a fresh copy.</summary>
    public long[] Shape => [.. _leadingDims, Rows, Columns];

    /// <summary>The dtype of the factors.</summary>
    public ScalarType DType => A.dtype;

    /// <summary>
    /// One matrix, or a smaller batch, picked by indices into the leading dims in order: <c>qk[1, 0]</c> is layer 1,
    /// head 0 of a [layer, head] batch. Negative indices count from the end. The result is a new matrix
    /// (views of these factors, no copy) that the caller disposes.
    /// </summary>
    /// <exception cref="InterpException">More indices than leading dims, or an index out of range.</exception>
    public FactoredMatrix this[params long[] index]
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (index.Length > _leadingDims.Length)
                throw new InterpException($"FactoredMatrix: {index.Length} indices [{string.Join(", ", index)}] for shape {Fmt(Shape)}, which has {_leadingDims.Length} leading dims");
            for (int d = 0; d < index.Length; d++) CheckIndex(d, index[d]);
            using var scope = NewDisposeScope();
            Tensor a = A, b = B;
            // Each select removes dim 0, so the next index applies to dim 0 again.
            foreach (long i in index)
            {
                a = a.select(0, i);
                b = b.select(0, i);
            }
            return new FactoredMatrix(a, b).MoveToOuterDisposeScope();
        }
    }

    /// <summary>The matrices at <paramref name="index"/> along leading dim <paramref name="dim"/> (which is removed).</summary>
    /// <exception cref="InterpException"><paramref name="dim"/> is not a leading dim, or the index is out of range.</exception>
    public FactoredMatrix Select(int dim, long index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (dim < 0 || dim >= _leadingDims.Length)
            throw new InterpException($"FactoredMatrix: dim {dim} is not a leading dim of shape {Fmt(Shape)} (leading dims {Fmt(_leadingDims)})");
        CheckIndex(dim, index);
        using var scope = NewDisposeScope();
        return new FactoredMatrix(A.select(dim, index), B.select(dim, index)).MoveToOuterDisposeScope();
    }

    /// <summary>Moves both factors to the dispose scope outside the current one (or out of all scopes); returns this.</summary>
    public FactoredMatrix MoveToOuterDisposeScope()
    {
        A.MoveToOuterDisposeScope();
        B.MoveToOuterDisposeScope();
        return this;
    }

    /// <summary>Takes both factors out of every dispose scope, so only <see cref="Dispose"/> frees them; returns this.</summary>
    public FactoredMatrix DetachFromDisposeScope()
    {
        A.DetachFromDisposeScope();
        B.DetachFromDisposeScope();
        return this;
    }

    /// <summary>Frees this matrix's handles to its factors (the storage goes once no other tensor shares it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        A.Dispose();
        B.Dispose();
    }

    /// <summary>
    /// E.g. <c>FactoredMatrix [12, 12] of 768×768, rank 64, float32, ‖AB‖_F 0.91 to 3.2</c>: leading dims, matrix
    /// size, inner rank, dtype and the Frobenius norm (its range over the batch). The norm is left out when the
    /// factors are large (over 2^24 elements in all) so that a debugger's display stays instant.
    /// </summary>
    public override string ToString()
    {
        if (_disposed) return "FactoredMatrix (disposed)";
        string batch = _leadingDims.Length == 0 ? "" : $" {Fmt(_leadingDims)} of";
        string text = $"FactoredMatrix{batch} {Rows}×{Columns}, rank {Rank}, {DType.ToString().ToLowerInvariant()}";
        long count = _leadingDims.Aggregate(1L, (x, y) => x * y);
        if (count == 0 || count * (Rows + Columns) * Rank > 1 << 24) return text;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var norms = Norm();
        double lo = norms.min().to(ScalarType.Float64).item<double>(), hi = norms.max().to(ScalarType.Float64).item<double>();
        var c = CultureInfo.InvariantCulture;
        return count == 1
            ? text + string.Format(c, ", ‖AB‖_F {0:g4}", hi)
            : text + string.Format(c, ", ‖AB‖_F {0:g4} to {1:g4}", lo, hi);
    }

    private void CheckIndex(int dim, long index)
    {
        long size = _leadingDims[dim];
        if (index < -size || index >= size)
            throw new InterpException($"FactoredMatrix: index {index} is out of range for leading dim {dim} (size {size}) of shape {Fmt(Shape)}");
    }

    /// <summary>Broadcasts two leading shapes (numpy rules, aligned from the right); null when they are incompatible.</summary>
    internal static long[]? Broadcast(long[] x, long[] y)
    {
        var result = new long[Math.Max(x.Length, y.Length)];
        for (int i = 1; i <= result.Length; i++)
        {
            long dx = i <= x.Length ? x[^i] : 1, dy = i <= y.Length ? y[^i] : 1;
            if (dx != dy && dx != 1 && dy != 1) return null;
            result[^i] = dx == 1 ? dy : dx;
        }
        return result;
    }

    internal static string Fmt(long[] shape) => "[" + string.Join(", ", shape) + "]";
}

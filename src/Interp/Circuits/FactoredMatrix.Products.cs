using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Circuits;

public sealed partial class FactoredMatrix
{
    /// <summary>
    /// The product <c>A·B</c> [..., m, n], materialised. This is the one member that allocates an m × n matrix per
    /// leading index: for vocab-sized circuits prefer <see cref="GetCorner"/>, <see cref="Svd"/> or products that
    /// stay factored. The caller owns the result.
    /// </summary>
    public Tensor AB()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return A.matmul(B);
    }

    /// <summary>
    /// The reverse product <c>B·A</c> [..., r, r]: small, and for a square matrix it has the same nonzero
    /// eigenvalues as <c>A·B</c>. The caller owns the result.
    /// </summary>
    /// <exception cref="InterpException">The matrix is not square (B·A needs n = m).</exception>
    public Tensor BA()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        RequireSquare(nameof(BA));
        return B.matmul(A);
    }

    /// <summary>The transpose <c>(A·B)ᵀ = Bᵀ·Aᵀ</c> [..., n, m], still factored (views, no copy). The caller disposes it.</summary>
    public FactoredMatrix T
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            using var scope = NewDisposeScope();
            return new FactoredMatrix(B.mT, A.mT).MoveToOuterDisposeScope();
        }
    }

    /// <summary>
    /// The top-left corner of <c>A·B</c>, [..., min(k, m), min(k, n)], for a peek at a huge matrix: it is computed
    /// from the first k rows of A and the first k columns of B only.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="k"/> is less than 1.</exception>
    public Tensor GetCorner(int k = 3)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        using var scope = NewDisposeScope();
        var rows = A.narrow(-2, 0, Math.Min(k, Rows));
        var cols = B.narrow(-1, 0, Math.Min(k, Columns));
        return rows.matmul(cols).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>s·A·B</c>, still factored. The scalar goes into whichever factor is smaller (A when m ≤ n).
    /// </summary>
    public FactoredMatrix Scale(double scalar)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        using var s = scalar.ToScalar();
        var result = Rows <= Columns ? new FactoredMatrix(A.mul(s), B) : new FactoredMatrix(A, B.mul(s));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>(A·B)·M</c> for a dense <paramref name="right"/> [..., n, p], still factored with inner dimension
    /// min(r, n): as <c>A·(B·M)</c> when r ≤ n, otherwise as <c>(A·B)·M</c> (then A·B is m × n with n &lt; r, no
    /// bigger than A). Leading dims broadcast. The caller disposes the result.
    /// </summary>
    /// <exception cref="InterpException"><paramref name="right"/> has fewer than 2 dims, n rows ≠ its rows, the leading
    /// dims do not broadcast, or the dtypes differ.</exception>
    public FactoredMatrix Matmul(Tensor right)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(right);
        CheckDense(right, isLeft: false);
        using var scope = NewDisposeScope();
        var result = Rank <= Columns ? new FactoredMatrix(A, B.matmul(right)) : new FactoredMatrix(A.matmul(B), right);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>M·(A·B)</c> for a dense <paramref name="left"/> [..., p, m], still factored with inner dimension min(r, m):
    /// as <c>(M·A)·B</c> when r ≤ m, otherwise as <c>M·(A·B)</c>. Leading dims broadcast. The caller disposes the result.
    /// </summary>
    /// <exception cref="InterpException"><paramref name="left"/> has fewer than 2 dims, its columns ≠ m, the leading
    /// dims do not broadcast, or the dtypes differ.</exception>
    public FactoredMatrix LeftMatmul(Tensor left)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(left);
        CheckDense(left, isLeft: true);
        using var scope = NewDisposeScope();
        var result = Rank <= Rows ? new FactoredMatrix(left.matmul(A), B) : new FactoredMatrix(left, A.matmul(B));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>(A₁·B₁)·(A₂·B₂)</c> for another factored matrix [..., n, p], still factored with the smallest inner
    /// dimension available, min(r₁, r₂, n). The middle product <c>B₁·A₂</c> is only r₁ × r₂, so the result is
    /// <c>A₁·(B₁A₂B₂)</c> (inner r₁) or <c>(A₁B₁A₂)·B₂</c> (inner r₂), whichever is smaller; when n is smaller than
    /// both it is <c>(A₁B₁)·(A₂B₂)</c>. Leading dims broadcast. The caller disposes the result.
    /// </summary>
    /// <exception cref="InterpException">The inner sizes differ (n ≠ rows of <paramref name="right"/>), the leading dims
    /// do not broadcast, or the dtypes differ.</exception>
    public FactoredMatrix Matmul(FactoredMatrix right)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(right);
        ObjectDisposedException.ThrowIf(right._disposed, right);
        if (right.Rows != Columns || Broadcast(_leadingDims, right._leadingDims) is null || right.DType != DType)
            throw new InterpException($"FactoredMatrix product: left {Fmt(Shape)} ({DType}) and right {Fmt(right.Shape)} ({right.DType}) do not multiply: " +
                "the left's columns must equal the right's rows, the leading dims must broadcast and the dtypes match");
        using var scope = NewDisposeScope();
        FactoredMatrix result;
        if (Columns < Math.Min(Rank, right.Rank))
            result = new FactoredMatrix(AB(), right.AB());
        else
        {
            var middle = B.matmul(right.A);
            result = Rank <= right.Rank
                ? new FactoredMatrix(A, middle.matmul(right.B))
                : new FactoredMatrix(A.matmul(middle), right.B);
        }
        return result.MoveToOuterDisposeScope();
    }

    private void CheckDense(Tensor dense, bool isLeft)
    {
        long[] s = dense.shape;
        long needed = isLeft ? Rows : Columns;
        bool ok = s.Length >= 2 && (isLeft ? s[^1] : s[^2]) == needed
            && Broadcast(_leadingDims, s[..^2]) is not null && dense.dtype == DType;
        if (!ok)
        {
            string side = isLeft ? $"left matrix {Fmt(s)} ({dense.dtype}) · FactoredMatrix {Fmt(Shape)} ({DType})"
                                 : $"FactoredMatrix {Fmt(Shape)} ({DType}) · right matrix {Fmt(s)} ({dense.dtype})";
            throw new InterpException($"Cannot multiply {side}: the inner sizes must both be {needed}, the leading dims must broadcast and the dtypes match");
        }
    }

    private void RequireSquare(string what)
    {
        if (Rows != Columns)
            throw new InterpException($"FactoredMatrix.{what} needs a square matrix; this one is {Fmt(Shape)} (A {Fmt(A.shape)}, B {Fmt(B.shape)})");
    }
}

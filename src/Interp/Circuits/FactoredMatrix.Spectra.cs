using static TorchSharp.torch;

namespace Interp.Circuits;

public sealed partial class FactoredMatrix
{
    // Decompositions run in float64 whatever the factors' dtype: the QR, the r × r SVD and the non-symmetric
    // eigensolver all cost O(m·r²) or O(r³), so the doubled precision is nearly free, and float32 loses several
    // digits on small singular values and on badly conditioned eigenvalues. Results come back in ResultType.

    /// <summary>
    /// The thin SVD of every product matrix, computed from the factors: <c>A = Q_A·R_A</c> and <c>Bᵀ = Q_B·R_B</c>
    /// (reduced QR), then the SVD of the small core <c>R_A·R_Bᵀ = U_c·diag(S)·V_cᵀ</c>, so that
    /// <c>A·B = (Q_A·U_c)·diag(S)·(Q_B·V_c)ᵀ</c>. Costs O((m + n)·r²); no m × n matrix is formed.
    /// </summary>
    /// <returns>
    /// U [..., m, k], S [..., k] (descending) and Vh [..., n, k] with k = min(m, n, r), such that
    /// <c>U·diag(S)·Vhᵀ = A·B</c>. As in TransformerLens, "Vh" is V itself (right singular vectors as columns), the
    /// transpose of what <c>torch.linalg.svd</c> calls Vh. U and Vh have orthonormal columns. Computed in float64,
    /// returned in <see cref="ResultType"/>; the caller disposes the result.
    /// </returns>
    public FactoredSvd Svd()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var (qa, ra) = linalg.qr(A.to(ScalarType.Float64), linalg.QRMode.Reduced);
        var (qb, rb) = linalg.qr(B.mT.to(ScalarType.Float64), linalg.QRMode.Reduced);
        // The core is min(m, r) × min(n, r): its SVD has exactly k = min(m, n, r) singular values.
        var (uCore, s, vhCore) = linalg.svd(ra.matmul(rb.mT), fullMatrices: false);
        var u = qa.matmul(uCore);
        var v = qb.matmul(vhCore.mT);
        var dtype = ResultType;
        return new FactoredSvd(
            u.to(dtype).MoveToOuterDisposeScope(),
            s.to(dtype).MoveToOuterDisposeScope(),
            v.to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The Frobenius norm ‖A·B‖_F of every product matrix, [..leading dims]. Computed as ‖R_A·R_Bᵀ‖_F from the R
    /// factors of the QRs of A and Bᵀ (the orthonormal Q's preserve the norm), which stays accurate even when A·B
    /// is much smaller than ‖A‖·‖B‖, unlike the cheaper <c>trace((AᵀA)(BBᵀ))</c> that cancels catastrophically there.
    /// Costs O((m + n)·r²); computed in float64, returned in <see cref="ResultType"/>.
    /// </summary>
    public Tensor Norm()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var (_, ra) = linalg.qr(A.to(ScalarType.Float64), linalg.QRMode.R);
        var (_, rb) = linalg.qr(B.mT.to(ScalarType.Float64), linalg.QRMode.R);
        var core = ra.matmul(rb.mT);
        return core.pow(Scalars.Two).sum([-2, -1]).sqrt().to(ResultType).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The eigenvalues of every (square) product matrix, as a complex tensor [..., min(m, r)], ordered by
    /// descending magnitude. If <c>BAv = λv</c> then <c>AB(Av) = λ(Av)</c>, so A·B and the r × r matrix B·A share
    /// their nonzero eigenvalues: for r ≤ m these are the eigenvalues of B·A (A·B has m − r further zeros, left
    /// out), for r &gt; m those of A·B itself (then B·A adds r − m zeros). Real and imaginary parts are
    /// <c>.real</c> and <c>.imag</c>. Computed in float64; complex64 for float32 factors, complex128 for float64.
    /// </summary>
    /// <exception cref="InterpException">The matrix is not square.</exception>
    public Tensor Eigenvalues()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        RequireSquare(nameof(Eigenvalues));
        using var scope = NewDisposeScope();
        Tensor a = A.to(ScalarType.Float64), b = B.to(ScalarType.Float64);
        var small = Rank <= Rows ? b.matmul(a) : a.matmul(b);
        var eigenvalues = linalg.eigvals(small);
        var order = eigenvalues.abs().argsort(-1, descending: true);
        var complexType = ResultType == ScalarType.Float64 ? ScalarType.ComplexFloat64 : ScalarType.ComplexFloat32;
        return eigenvalues.take_along_dim(order, -1).to(complexType).MoveToOuterDisposeScope();
    }

    /// <summary>The dtype of SVD, norm and (as the matching complex type) eigenvalue results: float64 for float64
    /// factors, float32 for every other dtype (16-bit factors are promoted).</summary>
    public ScalarType ResultType => DType == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
}

/// <summary>
/// The thin SVD of a <see cref="FactoredMatrix"/>: <c>A·B = U·diag(S)·Vhᵀ</c>, with TransformerLens's naming
/// (<see cref="Vh"/> holds the right singular vectors as columns). Owns its three tensors.
/// </summary>
public sealed class FactoredSvd : IDisposable
{
    internal FactoredSvd(Tensor u, Tensor s, Tensor vh) => (U, S, Vh) = (u, s, vh);

    /// <summary>Left singular vectors as orthonormal columns, [..., m, k].</summary>
    public Tensor U { get; }

    /// <summary>Singular values in descending order, [..., k].</summary>
    public Tensor S { get; }

    /// <summary>Right singular vectors as orthonormal columns, [..., n, k]: V, not Vᵀ, despite the name
    /// (TransformerLens's convention), so that <c>A·B = U·diag(S)·Vhᵀ</c>.</summary>
    public Tensor Vh { get; }

    /// <summary>Deconstructs into (U, S, Vh), as in <c>var (u, s, vh) = matrix.Svd();</c>; the tensors stay owned by this object.</summary>
    public void Deconstruct(out Tensor u, out Tensor s, out Tensor vh) => (u, s, vh) = (U, S, Vh);

    /// <summary>Moves the three tensors to the dispose scope outside the current one; returns this.</summary>
    public FactoredSvd MoveToOuterDisposeScope()
    {
        U.MoveToOuterDisposeScope();
        S.MoveToOuterDisposeScope();
        Vh.MoveToOuterDisposeScope();
        return this;
    }

    /// <summary>Frees the three tensors.</summary>
    public void Dispose()
    {
        U.Dispose();
        S.Dispose();
        Vh.Dispose();
    }
}

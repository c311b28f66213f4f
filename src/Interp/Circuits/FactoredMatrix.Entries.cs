using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>One entry of a matrix: its row, its column and its value.</summary>
public readonly record struct MatrixEntry(long Row, long Column, double Value);

public sealed partial class FactoredMatrix
{
    /// <summary>
    /// The <paramref name="k"/> largest entries of a single product matrix A·B (or the most negative, with
    /// <paramref name="largest"/> false), best first, found by streaming over blocks of rows: each block of A·B is
    /// formed, searched and freed, so memory stays at about <paramref name="blockElements"/> values however large
    /// m × n is (time is still O(m·n·r)).
    /// </summary>
    /// <exception cref="InterpException">The matrix has leading dims (pick one matrix first, e.g. <c>m[layer, head]</c>).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="k"/> or <paramref name="blockElements"/> is less than 1.</exception>
    public MatrixEntry[] TopEntries(int k, bool largest = true, long blockElements = 1 << 22)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockElements, 1);
        if (_leadingDims.Length != 0)
            throw new InterpException($"FactoredMatrix.TopEntries needs a single matrix; this one has leading dims {Fmt(_leadingDims)} (index it first, e.g. m[layer, head])");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long rowsPerBlock = Math.Clamp(blockElements / Columns, 1, Rows);
        var best = new List<MatrixEntry>();
        for (long start = 0; start < Rows; start += rowsPerBlock)
        {
            using var block = NewDisposeScope();
            long count = Math.Min(rowsPerBlock, Rows - start);
            var values = A.narrow(0, start, count).matmul(B).reshape(-1);
            var (top, index) = values.topk((int)Math.Min(k, values.shape[0]), largest: largest);
            var v = top.to(ScalarType.Float64).cpu().data<double>().ToArray();
            var i = index.cpu().data<long>().ToArray();
            for (int j = 0; j < v.Length; j++) best.Add(new MatrixEntry(start + i[j] / Columns, i[j] % Columns, v[j]));
            best = (largest ? best.OrderByDescending(x => x.Value) : best.OrderBy(x => x.Value)).Take(k).ToList();
        }
        return best.ToArray();
    }
}

using Interp.Models;
using Interp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// OpenBLAS products with a weight over 2 GiB (a float32 unembedding of a 256k vocabulary is 2.4 GB): TorchSharp's
/// spans stop at 2³¹ − 1 bytes, so the weight's memory must be reached another way. Runs alone: it holds ~5 GB.
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class GemmLargeTests
{
    [OpenBlasFact]
    public void A_weight_over_two_gibibytes_multiplies_contiguous_and_as_a_transposed_view()
    {
        const long blocks = 268_436, n = blocks * 1000;   // 2 × n floats = 2,147,488,000 bytes: more than a span holds
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // Row 0 is 1, row 1 is j mod 1000: a product read from the wrong offset shows in every block of 1000 columns.
        var cycle = arange(1000, dtype: ScalarType.Float32);                               // [1000]
        var x = tensor(new[] { 2f, 3f }, [1, 2]);
        using Scalar two = 2f.ToScalar(), three = 3f.ToScalar();
        var expected = cycle.mul(three).add(two, Scalars.One);                             // 2·1 + 3·(j mod 1000)
        long before = Gemm.OpenBlasProducts;

        var w = empty(2, n);                                                               // [2, n], contiguous
        Assert.True(w.NumberOfElements * w.ElementSize > int.MaxValue);
        w[0].fill_(Scalars.One);
        w[1].view(blocks, 1000).copy_(cycle.expand(blocks, 1000));
        Assert.True(Gemm.MatMul(x, w).view(blocks, 1000).eq(expected).all().item<bool>(), "contiguous [2, n]");
        w.Dispose();

        var rows = empty(n, 2);                                                            // [n, 2]; its transpose is the weight
        rows.select(1, 0).fill_(Scalars.One);
        rows.select(1, 1).view(blocks, 1000).copy_(cycle.expand(blocks, 1000));
        Assert.True(Gemm.MatMul(x, rows.t()).view(blocks, 1000).eq(expected).all().item<bool>(), "transposed view of [n, 2]");
        Assert.Equal(2, Gemm.OpenBlasProducts - before);
    }
}

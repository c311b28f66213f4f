using static TorchSharp.torch;

namespace Interp.Tests.Support;

/// <summary>Numeric assertions on tensors and raw reference files.</summary>
public static class TensorAssert
{
    /// <summary>max |a − b| over all elements (shapes must match).</summary>
    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        using var _ = NewDisposeScope();
        return (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();
    }

    /// <summary>Asserts max |a − b| ≤ <paramref name="tolerance"/>, reporting the actual difference.</summary>
    public static void Close(Tensor expected, Tensor actual, double tolerance, string what = "")
    {
        double diff = MaxAbsDiff(expected, actual);
        Assert.True(diff <= tolerance, $"{what}: max |Δ| = {diff:g4} exceeds {tolerance:g4}");
    }

    /// <summary>Reads a headerless little-endian float32 file as a tensor of the given shape.</summary>
    public static Tensor ReadRawFloats(string path, params long[] shape)
    {
        var bytes = File.ReadAllBytes(path);
        var floats = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, floats, 0, bytes.Length);
        Assert.Equal(shape.Aggregate(1L, (x, y) => x * y), floats.LongLength);
        return tensor(floats, shape);
    }
}

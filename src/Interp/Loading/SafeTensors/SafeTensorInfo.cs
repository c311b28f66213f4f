namespace Interp.Loading;

/// <summary>One tensor's header entry in a safetensors file.</summary>
/// <param name="Name">The tensor's name (the header key).</param>
/// <param name="DType">The element type stored in the file.</param>
/// <param name="Shape">The dimensions; empty for a scalar.</param>
/// <param name="Begin">First byte of the tensor, relative to the start of the data section.</param>
/// <param name="End">One past the last byte, relative to the start of the data section.</param>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (the product of <see cref="Shape"/>; 1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (long dim in Shape) count = checked(count * dim);
            return count;
        }
    }

    /// <summary>Number of bytes the tensor occupies (<see cref="End"/> − <see cref="Begin"/>).</summary>
    public long ByteLength => End - Begin;

    /// <summary>The shape written as "[a, b, c]", for messages.</summary>
    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
}

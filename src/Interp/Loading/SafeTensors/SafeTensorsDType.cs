namespace Interp.Loading;

/// <summary>The element types this toolkit reads from safetensors files (the names are those in the file header).</summary>
public enum SafeTensorsDType
{
    /// <summary>IEEE 754 double (8 bytes).</summary>
    F64,
    /// <summary>IEEE 754 single (4 bytes).</summary>
    F32,
    /// <summary>IEEE 754 half (2 bytes).</summary>
    F16,
    /// <summary>bfloat16: the high 16 bits of a single (2 bytes).</summary>
    BF16,
    /// <summary>Signed 64-bit integer.</summary>
    I64,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Signed 16-bit integer.</summary>
    I16,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Boolean stored as one byte (0 or 1).</summary>
    Bool,
}

/// <summary>Sizes and header names of <see cref="SafeTensorsDType"/> values.</summary>
public static class SafeTensorsDTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 => 2,
        SafeTensorsDType.I8 or SafeTensorsDType.U8 or SafeTensorsDType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>True for the types that decode to float32 (F64, F32, F16, BF16).</summary>
    public static bool IsFloatingPoint(this SafeTensorsDType dtype) =>
        dtype is SafeTensorsDType.F64 or SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16;

    /// <summary>The name written in the header ("F32", "BF16", "BOOL", ...).</summary>
    public static string HeaderName(this SafeTensorsDType dtype) =>
        dtype == SafeTensorsDType.Bool ? "BOOL" : dtype.ToString();

    /// <summary>Parses a header dtype name; exact, case-sensitive match as in the reference implementation.</summary>
    public static bool TryParseHeaderName(string name, out SafeTensorsDType dtype)
    {
        foreach (var candidate in Enum.GetValues<SafeTensorsDType>())
        {
            if (candidate.HeaderName() == name)
            {
                dtype = candidate;
                return true;
            }
        }
        dtype = default;
        return false;
    }
}

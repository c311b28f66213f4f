using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace Interp.Tests.Support;

/// <summary>
/// A safetensors reader written from the format's description alone, independent of the project's SafeTensorsFile:
/// an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to its dtype, shape and
/// data_offsets (relative to the data that follows the header), an optional <c>__metadata__</c> of strings, then the raw
/// little-endian data. It reads F32 only and checks what Python's safetensors checks: the offsets tile the data
/// without gaps or overlaps, and each tensor's byte count is its shape's product × 4.
/// </summary>
public static class NaiveSafeTensors
{
    /// <summary>One tensor: its shape and its values, row-major.</summary>
    public sealed record Entry(long[] Shape, float[] Values);

    /// <summary>Reads every tensor (by name, in the header's order) and the metadata of <paramref name="path"/>.</summary>
    public static (List<(string Name, Entry Tensor)> Tensors, Dictionary<string, string> Metadata) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length >= 8, "shorter than the 8-byte header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.True(headerLength <= (ulong)(bytes.Length - 8), $"header length {headerLength} exceeds the file");
        int dataStart = 8 + (int)headerLength;
        string json = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        Assert.StartsWith("{", json);
        using var doc = JsonDocument.Parse(json);
        var tensors = new List<(string, Entry)>();
        var metadata = new Dictionary<string, string>();
        var spans = new List<(long Begin, long End)>();
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                foreach (var m in property.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString()!;
                continue;
            }
            var v = property.Value;
            Assert.Equal("F32", v.GetProperty("dtype").GetString());
            long[] shape = v.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            long[] offsets = v.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            Assert.Equal(2, offsets.Length);
            long count = shape.Aggregate(1L, (a, b) => a * b);
            Assert.Equal(count * 4, offsets[1] - offsets[0]);
            Assert.True(dataStart + offsets[1] <= bytes.Length, $"{property.Name}: data past the end of the file");
            var values = new float[count];
            for (long i = 0; i < count; i++)
                values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)(dataStart + offsets[0] + 4 * i), 4));
            tensors.Add((property.Name, new Entry(shape, values)));
            spans.Add((offsets[0], offsets[1]));
        }
        // The tensors' bytes tile the data section exactly.
        long next = 0;
        foreach (var (begin, end) in spans.OrderBy(s => s.Begin))
        {
            Assert.Equal(next, begin);
            next = end;
        }
        Assert.Equal(bytes.Length - dataStart, next);
        return (tensors, metadata);
    }
}

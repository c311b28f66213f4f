using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;

namespace Interp.Loading;

/// <summary>Writes tensors to a safetensors file in F32, F16 or BF16.</summary>
public static class SafeTensorsWriter
{
    // Elements converted per chunk: bounds the extra memory to a few MiB whatever the tensor's size.
    private const int ChunkElements = 1 << 18;

    /// <summary>
    /// Writes <paramref name="tensors"/>, in the order given, to <paramref name="path"/>. The file is written to a
    /// temporary sibling and renamed into place, so readers never see a half-written file.
    /// </summary>
    /// <param name="path">Destination; replaced if it exists.</param>
    /// <param name="tensors">Names and tensors, on any device, of any real dtype, contiguous or not.</param>
    /// <param name="metadata">Optional string pairs stored under "__metadata__".</param>
    /// <param name="dtype">Element type on disk: F32, F16 or BF16 (both rounded to nearest even).</param>
    /// <exception cref="ArgumentException">An unsupported dtype, a duplicate name, or the reserved name "__metadata__".</exception>
    public static void Write(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null, SafeTensorsDType dtype = SafeTensorsDType.F32)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (dtype is not (SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16))
            throw new ArgumentException($"SafeTensorsWriter writes F32, F16 or BF16, not {dtype}", nameof(dtype));

        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, tensor) in list)
        {
            ArgumentNullException.ThrowIfNull(name, nameof(tensors));
            ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
            if (name == "__metadata__")
                throw new ArgumentException("\"__metadata__\" is reserved and cannot name a tensor", nameof(tensors));
            if (!names.Add(name))
                throw new ArgumentException($"tensor '{name}' is given twice", nameof(tensors));
        }

        WriteEntries(path, list.Select(kv => new Entry(kv.Key, kv.Value.shape, () => kv.Value, Owned: false)).ToList(), metadata, dtype);
    }

    /// <summary>
    /// One tensor to write: its name, its shape, and how to make it; an <paramref name="Owned"/> tensor is made only when
    /// its bytes are written and disposed right after, so a file larger than memory can be written one tensor at a time.
    /// </summary>
    internal sealed record Entry(string Name, long[] Shape, Func<torch.Tensor> Make, bool Owned = true);

    /// <summary>Writes <paramref name="entries"/> in order (names checked by the caller), through a temporary sibling renamed into place.</summary>
    internal static void WriteEntries(string path, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata, SafeTensorsDType dtype)
    {
        byte[] header = BuildHeader(entries, metadata, dtype);
        string temporary = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
            {
                var prefix = new byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                stream.Write(prefix);
                stream.Write(header);
                foreach (var entry in entries)
                {
                    var tensor = entry.Make();
                    try
                    {
                        if (!tensor.shape.SequenceEqual(entry.Shape))
                            throw new ArgumentException($"tensor '{entry.Name}' was made with shape [{string.Join(", ", tensor.shape)}], not its declared [{string.Join(", ", entry.Shape)}]");
                        WriteData(stream, tensor, dtype);
                    }
                    finally { if (entry.Owned) tensor.Dispose(); }
                }
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static byte[] BuildHeader(IReadOnlyList<Entry> tensors,
        IReadOnlyDictionary<string, string>? metadata, SafeTensorsDType dtype)
    {
        using var json = new MemoryStream();
        // Relaxed escaping keeps non-ASCII names readable in the header; it is not embedded in HTML.
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) writer.WriteString(key, value);
                writer.WriteEndObject();
            }

            long offset = 0;
            foreach (var (name, shape, _, _) in tensors)
            {
                long bytes = checked(shape.Aggregate(1L, (n, d) => checked(n * d)) * dtype.ElementSize());
                writer.WriteStartObject(name);
                writer.WriteString("dtype", dtype.HeaderName());
                writer.WriteStartArray("shape");
                foreach (long dim in shape) writer.WriteNumberValue(dim);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + bytes);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += bytes;
            }
            writer.WriteEndObject();
        }

        // Pad with spaces to a multiple of 8, as the reference implementation does, so the data section is aligned.
        int length = (int)json.Length;
        int padded = (length + 7) / 8 * 8;
        var header = new byte[padded];
        json.GetBuffer().AsSpan(0, length).CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    private static void WriteData(Stream stream, torch.Tensor tensor, SafeTensorsDType dtype)
    {
        // The scope frees the CPU / float32 / contiguous copies; it never owns the caller's tensor.
        using var scope = torch.NewDisposeScope();
        var flat = tensor.detach().cpu().to(torch.ScalarType.Float32).contiguous().reshape(-1);
        long count = flat.numel();
        int size = dtype.ElementSize();
        var bytes = new byte[Math.Min(count, ChunkElements) * size];
        for (long start = 0; start < count; start += ChunkElements)
        {
            int n = (int)Math.Min(ChunkElements, count - start);
            // Reading a narrowed view's bytes is a plain memory view; TensorAccessor copies element by element.
            using var slice = flat.narrow(0, start, n);
            Encode(dtype, MemoryMarshal.Cast<byte, float>(slice.bytes), bytes);
            stream.Write(bytes, 0, n * size);
        }
    }

    private static void Encode(SafeTensorsDType dtype, ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int i = 0; i < src.Length; i++)
        {
            switch (dtype)
            {
                case SafeTensorsDType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(dst[(4 * i)..], src[i]);
                    break;
                case SafeTensorsDType.F16:
                    // The float → Half conversion rounds to nearest even.
                    BinaryPrimitives.WriteHalfLittleEndian(dst[(2 * i)..], (Half)src[i]);
                    break;
                default:
                    BinaryPrimitives.WriteUInt16LittleEndian(dst[(2 * i)..], ToBFloat16(src[i]));
                    break;
            }
        }
    }

    /// <summary>float32 → bfloat16 bits, rounding to nearest even (plain truncation would bias every weight toward zero).</summary>
    private static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        // Rounding could carry a NaN's payload into the exponent and turn it into infinity; keep it a quiet NaN.
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }
}

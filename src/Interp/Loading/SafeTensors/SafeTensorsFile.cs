using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using TorchSharp;

namespace Interp.Loading;

/// <summary>
/// A safetensors file opened for reading: the header is parsed and fully validated by <see cref="Open"/>, and
/// tensors are read on demand, one byte range at a time, through a single open <see cref="FileStream"/>.
/// </summary>
/// <remarks>
/// Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON, then the data section. Every
/// problem with the file is reported as a <see cref="ModelFileException"/> naming the file and, where there is
/// one, the tensor. Reads are serialized on the stream, so one instance may be shared between threads.
/// </remarks>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted: anything bigger is not a real model file, and we must not allocate for it.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    /// <summary>Deepest JSON nesting accepted in the header (a valid header needs 3 levels).</summary>
    public const int MaxHeaderDepth = 64;

    private const string MetadataKey = "__metadata__";

    // Read size: large enough to amortize syscalls, small enough not to double a big tensor's memory while decoding.
    // A power of two, so every chunk holds whole elements of every dtype.
    private const int ChunkBytes = 1 << 20;

    private readonly FileStream _stream;
    private readonly Dictionary<string, SafeTensorInfo> _byName;
    private readonly long _dataStart;
    private bool _disposed;

    private SafeTensorsFile(string path, FileStream stream, long dataStart,
        Dictionary<string, string> metadata, List<SafeTensorInfo> tensors)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        Metadata = metadata;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The path the file was opened from.</summary>
    public string Path { get; }

    /// <summary>The header's "__metadata__" entries (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>All tensors, in the order their bytes appear in the data section.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }

    /// <summary>Opens a file and validates its header against itself and the file's length.</summary>
    /// <exception cref="ModelFileException">The file cannot be opened, or its header is malformed or inconsistent.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FileStream stream;
        try
        {
            // FileShare.Delete lets a writer replace the file by rename while we hold it; bufferSize 0 because
            // every read is already a large chunk.
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFileException(path, null, $"cannot open the file: {e.Message}", e);
        }

        try
        {
            var (dataStart, metadata, tensors) = ReadHeader(path, stream);
            return new SafeTensorsFile(path, stream, dataStart, metadata, tensors);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Whether the file holds a tensor of this name.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The header entry of one tensor.</summary>
    /// <exception cref="ModelFileException">No tensor has that name; the message suggests close names.</exception>
    public SafeTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_byName.TryGetValue(name, out var info)) return info;
        string problem = _byName.Count == 0
            ? "no such tensor; the file has no tensors"
            : $"no such tensor; the file has {_byName.Count} tensors, e.g. {string.Join(", ", CloseNames(name).Select(n => $"'{n}'"))}";
        throw new ModelFileException(Path, name, problem);
    }

    /// <summary>
    /// Reads one tensor into a new CPU tensor of the recorded shape: float32 for F64/F32/F16/BF16, int64 for the
    /// integer and boolean dtypes.
    /// </summary>
    /// <exception cref="ModelFileException">No such tensor, or the file is shorter than its header says.</exception>
    public torch.Tensor ReadTensor(string name)
    {
        var info = GetInfo(name);
        int size = info.DType.ElementSize();
        bool isFloat = info.DType.IsFloatingPoint();
        var tensor = torch.empty(info.Shape, isFloat ? torch.ScalarType.Float32 : torch.ScalarType.Int64);
        try
        {
            if (info.ElementCount == 0) return tensor;
            using var flat = tensor.view(-1);
            if (isFloat)
            {
                var decoded = new float[Math.Min(info.ElementCount, ChunkBytes / size)];
                ReadChunks(info, (bytes, first) =>
                {
                    var span = decoded.AsSpan(0, bytes.Length / size);
                    DecodeFloats(info.DType, bytes, span);
                    CopyInto(flat, first, span.Length, MemoryMarshal.AsBytes(span));
                });
            }
            else
            {
                var decoded = new long[Math.Min(info.ElementCount, ChunkBytes / size)];
                ReadChunks(info, (bytes, first) =>
                {
                    var span = decoded.AsSpan(0, bytes.Length / size);
                    DecodeIntegers(info.DType, bytes, span);
                    CopyInto(flat, first, span.Length, MemoryMarshal.AsBytes(span));
                });
            }
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Copies native-order element bytes into <paramref name="flat"/>[first .. first + count).</summary>
    private static void CopyInto(torch.Tensor flat, long first, int count, Span<byte> bytes)
    {
        // Setting a narrowed view's bytes is a memcpy; TensorAccessor.CopyFrom and torch.tensor(array) copy element
        // by element and are about 20 times slower on large tensors.
        using var slice = flat.narrow(0, first, count);
        slice.bytes = bytes;
    }

    /// <summary>Reads one tensor after checking that its shape is the one the caller (the model config) expects.</summary>
    /// <exception cref="ModelFileException">No such tensor, a different shape, or a truncated file.</exception>
    public torch.Tensor ReadTensor(string name, long[] expectedShape)
    {
        ArgumentNullException.ThrowIfNull(expectedShape);
        var info = GetInfo(name);
        if (!info.Shape.AsSpan().SequenceEqual(expectedShape))
        {
            throw new ModelFileException(Path, name,
                $"has shape {SafeTensorInfo.FormatShape(info.Shape)} but the model config expects {SafeTensorInfo.FormatShape(expectedShape)}");
        }
        return ReadTensor(name);
    }

    /// <summary>Reads a floating-point tensor as a flat float32 array in row-major order.</summary>
    /// <exception cref="ModelFileException">No such tensor, an integer dtype, too many elements, or a truncated file.</exception>
    public float[] ReadFloats(string name)
    {
        var info = GetInfo(name);
        if (!info.DType.IsFloatingPoint())
        {
            throw new ModelFileException(Path, name,
                $"has dtype {info.DType.HeaderName()}, which is not a floating-point type; use ReadTensor to read it as int64");
        }
        if (info.ElementCount > Array.MaxLength)
        {
            throw new ModelFileException(Path, name,
                $"has {info.ElementCount} elements, more than one float[] can hold; use ReadTensor");
        }
        int size = info.DType.ElementSize();
        var result = new float[info.ElementCount];
        ReadChunks(info, (bytes, first) => DecodeFloats(info.DType, bytes, result.AsSpan((int)first, bytes.Length / size)));
        return result;
    }

    /// <summary>Closes the file. Reading afterwards throws <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        lock (_stream)
        {
            _disposed = true;
            _stream.Dispose();
        }
    }

    private delegate void ChunkSink(ReadOnlySpan<byte> bytes, long firstElement);

    /// <summary>Reads a tensor's byte range in chunks of whole elements, handing each to <paramref name="sink"/>.</summary>
    private void ReadChunks(SafeTensorInfo info, ChunkSink sink)
    {
        lock (_stream)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);

            // The header was checked against the length at Open; the file may have been truncated since.
            long fileLength = RandomAccess.GetLength(_stream.SafeFileHandle);
            if (_dataStart + info.End > fileLength)
            {
                throw new ModelFileException(Path, info.Name,
                    $"data_offsets [{info.Begin}, {info.End}] run past the end of the data section ({Math.Max(0, fileLength - _dataStart)} bytes): the file was truncated after it was opened");
            }

            int size = info.DType.ElementSize();
            var buffer = new byte[Math.Min(ChunkBytes, info.ByteLength)];
            _stream.Position = _dataStart + info.Begin;
            for (long done = 0; done < info.ByteLength;)
            {
                int want = (int)Math.Min(buffer.Length, info.ByteLength - done);
                int got = _stream.ReadAtLeast(buffer.AsSpan(0, want), want, throwOnEndOfStream: false);
                if (got < want)
                {
                    throw new ModelFileException(Path, info.Name,
                        $"the file ended {info.ByteLength - done - got} bytes before the end of the tensor's data: it was truncated while being read");
                }
                sink(buffer.AsSpan(0, want), done / size);
                done += want;
            }
        }
    }

    private static void DecodeFloats(SafeTensorsDType dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (dtype)
        {
            case SafeTensorsDType.F32 when BitConverter.IsLittleEndian:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
                break;
            case SafeTensorsDType.F32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..]);
                break;
            case SafeTensorsDType.F64:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(src[(8 * i)..]);
                break;
            case SafeTensorsDType.F16:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(src[(2 * i)..]);
                break;
            case SafeTensorsDType.BF16:
                // bfloat16 is exactly the high half of a float32, so widening is a shift.
                for (int i = 0; i < dst.Length; i++)
                    dst[i] = BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]) << 16);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a floating-point dtype");
        }
    }

    private static void DecodeIntegers(SafeTensorsDType dtype, ReadOnlySpan<byte> src, Span<long> dst)
    {
        for (int i = 0; i < dst.Length; i++)
        {
            dst[i] = dtype switch
            {
                SafeTensorsDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(src[(8 * i)..]),
                SafeTensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(src[(4 * i)..]),
                SafeTensorsDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(src[(2 * i)..]),
                SafeTensorsDType.I8 => (sbyte)src[i],
                SafeTensorsDType.U8 => src[i],
                SafeTensorsDType.Bool => src[i] != 0 ? 1 : 0,
                _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not an integer dtype"),
            };
        }
    }

    /// <summary>
    /// Up to five tensor names nearest to <paramref name="name"/> by edit distance, for error messages. Names are compared
    /// by their first 256 characters, so that a header of many huge names cannot make an error message take minutes.
    /// </summary>
    private IEnumerable<string> CloseNames(string name) =>
        _byName.Keys
            .Select(n => (Name: n, Distance: EditDistance(Prefix(name), Prefix(n))))
            .OrderBy(x => x.Distance).ThenBy(x => x.Name, StringComparer.Ordinal)
            .Take(5)
            .Select(x => x.Name);

    private static string Prefix(string s) => s.Length <= 256 ? s : s[..256];

    private static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) previous[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitute, Math.Min(previous[j], current[j - 1]) + 1);
            }
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }

    // ---- Header parsing and validation ----

    private static (long DataStart, Dictionary<string, string> Metadata, List<SafeTensorInfo> Tensors) ReadHeader(
        string path, FileStream stream)
    {
        long fileLength = stream.Length;
        if (fileLength < 8)
        {
            throw new ModelFileException(path, null,
                $"the file is {fileLength} bytes long, too short to hold the 8-byte header length: it is truncated or not a safetensors file");
        }

        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        // Both checks come before any allocation, so a lying length prefix cannot make us allocate.
        if (headerLength > (ulong)(fileLength - 8))
        {
            throw new ModelFileException(path, null,
                $"header length {headerLength} exceeds the {fileLength - 8} bytes after the length prefix: the file is truncated or not a safetensors file");
        }
        if (headerLength > MaxHeaderBytes)
        {
            throw new ModelFileException(path, null,
                $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte (100 MiB) limit: this is not a plausible safetensors header");
        }

        var header = new byte[headerLength];
        if (stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false) < header.Length)
        {
            throw new ModelFileException(path, null, "the file ended inside the header: it was truncated while being opened");
        }
        long dataStart = 8 + (long)headerLength;
        var (metadata, tensors) = ParseHeader(path, header, fileLength - dataStart);
        return (dataStart, metadata, tensors);
    }

    private static (Dictionary<string, string>, List<SafeTensorInfo>) ParseHeader(string path, byte[] header, long dataLength)
    {
        // Checked up front so that no later string conversion can fail on bad bytes.
        if (!System.Text.Unicode.Utf8.IsValid(header))
        {
            throw new ModelFileException(path, null, "the header is not valid UTF-8 text");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = MaxHeaderDepth });
        }
        catch (JsonException e)
        {
            throw new ModelFileException(path, null, $"the header is not valid JSON (nesting limit {MaxHeaderDepth}): {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new ModelFileException(path, null, $"the header must be a JSON object, not {Describe(root)}");
            }
            JsonChecks.EnsureValidStrings(root, path);

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var tensors = new List<SafeTensorInfo>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in root.EnumerateObject())
            {
                bool isMetadata = entry.Name == MetadataKey;
                if (!seen.Add(entry.Name))
                {
                    throw isMetadata
                        ? new ModelFileException(path, null, $"\"{MetadataKey}\" appears twice in the header")
                        : new ModelFileException(path, entry.Name, "appears twice in the header");
                }
                if (isMetadata) ParseMetadata(path, entry.Value, metadata);
                else tensors.Add(ParseTensorEntry(path, entry.Name, entry.Value, dataLength));
            }

            tensors.Sort((x, y) => x.Begin != y.Begin ? x.Begin.CompareTo(y.Begin)
                : x.End != y.End ? x.End.CompareTo(y.End) : string.CompareOrdinal(x.Name, y.Name));
            CheckNoOverlap(path, tensors);
            return (metadata, tensors);
        }
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw new ModelFileException(path, null, $"\"{MetadataKey}\" must be an object of strings, not {Describe(value)}");
        }
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw new ModelFileException(path, null,
                    $"\"{MetadataKey}\" entry \"{item.Name}\" must be a string, not {Describe(item.Value)}");
            }
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static SafeTensorInfo ParseTensorEntry(string path, string name, JsonElement entry, long dataLength)
    {
        ModelFileException Bad(string problem) => new(path, name, problem);

        if (entry.ValueKind != JsonValueKind.Object)
            throw Bad($"the header entry must be a JSON object, not {Describe(entry)}");

        var dtypeElement = Require(entry, "dtype", Bad);
        if (dtypeElement.ValueKind != JsonValueKind.String)
            throw Bad($"\"dtype\" must be a string, not {Describe(dtypeElement)}");
        string dtypeName = dtypeElement.GetString()!;
        if (!SafeTensorsDTypeExtensions.TryParseHeaderName(dtypeName, out var dtype))
        {
            var supported = string.Join(", ", Enum.GetValues<SafeTensorsDType>().Select(d => d.HeaderName()));
            throw Bad($"unknown dtype \"{dtypeName}\"; supported dtypes are {supported}");
        }

        long[] shape = ReadIntegerArray(Require(entry, "shape", Bad), "shape", Bad);
        long[] offsets = ReadIntegerArray(Require(entry, "data_offsets", Bad), "data_offsets", Bad);
        string shapeText = SafeTensorInfo.FormatShape(shape);

        if (shape.Any(d => d < 0))
            throw Bad($"shape {shapeText} has a negative dimension");
        // Checked left to right like the reference implementation: [2^40, 2^40, 0] is rejected too.
        long count = 1;
        foreach (long dim in shape)
        {
            if (dim != 0 && count > long.MaxValue / dim)
                throw Bad($"shape {shapeText} has more elements than a 64-bit count can hold");
            count *= dim;
        }

        if (offsets.Length != 2)
            throw Bad($"\"data_offsets\" must hold exactly 2 integers [begin, end], not {offsets.Length}");
        long begin = offsets[0], end = offsets[1];
        string offsetsText = $"data_offsets [{begin}, {end}]";
        if (begin < 0 || end < 0)
            throw Bad($"{offsetsText} must not be negative");
        if (end < begin)
            throw Bad($"{offsetsText} end before they begin");
        if (end > dataLength)
            throw Bad($"{offsetsText} run past the end of the data section ({dataLength} bytes): the file is truncated or the header lies");

        // Int128: count × size can exceed long for a shape that passed the count check.
        Int128 needed = (Int128)count * dtype.ElementSize();
        if (needed != end - begin)
            throw Bad($"{offsetsText} hold {end - begin} bytes but dtype {dtype.HeaderName()} with shape {shapeText} needs {needed} bytes");

        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    private static JsonElement Require(JsonElement entry, string key, Func<string, ModelFileException> bad) =>
        entry.TryGetProperty(key, out var value) ? value : throw bad($"the header entry has no \"{key}\"");

    private static long[] ReadIntegerArray(JsonElement value, string key, Func<string, ModelFileException> bad)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw bad($"\"{key}\" must be an array of integers, not {Describe(value)}");
        var result = new long[value.GetArrayLength()];
        int i = 0;
        foreach (var item in value.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out result[i]))
                throw bad($"\"{key}\" must be an array of 64-bit integers; element {i} is {Describe(item)}");
            i++;
        }
        return result;
    }

    /// <summary>Names a JSON value for a message: its kind, and its text when short.</summary>
    private static string Describe(JsonElement value)
    {
        string text = value.GetRawText();
        return text.Length <= 40 ? $"{value.ValueKind} {text}" : value.ValueKind.ToString();
    }

    /// <summary>Rejects tensors whose byte ranges share a byte; <paramref name="sorted"/> is ordered by Begin.</summary>
    private static void CheckNoOverlap(string path, List<SafeTensorInfo> sorted)
    {
        SafeTensorInfo? previous = null;
        foreach (var info in sorted)
        {
            if (info.ByteLength == 0) continue; // an empty range holds no bytes, so it overlaps nothing
            if (previous is not null && info.Begin < previous.End)
            {
                throw new ModelFileException(path, info.Name,
                    $"bytes [{info.Begin}, {info.End}) overlap tensor '{previous.Name}' at [{previous.Begin}, {previous.End})");
            }
            previous = info; // sorted by Begin and non-empty, so this one reaches furthest
        }
    }
}

using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Interp.Loading;
using TorchSharp;

namespace Interp.Tests.Loading;

public sealed class SafeTensorsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("interp-safetensors-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // ---- helpers ----

    private string PathFor(string fileName) => Path.Combine(_dir, fileName);

    /// <summary>Builds a file byte by byte: length prefix, header text, data. Independent of SafeTensorsWriter.</summary>
    private string WriteRaw(string fileName, byte[] header, byte[]? data = null, ulong? headerLength = null)
    {
        var bytes = new byte[8 + header.Length + (data?.Length ?? 0)];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data?.CopyTo(bytes, 8 + header.Length);
        string path = PathFor(fileName);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private string WriteRaw(string fileName, string header, byte[]? data = null, ulong? headerLength = null) =>
        WriteRaw(fileName, Encoding.UTF8.GetBytes(header), data, headerLength);

    /// <summary>Asserts a ModelFileException that names the file, the tensor (if any) and contains the phrase.</summary>
    private static ModelFileException AssertFileError(string path, string? tensor, string phrase, Action action)
    {
        var ex = Assert.Throws<ModelFileException>(action);
        Assert.Equal(path, ex.FilePath);
        Assert.Equal(tensor, ex.TensorName);
        Assert.Contains(Path.GetFileName(path), ex.Message);
        if (tensor is not null) Assert.Contains($"tensor '{tensor}'", ex.Message);
        Assert.Contains(phrase, ex.Message);
        return ex;
    }

    private static void OpenOnly(string path) => SafeTensorsFile.Open(path).Dispose();

    /// <summary>Opens and reads every tensor, as a loader would.</summary>
    private static void OpenAndReadAll(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        foreach (var info in file.Tensors) file.ReadTensor(info.Name).Dispose();
    }

    private static float[] RandomFloats(int seed, int count, float scale)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale).ToArray();
    }

    /// <summary>Random finite floats from random bit patterns: every exponent, sign and mantissa.</summary>
    private static float[] RandomBitPatterns(int seed, int count)
    {
        var random = new Random(seed);
        var result = new float[count];
        for (int i = 0; i < count;)
        {
            float f = BitConverter.UInt32BitsToSingle((uint)random.NextInt64(0, 1L << 32));
            if (float.IsFinite(f)) result[i++] = f;
        }
        return result;
    }

    private static void AssertBitsEqual(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
                Assert.Fail($"element {i}: expected {expected[i]:R}, got {actual[i]:R}");
        }
    }

    /// <summary>
    /// Reference float → bfloat16 → float, computed differently from the writer: take the two bf16 neighbours and
    /// pick the nearer in double arithmetic, ties to the even mantissa; overflow past the midpoint goes to infinity.
    /// </summary>
    private static float Bf16Reference(float x)
    {
        if (!float.IsFinite(x)) return x;
        uint bits = BitConverter.SingleToUInt32Bits(x);
        float towardZero = BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000u);
        float awayFromZero = BitConverter.UInt32BitsToSingle((bits & 0xFFFF0000u) + 0x10000u);
        double away = float.IsInfinity(awayFromZero) ? Math.CopySign(Math.Pow(2, 128), x) : awayFromZero;
        double dToward = Math.Abs((double)x - towardZero), dAway = Math.Abs(away - x);
        if (dToward < dAway) return towardZero;
        if (dAway < dToward) return awayFromZero;
        return ((bits >> 16) & 1) == 0 ? towardZero : awayFromZero;
    }

    // ---- round trips ----

    [Fact]
    public void RoundTrip_F32_IsBitExact_AndKeepsOrderShapesAndMetadata()
    {
        var special = new[] { 0f, -0f, 1f, -1.5f, float.MaxValue, float.MinValue, float.Epsilon, -float.Epsilon,
            1e-40f, float.PositiveInfinity, float.NegativeInfinity, float.NaN };
        var matrix = RandomBitPatterns(1, 6);
        var big = RandomFloats(2, 700 * 1000, 3f); // spans several read and write chunks
        string path = PathFor("f32.safetensors");
        using (var a = torch.tensor(matrix, new long[] { 2, 3 }))
        using (var b = torch.tensor(special, new long[] { 12 }))
        using (var c = torch.tensor(new[] { 42.5f }, Array.Empty<long>()))
        using (var d = torch.empty(new long[] { 0, 4 }))
        using (var e = torch.tensor(big, new long[] { 700, 1000 }))
        {
            SafeTensorsWriter.Write(path,
                new Dictionary<string, torch.Tensor> { ["z.matrix"] = a, ["a.special"] = b, ["scalar"] = c, ["empty"] = d, ["big"] = e },
                new Dictionary<string, string> { ["format"] = "pt", ["note"] = "héllo \"quoted\"" });
        }

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(new[] { "z.matrix", "a.special", "scalar", "empty", "big" }, file.Tensors.Select(t => t.Name));
        Assert.All(file.Tensors, t => Assert.Equal(SafeTensorsDType.F32, t.DType));
        Assert.Equal(new long[] { 2, 3 }, file.GetInfo("z.matrix").Shape);
        Assert.Equal(new SafeTensorInfo("z.matrix", SafeTensorsDType.F32, file.GetInfo("z.matrix").Shape, 0, 24), file.GetInfo("z.matrix"));
        Assert.Equal(Array.Empty<long>(), file.GetInfo("scalar").Shape);
        Assert.Equal(1, file.GetInfo("scalar").ElementCount);
        Assert.Equal(0, file.GetInfo("empty").ElementCount);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("héllo \"quoted\"", file.Metadata["note"]);

        AssertBitsEqual(matrix, file.ReadFloats("z.matrix"));
        AssertBitsEqual(special, file.ReadFloats("a.special"));
        AssertBitsEqual(big, file.ReadFloats("big"));
        using (var t = file.ReadTensor("big", new long[] { 700, 1000 }))
        {
            Assert.Equal(torch.ScalarType.Float32, t.dtype);
            Assert.Equal(new long[] { 700, 1000 }, t.shape);
            AssertBitsEqual(big, t.data<float>().ToArray());
        }
        using (var t = file.ReadTensor("scalar"))
        {
            Assert.Empty(t.shape);
            Assert.Equal(42.5f, t.item<float>());
        }
        using (var t = file.ReadTensor("empty"))
        {
            Assert.Equal(new long[] { 0, 4 }, t.shape);
        }
    }

    [Fact]
    public void RoundTrip_F16_MatchesSystemHalfRounding()
    {
        var values = RandomFloats(3, 600 * 1000, 10f)
            .Concat(new[] { 65504f, 65520f, 1e6f, -1e6f, 6e-8f, 1e-9f, 1f / 3, 0.1f, -0f })
            .ToArray();
        string path = PathFor("f16.safetensors");
        using (var t = torch.tensor(values, new long[] { values.Length }))
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("w", t) }, dtype: SafeTensorsDType.F16);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(SafeTensorsDType.F16, file.GetInfo("w").DType);
        Assert.Equal(values.Length * 2L, file.GetInfo("w").ByteLength);
        var expected = values.Select(v => (float)(Half)v).ToArray();
        AssertBitsEqual(expected, file.ReadFloats("w"));
        // Spot checks that do not depend on System.Half either.
        var read = file.ReadFloats("w");
        Assert.Equal(65504f, read[values.Length - 9]);
        Assert.Equal(float.PositiveInfinity, read[values.Length - 8]); // 65520 is the midpoint to the next step: rounds up
        Assert.Equal(0.333251953125f, read[values.Length - 3]);
    }

    [Fact]
    public void RoundTrip_BF16_RoundsToNearestEven()
    {
        var values = RandomBitPatterns(4, 300 * 1000)
            .Concat(new[]
            {
                1f + MathF.Pow(2, -8),      // halfway between 1 and 1+2^-7: ties to even → 1
                1f + 3 * MathF.Pow(2, -8),  // halfway between 1+2^-7 (odd) and 1+2^-6 (even) → 1+2^-6
                1f + MathF.Pow(2, -8) + MathF.Pow(2, -20), // just above halfway → 1+2^-7
                float.MaxValue,             // beyond bf16's max + half a step → infinity
                -0f, float.Epsilon,
            })
            .ToArray();
        string path = PathFor("bf16.safetensors");
        using (var t = torch.tensor(values, new long[] { values.Length }))
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("w", t) }, dtype: SafeTensorsDType.BF16);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(SafeTensorsDType.BF16, file.GetInfo("w").DType);
        var read = file.ReadFloats("w");
        AssertBitsEqual(values.Select(Bf16Reference).ToArray(), read);
        int n = values.Length;
        Assert.Equal(1f, read[n - 6]);
        Assert.Equal(1f + MathF.Pow(2, -6), read[n - 5]);
        Assert.Equal(1f + MathF.Pow(2, -7), read[n - 4]);
        Assert.Equal(float.PositiveInfinity, read[n - 3]);
    }

    [Fact]
    public void Writer_KeepsNaNAsNaNInEveryDtype()
    {
        foreach (var dtype in new[] { SafeTensorsDType.F32, SafeTensorsDType.F16, SafeTensorsDType.BF16 })
        {
            string path = PathFor($"nan-{dtype}.safetensors");
            using (var t = torch.tensor(new[] { float.NaN, -float.NaN, BitConverter.UInt32BitsToSingle(0x7F80_0001) }))
                SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("w", t) }, dtype: dtype);
            using var file = SafeTensorsFile.Open(path);
            Assert.All(file.ReadFloats("w"), v => Assert.True(float.IsNaN(v), $"{dtype}: {v}"));
        }
    }

    [Fact]
    public void Writer_TakesNonContiguousAndNonFloatTensors_AndLeavesThemUsable()
    {
        string path = PathFor("layout.safetensors");
        using var source = torch.arange(6f).reshape(2, 3);
        using var transposed = source.t(); // [[0,3],[1,4],[2,5]], not contiguous
        using var doubles = torch.tensor(new double[] { 0.5, -2.25 });
        SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("t", transposed), KeyValuePair.Create("d", doubles) });

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(new long[] { 3, 2 }, file.GetInfo("t").Shape);
        Assert.Equal(new[] { 0f, 3f, 1f, 4f, 2f, 5f }, file.ReadFloats("t"));
        Assert.Equal(new[] { 0.5f, -2.25f }, file.ReadFloats("d"));
        // The writer's dispose scope must not have freed the caller's tensors.
        Assert.Equal(new[] { 0f, 3f, 1f, 4f, 2f, 5f }, transposed.contiguous().data<float>().ToArray());
        Assert.Equal(-2.25, doubles[1].item<double>());
    }

    [Fact]
    public void Writer_PadsHeaderWithSpacesToMultipleOf8_AndLaysDataOutInOrder()
    {
        string path = PathFor("layout2.safetensors");
        using (var a = torch.tensor(new[] { 1f, 2f }))
        using (var b = torch.tensor(new[] { 3f }))
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("b_first", a), KeyValuePair.Create("a_second", b) });

        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerLength % 8);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        Assert.StartsWith("{", header);
        Assert.Matches(@"^\{.*\} *$", header);
        Assert.Contains("\"b_first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", header);
        Assert.Contains("\"a_second\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}", header);
        Assert.Equal(8 + headerLength + 12, bytes.Length);
        Assert.Equal(3f, BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)(8 + headerLength + 8))));
    }

    [Fact]
    public void Writer_ReplacesExistingFile_AndLeavesNoTemporaryFile()
    {
        string path = PathFor("replace.safetensors");
        File.WriteAllText(path, "old contents");
        using (var t = torch.tensor(new[] { 7f }))
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("x", t) });
        using (var file = SafeTensorsFile.Open(path))
            Assert.Equal(new[] { 7f }, file.ReadFloats("x"));
        Assert.Equal(new[] { "replace.safetensors" }, Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void Writer_DeletesTemporaryFileWhenTheFinalMoveFails()
    {
        string path = PathFor("is-a-directory.safetensors");
        Directory.CreateDirectory(path); // File.Move cannot replace a directory
        using (var t = torch.tensor(new[] { 7f }))
            Assert.ThrowsAny<IOException>(() => SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("x", t) }));
        Assert.Empty(Directory.GetFiles(_dir));
    }

    [Fact]
    public void Writer_RejectsBadArguments()
    {
        string path = PathFor("args.safetensors");
        using var t = torch.tensor(new[] { 1f });
        var ex = Assert.Throws<ArgumentException>(() =>
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("x", t), KeyValuePair.Create("x", t) }));
        Assert.Contains("'x' is given twice", ex.Message);
        ex = Assert.Throws<ArgumentException>(() =>
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("__metadata__", t) }));
        Assert.Contains("reserved", ex.Message);
        ex = Assert.Throws<ArgumentException>(() =>
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("x", t) }, dtype: SafeTensorsDType.I32));
        Assert.Contains("not I32", ex.Message);
        Assert.False(File.Exists(path));
    }

    // ---- hand-built files: an independent check of the format ----

    [Fact]
    public void HandBuiltFile_WithEveryDType_ReadsBack()
    {
        var data = new List<byte>();
        void Add(Span<byte> bytes) => data.AddRange(bytes.ToArray());
        var buf = new byte[8];
        // F32 [2, 2] at [0, 16)
        foreach (float f in new[] { 1.5f, -2f, 0.25f, 1e10f }) { BinaryPrimitives.WriteSingleLittleEndian(buf, f); Add(buf.AsSpan(0, 4)); }
        // F16 [3] at [16, 22): 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800
        foreach (ushort h in new ushort[] { 0x3C00, 0xC000, 0x3800 }) { BinaryPrimitives.WriteUInt16LittleEndian(buf, h); Add(buf.AsSpan(0, 2)); }
        // BF16 [2] at [22, 26): 1.0 = 0x3F80, -3.0 = 0xC040
        foreach (ushort h in new ushort[] { 0x3F80, 0xC040 }) { BinaryPrimitives.WriteUInt16LittleEndian(buf, h); Add(buf.AsSpan(0, 2)); }
        // F64 [1] at [26, 34)
        BinaryPrimitives.WriteDoubleLittleEndian(buf, -0.125); Add(buf);
        // I64 [2] at [34, 50)
        foreach (long v in new[] { -5L, 1L << 40 }) { BinaryPrimitives.WriteInt64LittleEndian(buf, v); Add(buf); }
        // I32 [1] at [50, 54), I16 [1] at [54, 56)
        BinaryPrimitives.WriteInt32LittleEndian(buf, -70000); Add(buf.AsSpan(0, 4));
        BinaryPrimitives.WriteInt16LittleEndian(buf, -300); Add(buf.AsSpan(0, 2));
        // I8 [2] at [56, 58), U8 [2] at [58, 60), BOOL [2] at [60, 62); then 2 unused trailing bytes
        data.AddRange(new byte[] { 0xFF, 0x7F, 0xFF, 0x01, 0x01, 0x00, 0xAA, 0xAA });

        // Keys deliberately out of data order, with compact and spaced JSON and no padding.
        const string header = """
            {"u8":{"dtype":"U8","shape":[2],"data_offsets":[58,60]},
             "__metadata__": {"format": "pt", "source": "hand"},
             "bf16": {"dtype": "BF16", "shape": [2], "data_offsets": [22, 26]},
             "f32":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
             "f16":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},
             "f64":{"dtype":"F64","shape":[1],"data_offsets":[26,34]},
             "i64":{"dtype":"I64","shape":[2],"data_offsets":[34,50]},
             "i32":{"dtype":"I32","shape":[1],"data_offsets":[50,54]},
             "i16":{"dtype":"I16","shape":[1],"data_offsets":[54,56]},
             "i8":{"dtype":"I8","shape":[2],"data_offsets":[56,58]},
             "mask":{"dtype":"BOOL","shape":[1,2],"data_offsets":[60,62]}}
            """;
        string path = WriteRaw("hand.safetensors", header, data.ToArray());

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(new[] { "f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "mask" }, file.Tensors.Select(t => t.Name));
        Assert.Equal(new Dictionary<string, string> { ["format"] = "pt", ["source"] = "hand" }, file.Metadata);
        Assert.True(file.Contains("f16"));
        Assert.False(file.Contains("F16"));
        Assert.Equal(new SafeTensorInfo("bf16", SafeTensorsDType.BF16, file.GetInfo("bf16").Shape, 22, 26), file.GetInfo("bf16"));

        Assert.Equal(new[] { 1.5f, -2f, 0.25f, 1e10f }, file.ReadFloats("f32"));
        Assert.Equal(new[] { 1f, -2f, 0.5f }, file.ReadFloats("f16"));
        Assert.Equal(new[] { 1f, -3f }, file.ReadFloats("bf16"));
        Assert.Equal(new[] { -0.125f }, file.ReadFloats("f64"));
        using (var t = file.ReadTensor("f32"))
        {
            Assert.Equal(new long[] { 2, 2 }, t.shape);
            Assert.Equal(-2f, t[0, 1].item<float>());
        }

        long[] Longs(string name)
        {
            using var t = file.ReadTensor(name);
            Assert.Equal(torch.ScalarType.Int64, t.dtype);
            Assert.Equal(file.GetInfo(name).Shape, t.shape);
            return t.data<long>().ToArray();
        }
        Assert.Equal(new[] { -5L, 1L << 40 }, Longs("i64"));
        Assert.Equal(new[] { -70000L }, Longs("i32"));
        Assert.Equal(new[] { -300L }, Longs("i16"));
        Assert.Equal(new[] { -1L, 127L }, Longs("i8"));
        Assert.Equal(new[] { 255L, 1L }, Longs("u8"));
        Assert.Equal(new[] { 1L, 0L }, Longs("mask"));

        AssertFileError(path, "i32", "has dtype I32, which is not a floating-point type", () => file.ReadFloats("i32"));
    }

    [Fact]
    public void EmptyHeaderObject_HasNoTensors()
    {
        string path = WriteRaw("empty.safetensors", "{}      ");
        using var file = SafeTensorsFile.Open(path);
        Assert.Empty(file.Tensors);
        Assert.Empty(file.Metadata);
        AssertFileError(path, "x", "no such tensor; the file has no tensors", () => file.GetInfo("x"));
    }

    [Fact]
    public void GetInfo_MissingName_ListsCloseNames()
    {
        string path = PathFor("names.safetensors");
        using (var t = torch.tensor(new[] { 1f }))
        {
            var names = new[] { "h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.mlp.c_fc.weight", "wte.weight", "wpe.weight",
                "ln_f.weight", "ln_f.bias", "h.1.attn.c_attn.weight" };
            SafeTensorsWriter.Write(path, names.Select(n => KeyValuePair.Create(n, t)));
        }
        using var file = SafeTensorsFile.Open(path);
        var ex = AssertFileError(path, "h.0.attn.c_atn.weight", "no such tensor; the file has 8 tensors, e.g. 'h.0.attn.c_attn.weight'",
            () => file.GetInfo("h.0.attn.c_atn.weight"));
        Assert.DoesNotContain("wpe.weight", ex.Message); // only a few, the closest ones
        AssertFileError(path, "nope", "no such tensor", () => file.ReadTensor("nope"));
        AssertFileError(path, "nope", "no such tensor", () => file.ReadFloats("nope"));
    }

    [Fact]
    public void ReadTensor_WithExpectedShape_ChecksIt()
    {
        string path = PathFor("shape.safetensors");
        using (var t = torch.zeros(2, 3))
            SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("w", t) });
        using var file = SafeTensorsFile.Open(path);
        AssertFileError(path, "w", "has shape [2, 3] but the model config expects [3, 2]", () => file.ReadTensor("w", new long[] { 3, 2 }));
        AssertFileError(path, "w", "has shape [2, 3] but the model config expects [6]", () => file.ReadTensor("w", new long[] { 6 }));
        using var ok = file.ReadTensor("w", new long[] { 2, 3 });
        Assert.Equal(new long[] { 2, 3 }, ok.shape);
    }

    [Fact]
    public void ReadAfterDispose_Throws()
    {
        string path = WriteRaw("disposed.safetensors", """{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", new byte[4]);
        var file = SafeTensorsFile.Open(path);
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.ReadFloats("x"));
    }

    // ---- bad files: one test per problem ----

    [Fact]
    public void MissingFile_IsModelFileException()
    {
        string path = PathFor("absent.safetensors");
        AssertFileError(path, null, "cannot open the file", () => OpenOnly(path));
    }

    [Fact]
    public void FileShorterThan8Bytes()
    {
        string path = PathFor("tiny.safetensors");
        File.WriteAllBytes(path, new byte[] { 1, 0, 0, 0, 0 });
        AssertFileError(path, null, "the file is 5 bytes long, too short to hold the 8-byte header length", () => OpenOnly(path));
    }

    [Fact]
    public void HeaderLengthBeyondFile()
    {
        string path = WriteRaw("long-header.safetensors", "{}", headerLength: 1000);
        AssertFileError(path, null, "header length 1000 exceeds the 2 bytes after the length prefix", () => OpenOnly(path));
    }

    [Fact]
    public void HeaderLength2Pow60_FailsFastWithoutAllocating()
    {
        string path = WriteRaw("huge-header.safetensors", "{}", headerLength: 1UL << 60);
        OpenFailure(); // warm up JIT and the exception path so the measurement below sees only the steady state

        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        var clock = Stopwatch.StartNew();
        var ex = OpenFailure();
        clock.Stop();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;

        Assert.Contains($"header length {1UL << 60} exceeds", ex.Message);
        Assert.True(clock.ElapsedMilliseconds < 1000, $"took {clock.ElapsedMilliseconds} ms");
        Assert.True(allocated < 256 * 1024, $"allocated {allocated} bytes");

        ModelFileException OpenFailure() => AssertFileError(path, null, "the file is truncated or not a safetensors file", () => OpenOnly(path));
    }

    [Fact]
    public void HeaderLengthOver100MiB_IsRejectedEvenWhenTheFileIsThatLong()
    {
        string path = PathFor("big-header.safetensors");
        using (var stream = File.Create(path))
        {
            var prefix = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)SafeTensorsFile.MaxHeaderBytes + 1);
            stream.Write(prefix);
            stream.SetLength(SafeTensorsFile.MaxHeaderBytes + 100); // sparse: costs no disk
        }
        AssertFileError(path, null, $"header length {SafeTensorsFile.MaxHeaderBytes + 1} exceeds the 104857600-byte (100 MiB) limit", () => OpenOnly(path));
    }

    [Theory]
    [InlineData("{not json}", "the header is not valid JSON")]
    [InlineData("{\"a\": {\"dtype\": \"F32\"", "the header is not valid JSON")]
    [InlineData("", "the header is not valid JSON")]
    [InlineData("[1, 2]", "the header must be a JSON object, not Array [1, 2]")]
    [InlineData("\"text\"", "the header must be a JSON object, not String")]
    public void HeaderNotAJsonObject(string header, string phrase)
    {
        string path = WriteRaw("bad-json.safetensors", header);
        AssertFileError(path, null, phrase, () => OpenOnly(path));
    }

    [Fact]
    public void HeaderNestedTooDeeply()
    {
        string header = "{\"a\":" + new string('[', 100) + new string(']', 100) + "}";
        string path = WriteRaw("deep.safetensors", header);
        var ex = AssertFileError(path, null, "the header is not valid JSON (nesting limit 64)", () => OpenOnly(path));
        Assert.Contains("depth", ex.Message);
    }

    [Fact]
    public void HeaderNotUtf8()
    {
        var header = Encoding.UTF8.GetBytes("{\"x\xFF\":{}}");
        header[3] = 0xFF; // replace the encoded ÿ's first byte with a lone byte that is never valid UTF-8
        string path = WriteRaw("latin1.safetensors", header);
        AssertFileError(path, null, "the header is not valid UTF-8 text", () => OpenOnly(path));
    }

    [Theory]
    [InlineData("""{"w": 5}""", "the header entry must be a JSON object, not Number 5")]
    [InlineData("""{"w": {"shape": [1], "data_offsets": [0, 4]}}""", "the header entry has no \"dtype\"")]
    [InlineData("""{"w": {"dtype": "F32", "data_offsets": [0, 4]}}""", "the header entry has no \"shape\"")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1]}}""", "the header entry has no \"data_offsets\"")]
    [InlineData("""{"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}}""", "\"dtype\" must be a string, not Number 7")]
    [InlineData("""{"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}""", "\"shape\" must be an array of integers, not String \"1\"")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}""", "\"shape\" must be an array of 64-bit integers; element 0 is Number 1.5")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1, null], "data_offsets": [0, 4]}}""", "element 1 is Null null")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 4]}}""", "\"shape\" must be an array of 64-bit integers")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1], "data_offsets": {"a": 0}}}""", "\"data_offsets\" must be an array of integers, not Object")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}}""", "\"data_offsets\" must be an array of 64-bit integers; element 1 is String \"4\"")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}""", "\"data_offsets\" must hold exactly 2 integers [begin, end], not 3")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4]}}""", "\"data_offsets\" must hold exactly 2 integers [begin, end], not 1")]
    public void TensorEntryWithMissingFieldsOrWrongTypes(string header, string phrase)
    {
        string path = WriteRaw("bad-entry.safetensors", header, new byte[16]);
        AssertFileError(path, "w", phrase, () => OpenOnly(path));
    }

    [Theory]
    [InlineData("F8_E4M3")]
    [InlineData("f32")]
    [InlineData("U16")]
    public void UnknownDType(string dtype)
    {
        string path = WriteRaw("dtype.safetensors", $$$"""{"w": {"dtype": "{{{dtype}}}", "shape": [1], "data_offsets": [0, 4]}}""", new byte[4]);
        AssertFileError(path, "w", $"unknown dtype \"{dtype}\"; supported dtypes are F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL", () => OpenOnly(path));
    }

    [Fact]
    public void NegativeDimension()
    {
        string path = WriteRaw("neg.safetensors", """{"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}""", new byte[8]);
        AssertFileError(path, "w", "shape [2, -1] has a negative dimension", () => OpenOnly(path));
    }

    [Theory]
    [InlineData("[4294967296, 4294967296]")]
    [InlineData("[4294967296, 4294967296, 0]")]
    [InlineData("[9223372036854775807, 2]")]
    public void ShapeProductOverflowsLong(string shape)
    {
        string path = WriteRaw("overflow.safetensors", $$$"""{"w": {"dtype": "F32", "shape": {{{shape}}}, "data_offsets": [0, 8]}}""", new byte[8]);
        AssertFileError(path, "w", "has more elements than a 64-bit count can hold", () => OpenOnly(path));
    }

    [Fact]
    public void ElementCountTimesSizeOverflowsLong_IsASizeMismatch()
    {
        // 2^62 elements pass the count check, but 2^64 bytes do not fit in a long.
        string path = WriteRaw("overflow2.safetensors", """{"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 8]}}""", new byte[8]);
        AssertFileError(path, "w", "data_offsets [0, 8] hold 8 bytes but dtype F32 with shape [4611686018427387904] needs 18446744073709551616 bytes", () => OpenOnly(path));
    }

    [Fact]
    public void OffsetsEndBeforeBegin()
    {
        string path = WriteRaw("backwards.safetensors", """{"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}""", new byte[8]);
        AssertFileError(path, "w", "data_offsets [8, 4] end before they begin", () => OpenOnly(path));
    }

    [Fact]
    public void NegativeOffsets()
    {
        string path = WriteRaw("negative-offsets.safetensors", """{"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}""", new byte[8]);
        AssertFileError(path, "w", "data_offsets [-4, 0] must not be negative", () => OpenOnly(path));
    }

    [Fact]
    public void OffsetsBeyondDataSection()
    {
        string path = WriteRaw("short-data.safetensors", """{"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}""", new byte[1024]);
        AssertFileError(path, "w",
            "data_offsets [0, 4096] run past the end of the data section (1024 bytes): the file is truncated or the header lies",
            () => OpenOnly(path));
    }

    [Fact]
    public void ByteCountDisagreesWithShapeAndDType()
    {
        string path = WriteRaw("mismatch.safetensors", """{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}""", new byte[16]);
        AssertFileError(path, "w", "data_offsets [0, 12] hold 12 bytes but dtype F32 with shape [2, 2] needs 16 bytes", () => OpenOnly(path));
    }

    [Fact]
    public void OverlappingTensors()
    {
        string header = """
            {"b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
             "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
             "empty": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}
            """;
        string path = WriteRaw("overlap.safetensors", header, new byte[24]);
        AssertFileError(path, "b", "bytes [8, 24) overlap tensor 'a' at [0, 16)", () => OpenOnly(path));
    }

    [Fact]
    public void AdjacentAndEmptyTensors_DoNotOverlap()
    {
        string header = """
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "e1": {"dtype": "F16", "shape": [3, 0], "data_offsets": [8, 8]},
             "e2": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
             "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}
            """;
        string path = WriteRaw("adjacent.safetensors", header, new byte[12]);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(new[] { "a", "e2", "e1", "b" }, file.Tensors.Select(t => t.Name));
        Assert.Empty(file.ReadFloats("e1"));
    }

    [Fact]
    public void DuplicateTensorName()
    {
        string header = """
            {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
             "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
            """;
        string path = WriteRaw("dup.safetensors", header, new byte[8]);
        AssertFileError(path, "w", "appears twice in the header", () => OpenOnly(path));
    }

    [Theory]
    [InlineData("""{"__metadata__": ["a"]}""", "\"__metadata__\" must be an object of strings, not Array")]
    [InlineData("""{"__metadata__": {"epoch": 3}}""", "\"__metadata__\" entry \"epoch\" must be a string, not Number 3")]
    [InlineData("""{"__metadata__": {}, "__metadata__": {}}""", "\"__metadata__\" appears twice in the header")]
    public void BadMetadata(string header, string phrase)
    {
        string path = WriteRaw("bad-metadata.safetensors", header);
        AssertFileError(path, null, phrase, () => OpenOnly(path));
    }

    // ---- truncation and corruption ----

    private string WriteSample(string fileName)
    {
        string path = PathFor(fileName);
        using var a = torch.tensor(RandomFloats(5, 12, 1f), new long[] { 3, 4 });
        using var b = torch.tensor(RandomFloats(6, 5, 1f));
        SafeTensorsWriter.Write(path, new[] { KeyValuePair.Create("layer.0.weight", a), KeyValuePair.Create("layer.0.bias", b) },
            new Dictionary<string, string> { ["format"] = "pt" }, SafeTensorsDType.BF16);
        return path;
    }

    [Fact]
    public void TruncatedAtEveryLength_AlwaysGivesModelFileException()
    {
        byte[] full = File.ReadAllBytes(WriteSample("full.safetensors"));
        string path = PathFor("cut.safetensors");
        for (int length = 0; length < full.Length; length++)
        {
            File.WriteAllBytes(path, full[..length]);
            var ex = Assert.Throws<ModelFileException>(() => OpenAndReadAll(path));
            Assert.Equal(path, ex.FilePath);
        }
        File.WriteAllBytes(path, full);
        OpenAndReadAll(path); // and the uncut file is fine
    }

    [Fact]
    public void RandomlyCorruptedFiles_OnlyEverGiveModelFileException()
    {
        byte[] full = File.ReadAllBytes(WriteSample("pristine.safetensors"));
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(full);
        string path = PathFor("corrupt.safetensors");
        var random = new Random(7);
        int failures = 0;
        for (int trial = 0; trial < 1500; trial++)
        {
            byte[] bytes = (byte[])full.Clone();
            for (int flips = random.Next(1, 4); flips > 0; flips--)
                bytes[random.Next(0, headerEnd)] = (byte)random.Next(256); // the header (and length) is where parsing can go wrong
            File.WriteAllBytes(path, bytes);
            try { OpenAndReadAll(path); }
            catch (ModelFileException) { failures++; }
        }
        Assert.InRange(failures, 100, 1500); // most corruptions are caught; the rest still parse consistently
    }

    [Fact]
    public void FileTruncatedAfterOpening_IsReportedAtReadTime()
    {
        string path = WriteSample("shrinking.safetensors");
        using var file = SafeTensorsFile.Open(path);
        var bias = file.GetInfo("layer.0.bias");
        Assert.Equal(5, file.ReadFloats("layer.0.bias").Length);
        using (var writer = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete))
            writer.SetLength(writer.Length - 2);
        AssertFileError(path, "layer.0.bias", $"data_offsets [{bias.Begin}, {bias.End}] run past the end of the data section", () => file.ReadFloats("layer.0.bias"));
        AssertFileError(path, "layer.0.bias", "the file was truncated after it was opened", () => file.ReadTensor("layer.0.bias").Dispose());
        Assert.Equal(12, file.ReadFloats("layer.0.weight").Length); // earlier bytes are still there
    }
}

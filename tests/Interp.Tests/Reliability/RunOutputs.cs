using System.Buffers.Binary;
using Interp.Experiments;
using Interp.Tests.Support;

namespace Interp.Tests.Reliability;

/// <summary>Checks of a run folder as a reader finds it, and comparison of two runs' tables.</summary>
internal static class RunOutputs
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>
    /// True when <paramref name="path"/> is a whole PNG: the signature, then a chain of chunks whose lengths and CRCs
    /// check out, ending in IEND exactly at the end of the file.
    /// </summary>
    public static bool IsCompletePng(string path)
    {
        var b = File.ReadAllBytes(path);
        if (b.Length < 8 || !b.AsSpan(0, 8).SequenceEqual(PngSignature)) return false;
        for (int at = 8; at + 12 <= b.Length;)
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(at));
            if (length > int.MaxValue || at + 12 + (long)length > b.Length) return false;
            var typeAndData = b.AsSpan(at + 4, 4 + (int)length);
            if (Crc32(typeAndData) != BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(at + 8 + (int)length))) return false;
            bool end = typeAndData[..4].SequenceEqual("IEND"u8);
            at += 12 + (int)length;
            if (end) return at == b.Length;
        }
        return false;
    }

    /// <summary>PNG's CRC-32 (ISO 3309, reflected polynomial 0xEDB88320) of a chunk's type and data.</summary>
    private static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }

    /// <summary>
    /// Asserts that everything a reader can see in <paramref name="dir"/> is complete: every visible file has a final
    /// name; every table opens with ParquetSharp and has rows; every figure is a whole PNG; the manifest parses and
    /// lists only files that exist (tables with their recorded row counts). Returns the visible files and the manifest
    /// (null when the run was stopped before writing one). Hidden <c>.NAME.GUID.tmp</c> files, left by a kill in the
    /// middle of a write, are not final names and are counted in <paramref name="leftovers"/>.
    /// </summary>
    public static (string[] Files, RunManifest? Manifest) AssertComplete(string dir, out int leftovers)
    {
        leftovers = 0;
        if (!Directory.Exists(dir)) return ([], null);
        var names = Directory.GetFiles(dir).Select(f => Path.GetFileName(f)).ToArray();
        leftovers = names.Count(n => n.StartsWith('.') && n.EndsWith(".tmp", StringComparison.Ordinal));
        var visible = names.Where(n => !n.StartsWith('.')).Order(StringComparer.Ordinal).ToArray();
        foreach (var name in visible)
        {
            string path = Path.Combine(dir, name);
            switch (Path.GetExtension(name))
            {
                case ".parquet":
                    Assert.True(ParquetRead.Columns(path).Values.First().Length > 0, $"{name} has no rows");
                    break;
                case ".png":
                    Assert.True(IsCompletePng(path), $"{name} is not a complete PNG");
                    break;
                case ".md" or ".html":
                    Assert.True(new FileInfo(path).Length > 0, $"{name} is empty");
                    break;
                case ".json":
                    Assert.Equal("manifest.json", name);
                    break;
                default:
                    Assert.Fail($"{name}: not a final artefact name");
                    break;
            }
        }
        RunManifest? manifest = null;
        if (visible.Contains("manifest.json"))
        {
            manifest = RunManifest.Load(dir);
            foreach (var a in manifest.Artifacts)
            {
                Assert.True(File.Exists(Path.Combine(dir, a.File)), $"the manifest lists {a.File}, which does not exist");
                if (a.Kind == "table") Assert.Equal(a.Rows, ParquetRead.Columns(Path.Combine(dir, a.File))["run_id"].LongLength);
            }
        }
        return (visible, manifest);
    }

    /// <summary>Asserts that two runs wrote the same tables with equal values in every column but <c>run_id</c>.</summary>
    public static int AssertSameTables(string expectedDir, string actualDir)
    {
        var tables = Directory.GetFiles(expectedDir, "*.parquet").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        Assert.NotEmpty(tables);
        Assert.Equal(tables, Directory.GetFiles(actualDir, "*.parquet").Select(Path.GetFileName).Order(StringComparer.Ordinal));
        int values = 0;
        foreach (var table in tables)
        {
            var expected = ParquetRead.Columns(Path.Combine(expectedDir, table!));
            var actual = ParquetRead.Columns(Path.Combine(actualDir, table!));
            Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
            foreach (var column in expected.Keys.Where(k => k != "run_id"))
            {
                var e = expected[column];
                var a = actual[column];
                Assert.Equal(e.Length, a.Length);
                for (int i = 0; i < e.Length; i++)
                {
                    bool equal = e[i] is double[] list ? list.SequenceEqual((double[])a[i]) : Equals(e[i], a[i]);
                    if (!equal) Assert.Fail($"{table} column {column} row {i}: {e[i]} then {a[i]}");
                    values++;
                }
            }
        }
        return values;
    }
}

using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;

namespace Interp.Tests.Reliability;

/// <summary>
/// Edits of a safetensors file's structure: its JSON header (shapes, offsets, dtypes, names, metadata) and its length
/// prefix. The data section is kept, so a header that lies about it is read against the real bytes.
/// </summary>
internal static class SafeTensorsMutations
{
    private const string LoneSurrogate = "@@lone-surrogate@@";

    private static readonly JsonDocumentOptions Deep = new() { MaxDepth = 256, AllowDuplicateProperties = false };

    /// <summary>Splits a file into header object and data, or null when an earlier edit left no parseable header.</summary>
    private static (JsonObject Header, byte[] Data)? Split(byte[] file)
    {
        if (file.Length < 8) return null;
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (n > (ulong)(file.Length - 8)) return null;
        try
        {
            // Count builds the property dictionary now, so that names that are not valid Unicode fail here.
            return JsonNode.Parse(file.AsSpan(8, (int)n), documentOptions: Deep) is JsonObject o && o.Count >= 0 ? (o, file[(8 + (int)n)..]) : null;
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException) { return null; }
    }

    private static byte[] Join(JsonObject header, byte[] data)
    {
        byte[] text;
        // A lone surrogate cannot be written from a .NET string: a placeholder becomes its escape in the text.
        try { text = Encoding.UTF8.GetBytes(header.ToJsonString(new JsonSerializerOptions { MaxDepth = 256 }).Replace(LoneSurrogate, "\\ud800")); }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException) { return []; } // unwritable name: an empty file
        var file = new byte[8 + text.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)text.Length);
        text.CopyTo(file, 8);
        data.CopyTo(file, 8 + text.Length);
        return file;
    }

    /// <summary>Edits the header of a tensor entry (chosen by index), then writes the file back.</summary>
    private static Mutation OnTensor(string name, int index, Action<JsonObject, string, JsonObject, long> edit) => new(name, file =>
    {
        if (Split(file) is not var (header, data)) return file;
        var tensors = header.Where(kv => kv.Key != "__metadata__" && kv.Value is JsonObject).Select(kv => kv.Key).ToArray();
        if (tensors.Length == 0) return file;
        string key = tensors[index % tensors.Length];
        edit(header, key, (JsonObject)header[key]!, data.LongLength);
        return Join(header, data);
    });

    private static long Offset(JsonObject entry, int i) =>
        entry["data_offsets"] is JsonArray { Count: 2 } a && a[i] is JsonValue v && v.TryGetValue(out long x) ? x : 0;

    private static long[] Shape(JsonObject entry) =>
        entry["shape"] is JsonArray a ? a.Select(n => n is JsonValue v && v.TryGetValue(out long x) ? x : 1).ToArray() : [];

    private static JsonArray Array(params long[] values) => new(values.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());

    /// <summary>Shapes that lie: huge, negative, empty, fractional, textual, deep, or the right one slightly changed.</summary>
    private static readonly Gen<(string Name, Func<long[], JsonNode?> Make)> HostileShape = Gen.OneOf<(string, Func<long[], JsonNode?>)>(
        ("[2^31]", _ => Array(1L << 31)), ("[2^62]", _ => Array(1L << 62)), ("[long.Max, 2]", _ => Array(long.MaxValue, 2)),
        ("[2^16, 2^16]", _ => Array(65536, 65536)), ("[2^20, 2^20, 0]", _ => Array(1 << 20, 1 << 20, 0)), ("[2^40, 2^40, 0]", _ => Array(1L << 40, 1L << 40, 0)),
        ("[-1]", _ => Array(-1)), ("[-8, -1]", _ => Array(-8, -1)), ("[0]", _ => Array(0)), ("[]", _ => Array()),
        ("[1.5]", _ => Mutations.ParseValue("[1.5]")), ("[\"8\"]", _ => Mutations.ParseValue("[\"8\"]")), ("null", _ => null),
        ("[[8]]", _ => Mutations.ParseValue("[[8]]")), ("deep", _ => Mutations.ParseValue(Mutations.Nest(200))),
        ("10000 ones", _ => Array(Enumerable.Repeat(1L, 10_000).ToArray())),
        ("reversed", s => Array(s.Reverse().ToArray())), ("first + 1", s => Array(s.Select((d, i) => i == 0 ? d + 1 : d).ToArray())),
        ("doubled", s => Array(s.Select(d => 2 * d).ToArray())), ("extra 1", s => Array([.. s, 1])), ("one fewer", s => Array(s.Skip(1).ToArray())),
        ("flattened", s => Array(s.Aggregate(1L, (a, b) => a * b))));

    /// <summary>Offsets that lie about where a tensor's bytes are.</summary>
    private static readonly Gen<(string Name, Func<long, long, long, JsonNode?> Make)> HostileOffsets = Gen.OneOf<(string, Func<long, long, long, JsonNode?>)>(
        ("[0, 2^62]", (_, _, _) => Array(0, 1L << 62)), ("[-8, end]", (_, e, _) => Array(-8, e)), ("[end, begin]", (b, e, _) => Array(e, b)),
        ("[begin, end + 4]", (b, e, _) => Array(b, e + 4)), ("[begin + 4, end + 4]", (b, e, _) => Array(b + 4, e + 4)),
        ("[begin - 4, end - 4]", (b, e, _) => Array(b - 4, e - 4)), ("[0, 0]", (_, _, _) => Array(0, 0)), ("[begin]", (b, _, _) => Array(b)),
        ("[begin, end, 1]", (b, e, _) => Array(b, e, 1)), ("[\"0\", end]", (_, e, _) => Mutations.ParseValue($"[\"0\", {e}]")),
        ("[1.5, end]", (_, e, _) => Mutations.ParseValue($"[1.5, {e}]")), ("past the data", (b, _, n) => Array(b, n + 8)),
        ("first bytes", (b, e, _) => Array(0, e - b)), ("[long.Max - 1, long.Max]", (_, _, _) => Array(long.MaxValue - 1, long.MaxValue)),
        ("[begin, begin + 2^40]", (b, _, _) => Array(b, b + (1L << 40))), ("null", (_, _, _) => null), ("{}", (_, _, _) => new JsonObject()));

    private static readonly Gen<string> HostileDType = Gen.OneOf("F16", "BF16", "F64", "F32", "I64", "I32", "I16", "I8", "U8", "BOOL",
        "F8_E4M3", "f32", "", "float32", "F32 ", "\u0000");

    /// <summary>Every structural edit of a safetensors file, each with its description.</summary>
    public static Gen<Mutation> Structure() => Gen.Frequency(
        (4, Gen.Select(Gen.Int[0, 999], HostileShape, (i, s) => OnTensor($"tensor #{i}: shape {s.Name}", i, (_, _, entry, _) => entry["shape"] = s.Make(Shape(entry))))),
        (4, Gen.Select(Gen.Int[0, 999], HostileOffsets, (i, o) => OnTensor($"tensor #{i}: data_offsets {o.Name}", i,
            (_, _, entry, n) => entry["data_offsets"] = o.Make(Offset(entry, 0), Offset(entry, 1), n)))),
        (3, Gen.Select(Gen.Int[0, 999], HostileDType, (i, d) => OnTensor($"tensor #{i}: dtype \"{d}\"", i, (_, _, entry, _) => entry["dtype"] = d))),
        (1, Gen.Select(Gen.Int[0, 999], Gen.OneOf("dtype", "shape", "data_offsets"), (i, field) =>
            OnTensor($"tensor #{i}: no {field}", i, (_, _, entry, _) => entry.Remove(field)))),
        (1, Gen.Select(Gen.Int[0, 999], Gen.OneOf("dtype", "shape", "data_offsets"), Mutations.HostileValue, (i, field, value) =>
            OnTensor($"tensor #{i}: {field} = {(value.Length > 30 ? value[..30] : value)}", i, (_, _, entry, _) => entry[field] = Mutations.ParseValue(value)))),
        (1, Gen.Select(Gen.Int[0, 999], Gen.OneOf("", "x", "../escape", "wte.weight ", "__metadata__", new string('n', 5000), LoneSurrogate, "a\u0000b"), (i, name) =>
            OnTensor($"tensor #{i}: renamed \"{(name.Length > 20 ? name[..20] + "…" : name)}\"", i, (header, key, entry, _) =>
            {
                header.Remove(key);
                header[name] = entry;
            }))),
        (1, Gen.Int[0, 999].Select(i => OnTensor($"tensor #{i}: removed", i, (header, key, _, _) => header.Remove(key)))),
        (1, Gen.Int[0, 999].Select(i => OnTensor($"tensor #{i}: copied under a new name", i, (header, key, entry, _) =>
            header[key + ".copy"] = entry.DeepClone()))),
        (1, Mutations.HostileValue.Select(v => new Mutation($"__metadata__ = {(v.Length > 30 ? v[..30] : v)}", file =>
        {
            if (Split(file) is not var (header, data)) return file;
            header["__metadata__"] = Mutations.ParseValue(v);
            return Join(header, data);
        }))),
        (2, Mutations.InterestingInteger.Select(v => new Mutation($"header length {(ulong)v}", file =>
        {
            var c = (byte[])file.Clone();
            if (c.Length >= 8) BinaryPrimitives.WriteUInt64LittleEndian(c, (ulong)v);
            return c;
        }))),
        (1, Gen.Int[-64, 64].Select(delta => new Mutation($"header length {delta:+#;-#;0}", file =>
        {
            var c = (byte[])file.Clone();
            if (c.Length >= 8) BinaryPrimitives.WriteUInt64LittleEndian(c, BinaryPrimitives.ReadUInt64LittleEndian(c) + (ulong)(long)delta);
            return c;
        }))));

    /// <summary>Byte edits confined to the data section (after the header): NaN and Inf weights, flipped bits.</summary>
    public static Gen<Mutation> Data() => Mutations.Bytes(0.5, 1.0);
}

using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;

namespace Interp.Tests.Reliability;

/// <summary>One edit of a file's bytes, with a description for the failure message.</summary>
internal sealed record Mutation(string Name, Func<byte[], byte[]> Apply)
{
    public override string ToString() => Name;
}

/// <summary>
/// CsCheck generators of hostile edits: byte-level ones that fit any format (truncation, flipped bytes, lying integers,
/// NaN and Inf floats, inserted, deleted and appended bytes) and JSON-aware ones (wrong types, huge and negative numbers,
/// missing and duplicated keys, deep nesting, enormous documents).
/// </summary>
internal static class Mutations
{
    /// <summary>A position as a fraction of the file's length, so that edits compose whatever the length.</summary>
    public static readonly Gen<double> Fraction = Gen.Double[0, 1];

    /// <summary>Integers that break parsers: signs, powers of two, type limits, and some random ones.</summary>
    public static readonly Gen<long> InterestingInteger = Gen.Frequency(
        (6, Gen.OneOf(0L, 1L, -1L, 2L, 3L, 7L, 8L, 9L, 16L, 17L, 255L, 256L, 1000L, 4096L, 65535L, 65536L, 1L << 20, 1L << 24, 1L << 30,
            int.MaxValue, int.MaxValue - 1L, 1L << 31, int.MinValue, -(1L << 20), 1L << 32, 1L << 40, 1L << 62, long.MaxValue, long.MinValue,
            100L << 20, (100L << 20) + 1)),
        (2, Gen.Long[-1000, 1000]),
        (1, Gen.Long));

    /// <summary>Floats that poison weights.</summary>
    public static readonly Gen<float> PoisonFloat = Gen.OneOf(float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue,
        -float.MaxValue, 1e30f, -0f, float.Epsilon);

    private static int At(double fraction, int length) => Math.Clamp((int)(fraction * length), 0, length);

    private static byte[] Splice(byte[] b, int at, int remove, ReadOnlySpan<byte> insert)
    {
        remove = Math.Min(remove, b.Length - at);
        var result = new byte[b.Length - remove + insert.Length];
        b.AsSpan(0, at).CopyTo(result);
        insert.CopyTo(result.AsSpan(at));
        b.AsSpan(at + remove).CopyTo(result.AsSpan(at + insert.Length));
        return result;
    }

    /// <summary>Byte-level edits anywhere in the file.</summary>
    public static Gen<Mutation> Bytes() => Bytes(0, 1);

    /// <summary>Byte-level edits between fractions <paramref name="from"/> and <paramref name="to"/> of the file.</summary>
    public static Gen<Mutation> Bytes(double from, double to)
    {
        Gen<double> where = Gen.Double[from, to];
        return Gen.Frequency(
            (3, where.Select(f => new Mutation($"truncate at {f:P2}", b => b[..At(f, b.Length)]))),
            (4, Gen.Select(where.Array[1, 8], Gen.Int[1, 255].Array[8], (fs, masks) => new Mutation($"flip {fs.Length} byte(s)", b =>
            {
                var c = (byte[])b.Clone();
                for (int i = 0; i < fs.Length && c.Length > 0; i++) c[Math.Min(c.Length - 1, At(fs[i], c.Length))] ^= (byte)masks[i];
                return c;
            }))),
            (3, Gen.Select(where, InterestingInteger, Gen.Bool, (f, v, aligned) => new Mutation($"int32 {(int)v} at {f:P2}", b =>
            {
                var c = (byte[])b.Clone();
                if (c.Length < 4) return c;
                int at = At(f, c.Length - 4);
                if (aligned) at &= ~3;
                BinaryPrimitives.WriteInt32LittleEndian(c.AsSpan(at), (int)v);
                return c;
            }))),
            (2, Gen.Select(where, InterestingInteger, (f, v) => new Mutation($"int64 {v} at {f:P2}", b =>
            {
                var c = (byte[])b.Clone();
                if (c.Length >= 8) BinaryPrimitives.WriteInt64LittleEndian(c.AsSpan(At(f, c.Length - 8)), v);
                return c;
            }))),
            (3, Gen.Select(where, PoisonFloat, Gen.Int[1, 16], (f, v, n) => new Mutation($"{n} × float {v} at {f:P2}", b =>
            {
                var c = (byte[])b.Clone();
                for (int i = 0, at = At(f, c.Length) & ~3; i < n && at + 4 <= c.Length; i++, at += 4)
                    BinaryPrimitives.WriteSingleLittleEndian(c.AsSpan(at), v);
                return c;
            }))),
            (2, Gen.Select(where, Gen.Byte.Array[1, 64], (f, bytes) => new Mutation($"insert {bytes.Length} byte(s) at {f:P2}", b => Splice(b, At(f, b.Length), 0, bytes)))),
            (2, Gen.Select(where, Gen.Int[1, 64], (f, n) => new Mutation($"delete {n} byte(s) at {f:P2}", b => Splice(b, At(f, b.Length), n, [])))),
            (1, Gen.Byte.Array[1, 256].Select(bytes => new Mutation($"append {bytes.Length} byte(s)", b => b.Concat(bytes).ToArray()))),
            (1, Gen.Select(where, Gen.Int[1, 128], (f, n) => new Mutation($"duplicate {n} byte(s) at {f:P2}", b =>
            {
                int at = At(f, b.Length);
                n = Math.Min(n, b.Length - at);
                return Splice(b, at + n, 0, b.AsSpan(at, n));
            }))),
            (1, Gen.Select(where, Gen.Int[1, 512], (f, n) => new Mutation($"zero {n} byte(s) at {f:P2}", b =>
            {
                var c = (byte[])b.Clone();
                int at = At(f, c.Length);
                c.AsSpan(at, Math.Min(n, c.Length - at)).Clear();
                return c;
            }))));
    }

    // ---- JSON ----

    /// <summary>Deeply nested arrays: [[[…]]] of the given depth around <paramref name="inner"/>.</summary>
    public static string Nest(int depth, string inner = "1") => new string('[', depth) + inner + new string(']', depth);

    /// <summary>JSON values that a reader of numbers, strings or objects should refuse (as text, parsed when applied).</summary>
    public static readonly Gen<string> HostileValue = Gen.Frequency(
        (6, InterestingInteger.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture))),
        (2, Gen.OneOf("0.5", "-1.5", "1e308", "-1e308", "1e-320", "3.0", "2.5e9", "-0.0", "0.0")),
        (2, Gen.OneOf("\"\"", "\"gpt2\"", "\"llama\"", "\"x\"", "\"NaN\"", "\"Infinity\"", "\"8\"", "\"silu\"", "\"gelu\"", "\"relu\"", "\"../../etc/passwd\"", "\"\\ud800\"", "\"a\\u0000b\"")),
        (1, Gen.OneOf("true", "false", "null")),
        (1, Gen.OneOf("[]", "[1, 2]", "{}", "{\"a\": 1}", "[[8]]", "{\"type\": \"linear\", \"factor\": 2.0}")),
        (1, Gen.Int[1, 200].Select(d => Nest(d))),
        (1, Gen.Int[1, 4000].Select(n => "\"" + new string('x', n * 250) + "\"")));

    /// <summary>
    /// An edit of a JSON object file: set a key (one of <paramref name="keys"/> or an existing one) to a hostile value,
    /// remove or duplicate a key, wrap the document in deep nesting, bloat it, or replace its root.
    /// </summary>
    public static Gen<Mutation> Json(string[] keys)
    {
        var anyKey = Gen.Frequency((3, Gen.OneOf(keys).Select(k => (string?)k)), (2, Gen.Const((string?)null)));
        return Gen.Frequency(
            (10, Gen.Select(anyKey, Gen.Int[0, 1000], HostileValue, (key, index, value) =>
                new Mutation($"set {KeyName(key, index)} = {Short(value)}", b => EditObject(b, o => o[key ?? Key(o, index)] = ParseValue(value))))),
            (3, Gen.Select(anyKey, Gen.Int[0, 1000], (key, index) =>
                new Mutation($"remove {KeyName(key, index)}", b => EditObject(b, o => o.Remove(key ?? Key(o, index)))))),
            (2, Gen.Select(Gen.OneOf(keys), HostileValue, (key, value) =>
                new Mutation($"duplicate \"{key}\" = {Short(value)}", b => InsertAfterBrace(b, $"\"{key}\": {value}, ")))),
            (1, Gen.Int[2, 20_000].Select(depth =>
                new Mutation($"nest {depth} deep", b => Encoding.UTF8.GetBytes(Nest(depth, Encoding.UTF8.GetString(b)))))),
            (1, Gen.Int[2, 20_000].Select(depth =>
                new Mutation($"value nested {depth} deep", b => InsertAfterBrace(b, $"\"deep\": {Nest(depth)}, ")))),
            (1, Gen.Int[1, 50_000].Select(n =>
                new Mutation($"{n} extra keys", b => InsertAfterBrace(b, string.Concat(Enumerable.Range(0, n).Select(i => $"\"k{i}\": {i}, ")))))),
            (1, Gen.OneOf("[]", "[1, 2, 3]", "42", "\"config\"", "null", "true", "", " ", "{", "{}", "{\"a\": }", "{\"a\": 1,}", "// comment\n{}", "{\"a\": NaN}").Select(root =>
                new Mutation($"root {Short(root)}", _ => Encoding.UTF8.GetBytes(root)))),
            (1, Gen.OneOf<byte[]>([0xEF, 0xBB, 0xBF], [0xFF, 0xFE], [0xC3], [0x80, 0x80]).Select(prefix =>
                new Mutation($"prefix {Convert.ToHexString(prefix)}", b => prefix.Concat(b).ToArray()))));
    }

    private static readonly JsonDocumentOptions Deep = new() { MaxDepth = 256, AllowDuplicateProperties = false };

    /// <summary>Parses a value of <see cref="HostileValue"/> (nested at most 200 deep).</summary>
    public static JsonNode? ParseValue(string value) => JsonNode.Parse(value, documentOptions: Deep);

    private static string KeyName(string? key, int index) => key is null ? $"key #{index}" : $"\"{key}\"";

    private static string Short(string value) => value.Length <= 40 ? value : value[..37] + "…";

    private static string Key(JsonObject o, int index) => o.Count == 0 ? "empty" : o.ElementAt(index % o.Count).Key;

    /// <summary>Parses the bytes as a JSON object (when they still are one), edits it and writes it back; otherwise leaves them.</summary>
    public static byte[] EditObject(byte[] bytes, Action<JsonObject> edit)
    {
        JsonObject? root;
        try
        {
            root = JsonNode.Parse(bytes, documentOptions: Deep) as JsonObject;
            _ = root?.Count; // builds the property dictionary now: duplicate or invalid names fail here
        }
        catch (JsonException) { return bytes; }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return bytes; } // invalid UTF-8 from an earlier edit
        if (root is null) return bytes;
        try
        {
            edit(root);
            return Encoding.UTF8.GetBytes(root.ToJsonString(new JsonSerializerOptions { MaxDepth = 256 }));
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException) { return bytes; } // strings that are not valid Unicode
    }

    private static byte[] InsertAfterBrace(byte[] bytes, string text)
    {
        int brace = Array.IndexOf(bytes, (byte)'{');
        return brace < 0 ? bytes : Splice(bytes, brace + 1, 0, Encoding.UTF8.GetBytes(text));
    }

    /// <summary>
    /// An edit anywhere in a JSON document's tree (not only its top-level keys): a node, picked by its position among
    /// all nodes, replaced by a hostile value, by a value of its own kind (a string by one of <paramref name="strings"/>
    /// or itself extended by one, a number by a small or huge one, a boolean flipped), by a copy of another node, or
    /// removed; or a node inserted into an array.
    /// </summary>
    public static Gen<Mutation> JsonTree(string[] strings)
    {
        var hostile = Gen.Frequency((3, HostileValue), (2, Gen.OneOf(strings).Select(s => JsonSerializer.Serialize(s))));
        return Gen.Frequency(
            (4, Gen.Select(Fraction, hostile, (f, v) => new Mutation($"node at {f:P1} = {Short(v)}",
                b => EditTree(b, f, (node, _) => Replace(node, ParseValue(v)))))),
            (4, Gen.Select(Fraction, Gen.OneOf(strings), InterestingInteger, Gen.Bool, (f, s, n, extend) => new Mutation($"node at {f:P1} changed within its kind ({Short(s)}, {n})",
                b => EditTree(b, f, (node, _) => Replace(node, node is JsonValue value ? value.GetValueKind() switch
                {
                    JsonValueKind.String => JsonValue.Create(extend ? value.GetValue<string>() + s : s),
                    JsonValueKind.Number => JsonValue.Create(n),
                    JsonValueKind.True => JsonValue.Create(false),
                    JsonValueKind.False => JsonValue.Create(true),
                    _ => node.DeepClone(),
                } : node.DeepClone()))))),
            (2, Fraction.Select(f => new Mutation($"remove node at {f:P1}", b => EditTree(b, f, (node, _) => Remove(node))))),
            (1, Gen.Select(Fraction, Fraction, (f, g) => new Mutation($"copy node at {g:P1} over node at {f:P1}",
                b => EditTree(b, f, (node, all) => Replace(node, all[Math.Min(all.Count - 1, (int)(g * all.Count))].DeepClone()))))),
            (1, Gen.Select(Fraction, hostile, (f, v) => new Mutation($"insert {Short(v)} before node at {f:P1}",
                b => EditTree(b, f, (node, _) =>
                {
                    if (node.Parent is JsonArray array) array.Insert(array.IndexOf(node), ParseValue(v));
                })))));
    }

    /// <summary>Parses the bytes (when they are still JSON), edits the node at <paramref name="fraction"/> of all non-root nodes, writes them back.</summary>
    private static byte[] EditTree(byte[] bytes, double fraction, Action<JsonNode, List<JsonNode>> edit)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(bytes, documentOptions: Deep); }
        catch (JsonException) { return bytes; }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return bytes; }
        var nodes = new List<JsonNode>();
        void Collect(JsonNode? n)
        {
            if (n is null) return;
            if (n.Parent is not null) nodes.Add(n);
            if (n is JsonObject o) foreach (var (_, v) in o) Collect(v);
            else if (n is JsonArray a) foreach (var v in a) Collect(v);
        }
        try
        {
            Collect(root);
            if (nodes.Count == 0) return bytes;
            edit(nodes[Math.Min(nodes.Count - 1, (int)(fraction * nodes.Count))], nodes);
            return Encoding.UTF8.GetBytes(root!.ToJsonString(new JsonSerializerOptions { MaxDepth = 256 }));
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException) { return bytes; }
    }

    private static void Replace(JsonNode node, JsonNode? value)
    {
        switch (node.Parent)
        {
            case JsonObject o: o[o.First(p => ReferenceEquals(p.Value, node)).Key] = value; break;
            case JsonArray a: a[a.IndexOf(node)] = value; break;
        }
    }

    private static void Remove(JsonNode node)
    {
        switch (node.Parent)
        {
            case JsonObject o: o.Remove(o.First(p => ReferenceEquals(p.Value, node)).Key); break;
            case JsonArray a: a.RemoveAt(a.IndexOf(node)); break;
        }
    }

    /// <summary>One to three mutations from <paramref name="gen"/>, applied in order.</summary>
    public static Gen<Mutation[]> Some(Gen<Mutation> gen) => gen.Array[1, 3];

    /// <summary>Applies <paramref name="mutations"/> to <paramref name="original"/>.</summary>
    public static byte[] Apply(byte[] original, IEnumerable<Mutation> mutations) =>
        mutations.Aggregate(original, (bytes, m) => m.Apply(bytes));

    /// <summary>A description of the mutations for a failure message.</summary>
    public static string Describe(IEnumerable<Mutation> mutations) => string.Join("; ", mutations.Select(m => m.Name));
}

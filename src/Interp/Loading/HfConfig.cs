using System.Text.Json;

namespace Interp.Loading;

/// <summary>A Hugging Face <c>config.json</c>, read defensively: every missing or mistyped key is a clear error.</summary>
public sealed class HfConfig
{
    private readonly JsonElement _root;

    private HfConfig(string path, JsonElement root, string keyPrefix = "")
    {
        Path = path;
        _root = root;
        _prefix = keyPrefix;
    }

    private readonly string _prefix;

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>
    /// The nested object at <paramref name="key"/> (e.g. <c>rope_scaling</c>) as a config of its own, whose errors name
    /// the key as <c>rope_scaling.factor</c>; null when absent or null.
    /// </summary>
    public HfConfig? Section(string key)
    {
        if (!Has(key)) return null;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.Object) throw new ModelFileException(Path, Key(key), $"must be an object, got {v.GetRawText()}");
        return new HfConfig(Path, v, Key(key) + ".");
    }

    /// <summary>An array of strings (e.g. <c>layer_types</c>), or null when absent.</summary>
    public string[]? Strings(string key)
    {
        if (!Has(key)) return null;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.Array || v.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            throw new ModelFileException(Path, Key(key), "must be an array of strings");
        return v.EnumerateArray().Select(e => e.GetString()!).ToArray();
    }

    /// <summary>The first entry of <c>architectures</c> (e.g. <c>BertForMaskedLM</c>), or null.</summary>
    public string? Architecture => Strings("architectures") is [var first, ..] ? first : null;

    /// <summary>A number that may be absent or null (e.g. a soft cap that is off): null then.</summary>
    public double? OptionalDouble(string key) => Has(key) ? Double(key, 0) : null;

    /// <summary>A positive integer that may be absent or null (e.g. <c>sliding_window</c>): null then.</summary>
    public int? OptionalInt(string key) => Has(key) ? Int(null, key) : null;

    private string Key(string key) => _prefix + key;

    /// <summary>An error about the value at <paramref name="key"/> of this file (nested keys spelled <c>rope_scaling.factor</c>).</summary>
    public ModelFileException Error(string key, string message, Exception? inner = null) => new(Path, Key(key), message, inner);

    /// <summary>Parses <paramref name="path"/> (size- and depth-limited).</summary>
    public static HfConfig Load(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new ModelFileException(path, null, "config.json not found");
        if (info.Length > 16 << 20) throw new ModelFileException(path, null, $"config.json is {info.Length} bytes; refusing anything over 16 MiB");
        using var doc = JsonChecks.ParseObject(path, File.ReadAllBytes(path), maxDepth: 32);
        return new HfConfig(path, doc.RootElement.Clone());
    }

    /// <summary>The <c>model_type</c>, or null.</summary>
    public string? ModelType => String("model_type");

    /// <summary>True when the key is present and not null.</summary>
    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    /// <summary>A string value, or null when absent.</summary>
    public string? String(string key) =>
        !Has(key) ? null
        : _root.GetProperty(key).ValueKind == JsonValueKind.String ? _root.GetProperty(key).GetString()
        : throw new ModelFileException(Path, Key(key), "must be a string");

    /// <summary>A positive integer: the first of <paramref name="keys"/> present, else <paramref name="fallback"/>.</summary>
    public int Int(int? fallback, params string[] keys)
    {
        foreach (var key in keys)
        {
            if (!Has(key)) continue;
            var v = _root.GetProperty(key);
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i <= 0)
                throw new ModelFileException(Path, Key(key), $"must be a positive 32-bit integer, got {v.GetRawText()}");
            return i;
        }
        return fallback ?? throw new ModelFileException(Path, Key(keys[0]), "missing from config.json");
    }

    /// <summary>A non-negative integer (e.g. <c>max_window_layers</c>, where 0 means every layer), or <paramref name="fallback"/> when absent.</summary>
    public int NonNegativeInt(string key, int fallback)
    {
        if (!Has(key)) return fallback;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i < 0)
            throw new ModelFileException(Path, Key(key), $"must be a non-negative 32-bit integer, got {v.GetRawText()}");
        return i;
    }

    /// <summary>A finite number, or <paramref name="fallback"/> when absent.</summary>
    public double Double(string key, double fallback)
    {
        if (!Has(key)) return fallback;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.Number || !double.IsFinite(v.GetDouble()))
            throw new ModelFileException(Path, Key(key), $"must be a finite number, got {v.GetRawText()}");
        return v.GetDouble();
    }

    /// <summary>A boolean, or <paramref name="fallback"/> when absent.</summary>
    public bool Bool(string key, bool fallback)
    {
        if (!Has(key)) return fallback;
        var v = _root.GetProperty(key);
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelFileException(Path, Key(key), $"must be true or false, got {v.GetRawText()}"),
        };
    }
}

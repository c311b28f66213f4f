using System.ComponentModel;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;

namespace Interp.Experiments;

/// <summary>One setting of an experiment: its command-line key, type, default and one-line description.</summary>
/// <param name="Key">The <c>--set</c> key: the property name in snake_case (<c>AblationsPerForward</c> → <c>ablations_per_forward</c>).</param>
/// <param name="Type">The value's type, as the help shows it (int, double, bool, string, duration, list of int, one of …).</param>
/// <param name="Default">The default, formatted as a value would be given.</param>
/// <param name="Description">The property's <see cref="DescriptionAttribute"/>.</param>
public sealed record SettingInfo(string Key, string Type, string Default, string Description);

/// <summary>
/// Binds <c>--set key=value</c> pairs to an experiment's settings record: every public init/set property is a setting,
/// keyed by its name in snake_case and described by its <see cref="DescriptionAttribute"/>. Values are parsed by the
/// property's type — int, long, double, float, bool (true/false/1/0/yes/no), string, enums (by snake_case name),
/// <see cref="TimeSpan"/> (<c>90s</c>, <c>5m</c>, <c>2h</c>, <c>1.5d</c> or <c>hh:mm:ss</c>), arrays of those
/// (comma-separated) and their nullable forms (<c>none</c> or an empty value gives null). An unknown key or a value that
/// does not parse is an <see cref="InterpException"/> naming the key and listing the valid ones with their defaults.
/// </summary>
public static class ExperimentSettings
{
    /// <summary>The settings of <typeparamref name="T"/>, in declaration order, with the defaults of <c>new T()</c>.</summary>
    public static IReadOnlyList<SettingInfo> Describe<T>() where T : new()
    {
        var defaults = new T();
        return Properties(typeof(T)).Select(p => new SettingInfo(Key(p), TypeName(p.PropertyType), Format(p.GetValue(defaults)),
            p.GetCustomAttribute<DescriptionAttribute>()?.Description ?? "")).ToArray();
    }

    /// <summary>A <typeparamref name="T"/> with <paramref name="values"/> (key → text) bound onto its defaults.</summary>
    /// <exception cref="InterpException">An unknown key or a value that does not parse.</exception>
    public static T Bind<T>(IReadOnlyDictionary<string, string> values, string experiment) where T : new()
    {
        var settings = new T();
        var properties = Properties(typeof(T)).ToDictionary(Key, StringComparer.Ordinal);
        foreach (var (key, text) in values)
        {
            if (!properties.TryGetValue(key, out var property))
                throw new InterpException($"{experiment}: unknown setting '{key}'{Suggest(key, properties.Keys)}. Valid settings (default):\n{List<T>()}");
            object? value;
            try { value = Parse(text.Trim(), property.PropertyType); }
            catch (FormatException ex)
            {
                throw new InterpException($"{experiment}: setting '{key}' = '{text}': {ex.Message} (expected {TypeName(property.PropertyType)}; default {Format(property.GetValue(new T()))})");
            }
            property.SetValue(settings, value);
        }
        return settings;
    }

    /// <summary>The bound values as JSON (numbers, booleans, strings, arrays; durations as their text) for the manifest.</summary>
    public static JsonObject ToJson<T>(T settings)
    {
        var json = new JsonObject();
        foreach (var p in Properties(typeof(T))) json[Key(p)] = ToJson(p.GetValue(settings));
        return json;
    }

    /// <summary>
    /// A <typeparamref name="T"/> bound from settings recorded by <see cref="ToJson{T}"/> (a shard's manifest, for its
    /// merge): each value is written back as the text <see cref="Bind{T}"/> reads, so the same checks apply.
    /// </summary>
    /// <exception cref="InterpException">An unknown key or a value that does not parse.</exception>
    public static T FromJson<T>(JsonObject json, string experiment) where T : new()
    {
        static string Text(JsonNode? node) => node switch
        {
            null => "none",
            JsonArray a => string.Join(",", a.Select(Text)),
            JsonValue v when v.TryGetValue(out string? text) => text,
            _ => node.ToJsonString(),
        };
        return Bind<T>(json.ToDictionary(kv => kv.Key, kv => Text(kv.Value)), experiment);
    }

    /// <summary>The settings as an aligned text table, for <c>--help</c> and error messages.</summary>
    public static string List<T>() where T : new()
    {
        var settings = Describe<T>();
        if (settings.Count == 0) return "  (this experiment has no settings)";
        int width = settings.Max(s => s.Key.Length + s.Default.Length + 3);
        var text = new StringBuilder();
        foreach (var s in settings)
            text.AppendLine(CultureInfo.InvariantCulture, $"  {(s.Key + " (" + s.Default + ")").PadRight(width)}  {s.Type}. {s.Description}");
        return text.ToString().TrimEnd();
    }

    /// <summary>PascalCase → snake_case (the rule of every column and setting name).</summary>
    public static string SnakeCase(string name) => Interp.Results.ParquetRecords.SnakeCase(name);

    // Declaration order, a base record's settings first (metadata tokens order the members of one type only).
    private static IEnumerable<PropertyInfo> Properties(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && p.SetMethod!.IsPublic && p.Name != "EqualityContract")
            .OrderBy(p => Depth(p.DeclaringType!)).ThenBy(p => p.MetadataToken);

    private static int Depth(Type type) => type.BaseType is null ? 0 : 1 + Depth(type.BaseType);

    private static string Key(PropertyInfo p) => SnakeCase(p.Name);

    // Near misses only (a typo, not any key): edit distance at most a third of the key's length, and at least 2.
    private static string Suggest(string key, IEnumerable<string> keys)
    {
        var close = keys.Select(k => (Key: k, Distance: Distance(key, k))).Where(k => k.Distance <= Math.Max(2, key.Length / 3))
            .OrderBy(k => k.Distance).ThenBy(k => k.Key, StringComparer.Ordinal).Take(3).Select(k => k.Key).ToArray();
        return close.Length > 0 ? $" (did you mean {string.Join(", ", close)}?)" : "";
    }

    private static int Distance(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    private static object? Parse(string text, Type type)
    {
        var inner = Nullable.GetUnderlyingType(type);
        bool nullable = inner is not null || !type.IsValueType;
        if (nullable && (text.Length == 0 || text == "none" || text == "null")) return type == typeof(string) && text.Length == 0 ? "" : null;
        type = inner ?? type;
        if (type.IsArray)
        {
            var element = type.GetElementType()!;
            var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            var array = Array.CreateInstance(element, parts.Length);
            for (int i = 0; i < parts.Length; i++) array.SetValue(Parse(parts[i], element), i);
            return array;
        }
        if (type == typeof(string)) return text;
        if (type == typeof(int)) return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : throw new FormatException($"'{text}' is not an integer");
        if (type == typeof(long)) return long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) ? l : throw new FormatException($"'{text}' is not an integer");
        if (type == typeof(double)) return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d) ? d : throw new FormatException($"'{text}' is not a finite number");
        if (type == typeof(float)) return float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float f) && float.IsFinite(f) ? f : throw new FormatException($"'{text}' is not a finite number");
        if (type == typeof(bool))
            return text.ToLowerInvariant() switch
            {
                "true" or "1" or "yes" or "on" => true,
                "false" or "0" or "no" or "off" => false,
                _ => throw new FormatException($"'{text}' is not a boolean (true/false)"),
            };
        if (type == typeof(TimeSpan)) return ParseDuration(text);
        if (type.IsEnum)
        {
            foreach (var name in Enum.GetNames(type))
                if (SnakeCase(name) == text || name == text) return Enum.Parse(type, name);
            throw new FormatException($"'{text}' is not one of {string.Join(", ", Enum.GetNames(type).Select(SnakeCase))}");
        }
        throw new InvalidOperationException($"settings of type {type} are not supported");
    }

    private static TimeSpan ParseDuration(string text)
    {
        if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var span) && text.Contains(':')) return span;
        var units = new (string Suffix, double Seconds)[] { ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400) };
        foreach (var (suffix, seconds) in units)
            if (text.EndsWith(suffix, StringComparison.Ordinal) && double.TryParse(text[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out double n) && n >= 0 && double.IsFinite(n))
                return TimeSpan.FromSeconds(n * seconds);
        throw new FormatException($"'{text}' is not a duration (e.g. 90s, 5m, 2h, 1.5d or 00:05:00)");
    }

    private static string TypeName(Type type)
    {
        var inner = Nullable.GetUnderlyingType(type);
        if (inner is not null) return TypeName(inner) + " or none";
        if (type.IsArray) return "comma list of " + TypeName(type.GetElementType()!);
        if (type.IsEnum) return "one of " + string.Join(", ", Enum.GetNames(type).Select(SnakeCase));
        return type == typeof(int) || type == typeof(long) ? "integer"
            : type == typeof(double) || type == typeof(float) ? "number"
            : type == typeof(bool) ? "boolean"
            : type == typeof(TimeSpan) ? "duration"
            : "text";
    }

    private static string Format(object? value) => value switch
    {
        null => "none",
        bool b => b ? "true" : "false",
        Enum e => SnakeCase(e.ToString()),
        TimeSpan t => t.ToString("c", CultureInfo.InvariantCulture),
        Array a => string.Join(",", a.Cast<object?>().Select(Format)),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    private static JsonNode? ToJson(object? value) => value switch
    {
        null => null,
        bool b => JsonValue.Create(b),
        int i => JsonValue.Create(i),
        long l => JsonValue.Create(l),
        double d => JsonValue.Create(d),
        float f => JsonValue.Create(f),
        Array a => new JsonArray(a.Cast<object?>().Select(ToJson).ToArray()),
        _ => JsonValue.Create(Format(value)),
    };
}

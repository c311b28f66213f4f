using System.Text.Json;

namespace Interp.Loading;

/// <summary>Checks of JSON documents read from model files, done once right after parsing.</summary>
internal static class JsonChecks
{
    /// <summary>
    /// Throws a <see cref="ModelFileException"/> when a property name or string value of <paramref name="element"/> does
    /// not decode to valid Unicode (an escaped lone surrogate such as <c>"\ud800"</c> passes the parser but fails every
    /// later read), so that no later access can fail with an untyped error. Depth is bounded by the parser's MaxDepth.
    /// </summary>
    public static void EnsureValidStrings(JsonElement element, string path)
    {
        try { Walk(element); }
        catch (InvalidOperationException ex)
        {
            throw new ModelFileException(path, null, $"holds a JSON string that is not valid Unicode (e.g. an escaped lone surrogate): {ex.Message}", ex);
        }

        static void Walk(JsonElement e)
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.Object:
                    foreach (var property in e.EnumerateObject())
                    {
                        _ = property.Name;
                        Walk(property.Value);
                    }
                    break;
                case JsonValueKind.Array:
                    foreach (var item in e.EnumerateArray()) Walk(item);
                    break;
                case JsonValueKind.String:
                    _ = e.GetString();
                    break;
            }
        }
    }
}

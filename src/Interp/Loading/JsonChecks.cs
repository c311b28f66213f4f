using System.Text.Json;

namespace Interp.Loading;

/// <summary>Checks of JSON documents read from model files, done once right after parsing.</summary>
internal static class JsonChecks
{
    /// <summary>
    /// Parses the bytes of <paramref name="path"/> into a document whose root is an object: at most
    /// <paramref name="maxDepth"/> deep, no duplicate keys, every string valid Unicode; anything else is a
    /// <see cref="ModelFileException"/> naming the file.
    /// </summary>
    public static JsonDocument ParseObject(string path, byte[] bytes, int maxDepth)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = maxDepth, AllowDuplicateProperties = false }); }
        catch (JsonException ex) { throw new ModelFileException(path, null, $"is not valid JSON (nested at most {maxDepth} deep, no duplicate keys): {ex.Message}", ex); }
        catch (ArgumentException ex) { throw new ModelFileException(path, null, $"is not valid JSON: {ex.Message}", ex); }
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFileException(path, null, $"is not a JSON object (its root is {doc.RootElement.ValueKind})");
            EnsureValidStrings(doc.RootElement, path);
            return doc;
        }
        catch
        {
            doc.Dispose();
            throw;
        }
    }

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

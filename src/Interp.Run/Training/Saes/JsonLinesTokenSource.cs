using System.Text;
using System.Text.Json;
using Interp.Tokenizers;

namespace Interp.Training.Saes;

/// <summary>
/// A JSON Lines file as a corpus: one JSON object per line whose <see cref="Key"/> (by default <c>"text"</c>) is a
/// string, one document per line (blank lines are skipped, other keys ignored). A malformed line is an error that names
/// the file, the 1-based line number and the key. Read line by line.
/// </summary>
public sealed class JsonLinesTokenSource : ISaeTokenSource
{
    private readonly string _path;
    private readonly ITokenizer _tokenizer;

    /// <summary>The corpus in <paramref name="path"/>, the text under <paramref name="key"/> of every line tokenised with <paramref name="tokenizer"/>.</summary>
    /// <exception cref="InterpException">The file does not exist.</exception>
    public JsonLinesTokenSource(string path, ITokenizer tokenizer, string key = "text")
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (!File.Exists(path)) throw new InterpException($"corpus {path}: no such file");
        (_path, _tokenizer, Key) = (path, tokenizer, key);
    }

    /// <summary>The key whose string value is each line's text.</summary>
    public string Key { get; }

    /// <inheritdoc />
    public string Description => _path;

    /// <inheritdoc />
    public IEnumerable<int[]> Documents(CancellationToken cancellationToken = default)
    {
        int number = 0;
        foreach (var line in File.ReadLines(_path, Encoding.UTF8))
        {
            number++;
            cancellationToken.ThrowIfCancellationRequested();
            if (line.Trim().Length == 0) continue;
            string text = TextOf(line, number);
            if (text.Length == 0) continue;
            var ids = _tokenizer.Encode(text, prependBos: false);
            if (ids.Length > 0) yield return ids;
        }
    }

    private string TextOf(string line, int number)
    {
        string where = $"corpus {_path}, line {number}";
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new InterpException($"{where}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InterpException($"{where}: must be a JSON object with a \"{Key}\" string, not {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}");
            if (!doc.RootElement.TryGetProperty(Key, out var value))
                throw new InterpException($"{where}: key \"{Key}\" is missing");
            if (value.ValueKind != JsonValueKind.String)
                throw new InterpException($"{where}: key \"{Key}\" must be a string, not {value.ValueKind.ToString().ToLowerInvariant()}");
            return value.GetString()!;
        }
    }
}

using System.Text.Json;
using Interp.Tokenizers;

namespace Interp.Prompts;

/// <summary>
/// Sequences of token ids for a model without a tokenizer (the built-in model and the LSTM trained on its recipe), read
/// from JSON Lines, one object per line: <c>{"tokens": [0, 17, 5, 42]}</c> (blank lines are skipped). They are
/// right-padded into one batch with its attention mask; the ids are used as given (put the BOS token first yourself).
/// </summary>
public static class TokenSequences
{
    /// <summary>Most lines a file may hold.</summary>
    public const int MaxSequences = 100_000;

    /// <summary>
    /// Reads <paramref name="path"/>; every id must lie in [0, <paramref name="vocabSize"/>) and every sequence hold
    /// 1 to <paramref name="maxLength"/> ids. A bad line fails with its number, key and value.
    /// </summary>
    /// <exception cref="PromptFileException">The file is missing, or a line is not such an object.</exception>
    public static PaddedTokens Load(string path, int vocabSize, int maxLength = int.MaxValue)
    {
        if (!File.Exists(path)) throw new PromptFileException(path, null, null, "not found");
        var sequences = new List<IReadOnlyList<int>>();
        int number = 0;
        foreach (var text in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            if (sequences.Count == MaxSequences) throw new PromptFileException(path, number, null, $"more than {MaxSequences} sequences");
            sequences.Add(Parse(path, number, text, vocabSize, maxLength));
        }
        if (sequences.Count == 0) throw new PromptFileException(path, null, null, "holds no sequence (one JSON object {\"tokens\": [ids]} per line)");
        return PaddedTokens.FromIds(sequences, padId: 0);
    }

    private static int[] Parse(string path, int number, string text, int vocabSize, int maxLength)
    {
        JsonDocument json;
        try { json = JsonDocument.Parse(text); }
        catch (JsonException e) { throw new PromptFileException(path, number, null, $"not valid JSON: {e.Message}", e); }
        using (json)
        {
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new PromptFileException(path, number, null, $"expected a JSON object {{\"tokens\": [ids]}}, got {root.ValueKind}");
            int[]? ids = null;
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name != "tokens") throw new PromptFileException(path, number, property.Name, "unknown key (expected: tokens)");
                if (ids is not null) throw new PromptFileException(path, number, "tokens", "appears twice");
                if (property.Value.ValueKind != JsonValueKind.Array)
                    throw new PromptFileException(path, number, "tokens", $"must be an array of token ids, got {property.Value.ValueKind}");
                var list = new List<int>();
                foreach (var item in property.Value.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id))
                        throw new PromptFileException(path, number, "tokens", $"item {list.Count} is {item.GetRawText()}, not an integer token id");
                    if (id < 0 || id >= vocabSize)
                        throw new PromptFileException(path, number, "tokens", $"item {list.Count} is {id}, outside the vocabulary [0, {vocabSize})");
                    list.Add(id);
                }
                if (list.Count == 0 || list.Count > maxLength)
                    throw new PromptFileException(path, number, "tokens", $"holds {list.Count} ids; a sequence needs 1 to {maxLength}");
                ids = list.ToArray();
            }
            return ids ?? throw new PromptFileException(path, number, "tokens", "missing");
        }
    }
}

using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Interp.Analysis;
using Interp.Loading;
using Interp.Models;
using Interp.Tokenizers;

namespace Interp.Prompts;

/// <summary>
/// A set of prompts with an answer and a wrong token each, tokenised into one right-padded batch (and, when the file
/// gives them, a corrupted batch of the same shape): the input of logit-difference ablations, activation patching and
/// direct logit attribution on a task such as indirect-object identification. Read from JSON Lines, one object per line:
/// <code>{"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrong": " John", "corrupted": "When Mary and John went to the store, Anne gave a drink to"}</code>
/// <c>corrupted</c> is optional (all lines or none); blank lines are skipped. Prompts are tokenised as
/// <c>interp logits --text</c> tokenises text, with BOS first when the tokenizer has one; <c>answer</c> and
/// <c>wrong</c> must each be one continuation token (<see cref="ITokenizer.EncodeContinuation"/>). The set owns its
/// tensors: dispose it to free them.
/// </summary>
public sealed class PromptSet : IDisposable
{
    private static readonly string[] Keys = ["prompt", "answer", "wrong", "corrupted"];

    private PromptSet(string source, IReadOnlyList<PromptLine> lines, int[] answers, int[] wrongs, PaddedTokens clean, PaddedTokens? corrupted)
    {
        Source = source;
        Lines = lines;
        AnswerIds = answers;
        WrongIds = wrongs;
        Clean = clean;
        Corrupted = corrupted;
    }

    /// <summary>The file the set was read from (or the name given to <see cref="From"/>).</summary>
    public string Source { get; }
    /// <summary>The lines, in file order.</summary>
    public IReadOnlyList<PromptLine> Lines { get; }
    /// <summary>The prompts, in file order.</summary>
    public IReadOnlyList<string> Prompts => Lines.Select(l => l.Prompt).ToArray();
    /// <summary>Each prompt's answer token id.</summary>
    public int[] AnswerIds { get; }
    /// <summary>Each prompt's wrong token id.</summary>
    public int[] WrongIds { get; }
    /// <summary>The prompts as one right-padded batch with its attention mask.</summary>
    public PaddedTokens Clean { get; }
    /// <summary>The corrupted prompts, padded like <see cref="Clean"/> (each has its clean prompt's length), or null when the file gives none.</summary>
    public PaddedTokens? Corrupted { get; }
    /// <summary>Each prompt's last real position, where its answer is predicted.</summary>
    public int[] LastPositions => Clean.LastPositions;
    /// <summary>The number of prompts.</summary>
    public int Count => Lines.Count;

    /// <summary>logit(answer) − logit(wrong) at each prompt's last real token (<see cref="Metrics.LogitDiff(IReadOnlyList{int}, IReadOnlyList{int}, IReadOnlyList{int})"/>).</summary>
    public Metric LogitDiff() => Metrics.LogitDiff(AnswerIds, WrongIds, LastPositions);

    /// <summary>
    /// The inputs of a patching pass (activation, attribution or edge attribution patching) from the set: clean and
    /// corrupted tokens [prompts, pos], right-padded alike, and the attention mask; <see cref="LogitDiff"/> is its metric.
    /// </summary>
    /// <param name="purpose">What needs them, for the error ("attribution patching").</param>
    /// <exception cref="InterpException">The file gives no corrupted prompts.</exception>
    public (TorchSharp.torch.Tensor Clean, TorchSharp.torch.Tensor Corrupted, TorchSharp.torch.Tensor AttentionMask) PatchingInputs(string purpose) => Corrupted is null
        ? throw new InterpException($"{Source}: {purpose} needs a corrupted prompt on every line (\"corrupted\": the prompt with the information the answer needs changed, tokenising to as many tokens)")
        : (Clean.Tokens, Corrupted.Tokens, Clean.AttentionMask);

    /// <summary>A sentence for a report saying what <see cref="PatchingInputs"/> and <see cref="LogitDiff"/> are.</summary>
    public string PatchingDescription =>
        $"{Count} prompts of {Path.GetFileName(Source)} and their corrupted twins, right-padded; metric logit(answer) − logit(wrong) at each prompt's last token";

    /// <summary>Reads the prompt set at <paramref name="path"/> and tokenises it with <paramref name="model"/>'s tokenizer.</summary>
    /// <exception cref="InterpException">The model has no tokenizer.</exception>
    /// <exception cref="PromptFileException">The file is missing, empty or malformed, or a line does not tokenise as required.</exception>
    public static PromptSet Load(string path, HookedTransformer model) => Load(path, model.RequireTokenizer());

    /// <summary>Reads the prompt set at <paramref name="path"/> and tokenises it with <paramref name="tokenizer"/>.</summary>
    /// <exception cref="PromptFileException">The file is missing, empty or malformed, or a line does not tokenise as required.</exception>
    public static PromptSet Load(string path, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tokenizer);
        string[] text;
        try { text = File.ReadAllLines(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new PromptFileException(path, null, null, $"cannot read the prompt file: {e.Message}", e);
        }
        var lines = new List<(int Number, PromptLine Line)>();
        for (int i = 0; i < text.Length; i++)
            if (!string.IsNullOrWhiteSpace(text[i])) lines.Add((i + 1, Parse(path, i + 1, text[i])));
        if (lines.Count == 0) throw new PromptFileException(path, null, null, "the file holds no prompts (one JSON object per line is expected)");
        return Build(path, lines, tokenizer);
    }

    /// <summary>A prompt set from lines in memory (e.g. a generator's), checked and tokenised as a file's would be; <paramref name="source"/> names it in errors.</summary>
    /// <exception cref="PromptFileException">There are no lines, or a line does not tokenise as required.</exception>
    public static PromptSet From(IReadOnlyList<PromptLine> lines, ITokenizer tokenizer, string source = "(prompts in memory)")
    {
        ArgumentNullException.ThrowIfNull(lines);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (lines.Count == 0) throw new PromptFileException(source, null, null, "no prompts");
        return Build(source, lines.Select((l, i) => (i + 1, l)).ToList(), tokenizer);
    }

    /// <summary>Writes <paramref name="lines"/> as a prompt-set file (JSON Lines, keys in the order prompt, answer, wrong, corrupted), atomically.</summary>
    public static void Write(string path, IEnumerable<PromptLine> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        var text = new StringBuilder();
        foreach (var line in lines)
        {
            using var buffer = new MemoryStream();
            using (var writer = new Utf8JsonWriter(buffer, options))
            {
                writer.WriteStartObject();
                writer.WriteString("prompt", line.Prompt);
                writer.WriteString("answer", line.Answer);
                writer.WriteString("wrong", line.Wrong);
                if (line.Corrupted is not null) writer.WriteString("corrupted", line.Corrupted);
                writer.WriteEndObject();
            }
            text.Append(Encoding.UTF8.GetString(buffer.ToArray())).Append('\n');
        }
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(path, text.ToString());
    }

    private static PromptLine Parse(string path, int number, string text)
    {
        JsonDocument json;
        try { json = JsonDocument.Parse(text); }
        catch (JsonException e)
        {
            throw new PromptFileException(path, number, null, $"not valid JSON: {e.Message}", e);
        }
        using (json)
        {
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new PromptFileException(path, number, null, $"expected a JSON object {{\"prompt\": …, \"answer\": …, \"wrong\": …}}, got {root.ValueKind}");
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                if (!Keys.Contains(property.Name))
                    throw new PromptFileException(path, number, property.Name, $"unknown key (expected: {string.Join(", ", Keys)}; corrupted is optional)");
                if (property.Value.ValueKind != JsonValueKind.String)
                    throw new PromptFileException(path, number, property.Name, $"must be a string, got {property.Value.ValueKind} {property.Value.GetRawText()}");
                if (!values.TryAdd(property.Name, property.Value.GetString()!))
                    throw new PromptFileException(path, number, property.Name, "appears twice");
            }
            foreach (var key in Keys.Take(3))
                if (!values.ContainsKey(key)) throw new PromptFileException(path, number, key, "missing");
            return new PromptLine(values["prompt"], values["answer"], values["wrong"], values.GetValueOrDefault("corrupted"));
        }
    }

    private static PromptSet Build(string source, List<(int Number, PromptLine Line)> lines, ITokenizer tokenizer)
    {
        bool bos = tokenizer.BosId is not null;
        var clean = new int[lines.Count][];
        var corrupted = new int[lines.Count][];
        var answers = new int[lines.Count];
        var wrongs = new int[lines.Count];
        int withCorrupted = lines.Count(l => l.Line.Corrupted is not null);
        for (int i = 0; i < lines.Count; i++)
        {
            var (number, line) = lines[i];
            if (line.Prompt.Length == 0) throw new PromptFileException(source, number, "prompt", "is empty");
            clean[i] = tokenizer.Encode(line.Prompt, bos);
            if (clean[i].Length == 0) throw new PromptFileException(source, number, "prompt", "encodes to no tokens");
            answers[i] = Single(source, number, "answer", line.Answer, tokenizer);
            wrongs[i] = Single(source, number, "wrong", line.Wrong, tokenizer);
            if (withCorrupted > 0 && line.Corrupted is null)
                throw new PromptFileException(source, number, "corrupted", $"missing, but {withCorrupted} of the {lines.Count} lines have one: give a corrupted prompt on every line or on none");
            if (line.Corrupted is { } c)
            {
                corrupted[i] = tokenizer.Encode(c, bos);
                if (corrupted[i].Length != clean[i].Length)
                    throw new PromptFileException(source, number, "corrupted",
                        $"tokenises to {corrupted[i].Length} tokens but the prompt to {clean[i].Length}: activation patching needs the same length ({Split(tokenizer, corrupted[i])} vs {Split(tokenizer, clean[i])})");
            }
        }
        int pad = PaddedTokens.PadIdOf(tokenizer);
        var cleanBatch = PaddedTokens.FromIds(clean, pad);
        try
        {
            var corruptedBatch = withCorrupted > 0 ? PaddedTokens.FromIds(corrupted, pad) : null;
            return new PromptSet(source, lines.Select(l => l.Line).ToArray(), answers, wrongs, cleanBatch, corruptedBatch);
        }
        catch
        {
            cleanBatch.Dispose();
            throw;
        }
    }

    private static int Single(string source, int number, string key, string text, ITokenizer tokenizer)
    {
        var ids = tokenizer.EncodeContinuation(text);
        if (ids.Length != 1)
            throw new PromptFileException(source, number, key, $"must be one token (as a continuation): {SingleTokens.DescribeSplit(tokenizer, text, ids)}");
        return ids[0];
    }

    private static string Split(ITokenizer tokenizer, int[] ids) => string.Join("|", tokenizer.ToStrTokens(ids));

    /// <summary>Frees the token tensors.</summary>
    public void Dispose()
    {
        Clean.Dispose();
        Corrupted?.Dispose();
    }
}

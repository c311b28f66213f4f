namespace Interp.Prompts;

/// <summary>
/// One line of a prompt set: a prompt, the token the model should continue it with (<paramref name="Answer"/>), the
/// alternative it should prefer less (<paramref name="Wrong"/>), and optionally a corrupted prompt of the same token
/// length for activation patching. Answer and wrong are continuation tokens, e.g. <c>" Mary"</c> with its space.
/// </summary>
/// <param name="Prompt">The text the model reads.</param>
/// <param name="Answer">The expected next token, as text (one continuation token).</param>
/// <param name="Wrong">The competing next token, as text (one continuation token).</param>
/// <param name="Corrupted">A prompt of the same token length that removes the information the answer needs, or null.</param>
public sealed record PromptLine(string Prompt, string Answer, string Wrong, string? Corrupted = null);

/// <summary>A prompt-set file is malformed: the message names the file, the line (1-based) and the key at fault.</summary>
public sealed class PromptFileException : InterpException
{
    /// <summary>Creates the exception; the message reads "<c>file</c>:<c>line</c>: key '<c>key</c>': problem".</summary>
    public PromptFileException(string filePath, int? line, string? key, string problem, Exception? inner = null)
        : base(Format(filePath, line, key, problem), inner)
    {
        FilePath = filePath;
        Line = line;
        Key = key;
    }

    /// <summary>The file at fault.</summary>
    public string FilePath { get; }
    /// <summary>The line at fault (1-based), when there is one.</summary>
    public int? Line { get; }
    /// <summary>The key at fault, when there is one.</summary>
    public string? Key { get; }

    private static string Format(string file, int? line, string? key, string problem) =>
        $"{file}{(line is null ? "" : $":{line}")}: {(key is null ? "" : $"key '{key}': ")}{problem}";
}

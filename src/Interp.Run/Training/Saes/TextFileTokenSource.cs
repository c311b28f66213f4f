using System.Text;
using Interp.Tokenizers;

namespace Interp.Training.Saes;

/// <summary>
/// A plain UTF-8 text file as a corpus: documents are separated by blank lines (a paragraph, or a story, per
/// document); the lines of one document are joined with a newline; leading and trailing white space is trimmed.
/// A file without blank lines is one document per line only if every line is a document, so pass one story per
/// paragraph. Read line by line: memory stays bounded for any file size.
/// </summary>
public sealed class TextFileTokenSource : ISaeTokenSource
{
    private readonly string _path;
    private readonly ITokenizer _tokenizer;

    /// <summary>The corpus in <paramref name="path"/>, tokenised with <paramref name="tokenizer"/>.</summary>
    /// <exception cref="InterpException">The file does not exist.</exception>
    public TextFileTokenSource(string path, ITokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (!File.Exists(path)) throw new InterpException($"corpus {path}: no such file");
        (_path, _tokenizer) = (path, tokenizer);
    }

    /// <inheritdoc />
    public string Description => _path;

    /// <inheritdoc />
    public IEnumerable<int[]> Documents(CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        foreach (var line in File.ReadLines(_path, Encoding.UTF8))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (line.Trim().Length == 0)
            {
                if (Flush(text) is { } doc) yield return doc;
                continue;
            }
            if (text.Length > 0) text.Append('\n');
            text.Append(line);
        }
        if (Flush(text) is { } last) yield return last;
    }

    private int[]? Flush(StringBuilder text)
    {
        string s = text.ToString().Trim();
        text.Clear();
        if (s.Length == 0) return null;
        var ids = _tokenizer.Encode(s, prependBos: false);
        return ids.Length == 0 ? null : ids;
    }
}

namespace Interp.Tokenizers;

/// <summary>
/// Opens a tokenizer by what its file holds: a Hugging Face tokenizer.json (a JSON object with a "model" key) as a
/// <see cref="HuggingFaceTokenizer"/>, a llama2.c tokenizer (binary) as a <see cref="Llama2CTokenizer"/>.
/// </summary>
public static class TokenizerLoader
{
    /// <summary>
    /// Loads the tokenizer at <paramref name="path"/>: a tokenizer.json or llama2.c tokenizer file (recognised by its
    /// content, whatever its name), or a folder holding tokenizer.json, else tokenizer.bin, else its only tok*.bin.
    /// With <paramref name="modelVocabSize"/>, a tokenizer with ids the model does not have is refused (a llama2.c
    /// tokenizer must then hold exactly that many tokens, as its file does not record its size).
    /// </summary>
    /// <exception cref="ModelFileException">
    /// No tokenizer there, the file is malformed, or its ids do not fit the model's vocabulary; the message names the file.
    /// </exception>
    public static ITokenizer Load(string path, int? modelVocabSize = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (modelVocabSize is <= 0) throw new ArgumentOutOfRangeException(nameof(modelVocabSize), modelVocabSize, "must be positive");
        string file = Directory.Exists(path) ? InFolder(path, out string reason) ?? throw new ModelFileException(path, null, $"no tokenizer in this folder: {reason}") : path;
        if (!File.Exists(file)) throw new ModelFileException(file, null, "tokenizer file not found");
        if (!IsJsonObject(file)) return Llama2CTokenizer.Load(file, modelVocabSize);
        var tokenizer = HuggingFaceTokenizer.Load(file);
        if (modelVocabSize is int size && tokenizer.VocabSize > size)
        {
            tokenizer.Dispose();
            throw new ModelFileException(file, null,
                $"the tokenizer has ids up to {tokenizer.VocabSize - 1} (vocabulary of {tokenizer.VocabSize}), but the model's vocabulary has only {size} entries; it belongs to another model");
        }
        return tokenizer;
    }

    /// <summary>
    /// The tokenizer that goes with the model at <paramref name="modelFolderOrFile"/>, or null with the reason in
    /// <paramref name="reason"/>. A model folder: its tokenizer.json, else tokenizer.bin, else its only tok*.bin. A model
    /// file (a llama2.c checkpoint): tokenizer.bin beside it, else the only tok*.bin there, else tokenizer.json there.
    /// </summary>
    public static string? FindBeside(string modelFolderOrFile, out string reason)
    {
        ArgumentNullException.ThrowIfNull(modelFolderOrFile);
        if (Directory.Exists(modelFolderOrFile)) return InFolder(modelFolderOrFile, out reason);
        string full = Path.GetFullPath(modelFolderOrFile);
        string dir = Path.GetDirectoryName(full)!;
        reason = "";
        string standard = Path.Combine(dir, "tokenizer.bin");
        if (File.Exists(standard)) return standard;
        var candidates = Directory.Exists(dir)
            ? Directory.GetFiles(dir, "tok*.bin").Where(f => !string.Equals(Path.GetFullPath(f), full, StringComparison.Ordinal)).ToArray()
            : [];
        if (candidates.Length == 1) return candidates[0];
        string json = Path.Combine(dir, HuggingFaceTokenizer.FileName);
        if (candidates.Length == 0 && File.Exists(json)) return json;
        reason = candidates.Length == 0
            ? $"no tokenizer.bin, tok*.bin or {HuggingFaceTokenizer.FileName} beside it in {dir}"
            : $"several tok*.bin files beside it ({string.Join(", ", candidates.Select(Path.GetFileName))})";
        return null;
    }

    private static string? InFolder(string dir, out string reason)
    {
        reason = "";
        foreach (string name in new[] { HuggingFaceTokenizer.FileName, "tokenizer.bin" })
        {
            string file = Path.Combine(dir, name);
            if (File.Exists(file)) return file;
        }
        var candidates = Directory.GetFiles(dir, "tok*.bin");
        if (candidates.Length == 1) return candidates[0];
        reason = candidates.Length == 0
            ? $"no {HuggingFaceTokenizer.FileName}, tokenizer.bin or tok*.bin in {Path.GetFullPath(dir)}"
            : $"no {HuggingFaceTokenizer.FileName} or tokenizer.bin, and several tok*.bin files ({string.Join(", ", candidates.Select(Path.GetFileName))})";
        return null;
    }

    /// <summary>
    /// True when the file starts like a JSON object: an optional UTF-8 byte-order mark and whitespace, "{", whitespace,
    /// then '"' or '}'. A llama2.c tokenizer starts with its int32 max_token_length, whose bytes never read that way
    /// (a length of 123 is "{" followed by zero bytes).
    /// </summary>
    private static bool IsJsonObject(string file)
    {
        Span<byte> head = stackalloc byte[256];
        int n;
        try
        {
            using var stream = File.OpenRead(file);
            n = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFileException(file, null, $"cannot read the tokenizer file: {e.Message}", e);
        }
        var bytes = head[..n];
        if (bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) bytes = bytes[3..];
        int i = Skip(bytes, 0);
        if (i >= bytes.Length || bytes[i] != '{') return false;
        i = Skip(bytes, i + 1);
        return i < bytes.Length && bytes[i] is (byte)'"' or (byte)'}';

        static int Skip(ReadOnlySpan<byte> b, int i)
        {
            while (i < b.Length && b[i] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n') i++;
            return i;
        }
    }
}

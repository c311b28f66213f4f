using System.Buffers.Binary;
using System.Text;

namespace Interp.Tokenizers;

public sealed partial class Llama2CTokenizer
{
    // <unk>, <s>, </s> and the 256 byte tokens that Encode's byte fallback emits.
    private const int MinVocabSize = FirstByteToken + 256;

    /// <summary>
    /// Reads a llama2.c tokenizer file: int32 max_token_length, then per token a float32 score, an int32
    /// length and that many bytes (little-endian). The file does not record the vocabulary size, which
    /// belongs to the model: pass <paramref name="expectedVocabSize"/> (the model header's vocab_size) to
    /// read exactly that many tokens, or null to read tokens until the end of the file.
    /// </summary>
    /// <exception cref="ModelFileException">
    /// The file is missing, truncated, holds a negative or oversized length or a NaN score, has fewer
    /// (or more) tokens than <paramref name="expectedVocabSize"/>, or fewer than 259 tokens.
    /// </exception>
    public static Llama2CTokenizer Load(string path, int? expectedVocabSize = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (expectedVocabSize is <= 0)
            throw new ArgumentOutOfRangeException(nameof(expectedVocabSize), expectedVocabSize, "must be positive");
        byte[] data;
        try { data = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ModelFileException(path, null, $"cannot read the tokenizer file: {e.Message}", e);
        }
        return Parse(path, data, expectedVocabSize);
    }

    private static Llama2CTokenizer Parse(string path, byte[] data, int? expected)
    {
        ModelFileException Bad(string problem) => new(path, null, problem);

        if (data.Length < 4)
            throw Bad($"file is {data.Length} bytes, too short for the 4-byte max_token_length header");
        int maxLen = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxLen <= 0)
            throw Bad($"max_token_length {maxLen} in the header must be positive");

        // Each token takes at least 8 bytes, which caps the count whatever the caller expects.
        int capacity = Math.Min(expected ?? int.MaxValue, (data.Length - 4) / 8);
        var pieces = new List<string>(capacity);
        var scores = new List<float>(capacity);
        int offset = 4;
        while (expected is null ? offset < data.Length : pieces.Count < expected)
        {
            int i = pieces.Count, left = data.Length - offset;
            if (left == 0)
                throw Bad($"token {i}: file ends after {i} tokens but the model's vocabulary has {expected}");
            if (left < 8)
                throw Bad($"token {i}: file is truncated inside the score and length at offset {offset} ({left} of 8 bytes left)");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(offset));
            int len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(offset + 4));
            offset += 8;
            left -= 8;
            if (float.IsNaN(score))
                throw Bad($"token {i}: score is NaN");
            if (len < 0)
                throw Bad($"token {i}: negative length {len}");
            if (len > maxLen)
                throw Bad($"token {i}: length {len} exceeds max_token_length {maxLen}");
            if (len > left)
                throw Bad($"token {i}: file is truncated: length {len} but only {left} bytes left at offset {offset}");
            pieces.Add(Encoding.Latin1.GetString(data, offset, len));
            scores.Add(score);
            offset += len;
        }
        // llama2.c ignores what follows, but extra tokens mean the tokenizer belongs to another model.
        if (offset < data.Length)
            throw Bad($"token {pieces.Count}: {data.Length - offset} bytes follow the {expected} tokens the model expects; the tokenizer does not match the model");
        if (pieces.Count < MinVocabSize)
            throw Bad($"token {pieces.Count}: file holds only {pieces.Count} tokens; a llama2.c tokenizer needs at least {MinVocabSize} (<unk>, <s>, </s> and 256 byte tokens)");
        return new Llama2CTokenizer(pieces.ToArray(), scores.ToArray());
    }
}

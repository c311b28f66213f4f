namespace Interp.Tokenizers;

/// <summary>
/// Turns text into token ids and back. Every method that takes ids throws
/// <see cref="InvalidTokensException"/> for an id outside [0, <see cref="VocabSize"/>), naming the id,
/// its position and the vocabulary size.
/// </summary>
public interface ITokenizer
{
    /// <summary>Number of token ids; valid ids are 0 to VocabSize - 1.</summary>
    int VocabSize { get; }

    /// <summary>The beginning-of-sequence id that <see cref="Encode"/> prepends when asked, or null if there is none.</summary>
    int? BosId { get; }

    /// <summary>The end-of-sequence id, or null if there is none.</summary>
    int? EosId { get; }

    /// <summary>Encodes <paramref name="text"/>; with <paramref name="prependBos"/> the BOS id comes first.</summary>
    int[] Encode(string text, bool prependBos = false);

    /// <summary>Decodes a whole sequence to text; invalid UTF-8 becomes U+FFFD rather than an error.</summary>
    string Decode(IReadOnlyList<int> ids);

    /// <summary>One display string per token, for figure labels (leading spaces kept, unprintable bytes escaped).</summary>
    string[] ToStrTokens(IReadOnlyList<int> ids);

    /// <summary>The text of a single token decoded on its own.</summary>
    string DecodeToken(int id);
}

/// <summary>Shared id range check, so every tokenizer reports bad ids the same way.</summary>
internal static class TokenIds
{
    /// <summary>Throws <see cref="InvalidTokensException"/> for the first id outside [0, vocabSize).</summary>
    public static void Check(IReadOnlyList<int> ids, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(ids);
        for (int i = 0; i < ids.Count; i++)
            Check(ids[i], i, vocabSize);
    }

    /// <summary>Throws <see cref="InvalidTokensException"/> if <paramref name="id"/> is outside [0, vocabSize).</summary>
    public static void Check(int id, int position, int vocabSize)
    {
        if ((uint)id >= (uint)vocabSize)
            throw new InvalidTokensException(
                $"token id {id} at position {position} is outside the vocabulary: ids must be in [0, {vocabSize}) (vocabulary size {vocabSize})");
    }
}

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

    /// <summary>The padding id, or null if the vocabulary has none (then padding uses <see cref="EosId"/>, else 0).</summary>
    int? PadId => null;

    /// <summary>Encodes <paramref name="text"/>; with <paramref name="prependBos"/> the BOS id comes first.</summary>
    int[] Encode(string text, bool prependBos = false);

    /// <summary>
    /// Encodes <paramref name="text"/> with the special tokens the tokenizer's own format adds to a text: the
    /// post-processor of a Hugging Face tokenizer.json (BERT's [CLS] … [SEP], Llama's BOS), BOS for llama2.c (as run.c
    /// encodes a prompt); none by default (GPT-2 adds none).
    /// </summary>
    int[] EncodeWithSpecialTokens(string text) => Encode(text);

    /// <summary>
    /// Encodes <paramref name="text"/> as it reads when it continues a text: the tokens a model would predict after a
    /// prompt, e.g. an answer " Mary". Tokenizers that add nothing before a text (GPT-2) encode it as <see cref="Encode"/>
    /// does, the default; SentencePiece-style ones that put a dummy-prefix space before every text leave it out, so that
    /// " Lily" is the one token "▁Lily" rather than "▁" + "Lily".
    /// </summary>
    int[] EncodeContinuation(string text) => Encode(text);

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

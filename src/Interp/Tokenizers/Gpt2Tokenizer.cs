using SharpToken;

namespace Interp.Tokenizers;

/// <summary>
/// The GPT-2 byte-level BPE tokenizer (tiktoken's <c>r50k_base</c>, via SharpToken): 50,257 tokens,
/// with <c>&lt;|endoftext|&gt;</c> (50256) serving as both BOS and EOS, as in TransformerLens.
/// </summary>
/// <remarks>
/// The text "&lt;|endoftext|&gt;" inside an input string is encoded as ordinary text (seven tokens), never
/// as id 50256: special tokens only enter a sequence through <c>prependBos</c> or explicit ids. (Hugging
/// Face's GPT-2 tokenizer would turn that text into 50256; tiktoken by default refuses it.)
/// Decode and DecodeToken render id 50256 as "&lt;|endoftext|&gt;".
/// </remarks>
public sealed class Gpt2Tokenizer : ITokenizer
{
    /// <summary>Id of <c>&lt;|endoftext|&gt;</c>, GPT-2's only special token.</summary>
    public const int EndOfTextId = 50256;

    // Loading the ranks takes a moment and the encoding is immutable, so all instances share one.
    private static readonly Lazy<GptEncoding> Encoding = new(() => GptEncoding.GetEncoding("r50k_base"));

    /// <inheritdoc />
    public int VocabSize => 50257;

    /// <inheritdoc />
    public int? BosId => EndOfTextId;

    /// <inheritdoc />
    public int? EosId => EndOfTextId;

    /// <inheritdoc />
    public int[] Encode(string text, bool prependBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        // Empty allowed and disallowed sets: special-token text is neither mapped nor rejected, just BPE'd.
        var ids = Encoding.Value.Encode(text, new HashSet<string>(), new HashSet<string>());
        if (prependBos)
            ids.Insert(0, EndOfTextId);
        return ids.ToArray();
    }

    /// <inheritdoc />
    /// <remarks>GPT-2 adds nothing before a text: the same ids as <see cref="Encode"/>.</remarks>
    public int[] EncodeContinuation(string text) => Encode(text);

    /// <inheritdoc />
    public string Decode(IReadOnlyList<int> ids)
    {
        TokenIds.Check(ids, VocabSize);
        // SharpToken joins the token bytes and decodes them with replacement characters for bad UTF-8.
        return Encoding.Value.Decode(ids);
    }

    /// <inheritdoc />
    /// <remarks>Each token is decoded on its own, so a token holding part of a multi-byte character shows as U+FFFD.</remarks>
    public string[] ToStrTokens(IReadOnlyList<int> ids)
    {
        TokenIds.Check(ids, VocabSize);
        var result = new string[ids.Count];
        for (int i = 0; i < result.Length; i++)
            result[i] = Encoding.Value.Decode(new[] { ids[i] });
        return result;
    }

    /// <inheritdoc />
    public string DecodeToken(int id)
    {
        TokenIds.Check(id, 0, VocabSize);
        return Encoding.Value.Decode(new[] { id });
    }
}

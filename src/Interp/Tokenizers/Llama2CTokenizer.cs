using System.Text;

namespace Interp.Tokenizers;

/// <summary>
/// The SentencePiece-style tokenizer of Karpathy's llama2.c (<c>tokenizer.bin</c>, <c>tok512.bin</c>),
/// encoding and decoding exactly as <c>encode()</c> and <c>decode()</c> in run.c. BOS = 1, EOS = 2,
/// ids 3..258 are the raw bytes <c>&lt;0x00&gt;</c>..<c>&lt;0xFF&gt;</c>.
/// </summary>
/// <remarks>
/// Encode puts a dummy-prefix " " token before any non-empty text, so <c>Decode(Encode(x))</c> is
/// <c>" " + x</c>, while <c>Decode(Encode(x, prependBos: true))</c> is <c>x</c>, because (as in run.c) a
/// token right after BOS loses one leading space. Decode writes nothing for BOS and EOS themselves: their
/// pieces ("\n&lt;s&gt;\n") are vocabulary artefacts that llama2.c never prints.
/// </remarks>
public sealed partial class Llama2CTokenizer : ITokenizer
{
    private const int Bos = 1, Eos = 2, FirstByteToken = 3;

    // run.c's best_score starts at -1e10, so a merge scoring at or below it never happens.
    private const float NoMergeScore = -1e10f;

    // Token pieces as Latin-1 strings: one char per byte, so dictionary keys match byte sequences exactly.
    private readonly string[] _pieces;
    private readonly float[] _scores;
    private readonly Dictionary<string, int> _lookup;

    private Llama2CTokenizer(string[] pieces, float[] scores)
    {
        _pieces = pieces;
        _scores = scores;
        _lookup = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
            _lookup.TryAdd(pieces[i], i); // duplicate pieces: the lowest id wins
    }

    /// <inheritdoc />
    public int VocabSize => _pieces.Length;

    /// <inheritdoc />
    public int? BosId => Bos;

    /// <inheritdoc />
    public int? EosId => Eos;

    /// <inheritdoc />
    public int[] Encode(string text, bool prependBos = false) => EncodePieces(text, prependBos, dummyPrefix: true);

    /// <inheritdoc />
    /// <remarks>BOS first, as run.c encodes a prompt (<c>encode(…, bos=1, eos=0, …)</c>).</remarks>
    public int[] EncodeWithSpecialTokens(string text) => Encode(text, prependBos: true);

    /// <inheritdoc />
    /// <remarks>
    /// run.c's encode without the dummy-prefix space: " Lily" is the single piece " Lily" (the token a model predicts
    /// after "… named"), where <see cref="Encode"/> would give the dummy " " before it.
    /// </remarks>
    public int[] EncodeContinuation(string text) => EncodePieces(text, prependBos: false, dummyPrefix: false);

    private int[] EncodePieces(string text, bool prependBos, bool dummyPrefix)
    {
        ArgumentNullException.ThrowIfNull(text);
        var tokens = new List<int>();
        if (prependBos) tokens.Add(Bos);
        if (text.Length == 0) return tokens.ToArray();

        byte[] bytes = Encoding.UTF8.GetBytes(text);
        if (dummyPrefix) AddPiece(" "u8, tokens);
        // Split into UTF-8 codepoints the way run.c does: a byte that is not a continuation byte starts
        // a codepoint, which takes at most 4 bytes; stray continuation bytes stand alone.
        for (int start = 0; start < bytes.Length;)
        {
            int end = start + 1;
            while (end < bytes.Length && (bytes[end] & 0xC0) == 0x80 && end - start < 4) end++;
            AddPiece(bytes.AsSpan(start, end - start), tokens);
            start = end;
        }
        Merge(tokens);
        return tokens.ToArray();
    }

    /// <summary>Appends the id of <paramref name="s"/>, or when it is not in the vocabulary its bytes as byte tokens.</summary>
    private void AddPiece(ReadOnlySpan<byte> s, List<int> tokens)
    {
        if (_lookup.TryGetValue(Encoding.Latin1.GetString(s), out int id)) tokens.Add(id);
        else foreach (byte b in s) tokens.Add(b + FirstByteToken);
    }

    /// <summary>
    /// Repeatedly merges the adjacent pair whose concatenation has the highest score (leftmost on ties,
    /// as run.c's strict '&gt;' picks), until no pair forms a vocabulary entry. Pair results are cached
    /// and only the two pairs next to a merge are recomputed, so long texts stay quadratic, not cubic.
    /// </summary>
    private void Merge(List<int> tokens)
    {
        var pairId = new List<int>(tokens.Count);
        for (int i = 0; i + 1 < tokens.Count; i++) pairId.Add(PairId(tokens[i], tokens[i + 1]));
        while (true)
        {
            float best = NoMergeScore;
            int bestIdx = -1;
            for (int i = 0; i < pairId.Count; i++)
            {
                if (pairId[i] >= 0 && _scores[pairId[i]] > best)
                {
                    best = _scores[pairId[i]];
                    bestIdx = i;
                }
            }
            if (bestIdx < 0) return;
            tokens[bestIdx] = pairId[bestIdx];
            tokens.RemoveAt(bestIdx + 1);
            pairId.RemoveAt(bestIdx);
            if (bestIdx > 0) pairId[bestIdx - 1] = PairId(tokens[bestIdx - 1], tokens[bestIdx]);
            if (bestIdx < pairId.Count) pairId[bestIdx] = PairId(tokens[bestIdx], tokens[bestIdx + 1]);
        }
    }

    private int PairId(int left, int right) =>
        _lookup.TryGetValue(string.Concat(_pieces[left], _pieces[right]), out int id) ? id : -1;

    /// <inheritdoc />
    /// <remarks>
    /// As run.c's decode(): a token right after BOS drops one leading space, and <c>&lt;0xXX&gt;</c> tokens
    /// are raw bytes. BOS and EOS add no text. The bytes are joined before UTF-8 decoding, so byte tokens
    /// spelling a multi-byte character decode to that character.
    /// </remarks>
    public string Decode(IReadOnlyList<int> ids)
    {
        TokenIds.Check(ids, VocabSize);
        var bytes = new List<byte>();
        int prev = -1;
        foreach (int id in ids)
        {
            if (id != Bos && id != Eos)
            {
                ReadOnlySpan<char> piece = _pieces[id];
                if (prev == Bos && piece.StartsWith(' ')) piece = piece[1..];
                if (TryParseByte(piece, out byte b)) bytes.Add(b);
                else foreach (char c in piece) bytes.Add((byte)c);
            }
            prev = id;
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <inheritdoc />
    /// <remarks>
    /// Labels show each piece as stored, without the after-BOS space stripping; BOS and EOS show as
    /// "&lt;s&gt;" and "&lt;/s&gt;"; a byte token shows its character when printable ASCII, else "&lt;0xXX&gt;".
    /// </remarks>
    public string[] ToStrTokens(IReadOnlyList<int> ids)
    {
        TokenIds.Check(ids, VocabSize);
        var result = new string[ids.Count];
        for (int i = 0; i < result.Length; i++)
        {
            string piece = _pieces[ids[i]];
            if (ids[i] is Bos or Eos) result[i] = piece.Trim();
            else if (TryParseByte(piece, out byte b))
                result[i] = b is >= 0x20 and < 0x7F ? ((char)b).ToString() : $"<0x{b:X2}>";
            else result[i] = Encoding.UTF8.GetString(Encoding.Latin1.GetBytes(piece));
        }
        return result;
    }

    /// <inheritdoc />
    /// <remarks>Same as <c>Decode([id])</c>: BOS and EOS give "", a lone non-ASCII byte token gives U+FFFD.</remarks>
    public string DecodeToken(int id)
    {
        TokenIds.Check(id, 0, VocabSize);
        return Decode(new[] { id });
    }

    /// <summary>True when <paramref name="piece"/> is exactly "&lt;0xHH&gt;" (two hex digits), a raw-byte token.</summary>
    private static bool TryParseByte(ReadOnlySpan<char> piece, out byte value)
    {
        value = 0;
        return piece is ['<', '0', 'x', _, _, '>']
            && byte.TryParse(piece[3..5], System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

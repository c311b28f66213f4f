using System.Text;
using Interp.Tokenizers;

namespace Interp.Tests.Tokenizers;

/// <summary>Tests on the real stories260K tokenizer (tok512.bin).</summary>
public class Llama2CTokenizerTests
{
    private static readonly string TokPath = SharedData.Model("stories260K/tok512.bin");
    private readonly Llama2CTokenizer _tok = Llama2CTokenizer.Load(TokPath, expectedVocabSize: 512);

    [Fact]
    public void Load_ReadsAll512Tokens_WithOrWithoutExpectedSize()
    {
        Assert.Equal(512, _tok.VocabSize);
        Assert.Equal(512, Llama2CTokenizer.Load(TokPath).VocabSize);
        Assert.Equal(1, _tok.BosId);
        Assert.Equal(2, _tok.EosId);
    }

    [Fact]
    public void Encode_Outside_SplitsAsTheReadmeSays()
    {
        // The README's split ' ', 'out', 's', 'id', 'e' is the word after the dummy-prefix space...
        Assert.Equal(new[] { " ", "out", "s", "id", "e" }, _tok.ToStrTokens(_tok.Encode("outside")));
        // ...so text that itself starts with a space gets a second ' ' (no "  " or " out" in this vocabulary).
        Assert.Equal(new[] { " ", " ", "out", "s", "id", "e" }, _tok.ToStrTokens(_tok.Encode(" outside")));
        Assert.Equal(new[] { "<s>", " ", "out", "s", "id", "e" }, _tok.ToStrTokens(_tok.Encode("outside", prependBos: true)));
    }

    [Fact]
    public void Encode_OnceUponATime_RoundTrips()
    {
        const string text = "Once upon a time";
        int[] ids = _tok.Encode(text);
        Assert.Equal(new[] { " Once", " upon", " a", " time" }, _tok.ToStrTokens(ids));
        Assert.Equal(" " + text, _tok.Decode(ids)); // the dummy-prefix space stays without BOS
        int[] withBos = _tok.Encode(text, prependBos: true);
        Assert.Equal(1, withBos[0]);
        Assert.Equal(text, _tok.Decode(withBos)); // after BOS the leading space is stripped
    }

    [Fact]
    public void Encode_Empty_HasNoDummyPrefix()
    {
        Assert.Empty(_tok.Encode(""));
        Assert.Equal(new[] { 1 }, _tok.Encode("", prependBos: true));
    }

    [Fact]
    public void Encode_UnknownCharacter_FallsBackToBytes()
    {
        // 你 = E4 BD A0 in UTF-8, not in the 512-token vocabulary: byte tokens are byte + 3.
        int[] ids = _tok.Encode("你");
        Assert.Equal(new[] { " ", "<0xE4>", "<0xBD>", "<0xA0>" }, _tok.ToStrTokens(ids));
        Assert.Equal(new[] { 0xE4 + 3, 0xBD + 3, 0xA0 + 3 }, ids[1..]);
        Assert.Equal(" 你", _tok.Decode(ids));
        Assert.Equal("你", _tok.Decode(_tok.Encode("你", prependBos: true)));
        // A lone byte of a multi-byte character is not valid UTF-8 on its own.
        Assert.Equal("\uFFFD", _tok.DecodeToken(0xE4 + 3));
        // '#' is not in the vocabulary either: a printable byte token is labelled with its character.
        Assert.Equal(new[] { " ", "#" }, _tok.ToStrTokens(_tok.Encode("#")));
        Assert.Equal(new[] { "<0x0A>" }, _tok.ToStrTokens(new[] { 0x0A + 3 }));
    }

    [Fact]
    public void Decode_BosAndEos_AddNoText()
    {
        int[] ids = [.. _tok.Encode("Once", prependBos: true), 2];
        Assert.Equal("Once", _tok.Decode(ids));
        Assert.Equal(new[] { "<s>", " Once", "</s>" }, _tok.ToStrTokens(ids));
        Assert.Equal("", _tok.DecodeToken(1));
    }

    [Fact]
    public void Encode_RandomAscii_IsAFixedPointThatSpellsTheText()
    {
        var vocab = RawVocab.Read(TokPath);
        var rng = new Random(1234);
        const string alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,!?'\"0123456789#=@^_{}~\n";
        for (int trial = 0; trial < 200; trial++)
        {
            int len = rng.Next(1, 40);
            var text = new string(Enumerable.Range(0, len).Select(_ => alphabet[rng.Next(alphabet.Length)]).ToArray());
            int[] ids = _tok.Encode(text);

            // No adjacent pair of output pieces concatenates to a vocabulary entry.
            for (int i = 0; i + 1 < ids.Length; i++)
                Assert.False(vocab.Ids.ContainsKey(vocab.Pieces[ids[i]] + vocab.Pieces[ids[i + 1]]),
                    $"{text}: pair {i} still merges");
            // The token bytes spell the dummy prefix and the text.
            string spelled = string.Concat(ids.Select(vocab.Bytes));
            Assert.Equal(" " + text, spelled);
            Assert.Equal(vocab.NaiveEncode(text), ids);
            Assert.Equal(text, _tok.Decode(_tok.Encode(text, prependBos: true)));
        }
    }

    [Fact]
    public void OutOfRangeIds_Throw()
    {
        var e = Assert.Throws<InvalidTokensException>(() => _tok.Decode(new[] { 1, 512 }));
        Assert.Contains("512", e.Message);
        Assert.Contains("position 1", e.Message);
        Assert.Throws<InvalidTokensException>(() => _tok.ToStrTokens(new[] { -5 }));
        e = Assert.Throws<InvalidTokensException>(() => _tok.DecodeToken(9999));
        Assert.Contains("9999", e.Message);
    }

    /// <summary>An independent reading of the file plus a literal transcription of run.c's encode loop.</summary>
    private sealed record RawVocab(string[] Pieces, float[] Scores, Dictionary<string, int> Ids)
    {
        public static RawVocab Read(string path)
        {
            using var r = new BinaryReader(File.OpenRead(path));
            r.ReadInt32();
            var pieces = new List<string>();
            var scores = new List<float>();
            while (r.BaseStream.Position < r.BaseStream.Length)
            {
                scores.Add(r.ReadSingle());
                pieces.Add(Encoding.Latin1.GetString(r.ReadBytes(r.ReadInt32())));
            }
            var ids = new Dictionary<string, int>();
            for (int i = 0; i < pieces.Count; i++) ids.TryAdd(pieces[i], i);
            return new RawVocab(pieces.ToArray(), scores.ToArray(), ids);
        }

        /// <summary>The token's bytes as Latin-1 text (byte tokens give their raw byte); fine for ASCII tests.</summary>
        public string Bytes(int id) =>
            Pieces[id] is ['<', '0', 'x', _, _, '>'] p ? ((char)Convert.ToByte(p[3..5], 16)).ToString() : Pieces[id];

        public int[] NaiveEncode(string asciiText)
        {
            var tokens = new List<int> { Ids[" "] };
            foreach (char c in asciiText)
                tokens.Add(Ids.TryGetValue(c.ToString(), out int id) ? id : c + 3);
            while (true)
            {
                float best = -1e10f;
                int bestId = -1, bestIdx = -1;
                for (int i = 0; i + 1 < tokens.Count; i++)
                {
                    if (Ids.TryGetValue(Pieces[tokens[i]] + Pieces[tokens[i + 1]], out int id) && Scores[id] > best)
                        (best, bestId, bestIdx) = (Scores[id], id, i);
                }
                if (bestIdx == -1) return tokens.ToArray();
                tokens[bestIdx] = bestId;
                tokens.RemoveAt(bestIdx + 1);
            }
        }
    }
}

using System.Buffers.Binary;
using System.Text;
using Interp.Tokenizers;

namespace Interp.Tests.Tokenizers;

/// <summary>Malformed tokenizer files, and merge rules checked on a small hand-made vocabulary.</summary>
public sealed class Llama2CTokenizerFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("llama2c-tok-").FullName;
    private readonly byte[] _real = File.ReadAllBytes(SharedData.Model("stories260K/tok512.bin"));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Byte offset where each token of the real file starts (its score), plus the end of the file.</summary>
    private int[] TokenOffsets()
    {
        var offsets = new List<int>();
        for (int o = 4; o < _real.Length; o += 8 + BinaryPrimitives.ReadInt32LittleEndian(_real.AsSpan(o + 4)))
            offsets.Add(o);
        offsets.Add(_real.Length);
        return offsets.ToArray();
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static ModelFileException AssertBad(string path, int? expected, params string[] fragments)
    {
        var e = Assert.Throws<ModelFileException>(() => Llama2CTokenizer.Load(path, expected));
        Assert.Equal(path, e.FilePath);
        Assert.Contains(Path.GetFileName(path), e.Message);
        foreach (string f in fragments) Assert.Contains(f, e.Message);
        return e;
    }

    [Fact]
    public void Truncated_AtSeveralLengths_NamesTheToken()
    {
        int[] at = TokenOffsets();
        var cases = new (int Length, string Fragment)[]
        {
            (0, "max_token_length"), (2, "max_token_length"),
            (at[0] + 3, "token 0:"),          // inside token 0's score and length
            (at[0] + 10, "token 0:"),         // inside token 0's bytes
            (at[300] + 5, "token 300:"),
            (at[511] + 9, "token 511:"),
            (_real.Length - 1, "token 511:"),
            (at[100], "token 100:"),          // clean boundary, but 512 tokens expected
        };
        foreach (var (length, fragment) in cases)
        {
            string path = Write($"trunc{length}.bin", _real[..length]);
            AssertBad(path, 512, fragment);
            AssertBad(path, null, length == at[100] ? "token 100:" : fragment); // 100 < the 259 minimum
        }
        // Read to EOF, a clean cut after 400 tokens is a valid smaller vocabulary.
        Assert.Equal(400, Llama2CTokenizer.Load(Write("cut400.bin", _real[..at[400]])).VocabSize);
    }

    [Theory]
    [InlineData(-1, "negative length")]
    [InlineData(int.MinValue, "negative length")]
    [InlineData(1_000_000, "exceeds max_token_length")]
    [InlineData(int.MaxValue, "exceeds max_token_length")]
    public void BadLength_NamesTheToken(int length, string fragment)
    {
        byte[] bytes = (byte[])_real.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(TokenOffsets()[300] + 4), length);
        AssertBad(Write("len.bin", bytes), 512, "token 300:", fragment);
    }

    [Fact]
    public void LengthPastEndOfFile_NamesTheToken()
    {
        // Token 511 is the last one; a length within max_token_length (7) but past the end is truncation.
        int at = TokenOffsets()[511];
        byte[] bytes = _real[..(at + 8 + 1)];
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at + 4), 7);
        AssertBad(Write("past.bin", bytes), 512, "token 511:", "truncated");
    }

    [Fact]
    public void NaNScore_NamesTheToken()
    {
        byte[] bytes = (byte[])_real.Clone();
        BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(TokenOffsets()[42]), float.NaN);
        AssertBad(Write("nan.bin", bytes), 512, "token 42:", "NaN");
    }

    [Fact]
    public void VocabSizeMismatch_Throws()
    {
        string path = Write("tok.bin", _real);
        AssertBad(path, 600, "token 512:", "600");   // fewer tokens than the model expects
        AssertBad(path, 500, "token 500:", "does not match"); // more tokens than the model expects
    }

    [Fact]
    public void BadHeaderOrMissingFile_Throws()
    {
        byte[] bytes = (byte[])_real.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(bytes, 0);
        AssertBad(Write("hdr.bin", bytes), 512, "max_token_length 0");
        AssertBad(Path.Combine(_dir, "missing.bin"), null, "cannot read");
    }

    /// <summary>A vocabulary of the 259 control and byte tokens followed by the given extra pieces.</summary>
    private string SmallVocab(params (string Piece, float Score)[] extra)
    {
        var tokens = new List<(string, float)> { ("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0) };
        tokens.AddRange(Enumerable.Range(0, 256).Select(b => ($"<0x{b:X2}>", 0f)));
        tokens.AddRange(extra);
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(8);
            foreach (var (piece, score) in tokens)
            {
                byte[] b = Encoding.UTF8.GetBytes(piece);
                w.Write(score);
                w.Write(b.Length);
                w.Write(b);
            }
        }
        return Write("small.bin", ms.ToArray());
    }

    [Theory]
    [InlineData(5f, 5f, new[] { " ", "ab", "c" })]  // tie: the leftmost pair merges, as run.c's strict '>' does
    [InlineData(5f, 6f, new[] { " ", "a", "bc" })]  // otherwise the highest score wins
    public void Merge_PicksHighestScore_LeftmostOnTies(float abScore, float bcScore, string[] expected)
    {
        var tok = Llama2CTokenizer.Load(SmallVocab((" ", 0), ("a", 0), ("b", 0), ("c", 0), ("ab", abScore), ("bc", bcScore)));
        Assert.Equal(265, tok.VocabSize);
        Assert.Equal(expected, tok.ToStrTokens(tok.Encode("abc")));
        Assert.Equal(" abc", tok.Decode(tok.Encode("abc")));
    }

    [Fact]
    public void Merge_CanJoinByteTokensOnlyByTheirPieceText()
    {
        // Like run.c, merges concatenate piece strings: 'x' (absent) falls back to "<0x78>", which never merges.
        var tok = Llama2CTokenizer.Load(SmallVocab((" ", 0), ("a", 0), ("ax", 9)));
        Assert.Equal(new[] { " ", "a", "x" }, tok.ToStrTokens(tok.Encode("ax")));
        Assert.Equal(new[] { 259, 260, 'x' + 3 }, tok.Encode("ax"));
    }
}

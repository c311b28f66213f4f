using Interp.Tokenizers;

namespace Interp.Tests.Tokenizers;

public class Gpt2TokenizerTests
{
    private readonly Gpt2Tokenizer _tok = new();

    [Fact]
    public void Properties_MatchGpt2()
    {
        Assert.Equal(50257, _tok.VocabSize);
        Assert.Equal(50256, _tok.BosId);
        Assert.Equal(50256, _tok.EosId);
    }

    [Fact]
    public void Encode_HelloWorld_GivesKnownGpt2Ids()
    {
        Assert.Equal(new[] { 15496, 995 }, _tok.Encode("Hello world"));
        Assert.Equal(new[] { 50256, 15496, 995 }, _tok.Encode("Hello world", prependBos: true));
        Assert.Empty(_tok.Encode(""));
        Assert.Equal(new[] { 50256 }, _tok.Encode("", prependBos: true));
    }

    [Theory]
    [InlineData("Hello world")]
    [InlineData("The quick brown fox jumps over the lazy dog.")]
    [InlineData("  leading spaces\n\ttabs and newlines\r\n")]
    [InlineData("héllo wörld, naïve café")]
    [InlineData("你好，世界 🙂👍🏽")]
    [InlineData("a<|endoftext|>b")]
    public void Decode_RoundTrips(string text)
    {
        Assert.Equal(text, _tok.Decode(_tok.Encode(text)));
    }

    [Fact]
    public void EndOfTextInText_IsOrdinaryText()
    {
        int[] ids = _tok.Encode("<|endoftext|>");
        Assert.DoesNotContain(50256, ids);
        Assert.True(ids.Length > 1);
        Assert.Equal("<|endoftext|>", _tok.DecodeToken(50256));
    }

    [Fact]
    public void ToStrTokens_KeepsLeadingSpaces()
    {
        Assert.Equal(new[] { "Hello", " world" }, _tok.ToStrTokens(new[] { 15496, 995 }));
        Assert.Equal(new[] { "<|endoftext|>", "Hello" }, _tok.ToStrTokens(new[] { 50256, 15496 }));
        Assert.Equal(" world", _tok.DecodeToken(995));
    }

    [Fact]
    public void Decode_PartialUtf8_UsesReplacementCharacter()
    {
        int[] ids = _tok.Encode("你");
        Assert.True(ids.Length > 1, "expected 你 to span several byte-level tokens");
        string partial = _tok.Decode(new[] { ids[0] });
        Assert.Contains('\uFFFD', partial);
        Assert.All(_tok.ToStrTokens(ids), s => Assert.Contains('\uFFFD', s));
    }

    [Fact]
    public void OutOfRangeIds_Throw()
    {
        var e = Assert.Throws<InvalidTokensException>(() => _tok.Decode(new[] { 15496, 50257 }));
        Assert.Contains("50257", e.Message);
        Assert.Contains("position 1", e.Message);
        e = Assert.Throws<InvalidTokensException>(() => _tok.ToStrTokens(new[] { -1 }));
        Assert.Contains("-1", e.Message);
        Assert.Contains("position 0", e.Message);
        e = Assert.Throws<InvalidTokensException>(() => _tok.DecodeToken(60000));
        Assert.Contains("60000", e.Message);
    }
}

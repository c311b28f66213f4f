using System.Text.Json;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Tests.Tokenizers;

/// <summary>The model's text methods (ToTokens, ToStrTokens, ToSingleToken, ToText), checked on GPT-2 and stories260K.</summary>
public class ModelTokensTests
{
    private static string Gpt2Reference => Path.Combine(SharedData.Root, "tokenizers", "gpt2", "reference", "strings.jsonl");

    /// <summary>A random model with GPT-2's vocabulary and tokenizer (d_model 8: the text methods need no real weights).</summary>
    private static HookedTransformer Gpt2Model()
    {
        var model = TestModels.Random(TestModels.Gpt2Like with { DVocab = 50257, DModel = 8, NHeads = 2, DMlp = 16 });
        model.Tokenizer = new Gpt2Tokenizer();
        return model;
    }

    [Fact]
    public void ToTokens_OnGpt2_MatchesTheHuggingFaceReferenceIds()
    {
        using var scope = NewDisposeScope();
        using var model = Gpt2Model();
        int checkedLines = 0;
        foreach (var line in File.ReadLines(Gpt2Reference))
        {
            using var json = JsonDocument.Parse(line);
            string text = json.RootElement.GetProperty("text").GetString()!;
            // Hugging Face maps the text "<|endoftext|>" to id 50256; this tokenizer encodes it as ordinary text (documented).
            if (text.Contains("<|endoftext|>", StringComparison.Ordinal)) continue;
            var ids = json.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var plain = model.ToTokens(text, prependBos: false);
            Assert.Equal([1L, ids.Length], plain.shape);
            if (ids.Length > 0) Assert.Equal(ids, plain.data<long>().ToArray());   // (an empty tensor has no data to read)
            // The default prepends BOS, as TransformerLens's default_prepend_bos does.
            Assert.Equal(new[] { 50256L }.Concat(ids).ToArray(), model.ToTokens(text).data<long>().ToArray());
            checkedLines++;
        }
        Assert.True(checkedLines >= 30, $"only {checkedLines} reference strings checked");
    }

    [Fact]
    public void Gpt2_StrTokens_SingleToken_Text()
    {
        using var scope = NewDisposeScope();
        using var model = Gpt2Model();
        Assert.Equal(new[] { "<|endoftext|>", "Hello", " world" }, model.ToStrTokens("Hello world"));
        Assert.Equal(new[] { "Hello", " world" }, model.ToStrTokens(tensor(new long[] { 15496, 995 })));
        Assert.Equal("Hello world", model.ToText(tensor(new long[] { 15496, 995 }, [1, 2])));
        Assert.Equal(5335, model.ToSingleToken(" Mary"));   // the reference ids of the README's sentence: " Lily" is 20037
        Assert.Equal(20037, model.ToSingleToken(" Lily"));
        var e = Assert.Throws<InvalidTokensException>(() => model.ToSingleToken(" Maryland-ish"));
        Assert.StartsWith("\" Maryland-ish\" is ", e.Message);
        Assert.Contains("\" Maryland\" (", e.Message);
        Assert.Contains(" + ", e.Message);
        Assert.Throws<InvalidTokensException>(() => model.ToStrTokens(zeros(2, 3, dtype: ScalarType.Int64)));
    }

    [Fact]
    public void ToTokens_OfSeveralTexts_IsARightPaddedBatchWithItsMask()
    {
        using var scope = NewDisposeScope();
        using var model = Gpt2Model();
        using var batch = model.ToTokens(["Hello world", "Hi", "The quick brown fox"]);
        Assert.Equal(new[] { 3, 2, 5 }, batch.Lengths);
        Assert.Equal(new[] { 2, 1, 4 }, batch.LastPositions);
        Assert.Equal([3L, 5], batch.Tokens.shape);
        Assert.Equal(50256, batch.PadId);   // GPT-2 has no pad token: EOS pads
        Assert.Equal(new long[] { 50256, 17250, 50256, 50256, 50256 }, batch.Tokens[1].data<long>().ToArray());
        Assert.Equal(new long[] { 1, 1, 0, 0, 0 }, batch.AttentionMask[1].data<long>().ToArray());
        for (int b = 0; b < 3; b++)
        {
            var alone = model.ToTokens(new[] { "Hello world", "Hi", "The quick brown fox" }[b]);
            Assert.Equal(alone[0].data<long>().ToArray(), batch.Tokens[b].narrow(0, 0, batch.Lengths[b]).data<long>().ToArray());
        }
    }

    [Fact]
    public void Stories_Lily_IsTheSingleContinuationToken317()
    {
        using var scope = NewDisposeScope();
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var model = loaded.Model;
        Assert.Same(loaded.Tokenizer, model.Tokenizer);
        Assert.Equal(317, model.ToSingleToken(" Lily"));
        // Encode would put the dummy-prefix space first: " " + " Lily", two tokens, not what the model predicts.
        Assert.NotEqual(new[] { 317 }, model.Tokenizer!.Encode(" Lily"));
        // The continuation token is what a prompt ending in the name ends with.
        var tokenizer = model.Tokenizer!;
        const string prompt = "Once upon a time, there was a little girl named";
        Assert.Equal(tokenizer.Encode(prompt, true).Append(317).ToArray(), tokenizer.Encode(prompt + " Lily", true));
        var e = Assert.Throws<InvalidTokensException>(() => model.ToSingleToken(" Mary"));
        Assert.StartsWith("\" Mary\" is ", e.Message);
        Assert.Contains("\" M\" (392)", e.Message);
        // BOS first by default (the llama2.c tokenizer has one); ToText drops the space after BOS as run.c does.
        var tokens = model.ToTokens("Lily");
        Assert.Equal(new long[] { 1, 317 }, tokens.data<long>().ToArray());
        Assert.Equal("Lily", model.ToText(tokens));
        Assert.Equal(new[] { "<s>", " Lily" }, model.ToStrTokens("Lily"));
        using var batch = model.ToTokens(["Lily", "Once upon a time"]);
        Assert.Equal(2, batch.PadId);   // no pad token: EOS pads
    }

    [Fact]
    public void NoTokenizer_IsAClearError()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var e = Assert.Throws<InterpException>(() => model.ToTokens("hi"));
        Assert.Contains("gpt2-like: the model has no tokenizer", e.Message);
        Assert.Throws<InterpException>(() => model.ToSingleToken(" a"));
        Assert.Throws<InterpException>(() => model.Tokenizer = new Gpt2Tokenizer());   // 50,257 ids do not fit 50
    }
}

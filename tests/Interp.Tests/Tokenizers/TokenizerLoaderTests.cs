using Interp.Tests.Support;
using Interp.Tokenizers;
using static Interp.Tests.Tokenizers.TinyHfTokenizers;

namespace Interp.Tests.Tokenizers;

/// <summary><see cref="TokenizerLoader"/>: tokenizers recognised by content, folders, and the check against a model's vocabulary.</summary>
public sealed class TokenizerLoaderTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void Files_are_recognised_by_content_not_by_name()
    {
        // A tokenizer.json under another name, and llama2.c's tok512.bin under the name tokenizer.json.
        string json = _tmp.File("vocab.dat");
        File.WriteAllText(json, "\uFEFF \n" + Llama2().ToJsonString());
        using (var hf = Assert.IsType<HuggingFaceTokenizer>(TokenizerLoader.Load(json)))
            Assert.Equal([276, 267], hf.Encode("Hello Mary"));

        string disguised = Path.Combine(_tmp.Sub("disguised"), "tokenizer.json");
        File.Copy(TestModels.StoriesTokenizer, disguised);
        var llama2c = Assert.IsType<Llama2CTokenizer>(TokenizerLoader.Load(disguised, 512));
        Assert.Equal(Llama2CTokenizer.Load(TestModels.StoriesTokenizer).Encode("Once upon a time"), llama2c.Encode("Once upon a time"));

        // JSON that is not a tokenizer.json says so.
        string config = _tmp.File("config.json");
        File.WriteAllText(config, "{\"model_type\": \"gpt2\"}");
        Assert.Contains("key 'model': missing", Assert.Throws<ModelFileException>(() => TokenizerLoader.Load(config)).Message);
    }

    [Fact]
    public void Folders_hold_tokenizer_json_first_then_llama2c_files()
    {
        string both = WriteFolder(_tmp.Sub("both"), Llama2());
        File.Copy(TestModels.StoriesTokenizer, Path.Combine(both, "tokenizer.bin"));
        using (var hf = Assert.IsType<HuggingFaceTokenizer>(TokenizerLoader.Load(both))) Assert.Equal(278, hf.VocabSize);

        string tok = _tmp.Sub("tok");
        File.Copy(TestModels.StoriesTokenizer, Path.Combine(tok, "tok512.bin"));
        Assert.IsType<Llama2CTokenizer>(TokenizerLoader.Load(tok));
        File.Copy(TestModels.StoriesTokenizer, Path.Combine(tok, "tok4096.bin"));
        var ex = Assert.Throws<ModelFileException>(() => TokenizerLoader.Load(tok));
        Assert.Contains("several tok*.bin files (tok", ex.Message);
        Assert.Contains("no tokenizer.json, tokenizer.bin or tok*.bin", Assert.Throws<ModelFileException>(() => TokenizerLoader.Load(_tmp.Sub("empty"))).Message);
        Assert.Contains("tokenizer file not found", Assert.Throws<ModelFileException>(() => TokenizerLoader.Load(_tmp.File("missing.json"))).Message);
    }

    [Fact]
    public void A_tokenizer_with_ids_beyond_the_models_vocabulary_is_refused_naming_both()
    {
        string dir = WriteFolder(_tmp.Sub("llama3"), Llama3());
        var ex = Assert.Throws<ModelFileException>(() => TokenizerLoader.Load(dir, modelVocabSize: 264));
        Assert.Contains("ids up to 264 (vocabulary of 265), but the model's vocabulary has only 264 entries", ex.Message);
        using var fits = (HuggingFaceTokenizer)TokenizerLoader.Load(dir, modelVocabSize: 300); // a padded embedding is fine
        Assert.Equal(265, fits.VocabSize);
        Assert.Throws<ModelFileException>(() => TokenizerLoader.Load(TestModels.StoriesTokenizer, modelVocabSize: 500));
    }

    [Fact]
    public void FindBeside_finds_the_tokenizer_of_a_model_folder_or_file()
    {
        string hf = WriteFolder(_tmp.Sub("hf"), Bert());
        Assert.Equal(Path.Combine(hf, "tokenizer.json"), TokenizerLoader.FindBeside(hf, out _));

        string dir = _tmp.Sub("llama2c");
        string model = Path.Combine(dir, "model.bin");
        File.WriteAllBytes(model, [1, 2, 3]);
        Assert.Null(TokenizerLoader.FindBeside(model, out string reason));
        Assert.Contains("no tokenizer.bin, tok*.bin or tokenizer.json beside it", reason);
        File.Copy(TestModels.StoriesTokenizer, Path.Combine(dir, "tok512.bin"));
        Assert.Equal(Path.Combine(dir, "tok512.bin"), TokenizerLoader.FindBeside(model, out _));
        Assert.Equal(TestModels.StoriesTokenizer, TokenizerLoader.FindBeside(TestModels.StoriesBin, out _));
        Assert.Null(TokenizerLoader.FindBeside(_tmp.Sub("none"), out reason));
        Assert.Contains("no tokenizer.json, tokenizer.bin or tok*.bin in", reason);
    }

    [Fact]
    public void One_tokenizer_serves_many_threads()
    {
        using var tok = HuggingFaceTokenizer.Load(Path.Combine(SharedData.Root, "tokenizers", "gpt2"));
        var expected = tok.Encode("The quick brown fox jumps over the lazy dog.");
        var results = new int[8][][];
        Parallel.For(0, 8, i => results[i] = Enumerable.Range(0, 50).Select(_ => tok.Encode("The quick brown fox jumps over the lazy dog.")).ToArray());
        Assert.All(results.SelectMany(r => r), ids => Assert.Equal(expected, ids));
    }
}

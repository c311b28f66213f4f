using Interp.Loading;
using Interp.Tests.Support;

namespace Interp.Tests.Loading;

/// <summary>llama2.c checkpoints: the header, the tokenizer beside them, and broken files.</summary>
public sealed class Llama2CCheckpointTests
{
    [Fact]
    public void Header_becomes_the_expected_config()
    {
        var (cfg, shared) = Llama2CCheckpoint.ReadConfig(TestModels.StoriesBin);
        Assert.True(shared);
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (cfg.DModel, cfg.DMlp, cfg.NLayers, cfg.NHeads, cfg.KvHeads, cfg.DVocab, cfg.NCtx));
        Assert.Equal(Interp.Models.RotaryStyle.AdjacentPairs, cfg.RotaryStyle);
    }

    [Fact]
    public void Model_hash_of_a_file_is_its_sha256()
    {
        // The value published in shared/models/README.md (sha256sum of the file).
        Assert.Equal("b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696", ModelHash.Compute(TestModels.StoriesBin));
    }

    [Theory]
    [InlineData(10, "shorter than the 28-byte llama2.c header")]
    [InlineData(28, "truncated or not a llama2.c checkpoint")]
    [InlineData(500_000, "truncated or not a llama2.c checkpoint")]
    public void Truncated_files_are_clear_errors(int keep, string phrase)
    {
        using var tmp = new TempDir();
        string path = tmp.File("cut.bin");
        File.WriteAllBytes(path, File.ReadAllBytes(TestModels.StoriesBin)[..keep]);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(path));
        Assert.Contains(phrase, ex.Message);
        Assert.Contains("cut.bin", ex.Message);
    }

    [Theory]
    [InlineData(0, 0, "sizes must be positive")]
    [InlineData(3, 7, "not divisible by n_heads")]
    [InlineData(4, 3, "not a multiple of n_kv_heads")]
    [InlineData(5, int.MaxValue, "needs")]
    public void Implausible_headers_are_clear_errors(int field, int value, string phrase)
    {
        using var tmp = new TempDir();
        string path = tmp.File("bad.bin");
        var bytes = File.ReadAllBytes(TestModels.StoriesBin);
        BitConverter.GetBytes(value).CopyTo(bytes, field * 4);
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(path));
        Assert.Contains(phrase, ex.Message);
        Assert.Contains("bad.bin", ex.Message);
    }

    [Fact]
    public void Missing_tokenizer_is_explained_when_text_is_needed()
    {
        using var tmp = new TempDir();
        string path = tmp.File("model.bin");
        File.Copy(TestModels.StoriesBin, path);
        using var loaded = ModelLoader.Load(path);
        Assert.Null(loaded.Tokenizer);
        var ex = Assert.Throws<InterpException>(() => loaded.RequireTokenizer());
        Assert.Contains("no tokenizer.bin, tok*.bin or tokenizer.json beside it", ex.Message);

        File.Copy(TestModels.StoriesTokenizer, tmp.File("tokenizer.bin"));
        using var withTokenizer = ModelLoader.Load(path);
        Assert.Equal(512, withTokenizer.RequireTokenizer().VocabSize);
    }
}

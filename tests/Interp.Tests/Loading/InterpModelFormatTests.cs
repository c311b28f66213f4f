using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Loading;

/// <summary>The project's own format: exact round trips and clear errors.</summary>
public sealed class InterpModelFormatTests
{
    public static TheoryData<string> Configs => new() { "gpt2", "llama", "attn-only-sinusoidal" };

    private static ModelConfig Config(string name) => name switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        _ => TestModels.AttnOnlySinusoidal,
    };

    [Theory, MemberData(nameof(Configs))]
    public void Save_then_load_gives_identical_config_weights_and_logits(string name)
    {
        using var tmp = new TempDir();
        using var scope = NewDisposeScope();
        using var model = TestModels.Random(Config(name), seed: 5);
        InterpModelFormat.Save(model, tmp.Path, tokenizer: null, new Dictionary<string, string> { ["seed"] = "5" });
        using var loaded = ModelLoader.Load(tmp.Path);
        Assert.Equal("interp", loaded.Format);
        Assert.Equal(model.Config, loaded.Model.Config);
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 10);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(model.forward(tokens), loaded.Model.forward(tokens)));
        Assert.Empty(Directory.GetFiles(tmp.Path, "*.tmp"));
    }

    [Fact]
    public void Loaded_llama2c_model_round_trips_with_its_tokenizer()
    {
        using var tmp = new TempDir();
        using var scope = NewDisposeScope();
        using var source = ModelLoader.Load(TestModels.StoriesBin);
        File.Copy(TestModels.StoriesTokenizer, tmp.File("tok512.bin"));
        InterpModelFormat.Save(source.Model, tmp.Path, tokenizer: "tok512.bin");
        using var loaded = ModelLoader.Load(tmp.Path);
        var ids = loaded.RequireTokenizer().Encode("Once upon a time", prependBos: true);
        var tokens = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(source.Model.forward(tokens), loaded.Model.forward(tokens)));
    }

    [Fact]
    public void Manifest_and_weights_that_disagree_are_clear_errors()
    {
        using var tmp = new TempDir();
        using var model = TestModels.Random(TestModels.Gpt2Like);
        InterpModelFormat.Save(model, tmp.Path);
        string manifest = tmp.File(InterpModelFormat.ManifestFile);
        string original = File.ReadAllText(manifest);

        File.WriteAllText(manifest, original.Replace("\"d_mlp\": 64", "\"d_mlp\": 65"));
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        Assert.Equal("blocks.0.mlp.W_in", ex.TensorName);
        Assert.Contains("[32, 64]", ex.Message);

        File.WriteAllText(manifest, original.Replace("\"version\": 1", "\"version\": 99"));
        Assert.Contains("unsupported version 99", Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path)).Message);

        File.WriteAllText(manifest, original.Replace("\"n_heads\": 4", "\"n_heads\": 5"));
        Assert.Contains("not divisible by NHeads", Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path)).Message);

        File.WriteAllText(manifest, original.Replace("\"tokenizer\": null", "\"tokenizer\": \"../../etc/passwd\""));
        Assert.Contains("plain file name", Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path)).Message);
    }
}

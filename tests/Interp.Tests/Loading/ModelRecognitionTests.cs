using System.Text;
using Interp.Loading;
using Interp.Tests.Support;

namespace Interp.Tests.Loading;

/// <summary>A path is recognised by what it holds, never by "it is a file": each kind of file gets a message that says what it is.</summary>
public sealed class ModelRecognitionTests
{
    [Fact]
    public void A_bare_safetensors_file_is_named_as_such_and_points_at_its_folder()
    {
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(Path.Combine(TestModels.Gpt2TinyDir, "model.safetensors")));
        Assert.Contains("a safetensors file on its own", ex.Message);
        Assert.Contains("gpt2-tiny-random", ex.Message);
    }

    [Fact]
    public void A_config_json_file_points_at_its_folder()
    {
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(Path.Combine(TestModels.Gpt2TinyDir, "config.json")));
        Assert.Contains("a JSON file: name the model folder", ex.Message);
    }

    [Theory]
    [InlineData("GGUF\u0003\0\0\0\0\0\0\0\0\0\0\0", "a GGUF file")]
    [InlineData("PK\u0003\u0004pytorch_model/data.pkl", "a zip archive")]
    [InlineData("hello, this is not a model at all", "implausible llama2.c header")]
    [InlineData("tiny", "shorter than the 28-byte llama2.c header")]
    public void Other_files_say_what_they_are(string content, string phrase)
    {
        using var tmp = new TempDir();
        string path = tmp.File("model.bin");
        File.WriteAllBytes(path, Encoding.Latin1.GetBytes(content));
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(path));
        Assert.Contains(phrase, ex.Message);
        Assert.Contains(path, ex.Message);
    }

    [Fact]
    public void A_folder_without_config_or_manifest_says_what_it_looked_for()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("notes.txt"), "nothing");
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        Assert.Contains("no config.json", ex.Message);
        Assert.Contains("interp-model.json", ex.Message);
    }

    [Theory]
    [InlineData("gpt_neox-tiny-random", "huggingface-gpt_neox")]
    [InlineData("bert-tiny-random", "huggingface-bert")]
    [InlineData("stories260K/stories260K.bin", "llama2.c")]
    public void Folders_and_files_are_recognised_by_their_content(string path, string format)
    {
        using var loaded = ModelLoader.Load(SharedData.Model(path));
        Assert.Equal(format, loaded.Format);
    }
}

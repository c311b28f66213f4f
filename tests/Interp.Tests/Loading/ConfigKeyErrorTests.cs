using System.Text.Json.Nodes;
using Interp.Loading;
using Interp.Tests.Reliability;
using Interp.Tests.Support;

namespace Interp.Tests.Loading;

/// <summary>
/// What the architecture fuzzers found (<see cref="ArchitectureFuzzTests"/>), pinned: a config that fails validation is
/// reported at the key its file spells (config.json's <c>rope_theta</c>, the manifest's <c>config.rotary_dim</c>), and
/// configs that used to crash the model's constructor or load with a null family are refused.
/// </summary>
public sealed class ConfigKeyErrorTests
{
    private static string WriteHf(TempDir tmp, TinyModelFiles.HfModel model, Action<JsonObject> edit)
    {
        string dir = tmp.Sub(model.Name);
        var config = (JsonObject)model.Config.DeepClone();
        edit(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), TinyModelFiles.SafeTensorsBytes(model.Tensors()));
        return dir;
    }

    private static TinyModelFiles.HfModel Base(string name) => TinyModelFiles.Architectures().Single(m => m.Name == name);

    [Theory]
    [InlineData("llama3", "rope_theta", "0", "RotaryBase must be positive, got 0")]
    [InlineData("gpt_neox", "rotary_emb_base", "-1", "RotaryBase must be positive, got -1")]
    [InlineData("bert-mlm", "num_attention_heads", "3", "DModel 8 is not divisible by NHeads 3")]
    [InlineData("mistral", "num_key_value_heads", "3", "NHeads 2 must be a multiple of NKvHeads 3")]
    [InlineData("qwen3", "head_dim", "3", "RotaryDim 3 must be even and at most DHead 3")]
    [InlineData("llama3", "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1, \"original_max_position_embeddings\": 4}",
        "0 < LowFreqFactor < HighFreqFactor")]
    public void An_invalid_config_json_is_reported_at_the_key_it_came_from(string model, string key, string value, string problem)
    {
        using var tmp = new TempDir();
        string dir = WriteHf(tmp, Base(model), c => c[key] = JsonNode.Parse(value));
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Equal(Path.Combine(dir, "config.json"), ex.FilePath);
        Assert.Equal(key, ex.TensorName);
        Assert.Contains(problem, ex.Message);
    }

    [Fact]
    public void Qwen_max_window_layers_0_slides_on_every_layer_as_transformers_reads_it()
    {
        using var tmp = new TempDir();
        string dir = WriteHf(tmp, Base("qwen3"), c => c["max_window_layers"] = 0);
        using var loaded = ModelLoader.Load(dir);
        Assert.Equal(4, loaded.Model.Config.WindowOf(0));
        Assert.Equal(4, loaded.Model.Config.WindowOf(1));
    }

    [Theory]
    [InlineData("gemma2-like", "family", "null", "config.family", "Family must be set")]
    // Was an OverflowException from the rotary tables: a negative rotary_dim passed the "even and at most d_head" check.
    [InlineData("neox-like", "rotary_dim", "-2", "config.rotary_dim", "RotaryDim must not be negative")]
    // Was an ArgumentException from the block's constructor: validation checked the norm but not the MLP.
    [InlineData("bert-like", "mlp", "\"None\"", "config.block", "post-norm blocks need a norm and an MLP")]
    [InlineData("gemma2-like", "attn_scores_soft_cap", "-1", "config.attn_scores_soft_cap", "AttnScoresSoftCap must not be negative")]
    public void An_invalid_manifest_config_is_refused_at_its_field(string model, string field, string value, string key, string problem)
    {
        using var tmp = new TempDir();
        var (_, manifest, weights) = TinyModelFiles.InterpArchitectures().Single(m => m.Name == model);
        var root = JsonNode.Parse(manifest)!.AsObject();
        root["config"]![field] = JsonNode.Parse(value);
        File.WriteAllText(tmp.File(InterpModelFormat.ManifestFile), root.ToJsonString());
        File.WriteAllBytes(tmp.File(InterpModelFormat.WeightsFile), weights);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        Assert.Equal(tmp.File(InterpModelFormat.ManifestFile), ex.FilePath);
        Assert.Equal(key, ex.TensorName);
        Assert.Contains(problem, ex.Message);
    }
}

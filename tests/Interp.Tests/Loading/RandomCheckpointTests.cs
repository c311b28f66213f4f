using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Loading;

/// <summary>
/// Random checkpoints written from a config alone hold exactly the tensors Hugging Face's own files of that config
/// hold (the shared tiny checkpoints, written by transformers, are the reference), and load; and a checkpoint loads
/// in the dtype asked for.
/// </summary>
public sealed class RandomCheckpointTests
{
    public static TheoryData<string> Folders => new()
    {
        "gpt2-tiny-random", "gpt_neox-tiny-random", "gemma2-tiny-random", "qwen2-tiny-random", "qwen3-tiny-random", "mistral-tiny-random", "llama-tiny-random",
    };

    // Buffers transformers saves that the model recomputes (the loader ignores them), and an lm_head tied to the embedding.
    private static bool Recomputed(string name) =>
        name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)
        || name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) || name.EndsWith(".attention.bias", StringComparison.Ordinal)
        || name.EndsWith(".attention.masked_bias", StringComparison.Ordinal);

    [Theory]
    [MemberData(nameof(Folders))]
    public void The_layout_of_a_config_is_the_tensors_transformers_writes_for_it(string folder)
    {
        string dir = SharedData.Model(folder);
        var layout = RandomCheckpoint.Layout(Path.Combine(dir, "config.json")).ToDictionary(t => t.Name, t => t.Shape);
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var written = file.Tensors.Where(t => !Recomputed(t.Name)).ToDictionary(t => t.Name, t => t.Shape);
        bool tied = !layout.ContainsKey("lm_head.weight") && written.ContainsKey("lm_head.weight");
        if (tied) written.Remove("lm_head.weight");
        Assert.Equal(written.Keys.Order(StringComparer.Ordinal), layout.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, shape) in written) Assert.Equal(shape, layout[name]);
    }

    [Theory]
    [MemberData(nameof(Folders))]
    public void A_random_checkpoint_of_the_config_loads_and_runs(string folder)
    {
        using var tmp = new TempDir();
        File.Copy(Path.Combine(SharedData.Model(folder), "config.json"), tmp.File("config.json"));
        RandomCheckpoint.Write(tmp.Path, Interp.Loading.SafeTensorsDType.BF16, seed: 3, gainOffset: folder.StartsWith("gemma", StringComparison.Ordinal) ? 0 : 1);
        using var file = SafeTensorsFile.Open(tmp.File("model.safetensors"));
        Assert.All(file.Tensors, t => Assert.Equal(Interp.Loading.SafeTensorsDType.BF16, t.DType));
        using var loaded = ModelLoader.Load(tmp.Path);
        using var scope = NewDisposeScope();
        var logits = loaded.Model.forward(tensor(new long[] { 1, 5, 9, 2 }, [1, 4]));
        Assert.True(logits.isfinite().all().item<bool>());
        // N(0, 0.02) weights: a weight matrix's spread, and a gain around its offset.
        var w = loaded.Model.Blocks[0].Attn.W_Q.detach();
        Assert.InRange(w.std().item<float>(), 0.018, 0.022);
    }

    [Fact]
    public void A_bfloat16_checkpoint_loads_in_bfloat16_with_the_float32_load_rounded_exactly()
    {
        string dir = SharedData.Model("gemma2-tiny-random");
        using var wide = ModelLoader.Load(dir);
        using var narrow = ModelLoader.Load(dir, new ModelLoadOptions { DType = ScalarType.BFloat16 });
        Assert.Equal(ScalarType.BFloat16, narrow.Model.DType);
        var expected = wide.Model.state_dict();
        foreach (var (name, value) in narrow.Model.state_dict())
        {
            Assert.Equal(ScalarType.BFloat16, value.dtype);
            Assert.True(expected[name].to(ScalarType.BFloat16).eq(value).all().item<bool>(), $"{name}: not the float32 load rounded to bfloat16");
        }
        using var scope = NewDisposeScope();
        var logits = narrow.Model.forward(tensor(new long[] { 1, 5, 9, 2 }, [1, 4]));
        Assert.Equal(ScalarType.BFloat16, logits.dtype);
        TensorAssert.Close(wide.Model.forward(tensor(new long[] { 1, 5, 9, 2 }, [1, 4])), logits.to(ScalarType.Float32), 0.1, "bf16 logits");
    }

    [Fact]
    public void A_config_without_or_with_an_unknown_model_type_is_refused_naming_the_key_and_the_file()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("config.json"), """{"hidden_size": 8}""");
        var missing = Assert.Throws<ModelFileException>(() => RandomCheckpoint.Layout(tmp.File("config.json")));
        Assert.Contains("model_type", missing.Message);
        Assert.Contains("config.json", missing.Message);
        File.WriteAllText(tmp.File("config.json"), """{"model_type": "mamba", "hidden_size": 8}""");
        var unknown = Assert.Throws<ModelFileException>(() => RandomCheckpoint.Layout(tmp.File("config.json")));
        Assert.Contains("unsupported model_type 'mamba'", unknown.Message);
        Assert.Contains("llama", unknown.Message);   // the supported types are listed
    }

    [Fact]
    public void Other_load_formats_convert_after_loading_and_a_non_float_dtype_is_refused()
    {
        string stories = SharedData.Model("stories260K/stories260K.bin");
        using var loaded = ModelLoader.Load(stories, new ModelLoadOptions { DType = ScalarType.Float64 });
        Assert.Equal(ScalarType.Float64, loaded.Model.DType);
        var ex = Assert.Throws<InterpException>(() => ModelLoader.Load(stories, new ModelLoadOptions { DType = ScalarType.Int64 }));
        Assert.Contains("ModelLoadOptions.DType", ex.Message);
        Assert.Contains("Int64", ex.Message);
    }
}

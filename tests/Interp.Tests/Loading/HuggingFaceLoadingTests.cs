using System.Text.Json;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Loading;

/// <summary>Hugging Face directories: GPT-2 and LLaMA names, prefixes, shards, dtypes, and every way they can be wrong.</summary>
public sealed class HuggingFaceLoadingTests
{
    private static Dictionary<string, Tensor> Gpt2TinyTensors()
    {
        using var file = SafeTensorsFile.Open(Path.Combine(TestModels.Gpt2TinyDir, "model.safetensors"));
        return file.Tensors.ToDictionary(t => t.Name, t => file.ReadTensor(t.Name));
    }

    private static Tensor ReferenceLogits() =>
        TensorAssert.ReadRawFloats(Path.Combine(TestModels.Gpt2TinyDir, "reference", "logits.f32"), 40, 1000);

    private static Tensor Logits(HookedTransformer model)
    {
        var ids = File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt")).Split(',').Select(s => long.Parse(s.Trim())).ToArray();
        return model.forward(tensor(ids, [1, ids.Length]))[0];
    }

    private static string Gpt2Dir(TempDir tmp, Func<Dictionary<string, Tensor>, Dictionary<string, Tensor>>? edit = null, SafeTensorsDType dtype = SafeTensorsDType.F32)
    {
        string dir = tmp.Sub("gpt2-" + Guid.NewGuid().ToString("N")[..6]);
        File.Copy(Path.Combine(TestModels.Gpt2TinyDir, "config.json"), Path.Combine(dir, "config.json"));
        var tensors = Gpt2TinyTensors();
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), edit is null ? tensors : edit(tensors), dtype: dtype);
        return dir;
    }

    [Fact]
    public void Gpt2_with_transformer_prefix_in_shards_with_mask_buffers_matches_the_reference()
    {
        using var tmp = new TempDir();
        using var scope = NewDisposeScope();
        var tensors = Gpt2TinyTensors().ToDictionary(kv => "transformer." + kv.Key, kv => kv.Value);
        for (int l = 0; l < 3; l++)
        {
            tensors[$"transformer.h.{l}.attn.bias"] = ones(1, 1, 128, 128).tril();
            tensors[$"transformer.h.{l}.attn.masked_bias"] = tensor(-1e4f);
        }
        var names = tensors.Keys.Order().ToArray();
        var shards = new[] { names.Take(names.Length / 2), names.Skip(names.Length / 2) };
        var weightMap = new Dictionary<string, string>();
        for (int s = 0; s < 2; s++)
        {
            string file = $"model-0000{s + 1}-of-00002.safetensors";
            SafeTensorsWriter.Write(tmp.File(file), shards[s].Select(n => KeyValuePair.Create(n, tensors[n])));
            foreach (var n in shards[s]) weightMap[n] = file;
        }
        File.WriteAllText(tmp.File("model.safetensors.index.json"), JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = weightMap }));
        File.Copy(Path.Combine(TestModels.Gpt2TinyDir, "config.json"), tmp.File("config.json"));

        using var loaded = ModelLoader.Load(tmp.Path);
        TensorAssert.Close(ReferenceLogits(), Logits(loaded.Model), 2e-4, "sharded, prefixed GPT-2");
    }

    [Theory]
    [InlineData(SafeTensorsDType.F16, ScalarType.Float16)]
    [InlineData(SafeTensorsDType.BF16, ScalarType.BFloat16)]
    public void Half_precision_checkpoints_load_as_their_rounded_float32_values(SafeTensorsDType dtype, ScalarType torchType)
    {
        using var tmp = new TempDir();
        using var scope = NewDisposeScope();
        using var half = ModelLoader.Load(Gpt2Dir(tmp, dtype: dtype));
        // Reference: the same weights rounded by torch's own float16/bfloat16 conversion, stored as float32.
        using var rounded = ModelLoader.Load(Gpt2Dir(tmp, t => t.ToDictionary(kv => kv.Key, kv => kv.Value.to(torchType).to(ScalarType.Float32))));
        TensorAssert.Close(Logits(rounded.Model), Logits(half.Model), 1e-5, dtype.ToString());
        Assert.True(TensorAssert.MaxAbsDiff(ReferenceLogits(), Logits(half.Model)) < 0.5, "half-precision logits stay near the float32 ones");
    }

    [Fact]
    public void Llama_checkpoint_in_hugging_face_layout_matches_the_llama2c_reference()
    {
        // Convert stories260K to the Hugging Face layout exactly as transformers' convert_llama_weights_to_hf does:
        // q/k rows permuted so that rotating halves equals llama2.c's rotation of adjacent pairs.
        using var tmp = new TempDir();
        using var scope = NewDisposeScope();
        using var source = ModelLoader.Load(TestModels.StoriesBin);
        var c = source.Model.Config;
        int d = c.DModel, h = c.NHeads, kv = c.KvHeads, e = c.HeadDim;
        Tensor Permute(Tensor w, int heads) => w.view(heads, e / 2, 2, d).transpose(1, 2).reshape(heads * e, d);
        var hf = new Dictionary<string, Tensor>
        {
            ["model.embed_tokens.weight"] = source.Model.Embed.W_E,
            ["model.norm.weight"] = source.Model.LnFinal!.W,
        };
        for (int l = 0; l < c.NLayers; l++)
        {
            var b = source.Model.Blocks[l];
            string p = $"model.layers.{l}.";
            hf[p + "input_layernorm.weight"] = b.Ln1!.W;
            hf[p + "post_attention_layernorm.weight"] = b.Ln2!.W;
            hf[p + "self_attn.q_proj.weight"] = Permute(b.Attn.W_Q.transpose(1, 2).reshape(h * e, d), h);
            hf[p + "self_attn.k_proj.weight"] = Permute(b.Attn.W_K.transpose(1, 2).reshape(kv * e, d), kv);
            hf[p + "self_attn.v_proj.weight"] = b.Attn.W_V.transpose(1, 2).reshape(kv * e, d);
            hf[p + "self_attn.o_proj.weight"] = b.Attn.W_O.reshape(h * e, d).t();
            hf[p + "mlp.gate_proj.weight"] = b.Mlp!.W_gate!.t();
            hf[p + "mlp.up_proj.weight"] = b.Mlp.W_in.t();
            hf[p + "mlp.down_proj.weight"] = b.Mlp.W_out.t();
        }
        SafeTensorsWriter.Write(tmp.File("model.safetensors"), hf, dtype: SafeTensorsDType.F32);
        File.WriteAllText(tmp.File("config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model_type"] = "llama", ["hidden_size"] = d, ["intermediate_size"] = c.DMlp, ["num_hidden_layers"] = c.NLayers,
            ["num_attention_heads"] = h, ["num_key_value_heads"] = kv, ["vocab_size"] = c.DVocab, ["max_position_embeddings"] = c.NCtx,
            ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0, ["hidden_act"] = "silu", ["tie_word_embeddings"] = true,
        }));

        using var loaded = ModelLoader.Load(tmp.Path);
        Assert.Equal(RotaryStyle.Halves, loaded.Model.Config.RotaryStyle);
        Assert.Equal("huggingface-llama", loaded.Format);
        var reference = new Llama2CReference(TestModels.StoriesBin);
        int[] ids = [1, 403, 261, 263, 400, 29, 281, 50, 11, 301, 9, 7, 120, 450, 3, 299, 333, 17, 64, 128];
        var expected = tensor(reference.Forward(ids).SelectMany(r => r).ToArray(), [ids.Length, c.DVocab]);
        var logits = loaded.Model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]))[0];
        TensorAssert.Close(expected, logits, 2e-4, "HF LLaMA (halves) vs llama2.c (adjacent pairs)");
    }

    [Fact]
    public void Missing_tensor_names_file_and_tensor()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp, t => { t.Remove("h.1.mlp.c_fc.bias"); return t; });
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Equal("h.1.mlp.c_fc.bias", ex.TensorName);
        Assert.Contains(dir, ex.Message);
        Assert.Contains("missing", ex.Message);
    }

    [Fact]
    public void Misshapen_tensor_reports_both_shapes()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp, t => { t["h.0.attn.c_proj.weight"] = zeros(64, 32); return t; });
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Equal("h.0.attn.c_proj.weight", ex.TensorName);
        Assert.Contains("[64, 32]", ex.Message);
        Assert.Contains("[64, 64]", ex.Message);
        Assert.Contains("model.safetensors", ex.Message);
    }

    [Fact]
    public void Config_with_fewer_layers_than_the_weights_is_a_disagreement()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp);
        var config = File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"n_layer\": 3", "\"n_layer\": 2");
        Assert.Contains("\"n_layer\": 2", config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.StartsWith("h.2.", ex.TensorName);
        Assert.Contains("config disagrees with the weights", ex.Message);
    }

    [Fact]
    public void Nan_weights_are_rejected_with_the_tensor_name()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp, t => { t["ln_f.weight"] = full(64, float.NaN); return t; });
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Equal("ln_final.w", ex.TensorName);
        Assert.Contains("NaN", ex.Message);
    }

    [Theory]
    [InlineData("{\"model_type\": \"t5\"}", "model_type", "unsupported model_type 't5'")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_embd\": \"big\"}", "n_embd", "must be a positive 32-bit integer")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_embd\": 64}", "n_layer", "missing from config.json")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_embd\": 64, \"n_layer\": 1, \"n_head\": 4, \"vocab_size\": 10, \"n_positions\": 8, \"activation_function\": \"swoosh\"}", "activation_function", "unsupported activation")]
    [InlineData("{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"yarn\"}}", "rope_scaling.rope_type", "'yarn' is not supported")]
    [InlineData("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}", "rope_scaling.low_freq_factor", "missing")]
    [InlineData("{\"model_type\": ", null, "not valid JSON")]
    [InlineData("[1, 2]", null, "not a JSON object")]
    public void Bad_config_json_names_the_key(string json, string? key, string phrase)
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("config.json"), json);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        Assert.Equal(key, ex.TensorName);
        Assert.Contains(phrase, ex.Message);
        Assert.Contains("config.json", ex.Message);
    }

    [Fact]
    public void Shard_names_cannot_leave_the_model_directory()
    {
        using var tmp = new TempDir();
        string dir = tmp.Sub("model");
        File.Copy(Path.Combine(TestModels.Gpt2TinyDir, "config.json"), Path.Combine(dir, "config.json"));
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), "{\"weight_map\": {\"wte.weight\": \"../outside.safetensors\"}}");
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Contains("not a plain file name inside the model directory", ex.Message);
        Assert.Equal("wte.weight", ex.TensorName);
    }

    [Fact]
    public void Directory_without_weights_or_missing_path_is_a_clear_error()
    {
        using var tmp = new TempDir();
        File.Copy(Path.Combine(TestModels.Gpt2TinyDir, "config.json"), tmp.File("config.json"));
        Assert.Contains("no model.safetensors", Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path)).Message);
        Assert.Contains("no such file or directory", Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.File("nope"))).Message);
    }
}

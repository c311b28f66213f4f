using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Reliability;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Loading;

/// <summary>
/// The bugs the fuzzers found, pinned down one by one, the load budget that keeps a small file from allocating a big
/// model, and the rule that model files are data: nothing in a model folder is executed or deserialised as code.
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class HostileModelFileTests
{
    private static string Gpt2Dir(TempDir tmp, Action<JsonObject>? editConfig = null)
    {
        string dir = tmp.Sub("gpt2-" + Guid.NewGuid().ToString("N")[..6]);
        var config = TinyModelFiles.Gpt2Config();
        editConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), TinyModelFiles.SafeTensorsBytes(TinyModelFiles.Gpt2Tensors()));
        return dir;
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("attn-only-sinusoidal")]
    public void Load_budget_counts_exactly_the_parameters_and_buffers_a_model_allocates(string name)
    {
        var cfg = name switch { "gpt2" => TestModels.Gpt2Like, "llama" => TestModels.LlamaLike, _ => TestModels.AttnOnlySinusoidal };
        using var model = new HookedTransformer(cfg);
        Assert.Equal(LoadBudget.Parameters(cfg), (Int128)model.ParameterCount);
        // Buffers by hand: LLaMA has zero biases (rotary angles are computed per pass, no table); the sinusoidal model its table.
        long d = cfg.DModel, e = cfg.HeadDim;
        long expectedBuffers = name switch
        {
            "gpt2" => 0,
            "llama" => 2 * ((cfg.NHeads * e + 2 * cfg.KvHeads * e + d) + (cfg.DMlp + d) + 2 * d) + d + cfg.DVocab,
            _ => cfg.NCtx * d,
        };
        Assert.Equal(expectedBuffers, (long)LoadBudget.Buffers(cfg));
    }

    [Theory]
    [InlineData("n_layer", 60_000L, "describes a model of")]
    [InlineData("n_embd", 16_384L, "describes a model of")]
    [InlineData("vocab_size", 500_000_000L, "describes a model of")]
    public void A_small_checkpoint_with_a_huge_config_is_rejected_before_anything_is_allocated(string key, long value, string phrase)
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp, c => c[key] = value);
        long rss = PeakRss.Reset();
        var watch = Stopwatch.StartNew();
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.True(watch.ElapsedMilliseconds < 2000, $"took {watch.ElapsedMilliseconds} ms");
        Assert.True(PeakRss.Read() - rss < 64L << 20, $"peak RSS grew by {(PeakRss.Read() - rss) >> 20} MiB");
        Assert.Contains(phrase, ex.Message);
        Assert.Contains("config.json", ex.Message);
        Assert.Contains("checked before allocating anything", ex.Message);
    }

    [Fact]
    public void A_huge_context_for_a_rotary_model_costs_no_memory()
    {
        // Rotary angles are computed per pass from the positions: no n_ctx-long table (Llama 3's 131,072 positions would
        // otherwise cost every layer n_ctx × d_head floats).
        using var tmp = new TempDir();
        string dir = tmp.Sub("llama");
        var config = TinyModelFiles.LlamaConfig();
        config["max_position_embeddings"] = 1 << 26;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), TinyModelFiles.SafeTensorsBytes(TinyModelFiles.LlamaTensors()));
        long rss = PeakRss.Reset();
        using var loaded = ModelLoader.Load(dir);
        Assert.Equal(1 << 26, loaded.Model.Config.NCtx);
        Assert.True(PeakRss.Read() - rss < 64L << 20, $"peak RSS grew by {(PeakRss.Read() - rss) >> 20} MiB");
    }

    [Fact]
    public void Duplicate_keys_in_json_files_are_errors_that_name_the_file()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp);
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, "{\"n_layer\": 1, " + File.ReadAllText(path)[1..]);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Equal(path, ex.FilePath);
        Assert.Contains("n_layer", ex.Message);

        using var model = TestModels.Random(TestModels.Gpt2Like);
        string interp = tmp.Sub("interp");
        InterpModelFormat.Save(model, interp);
        string manifest = Path.Combine(interp, InterpModelFormat.ManifestFile);
        File.WriteAllText(manifest, "{\"version\": 1, " + File.ReadAllText(manifest).TrimStart()[1..]);
        ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(interp));
        Assert.Equal(manifest, ex.FilePath);
        Assert.Contains("is not a valid interp-model manifest", ex.Message);
    }

    [Fact]
    public void Escaped_lone_surrogates_in_json_are_errors_not_crashes()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp);
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"gelu_new\"", "\"\\ud800\""));
        Assert.Contains("not valid Unicode", Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir)).Message);

        string st = tmp.File("surrogate.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"\\udc00\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}");
        var bytes = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(st, bytes);
        var ex = Assert.Throws<ModelFileException>(() => SafeTensorsFile.Open(st).Dispose());
        Assert.Equal(st, ex.FilePath);
        Assert.Contains("not valid Unicode", ex.Message);
    }

    [Fact]
    public void Enum_values_in_a_manifest_must_be_names_not_numbers()
    {
        using var tmp = new TempDir();
        using var model = TestModels.Random(TestModels.Gpt2Like);
        InterpModelFormat.Save(model, tmp.Path);
        string manifest = tmp.File(InterpModelFormat.ManifestFile);
        File.WriteAllText(manifest, File.ReadAllText(manifest).Replace("\"act\": \"GeluTanh\"", "\"act\": 598"));
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        Assert.Contains("is not a valid interp-model manifest", ex.Message);
        Assert.Contains("act", ex.Message);
    }

    [Fact]
    public void A_damaged_weights_file_of_the_own_format_fails_its_recorded_hash()
    {
        using var tmp = new TempDir();
        using var model = TestModels.Random(TestModels.Gpt2Like);
        InterpModelFormat.Save(model, tmp.Path);
        string weights = tmp.File(InterpModelFormat.WeightsFile);
        var bytes = File.ReadAllBytes(weights);
        bytes[^3] ^= 0x10; // one flipped bit in the last weight: still a valid file, a different model
        File.WriteAllBytes(weights, bytes);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        Assert.Equal(weights, ex.FilePath);
        Assert.Contains("differs from the weights_sha256", ex.Message);
    }

    [Fact]
    public void Integer_dtypes_are_not_weights()
    {
        using var tmp = new TempDir();
        string dir = tmp.Sub("gpt2");
        File.WriteAllText(Path.Combine(dir, "config.json"), TinyModelFiles.Gpt2Config().ToJsonString());
        var bytes = TinyModelFiles.SafeTensorsBytes(TinyModelFiles.Gpt2Tensors());
        long n = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        // Same byte size: F32 → I32 leaves every offset valid, so only the dtype check can catch it.
        var header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        int at = header.IndexOf("\"ln_f.bias\"", StringComparison.Ordinal);
        int dtype = header.IndexOf("\"F32\"", at, StringComparison.Ordinal);
        Encoding.UTF8.GetBytes("\"I32\"").CopyTo(bytes, 8 + dtype);
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes);
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Equal("ln_f.bias", ex.TensorName);
        Assert.Contains("has dtype I32, but model weights must be floating point", ex.Message);
    }

    [Theory]
    [InlineData("a\u0000b")]
    [InlineData("..")]
    [InlineData("sub/tok.bin")]
    [InlineData("sub\\tok.bin")]
    public void Tokenizer_and_shard_names_must_be_plain_file_names(string name)
    {
        Assert.False(FileNames.IsPlain(name));
        using var tmp = new TempDir();
        using var model = TestModels.Random(TestModels.Gpt2Like);
        InterpModelFormat.Save(model, tmp.Path, tokenizer: name);
        Assert.Contains("plain file name", Assert.Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path)).Message);
    }

    [Fact]
    public void Oversized_json_files_are_refused_without_being_read()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp);
        // A sparse 17 MiB config.json and index: refused by their size alone.
        using (var f = File.Open(Path.Combine(dir, "config.json"), FileMode.Create)) f.SetLength(17L << 20);
        Assert.Contains("refusing anything over 16 MiB", Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir)).Message);

        string sharded = tmp.Sub("sharded");
        File.WriteAllText(Path.Combine(sharded, "config.json"), TinyModelFiles.Gpt2Config().ToJsonString());
        using (var f = File.Open(Path.Combine(sharded, "model.safetensors.index.json"), FileMode.Create)) f.SetLength(17L << 20);
        Assert.Contains("refusing an index over 16 MiB", Assert.Throws<ModelFileException>(() => ModelLoader.Load(sharded)).Message);
    }

    [Fact]
    public void Model_files_are_data_code_beside_them_is_never_run_or_deserialised()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Dir(tmp, c =>
        {
            // What Hugging Face's trust_remote_code would import and run.
            c["auto_map"] = new JsonObject { ["AutoModelForCausalLM"] = "modeling_evil.EvilModel" };
            c["trust_remote_code"] = true;
        });
        string marker = tmp.File("ran");
        File.WriteAllText(Path.Combine(dir, "modeling_evil.py"), $"open('{marker}', 'w').write('pwned')\n");
        File.WriteAllText(Path.Combine(dir, "setup.sh"), $"#!/bin/sh\ntouch {marker}\n");
        File.WriteAllBytes(Path.Combine(dir, "evil.dll"), [0x4D, 0x5A, 0x90, 0x00]);
        // A pickle (pytorch_model.bin) whose opcodes would call os.system on unpickling; it must never be opened.
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), Encoding.ASCII.GetBytes($"cos\nsystem\n(S'touch {marker}'\ntR."));
        using (var loaded = ModelLoader.Load(dir)) Assert.Equal("huggingface-gpt2", loaded.Format);
        Assert.False(File.Exists(marker));

        // Without safetensors weights, a pickle is refused by name, not read.
        File.Delete(Path.Combine(dir, "model.safetensors"));
        var ex = Assert.Throws<ModelFileException>(() => ModelLoader.Load(dir));
        Assert.Contains("no model.safetensors", ex.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void Loading_code_has_no_way_to_run_code_or_deserialise_types()
    {
        // The loaders, tokenizers and experiment plumbing never start processes, load assemblies, create types by name
        // or use type-resolving deserialisers; JSON is read into fixed records only.
        string root = Interp.Tests.Experiments.ExperimentScriptTests.RepoRoot();
        string[] forbidden = ["Process.Start", "ProcessStartInfo", "Assembly.Load", "Activator.CreateInstance", "Type.GetType(", "BinaryFormatter",
            "TypeNameHandling", "JsonDerivedType", "AppDomain", "DllImport", "LibraryImport", "NativeLibrary"];
        var files = new[] { "src/Interp/Loading", "src/Interp/Tokenizers", "src/Interp/Prompts", "src/Interp.Run/Experiments" }
            .SelectMany(d => Directory.GetFiles(Path.Combine(root, d), "*.cs", SearchOption.AllDirectories)).ToArray();
        Assert.NotEmpty(files);
        foreach (var file in files)
        {
            string text = File.ReadAllText(file);
            foreach (var word in forbidden)
                Assert.False(text.Contains(word, StringComparison.Ordinal), $"{Path.GetRelativePath(root, file)} uses {word}");
        }
    }
}

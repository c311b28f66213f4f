using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using CsCheck;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Saes;
using Interp.Tests.Support;
using Xunit.Abstractions;

namespace Interp.Tests.Reliability;

/// <summary>
/// <see cref="Sae.Load"/> against hostile SAE folders, as <see cref="LoadingFuzzTests"/> does for models: seeded
/// mutations of <c>cfg.json</c> (wrong types, missing keys, huge numbers, deep nesting, wrong architectures, transcoders
/// without d_out, bad k, …) and of <c>sae_weights.safetensors</c> (truncations, lying headers, shapes and dtypes, huge
/// declared sizes, poisoned data, scaling factors) of the shared SAE and of small SAEs of every other architecture.
/// Each case loads (then runs a forward pass whose stages have the config's shapes) or ends in a
/// <see cref="ModelFileException"/> naming a file of the folder, within the time and memory bounds of <see cref="Fuzz"/>.
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class SaeFuzzTests(ITestOutputHelper output)
{
    /// <summary>Cases per target: 3,000 (an SAE loads in about a millisecond; <c>INTERP_FUZZ_CASES</c> overrides it).</summary>
    private static int Cases => Fuzz.CasesOr(3_000);

    private static string SharedSae => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");

    private sealed record Base(string Dir, byte[] Config, byte[][] Weights);

    /// <summary>The shared SAE and one small SAE of each other architecture, each with three weight files: as saved, with
    /// a scaling_factor of ones (dropped) and with one of twos (refused).</summary>
    private static Base[] Bases(string root)
    {
        var list = new List<Base>();
        void Add(string name, byte[] config, Func<(string, float[], long[])[], byte[]> weights, int dSae)
        {
            string dir = Path.Combine(root, name);
            Directory.CreateDirectory(dir);
            var ones = Enumerable.Repeat(1f, dSae).ToArray();
            var twos = Enumerable.Repeat(2f, dSae).ToArray();
            list.Add(new Base(dir, config, [weights([]), weights([("scaling_factor", ones, [dSae])]), weights([("scaling_factor", twos, [dSae])])]));
        }
        Add("shared", File.ReadAllBytes(Path.Combine(SharedSae, Sae.ConfigFile)), extra =>
        {
            if (extra.Length == 0) return File.ReadAllBytes(Path.Combine(SharedSae, Sae.WeightsFile));
            using var sae = Sae.Load(SharedSae);
            var t = sae.StateDict.ToDictionary(p => p.Key, p => p.Value.data<float>().ToArray());
            return WeightBytes(root, new SaeSpec("standard", DIn: 64, DSae: 256), t, extra);
        }, 256);
        SaeSpec[] specs =
        [
            new("topk", "layer_norm", K: 5, Rescale: true), new("gated", "constant_norm_rescale"), new("jumprelu", "expected_average_only_in", HookZ: true),
            new("skip_transcoder", ApplyBDec: false), new("jumprelu_transcoder", ApplyBDec: false),
        ];
        for (int i = 0; i < specs.Length; i++)
        {
            var spec = specs[i];
            var t = SaeFiles.RandomTensors(spec, 100 + i);
            Add(spec.Architecture, Encoding.UTF8.GetBytes(SaeFiles.V6Config(spec, hookNameOutInMetadata: i % 2 == 0).ToJsonString()),
                extra => WeightBytes(root, spec, t, extra), spec.DSae);
        }
        return list.ToArray();
    }

    private static byte[] WeightBytes(string root, SaeSpec spec, Dictionary<string, float[]> t, (string, float[], long[])[] extra)
    {
        string path = Path.Combine(root, "scratch.safetensors");
        SaeFiles.WriteWeights(path, spec, t, extra);
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    /// <summary>Loads the folder; a loaded SAE has every tensor its config implies, and a forward pass gives the config's shapes.</summary>
    private static void LoadAndCheck(string dir)
    {
        using var sae = Sae.Load(dir);
        var c = sae.Config;
        Assert.Equal(Sae.TensorNames(c), sae.StateDict.Select(p => p.Key));
        Assert.True(c.DIn > 0 && c.DSae > 0 && c.DOut > 0);
        if (c.Architecture == SaeArchitecture.TopK) Assert.InRange(c.K!.Value, 1, c.DSae);
        Assert.NotNull(c.HookName);
        if (c.IsTranscoder) Assert.False(string.IsNullOrEmpty(c.HookNameOut));
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var gen = new TorchSharp.torch.Generator(3);
        var x = TorchSharp.torch.randn([2, c.DIn], generator: gen);
        using var stages = sae.Forward(x);
        Assert.Equal([2L, c.DSae], stages.ActsPost.shape);
        Assert.Equal([2L, c.DOut], stages.Output.shape);
        if (c.Architecture == SaeArchitecture.TopK)
        {
            using var l0 = Sae.L0(stages.ActsPost);
            Assert.All(l0.data<long>().ToArray(), n => Assert.True(n <= c.K));
        }
        using var finite = stages.Output.isfinite().all();
        Fuzz.CountForward(finite.item<bool>());
    }

    private static long Write(Base b, byte[] config, byte[] weights)
    {
        File.WriteAllBytes(Path.Combine(b.Dir, Sae.ConfigFile), config);
        File.WriteAllBytes(Path.Combine(b.Dir, Sae.WeightsFile), weights);
        return config.Length + weights.Length;
    }

    /// <summary>SAELens's keys with values that make sense for them, their near misses and edge numbers.</summary>
    private static readonly Dictionary<string, string[]> Values = new()
    {
        ["architecture"] = ["\"standard\"", "\"jumprelu\"", "\"topk\"", "\"gated\"", "\"transcoder\"", "\"skip_transcoder\"", "\"jumprelu_transcoder\"",
            "\"batchtopk\"", "\"matryoshka_batchtopk\"", "\"Standard\"", "\"\"", "null", "1", "[\"standard\"]"],
        ["d_in"] = ["64", "12", "63", "65", "1", "0", "-1", "1e12", "2147483648", "64.0", "6.4e1", "\"64\"", "null", "true"],
        ["d_sae"] = ["256", "32", "255", "257", "1", "0", "-32", "1073741824", "1e12", "32.5", "\"32\"", "null"],
        ["d_out"] = ["10", "64", "12", "9", "0", "-10", "1e12", "2147483647", "\"10\"", "null"],
        ["k"] = ["1", "5", "32", "33", "256", "257", "0", "-3", "1e12", "2.5", "\"5\"", "null", "true"],
        ["rescale_acts_by_decoder_norm"] = ["true", "false", "null", "1", "\"true\""],
        ["apply_b_dec_to_input"] = ["true", "false", "null", "0", "\"false\""],
        ["normalize_activations"] = ["\"none\"", "\"expected_average_only_in\"", "\"constant_norm_rescale\"", "\"layer_norm\"", "true", "false", "null",
            "\"bogus\"", "\"None\"", "1", "{}"],
        ["reshape_activations"] = ["\"none\"", "\"hook_z\"", "\"hook_q\"", "null", "true", "\"\""],
        ["dtype"] = ["\"float32\"", "\"torch.float32\"", "\"float16\"", "\"bfloat16\"", "\"float64\"", "\"int8\"", "\"torch.int64\"", "\"\"", "3", "null"],
        ["device"] = ["\"cpu\"", "\"cuda:0\"", "\"mps\"", "\"\"", "7", "null"],
        ["hook_name_out"] = ["\"blocks.0.hook_mlp_out\"", "\"blocks.1.hook_mlp_out\"", "\"\"", "null", "5", "[]"],
        ["hook_name"] = ["\"blocks.0.hook_resid_pre\"", "\"blocks.0.attn.hook_z\"", "\"\"", "null", "17", "{}"],
        ["hook_point"] = ["\"blocks.0.hook_resid_pre\"", "\"blocks.3.attn.hook_z\"", "\"\"", "0"],
        ["activation_fn_str"] = ["\"relu\"", "\"topk\"", "\"gelu\"", "\"\"", "null", "1"],
        ["activation_fn"] = ["\"relu\"", "\"topk\"", "\"tanh-relu\"", "null", "[]"],
        ["activation_fn_kwargs"] = ["{\"k\": 3}", "{\"k\": -1}", "{\"k\": 1e12}", "{\"k\": \"3\"}", "{}", "[]", "\"k=3\"", "null"],
        ["finetuning_scaling_factor"] = ["true", "false", "null", "1"],
        ["sae_lens_version"] = ["\"6.18.0\"", "\"5.9.1\"", "\"2.0.0\"", "\"x\"", "\"\"", "6", "null", "\"99999999999999999999.0\""],
        ["metadata"] = ["{}", "null", "[]", "\"x\"", "{\"hook_name\": 3}", "{\"hook_name\": \"blocks.0.hook_resid_pre\"}"],
        ["meta"] = ["{\"hook_name\": \"blocks.0.hook_resid_pre\"}", "[]", "null"],
    };

    private static readonly string[] MetadataKeys = ["hook_name", "model_name", "sae_lens_version", "hook_name_out", "hook_head_index", "context_size", "prepend_bos"];

    private static readonly string[] EdgeNumbers = ["1e400", "-1e400", "123456789012345678901234567890", "-0", "0e0", "4.0", "2147483648", "-2147483649", "1e-400"];

    private static Mutation Set(string path, string value) => new($"set {path} = {(value.Length > 40 ? value[..40] + "…" : value)}", b => Mutations.EditObject(b, o =>
    {
        int dot = path.IndexOf('.');
        if (dot < 0) o[path] = Mutations.ParseValue(value);
        else if (o[path[..dot]] is JsonObject inner) inner[path[(dot + 1)..]] = Mutations.ParseValue(value);
    }));

    private static Mutation Remove(string path) => new($"remove {path}", b => Mutations.EditObject(b, o =>
    {
        int dot = path.IndexOf('.');
        if (dot < 0) o.Remove(path);
        else if (o[path[..dot]] is JsonObject inner) inner.Remove(path[(dot + 1)..]);
    }));

    private static Gen<Mutation> ConfigEdit()
    {
        var keys = Values.Keys.ToArray();
        return Gen.Frequency(
            (8, Gen.OneOf(keys).SelectMany(k => Gen.OneOf(Values[k]).Select(v => Set(k, v)))),
            (2, Gen.Select(Gen.OneOf("d_in", "d_sae", "d_out", "k"), Gen.OneOf(EdgeNumbers), Set)),
            (3, Gen.Select(Gen.OneOf(MetadataKeys), Gen.Frequency((3, Mutations.HostileValue), (1, Gen.OneOf(Values["hook_name"]))), (k, v) => Set($"metadata.{k}", v))),
            (1, Gen.OneOf(MetadataKeys).Select(k => Remove($"metadata.{k}"))),
            (3, Gen.OneOf(keys).Select(Remove)),
            (3, Mutations.Json(keys)),
            (1, Mutations.Bytes()));
    }

    [Fact]
    public void Sae_cfg_json_with_wrong_types_missing_keys_huge_numbers_and_wrong_architectures()
    {
        using var tmp = Fuzz.ScratchDir("sae-config");
        var bases = Bases(tmp.Path);
        foreach (var b in bases)
        {
            Write(b, b.Config, b.Weights[0]);
            LoadAndCheck(b.Dir);   // every base is valid
            Write(b, b.Config, b.Weights[1]);
            LoadAndCheck(b.Dir);   // a scaling factor of ones is dropped
        }
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(ConfigEdit()), Gen.Frequency((8, Gen.Const(0)), (1, Gen.Const(1)), (1, Gen.Const(2))));
        Fuzz.Run("sae-cfg.json", seed: 20_251_301, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: {Mutations.Describe(c.Item2)}; weights #{c.Item3}",
            c =>
            {
                var b = bases[c.Item1];
                long n = Write(b, Mutations.Apply(b.Config, c.Item2), b.Weights[c.Item3]);
                LoadAndCheck(b.Dir);
                return n;
            }, output, Cases);
    }

    /// <summary>A tensor whose header declares 10¹² elements with data_offsets that agree with it (4 TB): must be refused
    /// from the header, without allocating it.</summary>
    private static Mutation Huge(int index, bool oneDimensional) => new($"tensor #{index}: declared 1e12 elements ({(oneDimensional ? "1-D" : "2-D")})", file =>
    {
        if (file.Length < 8) return file;
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (n > (ulong)(file.Length - 8)) return file;
        byte[] text;
        // An earlier edit may have left a header that is not JSON, or names that are not valid Unicode: leave the file.
        try
        {
            var header = JsonNode.Parse(file.AsSpan(8, (int)n)) as JsonObject ?? throw new FormatException();
            var names = header.Where(p => p.Key != "__metadata__" && p.Value is JsonObject).Select(p => p.Key).ToArray();
            if (names.Length == 0) return file;
            var entry = (JsonObject)header[names[index % names.Length]]!;
            long begin = entry["data_offsets"] is JsonArray { Count: 2 } a && a[0] is JsonValue v && v.TryGetValue(out long x) ? x : 0;
            entry["shape"] = oneDimensional ? new JsonArray(1_000_000_000_000L) : new JsonArray(1_000_000L, 1_000_000L);
            entry["dtype"] = "F32";
            entry["data_offsets"] = new JsonArray(begin, begin + 4_000_000_000_000L);
            text = Encoding.UTF8.GetBytes(header.ToJsonString());
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or ArgumentException or InvalidOperationException) { return file; }
        var result = new byte[8 + text.Length + (file.Length - 8 - (int)n)];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)text.Length);
        text.CopyTo(result, 8);
        file.AsSpan(8 + (int)n).CopyTo(result.AsSpan(8 + text.Length));
        return result;
    });

    [Fact]
    public void Sae_weights_with_truncations_lying_headers_huge_declared_sizes_and_poisoned_data()
    {
        using var tmp = Fuzz.ScratchDir("sae-weights");
        var bases = Bases(tmp.Path);
        foreach (var b in bases)
        {
            Write(b, b.Config, b.Weights[0]);
            LoadAndCheck(b.Dir);
        }
        var weightEdit = Gen.Frequency(
            (5, SafeTensorsMutations.Structure()),
            (2, SafeTensorsMutations.Data()),
            (2, Mutations.Bytes()),
            (1, Gen.Select(Gen.Int[0, 999], Gen.Bool, Huge)));
        // Now and then the config agrees with a huge size (d_sae 2^30): the weights must still be refused from their header.
        var configEdit = Gen.Frequency((9, Gen.Const(Array.Empty<Mutation>())),
            (1, Gen.OneOf(Set("d_sae", "1073741824"), Set("d_in", "1000000"), Set("d_out", "1000000"), Set("k", "1"))
                .Select(m => new[] { m })));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(weightEdit), configEdit, Gen.Int[0, 2]);
        Fuzz.Run("sae-safetensors", seed: 20_251_302, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: weights #{c.Item4}: {Mutations.Describe(c.Item2)}" +
                 (c.Item3.Length > 0 ? $"; config: {Mutations.Describe(c.Item3)}" : ""),
            c =>
            {
                var b = bases[c.Item1];
                long n = Write(b, Mutations.Apply(b.Config, c.Item3), Mutations.Apply(b.Weights[c.Item4], c.Item2));
                LoadAndCheck(b.Dir);
                return n;
            }, output, Cases);
    }

    /// <summary>Single hostile edits whose fault is known: the exception names the file and the key or tensor.</summary>
    public static TheoryData<string, string, string, string?> Named() => new()
    {
        // base, edit ("cfg:key=value", "cfg:-key", "w:huge", "w:dtype=I32:W_enc", "w:shape:b_dec", "w:-b_enc", "w:truncate"), file, key
        { "shared", "cfg:-d_in", Sae.ConfigFile, "d_in" },
        { "shared", "cfg:d_sae=\"256\"", Sae.ConfigFile, "d_sae" },
        { "shared", "cfg:d_in=1e12", Sae.ConfigFile, "d_in" },
        { "shared", "cfg:d_sae=-4", Sae.ConfigFile, "d_sae" },
        { "shared", "cfg:architecture=\"batchtopk\"", Sae.ConfigFile, "architecture" },
        { "shared", "cfg:architecture=\"transcoder\"", Sae.ConfigFile, "d_out" },
        { "shared", "cfg:architecture=\"topk\"", Sae.ConfigFile, "k" },
        { "topk", "cfg:k=-3", Sae.ConfigFile, "k" },
        { "topk", "cfg:k=33", Sae.ConfigFile, "k" },
        { "topk", "cfg:k=1e12", Sae.ConfigFile, "k" },
        { "topk", "cfg:rescale_acts_by_decoder_norm=\"yes\"", Sae.ConfigFile, "rescale_acts_by_decoder_norm" },
        { "skip_transcoder", "cfg:-d_out", Sae.ConfigFile, "d_out" },
        { "skip_transcoder", "cfg:-hook_name_out", Sae.ConfigFile, "hook_name_out" },
        { "jumprelu_transcoder", "cfg:-metadata.hook_name_out", Sae.ConfigFile, "hook_name_out" },
        { "shared", "cfg:normalize_activations=\"bogus\"", Sae.ConfigFile, "normalize_activations" },
        { "shared", "cfg:reshape_activations=\"hook_z\"", Sae.ConfigFile, "reshape_activations" },
        { "shared", "cfg:metadata.hook_name=5", Sae.ConfigFile, "metadata.hook_name" },
        { "shared", "cfg:-metadata.hook_name", Sae.ConfigFile, "metadata.hook_name" },
        { "shared", "cfg:metadata=[]", Sae.ConfigFile, "metadata" },
        { "shared", "cfg:activation_fn_str=\"gelu\"", Sae.ConfigFile, "activation_fn_str" },
        { "shared", "cfg:finetuning_scaling_factor=true", Sae.ConfigFile, "finetuning_scaling_factor" },
        { "shared", "cfg:dtype=\"int8\"", Sae.ConfigFile, "dtype" },
        { "shared", "cfg:deep", Sae.ConfigFile, null },
        { "shared", "cfg:d_sae=1073741824", Sae.WeightsFile, "W_enc" },
        { "shared", "w:huge", Sae.WeightsFile, null },
        { "shared", "w:dtype=I32:W_enc", Sae.WeightsFile, "W_enc" },
        { "shared", "w:shape:b_dec", Sae.WeightsFile, "b_dec" },
        { "shared", "w:-b_enc", Sae.WeightsFile, "b_enc" },
        { "gated", "w:-r_mag", Sae.WeightsFile, "r_mag" },
        { "shared", "w:nan:b_dec", Sae.WeightsFile, "b_dec" },
        { "shared", "w:truncate", Sae.WeightsFile, null },
    };

    [Theory]
    [MemberData(nameof(Named))]
    public void A_known_fault_names_the_file_and_the_key_or_tensor(string baseName, string edit, string file, string? key)
    {
        using var tmp = new TempDir();
        var b = Bases(tmp.Path).Single(x => Path.GetFileName(x.Dir) == baseName);
        byte[] config = b.Config, weights = b.Weights[0];
        if (edit.StartsWith("cfg:", StringComparison.Ordinal))
        {
            string e = edit[4..];
            config = e == "deep" ? Encoding.UTF8.GetBytes(Mutations.Nest(10_000, Encoding.UTF8.GetString(config)))
                : e.StartsWith('-') ? Remove(e[1..]).Apply(config)
                : Set(e[..e.IndexOf('=')], e[(e.IndexOf('=') + 1)..]).Apply(config);
        }
        else
        {
            string e = edit[2..];
            weights = e switch
            {
                "huge" => Huge(0, oneDimensional: true).Apply(weights),
                "truncate" => weights[..(weights.Length - 100)],
                _ => EditTensor(weights, e),
            };
        }
        Write(b, config, weights);
        var ex = Assert.Throws<ModelFileException>(() => Sae.Load(b.Dir));
        Assert.Equal(file, Path.GetFileName(ex.FilePath));
        if (key is not null) Assert.Equal(key, ex.TensorName);
        Assert.Contains(ex.FilePath, ex.Message);
    }

    /// <summary>dtype=I32:name, shape:name (one wider), -name (removed), nan:name (first element NaN).</summary>
    private static byte[] EditTensor(byte[] file, string edit)
    {
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        var header = JsonNode.Parse(file.AsSpan(8, (int)n))!.AsObject();
        var data = file[(8 + (int)n)..];
        string name = edit[(edit.LastIndexOf(':') + 1)..];
        if (edit.StartsWith('-')) name = edit[1..];
        var entry = header[name]!.AsObject();
        long begin = entry["data_offsets"]![0]!.GetValue<long>();
        if (edit.StartsWith("dtype=", StringComparison.Ordinal)) entry["dtype"] = edit["dtype=".Length..edit.LastIndexOf(':')];
        else if (edit.StartsWith("shape:", StringComparison.Ordinal))
        {
            var shape = entry["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
            shape[^1]++;
            entry["shape"] = new JsonArray(shape.Select(d => (JsonNode?)d).ToArray());
        }
        else if (edit.StartsWith('-')) header.Remove(name);
        else if (edit.StartsWith("nan:", StringComparison.Ordinal)) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan((int)begin), float.NaN);
        var text = Encoding.UTF8.GetBytes(header.ToJsonString());
        var result = new byte[8 + text.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)text.Length);
        text.CopyTo(result, 8);
        data.CopyTo(result, 8 + text.Length);
        return result;
    }
}

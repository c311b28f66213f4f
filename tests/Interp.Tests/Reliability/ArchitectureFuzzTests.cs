using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;
using Interp.Loading;
using Interp.Tests.Support;
using Xunit.Abstractions;

namespace Interp.Tests.Reliability;

/// <summary>
/// The loaders of issue 13's architectures against hostile files, as <see cref="LoadingFuzzTests"/> does for GPT-2 and
/// LLaMA: seeded mutations of valid tiny models of every adapter (GPT-NeoX, Gemma 2, Qwen 3, Qwen 2, Mistral, Llama 3,
/// BERT masked-LM and BERT with a pooler) and of the project's own format with the new config fields. Each case must
/// load (then run a plain and a padded forward pass) or end in a <see cref="ModelFileException"/> naming the file,
/// within the bounds of <see cref="Fuzz"/>.
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class ArchitectureFuzzTests(ITestOutputHelper output)
{
    /// <summary>
    /// Cases per target here: 2,500, fewer than the older targets' 10,000 (these cases load two-layer models and run two
    /// forward passes), so that the whole fuzz suite stays near two minutes on 2 cores. <c>INTERP_FUZZ_CASES</c> overrides it.
    /// </summary>
    private static int Cases => Fuzz.CasesOr(2_500);

    /// <summary>Numbers that JSON allows and a double or an int cannot hold, and other edge spellings.</summary>
    private static readonly string[] EdgeNumbers =
        ["1e400", "-1e400", "1E+400", "123456789012345678901234567890", "-0", "0e0", "4.0", "4e0", "2147483648", "-2147483649", "1e-400"];

    /// <summary>Values that make sense for each key, and their near misses.</summary>
    private static readonly Dictionary<string, string[]> HfValues = new()
    {
        ["use_parallel_residual"] = ["true", "false", "null", "1", "\"true\""],
        ["rotary_pct"] = ["0.25", "0.5", "1.0", "1", "0.0", "1.5", "-0.5", "1e-9", "0.999", "\"0.5\""],
        ["rotary_emb_base"] = ["10000", "0", "-1", "1e-300", "1e308", "\"x\"", "1", "null"],
        ["rope_theta"] = ["10000.0", "500000", "0", "-1", "1e-300", "1e308", "null"],
        ["query_pre_attn_scalar"] = ["4", "1", "0", "-4", "256", "2147483647", "0.5", "null"],
        ["attn_logit_softcapping"] = ["50.0", "null", "0", "-1", "1e-300", "1e308", "\"50\"", "true"],
        ["final_logit_softcapping"] = ["30.0", "null", "0", "-1", "1e-300", "1e308", "\"30\"", "false"],
        ["sliding_window"] = ["1", "2", "4", "8", "0", "-1", "null", "2147483647", "4.5", "\"4\""],
        ["layer_types"] =
        [
            "[\"sliding_attention\", \"full_attention\"]", "[\"full_attention\", \"full_attention\"]", "[\"sliding_attention\", \"sliding_attention\"]",
            "[\"full_attention\", \"sliding_attention\"]", "[\"sliding_attention\"]", "[]", "[\"bogus\", \"full_attention\"]", "[1, 2]",
            "\"sliding_attention\"", "null", "[\"sliding_attention\", \"full_attention\", \"full_attention\"]", "[null, \"full_attention\"]",
        ],
        ["use_sliding_window"] = ["true", "false", "null", "0"],
        ["max_window_layers"] = ["0", "1", "2", "3", "-1", "28", "2147483647", "null"],
        ["head_dim"] = ["1", "2", "3", "4", "8", "16", "0", "-4", "null", "65536"],
        ["rope_scaling"] =
        [
            "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 4}",
            "{\"type\": \"llama3\", \"factor\": 2.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 2.0, \"original_max_position_embeddings\": 8192}",
            "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 1.0, \"original_max_position_embeddings\": 4}",
            "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "{\"rope_type\": \"default\"}", "{\"rope_type\": \"linear\", \"factor\": 2.0}",
            "{\"rope_type\": \"dynamic\", \"factor\": 2.0}", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "{}", "[]", "null", "\"llama3\"",
            "{\"rope_type\": 3}", "{\"rope_type\": null, \"type\": null}",
        ],
        ["type_vocab_size"] = ["0", "1", "2", "3", "16", "-1", "null", "1073741824", "2.5"],
        ["position_embedding_type"] = ["\"absolute\"", "\"relative_key\"", "\"relative_key_query\"", "\"rotary\"", "null", "1"],
        ["hidden_activation"] = ["\"gelu_pytorch_tanh\"", "\"gelu\"", "\"gelu_new\"", "\"silu\"", "\"relu\"", "\"bogus\"", "null", "7"],
        ["hidden_act"] = ["\"gelu_pytorch_tanh\"", "\"gelu\"", "\"silu\"", "\"swish\"", "\"tanh\"", "null"],
        ["tie_word_embeddings"] = ["true", "false", "null", "1", "\"false\""],
        ["architectures"] =
        [
            "[\"BertForMaskedLM\"]", "[\"BertModel\"]", "[]", "[\"LlamaForCausalLM\"]", "\"BertModel\"", "[1]", "null",
            "[\"BertForSequenceClassification\", \"BertModel\"]",
        ],
        ["model_type"] = ["\"gpt2\"", "\"llama\"", "\"mistral\"", "\"qwen2\"", "\"qwen3\"", "\"gpt_neox\"", "\"gemma2\"", "\"bert\"", "\"gemma\"", "\"t5\""],
        ["num_hidden_layers"] = ["1", "2", "3", "65536", "65537", "0"],
        ["num_attention_heads"] = ["1", "2", "4", "8", "3"],
        ["num_key_value_heads"] = ["1", "2", "3", "0", "null"],
        ["is_decoder"] = ["true", "false", "null"],
        ["attention_bias"] = ["true", "false", "null"],
        ["mlp_bias"] = ["true", "false"],
    };

    private static readonly string[] RopeScalingKeys = ["rope_type", "type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"];

    /// <summary>Sets <c>key</c> (or <c>key.sub</c>, inside an object) to <paramref name="value"/>, parsed.</summary>
    private static Mutation Set(string path, string value) => new($"set {path} = {value}", b => Mutations.EditObject(b, o =>
    {
        int dot = path.IndexOf('.');
        if (dot < 0) o[path] = Mutations.ParseValue(value);
        else if (o[path[..dot]] is JsonObject inner) inner[path[(dot + 1)..]] = Mutations.ParseValue(value);
    }));

    /// <summary>Removes <paramref name="path"/> (<c>key</c> or <c>key.sub</c>).</summary>
    private static Mutation Remove(string path) => new($"remove {path}", b => Mutations.EditObject(b, o =>
    {
        int dot = path.IndexOf('.');
        if (dot < 0) o.Remove(path);
        else if (o[path[..dot]] is JsonObject inner) inner.Remove(path[(dot + 1)..]);
    }));

    /// <summary>A key's own values, edge numbers and generic hostile values for keys and nested keys.</summary>
    private static Gen<Mutation> KeyEdits(Dictionary<string, string[]> values, string nestedObject, string[] nestedKeys)
    {
        var keys = values.Keys.ToArray();
        return Gen.Frequency(
            (8, Gen.OneOf(keys).SelectMany(k => Gen.OneOf(values[k]).Select(v => Set(k, v)))),
            (2, Gen.Select(Gen.OneOf(keys), Gen.OneOf(EdgeNumbers), Set)),
            (2, Gen.Select(Gen.OneOf(nestedKeys), Gen.Frequency((3, Mutations.HostileValue), (1, Gen.OneOf(EdgeNumbers))),
                (k, v) => Set($"{nestedObject}.{k}", v))),
            (1, Gen.OneOf(nestedKeys).Select(k => Remove($"{nestedObject}.{k}"))),
            (2, Gen.OneOf(keys).Select(Remove)));
    }

    [Fact]
    public void Config_json_of_every_new_architecture_with_hostile_values_of_its_keys()
    {
        using var tmp = Fuzz.ScratchDir("architectures");
        var bases = TinyModelFiles.Architectures().Select(m =>
        {
            string dir = tmp.File(m.Name);
            Directory.CreateDirectory(dir);
            var config = Encoding.UTF8.GetBytes(m.Config.ToJsonString());
            var weights = TinyModelFiles.SafeTensorsBytes(m.Tensors());
            File.WriteAllBytes(Path.Combine(dir, "config.json"), config);
            File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), weights);
            LoadingFuzzTests.LoadAndCheck(dir, padded: true); // every base is valid
            return (Dir: dir, Config: config, Weights: weights);
        }).ToArray();

        var configEdit = Gen.Frequency(
            (6, KeyEdits(HfValues, "rope_scaling", RopeScalingKeys)),
            (3, Mutations.Json(HfValues.Keys.ToArray())),
            (1, Mutations.Bytes()));
        // Now and then the weights disagree too (a tensor renamed, removed or reshaped): which message wins must not matter.
        var weightEdit = Gen.Frequency((9, Gen.Const(Array.Empty<Mutation>())), (1, Mutations.Some(SafeTensorsMutations.Structure())));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(configEdit), weightEdit);
        Fuzz.Run("architectures-config.json", seed: 20_251_201, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: {Mutations.Describe(c.Item2)}" + (c.Item3.Length > 0 ? $"; weights: {Mutations.Describe(c.Item3)}" : ""),
            c =>
            {
                var (dir, config, weights) = bases[c.Item1];
                var configBytes = Mutations.Apply(config, c.Item2);
                var weightBytes = c.Item3.Length == 0 ? weights : Mutations.Apply(weights, c.Item3);
                File.WriteAllBytes(Path.Combine(dir, "config.json"), configBytes);
                File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), weightBytes);
                LoadingFuzzTests.LoadAndCheck(dir, padded: true);
                return configBytes.Length + weightBytes.Length;
            }, output, Cases);
    }

    /// <summary>interp-model.json's config fields (snake_case, enums by name), with their values and near misses.</summary>
    private static readonly Dictionary<string, string[]> InterpValues = new()
    {
        ["block"] = ["\"PreNorm\"", "\"Parallel\"", "\"PostNorm\"", "\"Bogus\"", "0", "2", "null", "\"prenorm\""],
        ["head"] = ["\"Unembed\"", "\"MaskedLM\"", "\"None\"", "\"Bogus\"", "1", "null"],
        ["causal"] = ["true", "false", "null", "1"],
        ["norm_after_sublayers"] = ["true", "false", "null", "\"true\""],
        ["qk_norm"] = ["true", "false", "null"],
        ["embedding_norm"] = ["true", "false", "null"],
        ["pooler"] = ["true", "false", "null"],
        ["qkv_bias"] = ["true", "false", "null"],
        ["use_bias"] = ["true", "false"],
        ["embedding_scale"] = ["0", "1", "2.5", "-1", "1e-320", "1e308", "null", "\"2\""],
        ["attn_scale"] = ["0", "1", "2", "-1", "1e-320", "1e308", "null"],
        ["attn_scores_soft_cap"] = ["0", "50", "-1", "1e-320", "1e308", "null", "true"],
        ["output_logits_soft_cap"] = ["0", "30", "-1", "1e-320", "1e308", "null"],
        ["sliding_window"] = ["0", "1", "4", "-1", "2147483647", "2147483648", "null", "1.5"],
        ["sliding_window_layers"] = ["[0]", "[1]", "[0, 1]", "[]", "[2]", "[-1]", "[0, 0]", "null", "[2147483648]", "[0.5]", "0", "[\"0\"]", "{}", "[null]"],
        ["rope_scaling"] =
        [
            "{\"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_positions\": 4}",
            "{\"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1, \"original_max_positions\": 4}",
            "{\"factor\": 0, \"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_positions\": 4}",
            "{\"factor\": 1e308, \"low_freq_factor\": 1e-308, \"high_freq_factor\": 1e308, \"original_max_positions\": 2147483647}",
            "{\"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 1.0000000000000002, \"original_max_positions\": 1}",
            "{\"factor\": 8}", "{}", "[]", "null", "\"llama3\"", "{\"factor\": \"8\"}", "{\"factor\": null, \"original_max_positions\": null}",
            "{\"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_positions\": 4, \"rope_type\": \"llama3\"}",
        ],
        ["n_token_types"] = ["0", "1", "2", "3", "-1", "1073741824", "null", "2.0"],
        ["family"] = ["\"llama\"", "\"\"", "null", "7", "\"bert\"", "[]"],
        ["name"] = ["\"x\"", "null", "\"\"", "3"],
        ["norm"] = ["\"LayerNorm\"", "\"RMSNorm\"", "\"None\""],
        ["positional"] = ["\"Learned\"", "\"Rotary\"", "\"Sinusoidal\"", "\"None\""],
        ["mlp"] = ["\"Standard\"", "\"Gated\"", "\"None\""],
        ["rotary_dim"] = ["0", "2", "4", "3", "-2"],
        ["n_kv_heads"] = ["0", "1", "2", "3"],
        ["d_head"] = ["0", "2", "4", "8"],
        ["n_layers"] = ["0", "1", "2", "3", "65536", "65537"],
    };

    private static readonly string[] InterpRopeKeys = ["factor", "low_freq_factor", "high_freq_factor", "original_max_positions"];

    [Fact]
    public void Interp_model_manifests_with_hostile_architecture_features()
    {
        using var tmp = Fuzz.ScratchDir("interp-features");
        var bases = TinyModelFiles.InterpArchitectures().Select(m =>
        {
            string dir = tmp.File(m.Name);
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, InterpModelFormat.WeightsFile), m.Weights);
            File.WriteAllBytes(Path.Combine(dir, InterpModelFormat.ManifestFile), m.Manifest);
            LoadingFuzzTests.LoadAndCheck(dir, padded: true);
            return (Dir: dir, m.Manifest, m.Weights);
        }).ToArray();

        // Edits of the nested config object, as the older interp-model.json target makes them.
        var configEdit = Gen.Frequency((3, KeyEdits(InterpValues, "rope_scaling", InterpRopeKeys)), (1, Mutations.Json(InterpValues.Keys.ToArray())))
            .Select(m => new Mutation("config: " + m.Name, b => Mutations.EditObject(b, root =>
            {
                if (root["config"] is not JsonObject config) return;
                var edited = m.Apply(Encoding.UTF8.GetBytes(config.ToJsonString()));
                try { root["config"] = JsonNode.Parse(edited, documentOptions: new JsonDocumentOptions { MaxDepth = 256 }); }
                catch (Exception e) when (e is JsonException or ArgumentException) { root["config"] = Encoding.UTF8.GetString(edited); }
            })));
        var edit = Gen.Frequency((9, configEdit), (1, Mutations.Bytes()));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(edit));
        Fuzz.Run("interp-model.json-features", seed: 20_251_202, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: {Mutations.Describe(c.Item2)}",
            c =>
            {
                var (dir, manifest, weights) = bases[c.Item1];
                var bytes = Mutations.Apply(manifest, c.Item2);
                File.WriteAllBytes(Path.Combine(dir, InterpModelFormat.ManifestFile), bytes);
                LoadingFuzzTests.LoadAndCheck(dir, padded: true);
                return bytes.Length + weights.Length;
            }, output, Cases);
    }
}

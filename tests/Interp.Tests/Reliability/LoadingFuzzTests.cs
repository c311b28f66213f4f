using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsCheck;
using Interp.Hooks;
using Interp.Loading;
using Interp.Tests.Support;
using Interp.Tokenizers;
using TorchSharp;
using Xunit.Abstractions;

namespace Interp.Tests.Reliability;

/// <summary>
/// Property tests of every loader against hostile files: 10,000 seeded mutations of a valid file per target. Each case
/// must load, or end in a <see cref="ModelFileException"/> naming the file and the problem, within bounded time and
/// memory (see <see cref="Fuzz"/>). They run alone (no parallel test allocates meanwhile), so that the resident
/// memory they measure is theirs.
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class LoadingFuzzTests(ITestOutputHelper output)
{
    /// <summary>
    /// Loads a model, checks that it is exactly what its config implies (the parameters that the load budget counted
    /// before allocating), and runs one forward pass under the finite guard: the logits are finite, or — poisoned
    /// weights are data, and load — the guard names the first hook point (or the logits) that is not. With
    /// <paramref name="padded"/>, a second pass runs a two-row batch, one row left-padded, with token types when the
    /// model has them: positions, masks, sliding windows and token types under the fuzzed config.
    /// </summary>
    internal static void LoadAndCheck(string path, bool padded = false)
    {
        using var loaded = ModelLoader.Load(path);
        var model = loaded.Model;
        Assert.Equal(LoadBudget.Parameters(model.Config), (Int128)model.ParameterCount);
        var cfg = model.Config;
        // A loaded config keeps its promises: the non-nullable strings are set, and it validates.
        Assert.NotNull(cfg.Name);
        Assert.NotNull(cfg.Family);
        cfg.Validate();
        using var noGrad = TorchSharp.torch.no_grad();
        using var scope = TorchSharp.torch.NewDisposeScope();
        var ids = Enumerable.Range(0, Math.Min(4, cfg.NCtx)).Select(i => (long)(i * 7 % cfg.DVocab)).ToArray();
        var tokens = TorchSharp.torch.tensor(ids).unsqueeze(0);
        try
        {
            var logits = model.RunChecked(tokens);
            // Logits, or the last hidden state of a base encoder (BertModel).
            Assert.Equal([1, ids.Length, cfg.HasUnembed ? cfg.DVocab : cfg.DModel], logits.shape);
            Fuzz.CountForward(finite: true);
        }
        catch (NonFiniteActivationException ex)
        {
            Assert.True(ex.Location == NonFiniteActivationException.Logits || model.HookPoints.Any(h => h.Name == ex.Location),
                $"the finite guard named '{ex.Location}', which is no hook point of the model");
            Assert.Contains(ex.Location, ex.Message);
            Fuzz.CountForward(finite: false);
        }
        if (padded && ids.Length > 1)
        {
            var batch = TorchSharp.torch.stack([tokens[0], tokens[0]]);
            var mask = TorchSharp.torch.ones_like(batch);
            mask[1, 0] = TorchSharp.torch.tensor(0L);
            using var typeCount = Math.Max(1, cfg.NTokenTypes).ToScalar();
            var types = cfg.NTokenTypes > 0 ? TorchSharp.torch.arange(ids.Length).remainder(typeCount).expand(2, ids.Length) : null;
            var output = model.forward(batch, mask, types);
            Assert.Equal([2, ids.Length, cfg.HasUnembed ? cfg.DVocab : cfg.DModel], output.shape);
        }
    }

    [Fact]
    public void Safetensors_files_with_lying_headers_truncations_and_poisoned_data()
    {
        using var tmp = Fuzz.ScratchDir("safetensors");
        // Three valid bases: a GPT-2 in F32, a LLaMA in BF16 (grouped-query attention, untied head), a GPT-2 in F16.
        var bases = new (string Dir, byte[] Bytes)[]
        {
            (tmp.File("gpt2"), TinyModelFiles.SafeTensorsBytes(TinyModelFiles.Gpt2Tensors(), metadata: new Dictionary<string, string> { ["format"] = "pt" })),
            (tmp.File("llama"), TinyModelFiles.SafeTensorsBytes(TinyModelFiles.LlamaTensors(), SafeTensorsDType.BF16)),
            (tmp.File("gpt2-f16"), TinyModelFiles.SafeTensorsBytes(TinyModelFiles.Gpt2Tensors(), SafeTensorsDType.F16)),
        };
        string[] configs = [TinyModelFiles.Gpt2Config().ToJsonString(), TinyModelFiles.LlamaConfig().ToJsonString(), TinyModelFiles.Gpt2Config().ToJsonString()];
        for (int i = 0; i < bases.Length; i++)
        {
            Directory.CreateDirectory(bases[i].Dir);
            File.WriteAllText(Path.Combine(bases[i].Dir, "config.json"), configs[i]);
            File.WriteAllBytes(Path.Combine(bases[i].Dir, "model.safetensors"), bases[i].Bytes);
            LoadAndCheck(bases[i].Dir); // the bases themselves are valid
        }

        var edit = Gen.Frequency((5, SafeTensorsMutations.Structure()), (3, SafeTensorsMutations.Data()), (2, Mutations.Bytes()));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(edit));
        Fuzz.Run("safetensors", seed: 20_251_122, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: {Mutations.Describe(c.Item2)}",
            c =>
            {
                var (dir, original) = bases[c.Item1];
                string path = Path.Combine(dir, "model.safetensors");
                var bytes = Mutations.Apply(original, c.Item2);
                File.WriteAllBytes(path, bytes);
                // The reader on its own (every tensor, whatever its dtype), then the whole loader.
                using (var file = SafeTensorsFile.Open(path))
                    foreach (var info in file.Tensors) file.ReadTensor(info.Name).Dispose();
                LoadAndCheck(dir);
                return bytes.Length;
            }, output);
    }

    [Fact]
    public void Config_json_with_wrong_types_huge_sizes_and_deep_or_enormous_documents()
    {
        using var tmp = Fuzz.ScratchDir("config");
        var bases = new (string Dir, byte[] Config)[]
        {
            (tmp.File("gpt2"), Encoding.UTF8.GetBytes(TinyModelFiles.Gpt2Config().ToJsonString())),
            (tmp.File("llama"), Encoding.UTF8.GetBytes(TinyModelFiles.LlamaConfig().ToJsonString())),
        };
        var weights = new[] { TinyModelFiles.SafeTensorsBytes(TinyModelFiles.Gpt2Tensors()), TinyModelFiles.SafeTensorsBytes(TinyModelFiles.LlamaTensors()) };
        for (int i = 0; i < bases.Length; i++)
        {
            Directory.CreateDirectory(bases[i].Dir);
            File.WriteAllBytes(Path.Combine(bases[i].Dir, "model.safetensors"), weights[i]);
            File.WriteAllBytes(Path.Combine(bases[i].Dir, "config.json"), bases[i].Config);
            LoadAndCheck(bases[i].Dir);
        }

        string[] keys =
        [
            "model_type", "vocab_size", "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
            "layer_norm_epsilon", "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings", "hidden_size",
            "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
            "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "hidden_act", "attention_bias", "mlp_bias",
        ];
        var edit = Gen.Frequency((8, Mutations.Json(keys)), (2, Mutations.Bytes()));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(edit));
        Fuzz.Run("config.json", seed: 20_251_123, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: {Mutations.Describe(c.Item2)}",
            c =>
            {
                var (dir, original) = bases[c.Item1];
                var bytes = Mutations.Apply(original, c.Item2);
                File.WriteAllBytes(Path.Combine(dir, "config.json"), bytes);
                LoadAndCheck(dir);
                return bytes.Length + weights[c.Item1].Length;
            }, output);
    }

    [Fact]
    public void Interp_model_manifests_with_hostile_configs_and_entries()
    {
        using var tmp = Fuzz.ScratchDir("interp-model");
        var (manifest, weights) = TinyModelFiles.InterpModel();
        File.WriteAllBytes(tmp.File(InterpModelFormat.WeightsFile), weights);
        File.WriteAllBytes(tmp.File(InterpModelFormat.ManifestFile), manifest);
        LoadAndCheck(tmp.Path);

        string[] rootKeys = ["format", "version", "config", "tokenizer", "weights_sha256", "metadata"];
        string[] configKeys =
        [
            "name", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "norm", "norm_eps",
            "positional", "rotary_style", "rotary_base", "rotary_dim", "mlp", "act", "use_bias",
        ];
        var configEdit = Mutations.Json(configKeys).Select(m => new Mutation("config: " + m.Name,
            b => Mutations.EditObject(b, root =>
            {
                if (root["config"] is not JsonObject config) return;
                var edited = m.Apply(Encoding.UTF8.GetBytes(config.ToJsonString()));
                try { root["config"] = JsonNode.Parse(edited, documentOptions: new JsonDocumentOptions { MaxDepth = 256 }); }
                catch (Exception e) when (e is JsonException or ArgumentException) { root["config"] = Encoding.UTF8.GetString(edited); }
            })));
        var configValues = Gen.Select(Gen.OneOf(configKeys), Gen.OneOf("\"LayerNorm\"", "\"RMSNorm\"", "\"None\"", "\"Rotary\"", "\"Sinusoidal\"", "\"Gated\"",
            "\"Silu\"", "\"Relu\"", "\"Learned\"", "\"AdjacentPairs\"", "\"Bogus\"", "0", "1", "2", "4", "8", "16", "32", "65536", "1000000", "true"),
            (key, value) => new Mutation($"config.{key} = {value}", b => Mutations.EditObject(b, root =>
            {
                if (root["config"] is JsonObject config) config[key] = Mutations.ParseValue(value);
            })));
        var tokenizer = Gen.OneOf("\"gpt2\"", "\"../../etc/passwd\"", "\"/etc/passwd\"", "\"interp-model.json\"", "\"model.safetensors\"", "\"missing.bin\"", "\"\"", "\".\"", "7")
            .Select(value => new Mutation($"tokenizer = {value}", b => Mutations.EditObject(b, root => root["tokenizer"] = Mutations.ParseValue(value))));
        var edit = Gen.Frequency((4, configEdit), (4, configValues), (3, Mutations.Json(rootKeys)), (1, tokenizer), (1, Mutations.Bytes()));
        Fuzz.Run("interp-model.json", seed: 20_251_124, tmp.Path, Mutations.Some(edit), Mutations.Describe, mutations =>
        {
            var bytes = Mutations.Apply(manifest, mutations);
            File.WriteAllBytes(tmp.File(InterpModelFormat.ManifestFile), bytes);
            LoadAndCheck(tmp.Path);
            return bytes.Length + weights.Length;
        }, output);
    }

    [Fact]
    public void Llama2c_checkpoints_with_lying_headers_truncations_and_poisoned_weights()
    {
        using var tmp = Fuzz.ScratchDir("llama2c");
        var bases = new[] { TinyModelFiles.Llama2CBytes(sharedClassifier: true), TinyModelFiles.Llama2CBytes(sharedClassifier: false) };
        string path = tmp.File("model.bin");
        foreach (var b in bases)
        {
            File.WriteAllBytes(path, b);
            LoadAndCheck(path);
        }

        // Header fields: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative: separate classifier), seq_len.
        var header = Gen.Select(Gen.Int[0, 6], Mutations.InterestingInteger, (field, v) => new Mutation($"header field {field} = {(int)v}", b =>
        {
            var c = (byte[])b.Clone();
            if (c.Length >= 28) BinaryPrimitives.WriteInt32LittleEndian(c.AsSpan(4 * field), (int)v);
            return c;
        }));
        var edit = Gen.Frequency((4, header), (3, Mutations.Bytes(0.02, 1.0)), (3, Mutations.Bytes()));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(edit));
        Fuzz.Run("llama2c", seed: 20_251_125, tmp.Path, gen,
            c => $"{(c.Item1 == 0 ? "shared" : "separate")} classifier: {Mutations.Describe(c.Item2)}",
            c =>
            {
                var bytes = Mutations.Apply(bases[c.Item1], c.Item2);
                File.WriteAllBytes(path, bytes);
                LoadAndCheck(path);
                return bytes.Length;
            }, output);
    }

    [Fact]
    public void Llama2c_tokenizers_with_lying_lengths_and_scores()
    {
        using var tmp = Fuzz.ScratchDir("tokenizer");
        var original = File.ReadAllBytes(TestModels.StoriesTokenizer);
        var offsets = new List<int>();
        for (int o = 4; o < original.Length; o += 8 + BinaryPrimitives.ReadInt32LittleEndian(original.AsSpan(o + 4))) offsets.Add(o);
        int vocab = offsets.Count;
        string path = tmp.File("tokenizer.bin");

        // Structure-aware edits: the max_token_length header, one token's length field or score.
        var maxLength = Mutations.InterestingInteger.Select(v => new Mutation($"max_token_length {(int)v}", b =>
        {
            var c = (byte[])b.Clone();
            if (c.Length >= 4) BinaryPrimitives.WriteInt32LittleEndian(c, (int)v);
            return c;
        }));
        var length = Gen.Select(Gen.Int[0, vocab - 1], Mutations.InterestingInteger, (t, v) => new Mutation($"token {t} length {(int)v}", b =>
        {
            var c = (byte[])b.Clone();
            if (offsets[t] + 8 <= c.Length) BinaryPrimitives.WriteInt32LittleEndian(c.AsSpan(offsets[t] + 4), (int)v);
            return c;
        }));
        var score = Gen.Select(Gen.Int[0, vocab - 1], Mutations.PoisonFloat, (t, v) => new Mutation($"token {t} score {v}", b =>
        {
            var c = (byte[])b.Clone();
            if (offsets[t] + 4 <= c.Length) BinaryPrimitives.WriteSingleLittleEndian(c.AsSpan(offsets[t]), v);
            return c;
        }));
        var edit = Gen.Frequency((2, maxLength), (3, length), (2, score), (4, Mutations.Bytes()));
        // The vocabulary the model expects: right, one off, or unknown (read to the end of the file).
        var expected = Gen.OneOf<int?>(vocab, vocab, vocab - 1, vocab + 1, null);
        string[] texts = ["Once upon a time, there was a little dog.", "", " ", "héllo wörld ✓ 日本語 🙂", new string('a', 300), "\u0000\u0001\u007f"];
        var gen = Gen.Select(expected, Mutations.Some(edit));
        Fuzz.Run("tokenizer", seed: 20_251_126, tmp.Path, gen,
            c => $"expecting {c.Item1?.ToString() ?? "any"} tokens: {Mutations.Describe(c.Item2)}",
            c =>
            {
                var bytes = Mutations.Apply(original, c.Item2);
                File.WriteAllBytes(path, bytes);
                var tokenizer = Llama2CTokenizer.Load(path, c.Item1);
                // A tokenizer that loads must encode and decode anything, with ids inside its vocabulary.
                foreach (var text in texts)
                {
                    var ids = tokenizer.Encode(text, prependBos: true);
                    Assert.All(ids, id => Assert.InRange(id, 0, tokenizer.VocabSize - 1));
                    tokenizer.Decode(ids);
                }
                return bytes.Length;
            }, output);
    }

    // ---- Hugging Face tokenizer.json ----

    /// <summary>The tiny tokenizer.json files and their settings: Llama 2 (Prepend), Llama-style Metaspace, Llama 3 (byte-level), BERT.</summary>
    private static (string Name, JsonObject Tokenizer, JsonObject? Config)[] HfBases() =>
    [
        ("llama2", Interp.Tests.Tokenizers.TinyHfTokenizers.Llama2(), Interp.Tests.Tokenizers.TinyHfTokenizers.LlamaConfig()),
        ("metaspace", Interp.Tests.Tokenizers.TinyHfTokenizers.LlamaMetaspace(), null),
        ("llama3", Interp.Tests.Tokenizers.TinyHfTokenizers.Llama3(), Interp.Tests.Tokenizers.TinyHfTokenizers.Llama3Config()),
        ("bert", Interp.Tests.Tokenizers.TinyHfTokenizers.Bert(), Interp.Tests.Tokenizers.TinyHfTokenizers.BertConfig()),
    ];

    private static readonly string[] HfTexts = ["Hello Mary", " Mary é", "a</s>b [CLS] x <|begin_of_text|>y", "12345 Mary's xyz\n\n  ", "", "The cats sat.", "🙂 日本語"];

    /// <summary>
    /// A tokenizer that loads must encode (plain, with special tokens, as a continuation) and decode anything, with
    /// ids inside its vocabulary, and label every id; the native library must never abort the process.
    /// </summary>
    private static void TokenizeEverything(string dir)
    {
        using var tok = (HuggingFaceTokenizer)TokenizerLoader.Load(dir);
        foreach (var text in HfTexts)
        {
            foreach (var ids in new[] { tok.Encode(text), tok.EncodeWithSpecialTokens(text), tok.EncodeContinuation(text) })
            {
                Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
                tok.Decode(ids);
                tok.DecodeSkippingSpecialTokens(ids);
                Assert.Equal(ids.Length, tok.ToStrTokens(ids).Length);
            }
        }
        tok.ToStrTokens(Enumerable.Range(0, Math.Min(tok.VocabSize, 512)).ToArray());
    }

    // Strings the tokenizer.json schema gives meaning to: component types, enum values, tokens of the bases, regexes.
    private static readonly string[] HfStrings =
    [
        "", "x", "##", "▁", "Ġ", "<s>", "</s>", "[CLS]", "[SEP]", "<|begin_of_text|>", "A", "B", "ab", "é", "🙂", "<0xFF>", "(a+)+$", "[", "\\p{L}+", "(?<", "\\",
        "never", "first", "always", "Isolated", "Removed", "MergedWithNext", "Contiguous", "Sequence", "Metaspace", "ByteLevel", "Prepend",
        "Replace", "Split", "Strip", "ByteFallback", "Fuse", "WordPiece", "BPE", "Unigram", "WordLevel", "TemplateProcessing", "BertProcessing",
        "RobertaProcessing", "BertNormalizer", "BertPreTokenizer", "Precompiled", "NFKC", "Lowercase", "Digits", "Punctuation", "CTC", "String", "Regex",
    ];

    [Fact]
    public void Hugging_face_tokenizer_json_with_hostile_components_vocabularies_and_templates()
    {
        using var tmp = Fuzz.ScratchDir("tokenizer-json");
        var bases = HfBases().Select(b => (Dir: tmp.File(b.Name), Bytes: Encoding.UTF8.GetBytes(b.Tokenizer.ToJsonString()), b.Config)).ToArray();
        foreach (var (dir, bytes, config) in bases)
        {
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, "tokenizer.json"), bytes);
            if (config is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
            TokenizeEverything(dir); // the bases themselves are valid
        }
        string[] keys = ["version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"];
        var edit = Gen.Frequency((7, Mutations.JsonTree(HfStrings)), (2, Mutations.Json(keys)), (1, Mutations.Bytes()));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Mutations.Some(edit));
        Fuzz.Run("tokenizer.json", seed: 20_251_201, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)}: {Mutations.Describe(c.Item2)}",
            c =>
            {
                var (dir, original, _) = bases[c.Item1];
                var bytes = Mutations.Apply(original, c.Item2);
                File.WriteAllBytes(Path.Combine(dir, "tokenizer.json"), bytes);
                TokenizeEverything(dir);
                return bytes.Length;
            }, output);
    }

    [Fact]
    public void Hugging_face_tokenizer_config_and_special_tokens_map_with_hostile_values()
    {
        using var tmp = Fuzz.ScratchDir("tokenizer-config");
        var bases = HfBases().Where(b => b.Config is not null).Select(b => (Dir: tmp.File(b.Name), Config: Encoding.UTF8.GetBytes(b.Config!.ToJsonString()),
            Map: Encoding.UTF8.GetBytes(new JsonObject { ["bos_token"] = b.Config!["bos_token"]?.DeepClone(), ["unk_token"] = b.Config["unk_token"]?.DeepClone() }.ToJsonString()))).ToArray();
        var tokenizers = HfBases().Where(b => b.Config is not null).Select(b => b.Tokenizer.ToJsonString()).ToArray();
        for (int i = 0; i < bases.Length; i++)
        {
            Directory.CreateDirectory(bases[i].Dir);
            File.WriteAllText(Path.Combine(bases[i].Dir, "tokenizer.json"), tokenizers[i]);
            File.WriteAllBytes(Path.Combine(bases[i].Dir, "tokenizer_config.json"), bases[i].Config);
            File.WriteAllBytes(Path.Combine(bases[i].Dir, "special_tokens_map.json"), bases[i].Map);
            TokenizeEverything(bases[i].Dir);
        }
        string[] keys = ["bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token", "add_eos_token", "tokenizer_class", "added_tokens_decoder", "cls_token"];
        string[] tokens = ["<s>", "</s>", "<unk>", "[CLS]", "[PAD]", "<|begin_of_text|>", "<|end_of_text|>", "", "nope", "content", "__type", "AddedToken"];
        var tokenValue = Gen.Select(Gen.OneOf(keys), Gen.OneOf(tokens), Gen.Bool, (key, token, asObject) => new Mutation($"{key} = {(asObject ? "{content: " + token + "}" : token)}",
            b => Mutations.EditObject(b, o => o[key] = asObject ? new JsonObject { ["__type"] = "AddedToken", ["content"] = token } : JsonValue.Create(token))));
        var edit = Gen.Frequency((4, Mutations.Json(keys)), (3, tokenValue), (2, Mutations.JsonTree(tokens)), (1, Mutations.Bytes()));
        var gen = Gen.Select(Gen.Int[0, bases.Length - 1], Gen.Bool, Mutations.Some(edit));
        Fuzz.Run("tokenizer_config.json", seed: 20_251_202, tmp.Path, gen,
            c => $"{Path.GetFileName(bases[c.Item1].Dir)} {(c.Item2 ? "tokenizer_config.json" : "special_tokens_map.json")}: {Mutations.Describe(c.Item3)}",
            c =>
            {
                var (dir, config, map) = bases[c.Item1];
                var bytes = Mutations.Apply(c.Item2 ? config : map, c.Item3);
                File.WriteAllBytes(Path.Combine(dir, c.Item2 ? "tokenizer_config.json" : "special_tokens_map.json"), bytes);
                File.WriteAllBytes(Path.Combine(dir, c.Item2 ? "special_tokens_map.json" : "tokenizer_config.json"), c.Item2 ? map : config);
                TokenizeEverything(dir);
                return bytes.Length + tokenizers[c.Item1].Length;
            }, output);
    }
}

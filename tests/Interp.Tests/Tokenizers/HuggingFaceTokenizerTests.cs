using System.Text.Json;
using System.Text.Json.Nodes;
using Interp.Tests.Support;
using Interp.Tokenizers;
using static Interp.Tests.Tokenizers.TinyHfTokenizers;

namespace Interp.Tests.Tokenizers;

/// <summary>
/// <see cref="HuggingFaceTokenizer"/> against independent references: the ids and texts that Hugging Face's tokenizers
/// library produced for GPT-2 (shared/tokenizers/gpt2), the ids and tokens of all-MiniLM-L6-v2's reference batch and
/// its vocab.txt, SharpToken's GPT-2 ids, and small tokenizer.json files whose ids follow by hand from the algorithms.
/// </summary>
public sealed class HuggingFaceTokenizerTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static string Gpt2Dir => Path.Combine(SharedData.Root, "tokenizers", "gpt2");

    private HuggingFaceTokenizer Tiny(string name, JsonObject tokenizer, JsonObject? config = null) =>
        HuggingFaceTokenizer.Load(WriteFolder(_tmp.Sub(name), tokenizer, config));

    // ---- GPT-2: Hugging Face's own ids (reference/strings.jsonl) ----

    private static IEnumerable<JsonObject> Gpt2Reference() =>
        File.ReadLines(Path.Combine(Gpt2Dir, "reference", "strings.jsonl")).Select(line => JsonNode.Parse(line)!.AsObject());

    private static int[] Ints(JsonNode? array) => array!.AsArray().Select(n => (int)n!).ToArray();

    [Fact]
    public void Gpt2_matches_hugging_face_on_every_reference_string()
    {
        using var tok = HuggingFaceTokenizer.Load(Gpt2Dir);
        int n = 0;
        foreach (var r in Gpt2Reference())
        {
            string text = (string)r["text"]!;
            int[] ids = Ints(r["ids"]), withSpecial = Ints(r["ids_with_special"]);
            string where = $"line {++n} ({(text.Length > 40 ? text[..40] + "…" : text)})";
            Assert.True(ids.SequenceEqual(tok.Encode(text)), $"{where}: ids");
            Assert.True(withSpecial.SequenceEqual(tok.EncodeWithSpecialTokens(text)), $"{where}: ids_with_special");
            Assert.True((string)r["decoded"]! == tok.Decode(ids), $"{where}: decoded");
            Assert.True((string)r["decoded_with_special"]! == tok.Decode(withSpecial), $"{where}: decoded_with_special");
            Assert.True((string)r["decoded_skip_special"]! == tok.DecodeSkippingSpecialTokens(withSpecial), $"{where}: decoded_skip_special");
        }
        Assert.Equal(33, n);
    }

    [Fact]
    public void Gpt2_gives_sharptokens_ids_and_labels_except_for_special_token_text()
    {
        using var tok = HuggingFaceTokenizer.Load(Gpt2Dir);
        var sharp = new Gpt2Tokenizer();
        foreach (var r in Gpt2Reference())
        {
            string text = (string)r["text"]!;
            // Hugging Face turns "<|endoftext|>" written in a text into id 50256; Gpt2Tokenizer encodes it as text.
            if (text.Contains("<|endoftext|>", StringComparison.Ordinal)) continue;
            var ids = sharp.Encode(text);
            Assert.Equal(ids, tok.Encode(text));
            Assert.Equal(sharp.ToStrTokens(ids), tok.ToStrTokens(ids));
            Assert.Equal(ids, tok.EncodeContinuation(text)); // GPT-2 has no dummy prefix
        }
        Assert.Equal(sharp.Encode("a", prependBos: true), tok.Encode("a", prependBos: true));
    }

    [Fact]
    public void Gpt2_properties_come_from_its_files()
    {
        using var tok = HuggingFaceTokenizer.Load(Path.Combine(Gpt2Dir, "tokenizer.json"));
        Assert.Equal(50257, tok.VocabSize);
        Assert.Equal(50256, tok.BosId);
        Assert.Equal(50256, tok.EosId);
        Assert.Null(tok.PadId);
        Assert.Equal(50256, tok.UnkId);
        Assert.Equal("huggingface-bpe (byte-level)", tok.Kind);
        Assert.Empty(tok.PostProcessorPrefix);
        Assert.Equal([64, 50256, 65], tok.Encode("a<|endoftext|>b")); // the README's example
        Assert.Equal(["<|endoftext|>", "Hello", " world"], tok.ToStrTokens([50256, 15496, 995]));
        Assert.Equal(" world", tok.DecodeToken(995));
        Assert.Equal("Ġworld", tok.IdToToken(995));
        Assert.Equal(995, tok.TokenToId("Ġworld"));
    }

    // ---- all-MiniLM-L6-v2 (BERT WordPiece): the reference batch ----

    private static string MiniLm => SharedData.Model("all-MiniLM-L6-v2");

    [Fact]
    public void Bert_wordpiece_gives_the_reference_batchs_ids_and_tokens()
    {
        string[] sentences =
        [
            "The cat sat on the mat.",
            "A mouse ran across the keyboard and the screen went dark.",
            "Interpretability tools open up transformer models.",
            "Python executes quickly.",
        ];
        var idRows = File.ReadAllLines(Path.Combine(MiniLm, "reference", "input_ids.txt"));
        var maskRows = File.ReadAllLines(Path.Combine(MiniLm, "reference", "attention_mask.txt"));
        var tokenRows = File.ReadAllLines(Path.Combine(MiniLm, "reference", "tokens.txt"));
        using var tok = HuggingFaceTokenizer.Load(MiniLm);
        for (int i = 0; i < sentences.Length; i++)
        {
            int real = maskRows[i].Split(',').Count(m => m.Trim() == "1");
            int[] expected = idRows[i].Split(',').Take(real).Select(int.Parse).ToArray();
            int[] ids = tok.EncodeWithSpecialTokens(sentences[i]);
            Assert.Equal(expected, ids);
            Assert.Equal(tokenRows[i].Split(' '), tok.ToStrTokens(ids));
            Assert.Equal(expected[1..^1], tok.Encode(sentences[i]));
        }
        Assert.Equal("huggingface-wordpiece", tok.Kind);
        Assert.Equal(30522, tok.VocabSize);
        Assert.Equal(101, tok.BosId); // no bos_token: the post-processor's [CLS]
        Assert.Null(tok.EosId);
        Assert.Equal(0, tok.PadId);
        Assert.Equal(100, tok.UnkId);
        Assert.Equal([101], tok.PostProcessorPrefix);
        Assert.Equal([102], tok.PostProcessorSuffix);
        // WordPiece's decoder joins "##" pieces and (cleanup) removes the space before punctuation.
        Assert.Equal("the cat sat on the mat.", tok.DecodeSkippingSpecialTokens(tok.EncodeWithSpecialTokens(sentences[0])));
        Assert.Equal("[CLS] the cat sat on the mat. [SEP]", tok.Decode(tok.EncodeWithSpecialTokens(sentences[0])));
    }

    [Fact]
    public void Bert_id_to_token_is_vocab_txt()
    {
        var lines = File.ReadAllLines(Path.Combine(MiniLm, "vocab.txt"));
        using var tok = HuggingFaceTokenizer.Load(Path.Combine(MiniLm, "tokenizer.json"));
        Assert.Equal(lines.Length, tok.VocabSize);
        for (int i = 0; i < lines.Length; i++) Assert.Equal(lines[i], tok.IdToToken(i));
    }

    // ---- Llama 2 / Mistral: SentencePiece-style BPE with byte fallback, built here ----
    //
    // Vocabulary: <unk> 0, <s> 1, </s> 2, <0x00>…<0xFF> 3…258, then "▁" 259, "a" 260, "r" 261, "y" 262, "M" 263,
    // "▁M" 264, "ar" 265, "▁Mar" 266, "▁Mary" 267, "H" 268, "e" 269, "l" 270, "o" 271, "ll" 272, "He" 273, "llo" 274,
    // "Hello" 275, "▁Hello" 276, "▁▁" 277. Merges by priority: l+l, H+e, ll+o, He+llo, ▁+Hello, ▁+M, a+r, ▁M+ar,
    // ▁Mar+y, ▁+▁. BPE splits a word into characters (a character missing from the vocabulary becomes its UTF-8 byte
    // tokens) and applies the highest-priority merge present until none applies.

    [Fact]
    public void Llama2_encodes_as_byte_fallback_bpe_over_the_prepended_and_replaced_text()
    {
        using var tok = Tiny("llama2", Llama2(), LlamaConfig());
        // "Hello Mary" → normalizer: "▁Hello▁Mary" → ▁ H e l l o ▁ M a r y → l+l, H+e, ll+o, He+llo, ▁+Hello, ▁+M,
        // a+r, ▁M+ar, ▁Mar+y → ▁Hello ▁Mary.
        Assert.Equal([276, 267], tok.Encode("Hello Mary"));
        Assert.Equal([1, 276, 267], tok.Encode("Hello Mary", prependBos: true));
        Assert.Equal([1, 276, 267], tok.EncodeWithSpecialTokens("Hello Mary")); // add_bos_token true
        // " Mary" → "▁▁Mary": ▁+M (rank 5) beats ▁+▁ (rank 9), then a+r, ▁M+ar, ▁Mar+y → ▁ ▁Mary: the extra "▁".
        Assert.Equal([259, 267], tok.Encode(" Mary"));
        // "é" → "▁é": é is not in the vocabulary, so its bytes C3 A9 → <0xC3> <0xA9>.
        Assert.Equal([259, ByteId(0xC3), ByteId(0xA9)], tok.Encode("é"));
        // Added tokens are split off first and each remaining part is normalized on its own: "Hello" → ▁Hello, then </s>.
        Assert.Equal([276, 2], tok.Encode("Hello</s>"));
        Assert.Equal("huggingface-bpe (byte fallback)", tok.Kind);
        Assert.Equal(278, tok.VocabSize);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(0, tok.UnkId);
        Assert.Null(tok.PadId);
    }

    [Fact]
    public void Llama2_continuation_drops_the_dummy_prefix()
    {
        using var tok = Tiny("llama2", Llama2(), LlamaConfig());
        // Without Prepend: " Mary" → "▁Mary" → ▁Mary, the token the model predicts after "… named".
        Assert.Equal([267], tok.EncodeContinuation(" Mary"));
        Assert.Equal(267, SingleTokens.Of(tok, " Mary"));
        // "Mary" → M a r y → a+r → M ar y (no ▁M without the "▁").
        Assert.Equal([263, 265, 262], tok.EncodeContinuation("Mary"));
        Assert.Equal([275, 267], tok.EncodeContinuation("Hello Mary"));
    }

    [Fact]
    public void Llama2_decodes_through_replace_bytefallback_fuse_and_strip()
    {
        using var tok = Tiny("llama2", Llama2(), LlamaConfig());
        // ["<s>", "▁Hello", "▁Mary"] → Replace: ["<s>", " Hello", " Mary"] → Fuse: "<s> Hello Mary" → Strip removes a
        // leading " " (there is none: it starts with "<").
        Assert.Equal("<s> Hello Mary", tok.Decode([1, 276, 267]));
        Assert.Equal("Hello Mary", tok.DecodeSkippingSpecialTokens([1, 276, 267]));
        // " " <0xC3> <0xA9> → ByteFallback joins the bytes into "é" → " é" → Strip → "é".
        Assert.Equal("é", tok.Decode([259, ByteId(0xC3), ByteId(0xA9)]));
        Assert.Equal("Hello", tok.DecodeToken(276));
        // Labels: "▁" as a space, byte tokens as their character when printable ASCII, special tokens as written.
        Assert.Equal(["<s>", " Hello", " Mary", "  ", "<0xC3>", "A", "<0x0A>"],
            tok.ToStrTokens([1, 276, 267, 277, ByteId(0xC3), ByteId('A'), ByteId('\n')]));
    }

    [Fact]
    public void Metaspace_style_llama_prepends_only_to_the_first_section()
    {
        using var tok = Tiny("metaspace", LlamaMetaspace(), LlamaConfig());
        Assert.Equal([276, 267], tok.Encode("Hello Mary"));
        // Metaspace replaces spaces by "▁" and then prepends one only when the section does not start with "▁" already:
        // " Mary" and "Mary" are both "▁Mary" (where the Prepend normalizer above gives " Mary" a second "▁").
        Assert.Equal([267], tok.Encode(" Mary"));
        Assert.Equal([267], tok.Encode("Mary"));
        Assert.Equal([267], tok.EncodeContinuation(" Mary"));
        Assert.Equal([263, 265, 262], tok.EncodeContinuation("Mary"));
        // prepend_scheme "first": the section after </s> gets no "▁", so "Mary" is M ar y.
        Assert.Equal([276, 2, 263, 265, 262], tok.Encode("Hello</s>Mary"));
        // The Metaspace decoder drops the first token's "▁".
        Assert.Equal("Hello Mary", tok.Decode([276, 267]));
        Assert.Equal([" Hello", " Mary"], tok.ToStrTokens([276, 267]));
    }

    [Fact]
    public void Tokenizer_config_add_bos_token_decides_over_the_post_processor()
    {
        var config = LlamaConfig();
        config["add_bos_token"] = false;
        config["add_eos_token"] = true;
        using var tok = Tiny("eos", Llama2(), config);
        Assert.Equal([276, 267, 2], tok.EncodeWithSpecialTokens("Hello Mary"));
        using var template = Tiny("template", Llama2());
        Assert.Equal([1, 276, 267], template.EncodeWithSpecialTokens("Hello Mary")); // no config: the file's template
        Assert.Equal(1, template.BosId); // and BOS from it
    }

    // ---- Llama 3 / Qwen: byte-level BPE behind a Split regex ----

    [Fact]
    public void Llama3_splits_with_its_regex_then_byte_level_bpe_with_ignore_merges()
    {
        using var tok = Tiny("llama3", Llama3(), Llama3Config());
        // The regex splits "12345 Mary xyz" into "123" "45" " Mary" " xyz" (numbers in groups of up to three).
        // ignore_merges: a piece that is a vocabulary entry is that token: 123 → 261, "ĠMary" → 259, "Ġxyz" → 262
        // (no merge leads there); "45" is not, and has no merge: "4" "5" → 52 53.
        Assert.Equal([261, 52, 53, 259, 262], tok.Encode("12345 Mary xyz"));
        Assert.Equal([263, 261, 52, 53, 259, 262], tok.EncodeWithSpecialTokens("12345 Mary xyz"));
        // "Mary" after an added token: M a r y → a+r → M ar y (ĠM needs the space).
        Assert.Equal([263, 77, 257, 121], tok.Encode("<|begin_of_text|>Mary"));
        Assert.Equal([259], tok.EncodeContinuation(" Mary"));
        Assert.Equal([0xC3, 0xA9], tok.Encode("é")); // bytes, as characters of the byte-level table
        Assert.Equal("é", tok.Decode([0xC3, 0xA9]));
        Assert.Equal([" Mary", " xyz", "\uFFFD", "<|begin_of_text|>"], tok.ToStrTokens([259, 262, 0xC3, 263]));
        Assert.Equal("huggingface-bpe (byte-level)", tok.Kind);
        Assert.Equal(263, tok.BosId);
        Assert.Equal(264, tok.EosId);
        Assert.Equal(265, tok.VocabSize);
    }

    // ---- errors ----

    [Fact]
    public void Ids_outside_the_vocabulary_and_unpaired_surrogates_are_refused()
    {
        using var tok = Tiny("llama2", Llama2(), LlamaConfig());
        var ex = Assert.Throws<InvalidTokensException>(() => tok.Decode([1, 278]));
        Assert.Contains("token id 278 at position 1", ex.Message);
        Assert.Throws<InvalidTokensException>(() => tok.ToStrTokens([-1]));
        var bad = Assert.Throws<InvalidTokensException>(() => tok.Encode("ab\ud800c"));
        Assert.Contains("unpaired UTF-16 surrogate (U+D800) at index 2", bad.Message);
        Assert.Equal([259, ByteId(0xF0), ByteId(0x9F), ByteId(0x99), ByteId(0x82)], tok.Encode("🙂")); // a surrogate pair is fine
    }

    [Fact]
    public void Encode_without_bos_token_refuses_prepend_bos()
    {
        var json = Llama3();
        json["post_processor"] = null;
        using var tok = Tiny("nobos", json);
        Assert.Null(tok.BosId);
        var ex = Assert.Throws<InvalidTokensException>(() => tok.Encode("x", prependBos: true));
        Assert.Contains("no BOS token", ex.Message);
    }

    public static TheoryData<string, string, string> BadFiles() => new()
    {
        // name, JSON edit (as "path=value"), expected message part
        { "no model", "model=null", "key 'model': missing" },
        { "unigram", "model.type=\"Unigram\"", "key 'model.type': model type 'Unigram' is not supported (supported: BPE, WordPiece)" },
        { "vocab type", "model.vocab=[1]", "key 'model.vocab': missing or not an object" },
        { "negative id", "model.vocab.a=-1", "key 'model.vocab['a']': must be a token id" },
        { "duplicate id", "model.vocab.a=261", "id 261 is also the id of 'a'" },
        { "merge", "model.merges=[\"a x\"]", "key 'model.merges[0]': its right token 'x' is not in model.vocab" },
        { "merge shape", "model.merges=[[\"a\"]]", "key 'model.merges[0]': must be [left, right]" },
        { "prefix", "model.continuing_subword_prefix=\"##\"", "does not start with a whole continuing_subword_prefix '##'" },
        { "dropout", "model.dropout=0.1", "key 'model.dropout': is 0.1: BPE dropout makes encoding random" },
        { "unk", "model.unk_token=\"<nope>\"", "key 'model.unk_token': '<nope>' is not in model.vocab" },
        { "byte_fallback", "model.byte_fallback=\"yes\"", "key 'model.byte_fallback': must be true or false" },
        { "added id", "added_tokens.1.id=7", "'<s>' is listed with id 7, but Hugging Face tokenizers gives it id 1" },
        { "added flag", "added_tokens.0.special=null", "key 'added_tokens[0].special': missing or not true/false" },
        { "normalizer type", "normalizer.type=\"Precompiled\"", "Precompiled belongs to SentencePiece Unigram tokenizers" },
        { "replace pattern", "normalizer.normalizers.1.pattern={\"Glob\":\" \"}", "key 'normalizer.normalizers[1].pattern': must be {\"String\": text} or {\"Regex\": pattern}" },
        { "strip stop", "decoder.decoders.3.stop=1", "key 'decoder.decoders[3].stop': is 1: Hugging Face tokenizers' Strip decoder aborts" },
        { "template token", "post_processor.single.0.SpecialToken.id=\"<x>\"", "'<x>' is not defined in post_processor.special_tokens" },
        { "template B", "post_processor.single.1.Sequence.id=\"B\"", "key 'post_processor.single': must use sequence A exactly once and never B" },
        { "template id", "post_processor.special_tokens.<s>.ids=[999]", "id 999 is neither in model.vocab nor an added token" },
        { "template counts", "post_processor.special_tokens.<s>.tokens=[]", "has 1 ids but 0 tokens" },
        { "version", "version=\"2.0\"", "key 'version': must be \"1.0\"" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void Malformed_tokenizer_json_is_refused_naming_the_file_and_the_key(string name, string edit, string expected)
    {
        var json = Llama2();
        int eq = edit.IndexOf('=');
        Set(json, edit[..eq].Split('.'), JsonNode.Parse(edit[(eq + 1)..]));
        string dir = WriteFolder(_tmp.Sub(name.Replace(' ', '-')), json);
        var ex = Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir));
        Assert.StartsWith(Path.Combine(dir, "tokenizer.json") + ":", ex.Message);
        Assert.Contains(expected, ex.Message);
    }

    private static void Set(JsonNode node, string[] path, JsonNode? value)
    {
        for (int i = 0; i < path.Length - 1; i++)
            node = int.TryParse(path[i], out int k) && node is JsonArray a ? a[k]! : node[path[i]]!;
        if (node is JsonArray array) array[int.Parse(path[^1])] = value;
        else node[path[^1]] = value;
    }

    [Fact]
    public void Oversized_deep_and_non_json_files_are_refused_before_parsing()
    {
        string dir = _tmp.Sub("big");
        string file = Path.Combine(dir, "tokenizer.json");
        using (var f = File.Create(file)) f.SetLength(TokenizerJson.MaxFileBytes + 1); // sparse: no 64 MiB written
        var big = Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir));
        Assert.Contains("refusing a tokenizer.json over 64 MiB", big.Message);

        File.WriteAllText(file, "{\"model\": " + new string('[', 100) + new string(']', 100) + "}");
        Assert.Contains("nested at most 64 deep", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
        File.WriteAllText(file, "{\"model\": {\"type\": \"BPE\"}, \"model\": 1}");
        Assert.Contains("no duplicate keys", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
        File.WriteAllText(file, "[1, 2]");
        Assert.Contains("is not a JSON object", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
        File.WriteAllText(file, "{\"model\": \"\\ud800\"}");
        Assert.Contains("not valid Unicode", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
    }

    [Fact]
    public void Tokenizer_config_is_size_limited_and_its_tokens_must_exist()
    {
        string dir = WriteFolder(_tmp.Sub("config"), Llama2());
        string config = Path.Combine(dir, "tokenizer_config.json");
        using (var f = File.Create(config)) f.SetLength(HuggingFaceTokenizer.MaxConfigBytes + 1);
        var big = Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir));
        Assert.StartsWith(config + ":", big.Message);
        Assert.Contains("over 1 MiB", big.Message);

        File.WriteAllText(config, "{\"bos_token\": \"<bos>\"}");
        Assert.Contains("key 'bos_token': '<bos>' is not a token of", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
        File.WriteAllText(config, "{\"eos_token\": 2}");
        Assert.Contains("key 'eos_token': must be a token string", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
        File.WriteAllText(config, "{\"add_eos_token\": true}");
        Assert.Contains("key 'add_eos_token': is true, but there is no eos_token", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);
        File.WriteAllText(config, "{\"add_bos_token\": \"yes\"}");
        Assert.Contains("key 'add_bos_token': must be true, false or null", Assert.Throws<ModelFileException>(() => HuggingFaceTokenizer.Load(dir)).Message);

        // An AddedToken object works as a token, and special_tokens_map.json fills what the config lacks.
        File.WriteAllText(config, "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"</s>\"}}");
        File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"pad_token\": \"<unk>\"}");
        using var tok = HuggingFaceTokenizer.Load(dir);
        Assert.Equal(2, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(0, tok.PadId);
    }
}

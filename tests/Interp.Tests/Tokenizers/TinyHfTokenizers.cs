using System.Text.Json.Nodes;

namespace Interp.Tests.Tokenizers;

/// <summary>
/// Small Hugging Face tokenizer.json documents written the way Hugging Face's converters write the real ones, with
/// vocabularies small enough that every expected id can be worked out by hand (see HuggingFaceTokenizerTests).
/// </summary>
internal static class TinyHfTokenizers
{
    /// <summary>An added-token entry as tokenizer.json writes it.</summary>
    public static JsonObject Added(int id, string content, bool special = true, bool normalized = false) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = normalized, ["special"] = special,
    };

    private static JsonObject Special(string name) => new() { ["SpecialToken"] = new JsonObject { ["id"] = name, ["type_id"] = 0 } };

    private static JsonObject Sequence(string id, int typeId = 0) => new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = typeId } };

    /// <summary>TemplateProcessing that puts <paramref name="bos"/> (id <paramref name="bosId"/>) before a text, as Llama's files do.</summary>
    public static JsonObject BosTemplate(string bos, int bosId) => new()
    {
        ["type"] = "TemplateProcessing",
        ["single"] = new JsonArray(Special(bos), Sequence("A")),
        ["pair"] = new JsonArray(Special(bos), Sequence("A"), Special(bos), Sequence("B", 1)),
        ["special_tokens"] = new JsonObject { [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray(bosId), ["tokens"] = new JsonArray(bos) } },
    };

    /// <summary>
    /// The SentencePiece pieces of the Llama-2-style tokenizers, after &lt;unk&gt; 0, &lt;s&gt; 1, &lt;/s&gt; 2 and the 256 byte
    /// tokens &lt;0x00&gt;…&lt;0xFF&gt; (ids 3…258): "▁" is 259, "a" 260, …, "▁Hello" 276, "▁▁" 277.
    /// </summary>
    public static readonly string[] LlamaPieces =
        ["▁", "a", "r", "y", "M", "▁M", "ar", "▁Mar", "▁Mary", "H", "e", "l", "o", "ll", "He", "llo", "Hello", "▁Hello", "▁▁"];

    /// <summary>The merges, highest priority first.</summary>
    public static readonly string[][] LlamaMerges =
    [
        ["l", "l"], ["H", "e"], ["ll", "o"], ["He", "llo"], ["▁", "Hello"], ["▁", "M"], ["a", "r"], ["▁M", "ar"], ["▁Mar", "y"], ["▁", "▁"],
    ];

    /// <summary>The id of a piece of <see cref="LlamaPieces"/>.</summary>
    public static int LlamaId(string piece) => 259 + Array.IndexOf(LlamaPieces, piece);

    /// <summary>The id of byte-fallback token &lt;0xXX&gt;.</summary>
    public static int ByteId(int b) => 3 + b;

    private static JsonObject LlamaModel()
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = ByteId(b);
        foreach (string piece in LlamaPieces) vocab[piece] = LlamaId(piece);
        return new JsonObject
        {
            ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
            ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false, ["vocab"] = vocab,
            // Llama 2's file writes merges as "left right" strings.
            ["merges"] = new JsonArray(LlamaMerges.Select(m => (JsonNode)JsonValue.Create($"{m[0]} {m[1]}")).ToArray()),
        };
    }

    private static JsonArray LlamaAdded() => new(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>"));

    /// <summary>
    /// Llama 2 / Mistral as transformers converted them (legacy): normalizer Prepend("▁") then Replace(" " → "▁"), no
    /// pre-tokenizer, BPE with byte fallback, TemplateProcessing "&lt;s&gt; $A", decoder Replace("▁" → " ") + ByteFallback
    /// + Fuse + Strip(one leading space).
    /// </summary>
    public static JsonObject Llama2() => new()
    {
        ["version"] = "1.0", ["truncation"] = null, ["padding"] = null,
        ["added_tokens"] = LlamaAdded(),
        ["normalizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["normalizers"] = new JsonArray(
                new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
        },
        ["pre_tokenizer"] = null,
        ["post_processor"] = BosTemplate("<s>", 1),
        ["decoder"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["decoders"] = new JsonArray(
                new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "▁" }, ["content"] = " " },
                new JsonObject { ["type"] = "ByteFallback" },
                new JsonObject { ["type"] = "Fuse" },
                new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
        },
        ["model"] = LlamaModel(),
    };

    /// <summary>
    /// The same vocabulary as newer files write it (legacy: false): no normalizer, a Metaspace pre-tokenizer and decoder
    /// with prepend_scheme "first" (only the text's first section gets the "▁").
    /// </summary>
    public static JsonObject LlamaMetaspace()
    {
        var json = Llama2();
        json["normalizer"] = null;
        json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false };
        json["decoder"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false };
        return json;
    }

    /// <summary>tokenizer_config.json of the Llama-2-style tokenizers.</summary>
    public static JsonObject LlamaConfig() => new()
    {
        ["add_bos_token"] = true, ["add_eos_token"] = false, ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["unk_token"] = "<unk>",
        ["pad_token"] = null, ["tokenizer_class"] = "LlamaTokenizer", ["legacy"] = true,
    };

    /// <summary>GPT-2's byte-to-character table (bytes_to_unicode): printable bytes stand for themselves, the rest map to U+0100 on.</summary>
    public static string ByteChar(int b)
    {
        bool printable = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ';
        if (printable) return ((char)b).ToString();
        int n = 0;
        for (int i = 0; i < b; i++)
            if (!(i is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ')) n++;
        return ((char)(256 + n)).ToString();
    }

    /// <summary>The merged tokens of the Llama-3-style tokenizer, ids 256… after the 256 byte tokens (id = byte).</summary>
    public static readonly string[] Llama3Tokens = ["ĠM", "ar", "ĠMar", "ĠMary", "12", "123", "Ġxyz"];

    /// <summary>
    /// Llama 3 / Qwen style: the Split regex pre-tokenizer (Llama 3's pattern, numbers in groups of up to three) then
    /// ByteLevel without its own regex, BPE with ignore_merges over 256 byte tokens, &lt;|begin_of_text|&gt; (263) put
    /// first by a TemplateProcessing inside a post-processor Sequence, ByteLevel decoder. "Ġxyz" has no merges: only
    /// ignore_merges reaches it.
    /// </summary>
    public static JsonObject Llama3()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteChar(b)] = b;
        for (int i = 0; i < Llama3Tokens.Length; i++) vocab[Llama3Tokens[i]] = 256 + i;
        var byteLevel = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false };
        return new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(263, "<|begin_of_text|>"), Added(264, "<|end_of_text|>")),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split",
                        ["pattern"] = new JsonObject { ["Regex"] = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" },
                        ["behavior"] = "Isolated", ["invert"] = false,
                    },
                    byteLevel.DeepClone()),
            },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["processors"] = new JsonArray(
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true },
                    BosTemplate("<|begin_of_text|>", 263)),
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = true, ["vocab"] = vocab,
                ["merges"] = new JsonArray(new[] { ("Ġ", "M"), ("a", "r"), ("ĠM", "ar"), ("ĠMar", "y"), ("1", "2"), ("12", "3") }
                    .Select(m => (JsonNode)new JsonArray(m.Item1, m.Item2)).ToArray()),
            },
        };
    }

    /// <summary>tokenizer_config.json of the Llama-3-style tokenizer: BOS and EOS, no add_bos_token (the template decides).</summary>
    public static JsonObject Llama3Config() => new() { ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|end_of_text|>", ["tokenizer_class"] = "PreTrainedTokenizerFast" };

    /// <summary>A BERT-style WordPiece tokenizer of eleven tokens: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, then words and pieces.</summary>
    public static JsonObject Bert()
    {
        string[] words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "##s", "sat", ".", "interpret", "##ability"];
        var vocab = new JsonObject();
        for (int i = 0; i < words.Length; i++) vocab[words[i]] = i;
        JsonObject Token(string name, int id) => new() { ["id"] = name, ["ids"] = new JsonArray(id), ["tokens"] = new JsonArray(name) };
        return new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(0, "[PAD]"), Added(1, "[UNK]"), Added(2, "[CLS]"), Added(3, "[SEP]")),
            ["normalizer"] = new JsonObject { ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true, ["strip_accents"] = null, ["lowercase"] = true },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special("[CLS]"), Sequence("A"), Special("[SEP]")),
                ["pair"] = new JsonArray(Special("[CLS]"), Sequence("A"), Special("[SEP]"), Sequence("B", 1), Special("[SEP]")),
                ["special_tokens"] = new JsonObject { ["[CLS]"] = Token("[CLS]", 2), ["[SEP]"] = Token("[SEP]", 3) },
            },
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##", ["max_input_chars_per_word"] = 100, ["vocab"] = vocab,
            },
        };
    }

    /// <summary>tokenizer_config.json of the BERT-style tokenizer.</summary>
    public static JsonObject BertConfig() => new()
    {
        ["cls_token"] = "[CLS]", ["sep_token"] = "[SEP]", ["pad_token"] = "[PAD]", ["unk_token"] = "[UNK]", ["do_lower_case"] = true, ["tokenizer_class"] = "BertTokenizer",
    };

    /// <summary>Writes tokenizer.json (and tokenizer_config.json when given) into <paramref name="dir"/>; returns the folder.</summary>
    public static string WriteFolder(string dir, JsonObject tokenizer, JsonObject? config = null)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString());
        if (config is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        return dir;
    }
}

using System.Text;
using System.Text.Json;
using Interp.Loading;

namespace Interp.Tokenizers;

/// <summary>Which tokenizer.json <see cref="TokenizerJson.Write"/> makes for the native library.</summary>
internal enum TokenizerJsonVariant
{
    /// <summary>The file's own pipeline: its post-processor, and its added tokens marked special as written.</summary>
    AsWritten,

    /// <summary>
    /// No post-processor and no added token marked special: the library's encode (which always adds special tokens)
    /// then equals HF <c>encode(text, add_special_tokens=False)</c>, and its decode (which always skips special tokens)
    /// equals HF <c>decode(ids, skip_special_tokens=False)</c>. Neither flag changes how a text is split.
    /// </summary>
    Plain,

    /// <summary><see cref="Plain"/> without the dummy prefix: no Prepend normalizer, Metaspace prepend_scheme "never", ByteLevel add_prefix_space false.</summary>
    Continuation,
}

/// <summary>An entry of tokenizer.json's <c>added_tokens</c>.</summary>
internal sealed record AddedTokenEntry(int Id, string Content, bool Special);

/// <summary>
/// A Hugging Face tokenizer.json, read as data from a stranger: size- and depth-limited, every component checked
/// against the schema of the tokenizers library (0.22) before the native library sees it, and written back in a
/// canonical form that holds only the checked fields (<see cref="Write"/>). The native library aborts the whole process
/// on some malformed documents (a syntax error inside the decoder, a template naming a special token it does not
/// define, a merge shorter than the subword prefix), so nothing unchecked may reach it.
/// </summary>
/// <remarks>
/// Beyond the library's own rules this refuses, with a message naming the key: model types other than BPE and
/// WordPiece; the Precompiled normalizer (SentencePiece Unigram files); BPE dropout (random encodings); two vocabulary
/// entries with one id; added tokens listed twice, or with an id other than the one the library would give them;
/// unknown-token, template and processor tokens whose ids are not in the vocabulary. The file's truncation and padding
/// are dropped, as transformers' fast tokenizers do for a call that asks for neither.
/// </remarks>
internal sealed partial class TokenizerJson
{
    /// <summary>Largest tokenizer.json read (real ones are up to ~35 MB).</summary>
    public const long MaxFileBytes = 64L << 20;

    /// <summary>Deepest JSON nesting accepted (real files nest ~8 deep).</summary>
    public const int MaxDepth = 64;

    private readonly byte[] _bytes;
    private readonly Dictionary<int, string> _tokens = new();
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly List<AddedTokenEntry> _added = new();
    private readonly List<(string From, string To)> _displayReplacements = new();
    private readonly List<int> _templatePrefix = new(), _templateSuffix = new();

    private TokenizerJson(string path, byte[] bytes)
    {
        Path = path;
        _bytes = bytes;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>"BPE" or "WordPiece".</summary>
    public string ModelType { get; private set; } = "";

    /// <summary>A ByteLevel pre-tokenizer or decoder (GPT-2, Llama 3, Qwen).</summary>
    public bool ByteLevel { get; private set; }

    /// <summary>A ByteLevel decoder: each token's text is its bytes in GPT-2's byte-to-character form.</summary>
    public bool ByteLevelDecoder { get; private set; }

    /// <summary>BPE with byte_fallback (Llama 2, Mistral, Gemma): unknown characters become <c>&lt;0xXX&gt;</c> tokens.</summary>
    public bool ByteFallback { get; private set; }

    /// <summary>The text gets a dummy prefix (a Prepend normalizer, Metaspace prepend, ByteLevel add_prefix_space).</summary>
    public bool HasDummyPrefix { get; private set; }

    /// <summary>Literal replacements the decoder makes (Replace "▁" → " ", Metaspace), for display strings.</summary>
    public IReadOnlyList<(string From, string To)> DisplayReplacements => _displayReplacements;

    /// <summary>id → token: the model's vocabulary, with added tokens over it (as the library looks ids up).</summary>
    public IReadOnlyDictionary<int, string> Tokens => _tokens;

    /// <summary>token → id: added tokens first, then the model's vocabulary.</summary>
    public IReadOnlyDictionary<string, int> Ids => _ids;

    /// <summary>The added tokens, in file order.</summary>
    public IReadOnlyList<AddedTokenEntry> Added => _added;

    /// <summary>The ids the post-processor puts before a single text (e.g. [CLS], &lt;s&gt;).</summary>
    public IReadOnlyList<int> TemplatePrefix => _templatePrefix;

    /// <summary>The ids the post-processor puts after a single text (e.g. [SEP]).</summary>
    public IReadOnlyList<int> TemplateSuffix => _templateSuffix;

    /// <summary>Largest id + 1, over the vocabulary and the added tokens.</summary>
    public int VocabSize { get; private set; }

    /// <summary>Reads and checks <paramref name="path"/>.</summary>
    /// <exception cref="ModelFileException">The file is missing, too large, not JSON, or breaks the schema.</exception>
    public static TokenizerJson Read(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new ModelFileException(path, null, "tokenizer file not found");
        if (info.Length > MaxFileBytes)
            throw new ModelFileException(path, null, $"is {info.Length:N0} bytes; refusing a tokenizer.json over {MaxFileBytes >> 20} MiB");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFileException(path, null, $"cannot read the tokenizer file: {e.Message}", e);
        }
        if (bytes.LongLength > MaxFileBytes)
            throw new ModelFileException(path, null, $"is {bytes.LongLength:N0} bytes; refusing a tokenizer.json over {MaxFileBytes >> 20} MiB");
        if (bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) bytes = bytes[3..]; // a UTF-8 byte-order mark
        var json = new TokenizerJson(path, bytes);
        json.WriteChecked(TokenizerJsonVariant.AsWritten, collect: true);
        return json;
    }

    /// <summary>The canonical document of <paramref name="variant"/> (UTF-8), for <see cref="NativeHfTokenizer.Create"/>.</summary>
    public byte[] Write(TokenizerJsonVariant variant) => WriteChecked(variant, collect: false);

    /// <summary>Parses the file's bytes (depth-limited, no duplicate keys) into a document.</summary>
    internal static JsonDocument Parse(string path, byte[] bytes) => JsonChecks.ParseObject(path, bytes, MaxDepth);

    private byte[] WriteChecked(TokenizerJsonVariant variant, bool collect)
    {
        using var doc = Parse(Path, _bytes);
        var output = new MemoryStream(_bytes.Length + 1024);
        using (var writer = new Utf8JsonWriter(output, WriterOptions))
        {
            var pass = new Pass(this, writer, variant, collect);
            pass.Document(doc.RootElement);
        }
        return output.ToArray();
    }

    /// <summary>The error for <paramref name="key"/> (a path such as <c>model.merges[3]</c>).</summary>
    private ModelFileException Bad(string key, string problem) => new(Path, null, $"key '{key}': {problem}");

    private static string Quote(string s) => s.Length <= 60 ? $"'{s}'" : $"'{s[..57]}…'";
}

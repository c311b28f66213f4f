namespace Interp.Tokenizers;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> tokenizer — byte-level BPE (GPT-2, Llama 3, Qwen), BPE with byte fallback
/// (Llama 2, Mistral, Gemma) or WordPiece (BERT) — run by Hugging Face's own Rust implementation (the tokenizers crate
/// 0.22.2, through Tokenizers.DotNet), so that ids are the ones the model was trained on. BOS, EOS and padding come
/// from <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> beside the file (<see cref="Load"/>).
/// </summary>
/// <remarks>
/// <para>How the calls map to Hugging Face's:</para>
/// <list type="bullet">
/// <item><see cref="Encode"/> is <c>encode(text, add_special_tokens=False)</c>, then BOS when asked: nothing else is
/// added. Special tokens written in the text (<c>&lt;|endoftext|&gt;</c>, <c>[SEP]</c>) are still recognised, as in
/// Hugging Face.</item>
/// <item><see cref="EncodeWithSpecialTokens"/> adds special tokens as the tokenizer's own files say: when
/// tokenizer_config.json sets <c>add_bos_token</c> or <c>add_eos_token</c>, BOS and EOS as those say (as
/// transformers' Llama and Gemma tokenizers rebuild their post-processor from them); otherwise the post-processor of
/// tokenizer.json (<c>encode(text, add_special_tokens=True)</c>: BERT's [CLS] … [SEP], Llama 3's
/// &lt;|begin_of_text|&gt;).</item>
/// <item><see cref="Decode"/> is <c>decode(ids, skip_special_tokens=False)</c> and
/// <see cref="DecodeSkippingSpecialTokens"/> is <c>decode(ids, skip_special_tokens=True)</c>. transformers'
/// <c>clean_up_tokenization_spaces</c> is not applied (WordPiece's decoder does its own clean-up).</item>
/// <item><see cref="EncodeContinuation"/> encodes without the dummy prefix (a Prepend normalizer, a Metaspace
/// prepend_scheme other than "never", ByteLevel add_prefix_space), so that the answer " Mary" after a prompt is the one
/// token "▁Mary" it is inside a text, not "▁" + "▁Mary". Tokenizers without a dummy prefix encode it as
/// <see cref="Encode"/> does.</item>
/// </list>
/// <para>The file's truncation and padding are ignored, as transformers does for a call that asks for neither. The
/// files are checked before the native library reads them (see <see cref="TokenizerJson"/>), because the library
/// aborts the process on some malformed ones. Instances are thread-safe (calls into the library are serialised).</para>
/// </remarks>
public sealed partial class HuggingFaceTokenizer : ITokenizer, IDisposable
{
    private readonly TokenizerJson _json;
    private readonly NativeHfTokenizer _plain, _asWritten;
    private readonly Lock _continuationLock = new();
    private NativeHfTokenizer? _continuation;
    private readonly bool? _addBos, _addEos;
    private readonly HashSet<int> _addedIds;

    private HuggingFaceTokenizer(TokenizerJson json, NativeHfTokenizer plain, NativeHfTokenizer asWritten, SpecialTokenSettings special)
    {
        _json = json;
        _plain = plain;
        _asWritten = asWritten;
        BosId = special.BosId ?? (json.TemplatePrefix.Count > 0 ? json.TemplatePrefix[0] : null);
        EosId = special.EosId;
        PadId = special.PadId;
        UnkId = special.UnkId;
        _addBos = special.AddBos;
        _addEos = special.AddEos;
        _addedIds = json.Added.Select(a => a.Id).ToHashSet();
    }

    /// <summary>The tokenizer.json file.</summary>
    public string Path => _json.Path;

    /// <summary>
    /// What kind of tokenizer this is: "huggingface-bpe (byte-level)", "huggingface-bpe (byte fallback)",
    /// "huggingface-bpe" or "huggingface-wordpiece".
    /// </summary>
    public string Kind => _json.ModelType == "WordPiece" ? "huggingface-wordpiece"
        : _json.ByteLevel ? "huggingface-bpe (byte-level)"
        : _json.ByteFallback ? "huggingface-bpe (byte fallback)"
        : "huggingface-bpe";

    /// <inheritdoc />
    /// <remarks>The largest id + 1 over the model's vocabulary and the added tokens.</remarks>
    public int VocabSize => _json.VocabSize;

    /// <inheritdoc />
    /// <remarks>
    /// tokenizer_config.json's (else special_tokens_map.json's) <c>bos_token</c>; without one, the first token the
    /// post-processor puts before a text (BERT's [CLS]); else null.
    /// </remarks>
    public int? BosId { get; }

    /// <inheritdoc />
    /// <remarks>tokenizer_config.json's (else special_tokens_map.json's) <c>eos_token</c>, or null.</remarks>
    public int? EosId { get; }

    /// <inheritdoc />
    /// <remarks>tokenizer_config.json's (else special_tokens_map.json's) <c>pad_token</c>, or null.</remarks>
    public int? PadId { get; }

    /// <summary>tokenizer_config.json's (else special_tokens_map.json's) <c>unk_token</c>, or null.</summary>
    public int? UnkId { get; }

    /// <summary>The tokens the post-processor puts before a single text (e.g. [CLS]), whatever tokenizer_config.json says.</summary>
    public IReadOnlyList<int> PostProcessorPrefix => _json.TemplatePrefix;

    /// <summary>The tokens the post-processor puts after a single text (e.g. [SEP]).</summary>
    public IReadOnlyList<int> PostProcessorSuffix => _json.TemplateSuffix;

    /// <inheritdoc />
    /// <exception cref="InvalidTokensException">BOS is asked for but there is none, or the text holds an unpaired surrogate.</exception>
    public int[] Encode(string text, bool prependBos = false)
    {
        var ids = Run(_plain, text);
        if (!prependBos) return ids;
        if (BosId is not int bos) throw new InvalidTokensException($"{Path}: cannot prepend BOS, the tokenizer has no BOS token (no bos_token in tokenizer_config.json or special_tokens_map.json, and no post-processor prefix)");
        return [bos, .. ids];
    }

    /// <summary>
    /// Encodes <paramref name="text"/> with the special tokens the tokenizer's own files add (see the class remarks):
    /// BERT's [CLS] … [SEP], Llama's BOS, nothing for GPT-2.
    /// </summary>
    /// <exception cref="InvalidTokensException">The text holds an unpaired surrogate.</exception>
    public int[] EncodeWithSpecialTokens(string text)
    {
        if (_addBos is null && _addEos is null) return Run(_asWritten, text);
        var ids = Run(_plain, text);
        var result = new List<int>(ids.Length + 2);
        if (_addBos == true) result.Add(BosId!.Value);
        result.AddRange(ids);
        if (_addEos == true) result.Add(EosId!.Value);
        return result.ToArray();
    }

    /// <inheritdoc />
    /// <remarks>Without the dummy prefix: see the class remarks. No special tokens are added.</remarks>
    public int[] EncodeContinuation(string text)
    {
        if (!_json.HasDummyPrefix) return Run(_plain, text);
        NativeHfTokenizer continuation;
        lock (_continuationLock)
            continuation = _continuation ??= NativeHfTokenizer.Create(Path, _json.Write(TokenizerJsonVariant.Continuation));
        return Run(continuation, text);
    }

    /// <inheritdoc />
    /// <remarks>Hugging Face's <c>decode(ids, skip_special_tokens=False)</c>.</remarks>
    public string Decode(IReadOnlyList<int> ids) => DecodeWith(_plain, ids);

    /// <summary>Hugging Face's <c>decode(ids, skip_special_tokens=True)</c>: tokens marked special in tokenizer.json are left out.</summary>
    /// <exception cref="InvalidTokensException">An id is outside [0, <see cref="VocabSize"/>).</exception>
    public string DecodeSkippingSpecialTokens(IReadOnlyList<int> ids) => DecodeWith(_asWritten, ids);

    /// <inheritdoc />
    /// <remarks>
    /// Byte-level tokenizers: each token decoded on its own ("Ġworld" shows as " world"; part of a multi-byte character
    /// as U+FFFD), as <see cref="Gpt2Tokenizer"/> shows them. Others: the vocabulary string with the decoder's
    /// replacements ("▁" as a space), a byte-fallback token as its character when printable ASCII, else
    /// "&lt;0xXX&gt;"; WordPiece pieces as stored ("##ing"). Added and special tokens show as written ("[CLS]",
    /// "&lt;s&gt;"). An id inside the range that no token has shows as "".
    /// </remarks>
    public string[] ToStrTokens(IReadOnlyList<int> ids)
    {
        TokenIds.Check(ids, VocabSize);
        var result = new string[ids.Count];
        for (int i = 0; i < result.Length; i++) result[i] = Display(ids[i]);
        return result;
    }

    /// <inheritdoc />
    /// <remarks>Hugging Face's <c>decode([id])</c>, so a SentencePiece-style "▁Mary" gives "Mary".</remarks>
    public string DecodeToken(int id)
    {
        TokenIds.Check(id, 0, VocabSize);
        return DecodeWith(_plain, [id]);
    }

    /// <summary>The vocabulary string of <paramref name="id"/> (Hugging Face's <c>id_to_token</c>), or null for an unused id.</summary>
    /// <exception cref="InvalidTokensException">The id is outside [0, <see cref="VocabSize"/>).</exception>
    public string? IdToToken(int id)
    {
        TokenIds.Check(id, 0, VocabSize);
        return _json.Tokens.TryGetValue(id, out var token) ? token : null;
    }

    /// <summary>The id of the vocabulary string <paramref name="token"/> (added tokens first), or null.</summary>
    public int? TokenToId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return _json.Ids.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>Frees the native tokenizers.</summary>
    public void Dispose()
    {
        _plain.Dispose();
        _asWritten.Dispose();
        lock (_continuationLock) _continuation?.Dispose();
    }

    private int[] Run(NativeHfTokenizer native, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        for (int i = 0; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i])) continue;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) i++;
            else throw new InvalidTokensException($"the text has an unpaired UTF-16 surrogate (U+{(int)text[i]:X4}) at index {i}; it is not Unicode text and cannot be encoded");
        }
        var raw = native.Encode(text);
        var ids = new int[raw.Length];
        for (int i = 0; i < raw.Length; i++)
        {
            // Every id the library can emit was checked to be in the vocabulary at load; this guards that promise.
            if (raw[i] >= (uint)VocabSize)
                throw new ModelFileException(Path, null, $"Hugging Face tokenizers produced id {raw[i]}, outside the vocabulary of {VocabSize}");
            ids[i] = (int)raw[i];
        }
        return ids;
    }

    private string DecodeWith(NativeHfTokenizer native, IReadOnlyList<int> ids)
    {
        TokenIds.Check(ids, VocabSize);
        var raw = new uint[ids.Count];
        for (int i = 0; i < raw.Length; i++) raw[i] = (uint)ids[i];
        return native.Decode(raw);
    }

    private string Display(int id)
    {
        if (!_json.Tokens.TryGetValue(id, out var token)) return "";
        if (_addedIds.Contains(id)) return token;
        if (_json.ByteLevelDecoder) return DecodeWith(_plain, [id]);
        if (_json.ByteFallback && IsByteToken(token, out byte b))
            return b is >= 0x20 and < 0x7F ? ((char)b).ToString() : token;
        foreach (var (from, to) in _json.DisplayReplacements) token = token.Replace(from, to, StringComparison.Ordinal);
        return token;
    }

    /// <summary>True when <paramref name="token"/> is exactly "&lt;0xHH&gt;", a byte-fallback token.</summary>
    private static bool IsByteToken(string token, out byte value)
    {
        value = 0;
        return token is ['<', '0', 'x', _, _, '>']
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Interp.Tokenizers;

// The schema: every component type of the tokenizers library that Interp accepts, with the fields it reads. A field
// the file has but the schema lacks is dropped; a field of the wrong type, a missing required one, an unknown type or
// an id outside the vocabulary is an error that names its key.
internal sealed partial class TokenizerJson
{
    private enum F { Bool, OptBool, Str, OptStr, Char, U32, Pattern, Behavior, PrependScheme, TokenIdPair, Normalizers, PreTokenizers, Processors, Decoders, Template, SpecialTokens }

    private sealed record Field(string Name, F Kind, bool Required = false);

    private enum Part { Normalizer, PreTokenizer, PostProcessor, Decoder }

    private static readonly string[] Behaviors = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"];
    private static readonly string[] PrependSchemes = ["first", "never", "always"];

    private static readonly Field[] ByteLevelFields = [new("add_prefix_space", F.Bool), new("trim_offsets", F.Bool), new("use_regex", F.Bool)];
    private static readonly Field[] MetaspaceFields =
        [new("replacement", F.Char, true), new("prepend_scheme", F.PrependScheme), new("split", F.Bool), new("add_prefix_space", F.Bool)];

    private static readonly Dictionary<Part, Dictionary<string, Field[]>> Schema = new()
    {
        [Part.Normalizer] = new(StringComparer.Ordinal)
        {
            ["BertNormalizer"] = [new("clean_text", F.Bool), new("handle_chinese_chars", F.Bool), new("strip_accents", F.OptBool), new("lowercase", F.Bool)],
            ["Lowercase"] = [], ["NFC"] = [], ["NFD"] = [], ["NFKC"] = [], ["NFKD"] = [], ["StripAccents"] = [], ["Nmt"] = [], ["ByteLevel"] = [],
            ["Strip"] = [new("strip_left", F.Bool), new("strip_right", F.Bool)],
            ["Replace"] = [new("pattern", F.Pattern, true), new("content", F.Str, true)],
            ["Prepend"] = [new("prepend", F.Str, true)],
            ["Sequence"] = [new("normalizers", F.Normalizers, true)],
        },
        [Part.PreTokenizer] = new(StringComparer.Ordinal)
        {
            ["BertPreTokenizer"] = [], ["Whitespace"] = [], ["WhitespaceSplit"] = [], ["UnicodeScripts"] = [],
            ["ByteLevel"] = ByteLevelFields,
            ["Metaspace"] = MetaspaceFields,
            ["CharDelimiterSplit"] = [new("delimiter", F.Char, true)],
            ["Punctuation"] = [new("behavior", F.Behavior)],
            ["Digits"] = [new("individual_digits", F.Bool)],
            ["Split"] = [new("pattern", F.Pattern, true), new("behavior", F.Behavior, true), new("invert", F.Bool)],
            ["Sequence"] = [new("pretokenizers", F.PreTokenizers, true)],
        },
        [Part.PostProcessor] = new(StringComparer.Ordinal)
        {
            ["ByteLevel"] = ByteLevelFields,
            ["BertProcessing"] = [new("sep", F.TokenIdPair, true), new("cls", F.TokenIdPair, true)],
            ["RobertaProcessing"] = [new("sep", F.TokenIdPair, true), new("cls", F.TokenIdPair, true), new("trim_offsets", F.Bool), new("add_prefix_space", F.Bool)],
            ["TemplateProcessing"] = [new("single", F.Template, true), new("pair", F.Template, true), new("special_tokens", F.SpecialTokens, true)],
            ["Sequence"] = [new("processors", F.Processors, true)],
        },
        [Part.Decoder] = new(StringComparer.Ordinal)
        {
            ["ByteLevel"] = ByteLevelFields,
            ["Metaspace"] = MetaspaceFields,
            ["WordPiece"] = [new("prefix", F.Str), new("cleanup", F.Bool)],
            ["BPEDecoder"] = [new("suffix", F.Str)],
            ["ByteFallback"] = [], ["Fuse"] = [],
            ["Strip"] = [new("content", F.Char, true), new("start", F.U32, true), new("stop", F.U32, true)],
            ["Replace"] = [new("pattern", F.Pattern, true), new("content", F.Str, true)],
            ["CTC"] = [new("pad_token", F.Str), new("word_delimiter_token", F.Str), new("cleanup", F.Bool)],
            ["Sequence"] = [new("decoders", F.Decoders, true)],
        },
    };

    private static string PartName(Part part) => part switch
    {
        Part.Normalizer => "normalizer",
        Part.PreTokenizer => "pre-tokenizer",
        Part.PostProcessor => "post-processor",
        _ => "decoder",
    };

    /// <summary>One walk over the document: checks it and writes the canonical form of one variant.</summary>
    private sealed class Pass(TokenizerJson json, Utf8JsonWriter w, TokenizerJsonVariant variant, bool collect)
    {
        private readonly Dictionary<string, int> _vocab = new(StringComparer.Ordinal);
        private readonly Dictionary<int, string> _byId = new();
        private readonly Dictionary<string, int> _added = new(StringComparer.Ordinal);
        private bool Continuation => variant == TokenizerJsonVariant.Continuation;
        private bool Plain => variant != TokenizerJsonVariant.AsWritten;

        public void Document(JsonElement root)
        {
            if (root.TryGetProperty("version", out var version) && !(version.ValueKind == JsonValueKind.String && version.GetString() == "1.0"))
                throw json.Bad("version", $"must be \"1.0\" (the only tokenizer.json version), got {Raw(version)}");
            if (!root.TryGetProperty("model", out var model) || model.ValueKind == JsonValueKind.Null)
                throw json.Bad("model", "missing: a tokenizer.json has a \"model\" object (BPE or WordPiece)");
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WritePropertyName("model");
            Model(model);
            w.WritePropertyName("added_tokens");
            AddedTokens(root.TryGetProperty("added_tokens", out var added) ? added : default);
            Top(root, "normalizer", Part.Normalizer);
            Top(root, "pre_tokenizer", Part.PreTokenizer);
            if (Plain)
                w.WriteNull("post_processor");
            else
                Top(root, "post_processor", Part.PostProcessor);
            Top(root, "decoder", Part.Decoder);
            w.WriteEndObject();
            if (!collect) return;
            foreach (var (token, id) in _vocab) json._tokens[id] = token;
            foreach (var entry in json._added) json._tokens[entry.Id] = entry.Content;
            foreach (var (token, id) in _added) json._ids[token] = id;
            foreach (var (token, id) in _vocab) json._ids.TryAdd(token, id);
            json.VocabSize = json._tokens.Keys.Max() + 1;
            Collect(root);
        }

        private void Top(JsonElement root, string key, Part part)
        {
            w.WritePropertyName(key);
            if (!root.TryGetProperty(key, out var e) || e.ValueKind == JsonValueKind.Null) w.WriteNullValue();
            else if (Continuation && part == Part.Normalizer && TypeIs(e, "Prepend")) w.WriteNullValue();
            else Component(e, key, part);
        }

        // ---- models ----

        private void Model(JsonElement e)
        {
            if (e.ValueKind != JsonValueKind.Object) throw json.Bad("model", $"must be an object, got {e.ValueKind}");
            if (!e.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
                throw json.Bad("model.type", "missing or not a string: the model type (BPE or WordPiece)");
            string type = t.GetString()!;
            if (type is not ("BPE" or "WordPiece"))
                throw json.Bad("model.type", $"model type {Quote(type)} is not supported (supported: BPE, WordPiece)");
            if (collect) json.ModelType = type;
            w.WriteStartObject();
            w.WriteString("type", type);
            if (type == "BPE") Bpe(e);
            else WordPiece(e);
            w.WriteEndObject();
        }

        private void Bpe(JsonElement e)
        {
            if (e.TryGetProperty("dropout", out var dropout) && dropout.ValueKind != JsonValueKind.Null)
            {
                if (dropout.ValueKind != JsonValueKind.Number || !dropout.TryGetDouble(out double p) || p != 0)
                    throw json.Bad("model.dropout", $"is {Raw(dropout)}: BPE dropout makes encoding random; a tokenizer for inference has null");
            }
            w.WriteNull("dropout");
            string? unk = Write(e, "model", new Field("unk_token", F.OptStr)) is { ValueKind: JsonValueKind.String } u ? u.GetString() : null;
            string? prefix = Write(e, "model", new Field("continuing_subword_prefix", F.OptStr)) is { ValueKind: JsonValueKind.String } s ? s.GetString() : null;
            Write(e, "model", new Field("end_of_word_suffix", F.OptStr));
            Write(e, "model", new Field("fuse_unk", F.Bool));
            bool byteFallback = Write(e, "model", new Field("byte_fallback", F.Bool)) is { ValueKind: JsonValueKind.True };
            Write(e, "model", new Field("ignore_merges", F.Bool));
            if (collect) json.ByteFallback = byteFallback;
            Vocab(e);
            if (unk is not null && !_vocab.ContainsKey(unk))
                throw json.Bad("model.unk_token", $"{Quote(unk)} is not in model.vocab");
            if (!e.TryGetProperty("merges", out var merges)) throw json.Bad("model.merges", "missing: a BPE model lists its merges");
            w.WritePropertyName("merges");
            Merges(merges, prefix);
        }

        private void WordPiece(JsonElement e)
        {
            string unk = Write(e, "model", new Field("unk_token", F.Str, true))!.Value.GetString()!;
            Write(e, "model", new Field("continuing_subword_prefix", F.Str));
            Write(e, "model", new Field("max_input_chars_per_word", F.U32));
            Vocab(e);
            if (!_vocab.ContainsKey(unk)) throw json.Bad("model.unk_token", $"{Quote(unk)} is not in model.vocab");
        }

        private void Vocab(JsonElement model)
        {
            if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw json.Bad("model.vocab", "missing or not an object of token → id");
            w.WritePropertyName("vocab");
            w.WriteStartObject();
            foreach (var entry in vocab.EnumerateObject())
            {
                string key = $"model.vocab[{Quote(entry.Name)}]";
                int id = Id(entry.Value, key);
                if (_byId.TryGetValue(id, out string? other))
                    throw json.Bad(key, $"id {id} is also the id of {Quote(other)}; every token needs its own id");
                _byId[id] = entry.Name;
                _vocab[entry.Name] = id;
                w.WriteNumber(entry.Name, id);
            }
            w.WriteEndObject();
            if (_vocab.Count == 0) throw json.Bad("model.vocab", "is empty");
        }

        private void Merges(JsonElement merges, string? prefix)
        {
            if (merges.ValueKind != JsonValueKind.Array) throw json.Bad("model.merges", $"must be an array of merges, got {merges.ValueKind}");
            int prefixBytes = prefix is null ? 0 : Encoding.UTF8.GetByteCount(prefix);
            w.WriteStartArray();
            int i = 0;
            foreach (var merge in merges.EnumerateArray())
            {
                string key = $"model.merges[{i++}]";
                string left, right;
                if (merge.ValueKind == JsonValueKind.String)
                {
                    // The older form, "left right": the library splits it at every space and wants exactly two parts.
                    var parts = merge.GetString()!.Split(' ');
                    if (parts.Length != 2) throw json.Bad(key, $"{Quote(merge.GetString()!)} is not two tokens separated by one space");
                    (left, right) = (parts[0], parts[1]);
                }
                else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                         && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
                {
                    (left, right) = (merge[0].GetString()!, merge[1].GetString()!);
                }
                else throw json.Bad(key, $"must be [left, right] (two strings) or \"left right\", got {Raw(merge)}");
                if (!_vocab.ContainsKey(left)) throw json.Bad(key, $"its left token {Quote(left)} is not in model.vocab");
                if (!_vocab.ContainsKey(right)) throw json.Bad(key, $"its right token {Quote(right)} is not in model.vocab");
                // The merged token is left + right without the continuing_subword_prefix's length in bytes (the
                // library cuts that many bytes off the right part whatever they are, and aborts when it cannot).
                byte[] rightBytes = Encoding.UTF8.GetBytes(right);
                if (prefixBytes > rightBytes.Length || (prefixBytes < rightBytes.Length && (rightBytes[prefixBytes] & 0xC0) == 0x80))
                    throw json.Bad(key, $"its right token {Quote(right)} does not start with a whole continuing_subword_prefix {Quote(prefix!)}");
                string merged = left + Encoding.UTF8.GetString(rightBytes, prefixBytes, rightBytes.Length - prefixBytes);
                if (!_vocab.ContainsKey(merged)) throw json.Bad(key, $"the merged token {Quote(merged)} is not in model.vocab");
                w.WriteStartArray();
                w.WriteStringValue(left);
                w.WriteStringValue(right);
                w.WriteEndArray();
            }
            w.WriteEndArray();
        }

        // ---- added tokens ----

        private void AddedTokens(JsonElement list)
        {
            w.WriteStartArray();
            if (list.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
            {
                w.WriteEndArray();
                return;
            }
            if (list.ValueKind != JsonValueKind.Array) throw json.Bad("added_tokens", $"must be an array, got {list.ValueKind}");
            int i = 0;
            foreach (var token in list.EnumerateArray())
            {
                string key = $"added_tokens[{i++}]";
                if (token.ValueKind != JsonValueKind.Object) throw json.Bad(key, $"must be an object, got {token.ValueKind}");
                if (!token.TryGetProperty("id", out var idElement)) throw json.Bad(key + ".id", "missing");
                int id = Id(idElement, key + ".id");
                if (!token.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                    throw json.Bad(key + ".content", "missing or not a string");
                string content = c.GetString()!;
                if (content.Length == 0) throw json.Bad(key + ".content", "is empty");
                if (_added.ContainsKey(content)) throw json.Bad(key + ".content", $"{Quote(content)} is listed twice");
                // The library does not take the id from the file: a token already in the vocabulary keeps its id, any
                // other takes the next id after the vocabulary and the earlier added tokens. A file that says otherwise
                // would encode to ids that its model never saw.
                int expected = _vocab.TryGetValue(content, out int inVocab) ? inVocab
                    : _added.Count == 0 ? _vocab.Count
                    : _added.Values.Max() is int max && (max >= _vocab.Count || _vocab.Count == 0) ? max + 1 : _vocab.Count;
                if (id != expected)
                    throw json.Bad(key + ".id", $"{Quote(content)} is listed with id {id}, but Hugging Face tokenizers gives it id {expected} " +
                        "(a token of the vocabulary keeps its id; any other takes the next id after the vocabulary and the earlier added tokens)");
                _added[content] = id;
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                foreach (string flag in new[] { "single_word", "lstrip", "rstrip", "normalized", "special" })
                {
                    if (!token.TryGetProperty(flag, out var v) || v.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                        throw json.Bad($"{key}.{flag}", "missing or not true/false");
                    w.WriteBoolean(flag, flag == "special" && Plain ? false : v.GetBoolean());
                }
                w.WriteEndObject();
                if (collect) json._added.Add(new AddedTokenEntry(id, content, token.GetProperty("special").GetBoolean()));
            }
            w.WriteEndArray();
        }

        // ---- components ----

        private void Component(JsonElement e, string path, Part part)
        {
            if (e.ValueKind != JsonValueKind.Object) throw json.Bad(path, $"must be a {PartName(part)} object or null, got {e.ValueKind}");
            if (!e.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
                throw json.Bad(path + ".type", $"missing or not a string: the {PartName(part)} type");
            string type = t.GetString()!;
            if (!Schema[part].TryGetValue(type, out var fields))
            {
                string note = part == Part.Normalizer && type == "Precompiled" ? " (Precompiled belongs to SentencePiece Unigram tokenizers, which Interp does not read)" : "";
                throw json.Bad(path + ".type", $"unknown {PartName(part)} type {Quote(type)}{note} (supported: {string.Join(", ", Schema[part].Keys)})");
            }
            w.WriteStartObject();
            w.WriteString("type", type);
            bool metaspace = part == Part.PreTokenizer && type == "Metaspace";
            foreach (var field in fields)
            {
                if (Continuation && metaspace && field.Name is "prepend_scheme" or "add_prefix_space") continue;
                if (Continuation && part == Part.PreTokenizer && type == "ByteLevel" && field.Name == "add_prefix_space")
                {
                    w.WriteBoolean("add_prefix_space", false);
                    continue;
                }
                Write(e, path, field);
            }
            if (Continuation && metaspace) w.WriteString("prepend_scheme", "never");
            if (part == Part.PostProcessor && type == "TemplateProcessing") CheckTemplates(e, path);
            // The library's Strip decoder indexes past the start of any token shorter than its stop, and aborts.
            if (part == Part.Decoder && type == "Strip" && e.GetProperty("stop").GetUInt32() != 0)
                throw json.Bad(path + ".stop", $"is {e.GetProperty("stop").GetUInt32()}: Hugging Face tokenizers' Strip decoder aborts the process on a token shorter than a nonzero stop; only 0 is accepted");
            w.WriteEndObject();
        }

        /// <summary>Checks and writes one field when present (an error when required and missing); returns its value.</summary>
        private JsonElement? Write(JsonElement e, string path, Field field)
        {
            string key = $"{path}.{field.Name}";
            if (!e.TryGetProperty(field.Name, out var v))
            {
                if (field.Required) throw json.Bad(key, "missing");
                return null;
            }
            w.WritePropertyName(field.Name);
            Value(v, key, field.Kind);
            return v;
        }

        private void Value(JsonElement v, string key, F kind)
        {
            switch (kind)
            {
                case F.Bool:
                    if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw json.Bad(key, $"must be true or false, got {Raw(v)}");
                    w.WriteBooleanValue(v.GetBoolean());
                    break;
                case F.OptBool:
                    if (v.ValueKind == JsonValueKind.Null) w.WriteNullValue();
                    else Value(v, key, F.Bool);
                    break;
                case F.Str:
                    if (v.ValueKind != JsonValueKind.String) throw json.Bad(key, $"must be a string, got {Raw(v)}");
                    w.WriteStringValue(v.GetString());
                    break;
                case F.OptStr:
                    if (v.ValueKind == JsonValueKind.Null) w.WriteNullValue();
                    else Value(v, key, F.Str);
                    break;
                case F.Char:
                    if (v.ValueKind != JsonValueKind.String || !IsOneCharacter(v.GetString()!))
                        throw json.Bad(key, $"must be a string of one character, got {Raw(v)}");
                    w.WriteStringValue(v.GetString());
                    break;
                case F.U32:
                    if (v.ValueKind != JsonValueKind.Number || !v.TryGetUInt32(out uint n)) throw json.Bad(key, $"must be an integer from 0 to {uint.MaxValue}, got {Raw(v)}");
                    w.WriteNumberValue(n);
                    break;
                case F.Behavior:
                    OneOf(v, key, Behaviors);
                    break;
                case F.PrependScheme:
                    OneOf(v, key, PrependSchemes);
                    break;
                case F.Pattern:
                    if (v.ValueKind != JsonValueKind.Object || v.EnumerateObject().Count() != 1
                        || v.EnumerateObject().First() is not { Name: "String" or "Regex", Value.ValueKind: JsonValueKind.String } pattern)
                        throw json.Bad(key, $"must be {{\"String\": text}} or {{\"Regex\": pattern}}, got {Raw(v)}");
                    w.WriteStartObject();
                    w.WriteString(pattern.Name, pattern.Value.GetString());
                    w.WriteEndObject();
                    break;
                case F.TokenIdPair:
                    if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != 2 || v[0].ValueKind != JsonValueKind.String)
                        throw json.Bad(key, $"must be [token, id], got {Raw(v)}");
                    int pairId = Id(v[1], key + "[1]");
                    KnownId(pairId, key + "[1]");
                    w.WriteStartArray();
                    w.WriteStringValue(v[0].GetString());
                    w.WriteNumberValue(pairId);
                    w.WriteEndArray();
                    break;
                case F.Normalizers:
                    List(v, key, Part.Normalizer);
                    break;
                case F.PreTokenizers:
                    List(v, key, Part.PreTokenizer);
                    break;
                case F.Processors:
                    List(v, key, Part.PostProcessor);
                    break;
                case F.Decoders:
                    List(v, key, Part.Decoder);
                    break;
                case F.Template:
                    Template(v, key);
                    break;
                case F.SpecialTokens:
                    SpecialTokens(v, key);
                    break;
            }
        }

        private void OneOf(JsonElement v, string key, string[] allowed)
        {
            if (v.ValueKind != JsonValueKind.String || !allowed.Contains(v.GetString()))
                throw json.Bad(key, $"must be one of {string.Join(", ", allowed)}, got {Raw(v)}");
            w.WriteStringValue(v.GetString());
        }

        private void List(JsonElement v, string key, Part part)
        {
            if (v.ValueKind != JsonValueKind.Array) throw json.Bad(key, $"must be an array of {PartName(part)}s, got {Raw(v)}");
            w.WriteStartArray();
            int i = 0;
            foreach (var item in v.EnumerateArray())
            {
                string itemKey = $"{key}[{i++}]";
                if (Continuation && part == Part.Normalizer && TypeIs(item, "Prepend")) continue;
                Component(item, itemKey, part);
            }
            w.WriteEndArray();
        }

        // A template is a list of pieces: {"Sequence": {"id": "A"|"B", "type_id": n}} or {"SpecialToken": {"id": name, "type_id": n}}.
        private void Template(JsonElement v, string key)
        {
            if (v.ValueKind != JsonValueKind.Array) throw json.Bad(key, $"must be an array of template pieces, got {Raw(v)}");
            w.WriteStartArray();
            int i = 0;
            foreach (var piece in v.EnumerateArray())
            {
                string pieceKey = $"{key}[{i++}]";
                if (piece.ValueKind != JsonValueKind.Object || piece.EnumerateObject().Count() != 1
                    || piece.EnumerateObject().First() is not { Name: "Sequence" or "SpecialToken", Value.ValueKind: JsonValueKind.Object } inner)
                    throw json.Bad(pieceKey, $"must be {{\"Sequence\": {{…}}}} or {{\"SpecialToken\": {{…}}}}, got {Raw(piece)}");
                if (!inner.Value.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.String)
                    throw json.Bad($"{pieceKey}.{inner.Name}.id", "missing or not a string");
                if (inner.Name == "Sequence" && id.GetString() is not ("A" or "B"))
                    throw json.Bad($"{pieceKey}.Sequence.id", $"must be \"A\" or \"B\", got {Raw(id)}");
                uint typeId = 0;
                if (!inner.Value.TryGetProperty("type_id", out var t) || t.ValueKind != JsonValueKind.Number || !t.TryGetUInt32(out typeId))
                    throw json.Bad($"{pieceKey}.{inner.Name}.type_id", "missing or not an integer from 0 to 4294967295");
                w.WriteStartObject();
                w.WritePropertyName(inner.Name);
                w.WriteStartObject();
                w.WriteString("id", id.GetString());
                w.WriteNumber("type_id", typeId);
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }

        // special_tokens: name → {"id": name, "ids": [...], "tokens": [...]}, as many ids as tokens, every id in the vocabulary.
        private void SpecialTokens(JsonElement v, string key)
        {
            if (v.ValueKind != JsonValueKind.Object) throw json.Bad(key, $"must be an object of name → special token, got {Raw(v)}");
            w.WriteStartObject();
            foreach (var entry in v.EnumerateObject())
            {
                string entryKey = $"{key}[{Quote(entry.Name)}]";
                var e = entry.Value;
                if (e.ValueKind != JsonValueKind.Object) throw json.Bad(entryKey, $"must be an object, got {Raw(e)}");
                if (!e.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.String || id.GetString() != entry.Name)
                    throw json.Bad(entryKey + ".id", $"must be the entry's own name {Quote(entry.Name)}");
                if (!e.TryGetProperty("ids", out var ids) || ids.ValueKind != JsonValueKind.Array)
                    throw json.Bad(entryKey + ".ids", "missing or not an array of ids");
                if (!e.TryGetProperty("tokens", out var tokens) || tokens.ValueKind != JsonValueKind.Array)
                    throw json.Bad(entryKey + ".tokens", "missing or not an array of strings");
                if (ids.GetArrayLength() != tokens.GetArrayLength())
                    throw json.Bad(entryKey, $"has {ids.GetArrayLength()} ids but {tokens.GetArrayLength()} tokens");
                w.WritePropertyName(entry.Name);
                w.WriteStartObject();
                w.WriteString("id", entry.Name);
                w.WriteStartArray("ids");
                int i = 0;
                foreach (var idValue in ids.EnumerateArray())
                {
                    int n = Id(idValue, $"{entryKey}.ids[{i}]");
                    KnownId(n, $"{entryKey}.ids[{i++}]");
                    w.WriteNumberValue(n);
                }
                w.WriteEndArray();
                w.WriteStartArray("tokens");
                i = 0;
                foreach (var token in tokens.EnumerateArray())
                {
                    if (token.ValueKind != JsonValueKind.String) throw json.Bad($"{entryKey}.tokens[{i}]", $"must be a string, got {Raw(token)}");
                    w.WriteStringValue(token.GetString());
                    i++;
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }

        /// <summary>
        /// The library indexes special_tokens by every SpecialToken piece and a pair slot by Sequence B, and aborts when
        /// either is missing: the single template may use only A (once), the pair template A and B, each token a name
        /// of special_tokens.
        /// </summary>
        private void CheckTemplates(JsonElement e, string path)
        {
            var names = e.GetProperty("special_tokens").EnumerateObject().Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
            foreach (string template in new[] { "single", "pair" })
            {
                int a = 0, b = 0, i = 0;
                foreach (var piece in e.GetProperty(template).EnumerateArray())
                {
                    var inner = piece.EnumerateObject().First();
                    string id = inner.Value.GetProperty("id").GetString()!;
                    if (inner.Name == "Sequence") { if (id == "A") a++; else b++; }
                    else if (!names.Contains(id))
                        throw json.Bad($"{path}.{template}[{i}].SpecialToken.id", $"{Quote(id)} is not defined in {path}.special_tokens");
                    i++;
                }
                if (template == "single" && (a != 1 || b != 0))
                    throw json.Bad($"{path}.single", $"must use sequence A exactly once and never B (it uses A {a} times and B {b} times)");
                if (template == "pair" && (a == 0 || b == 0))
                    throw json.Bad($"{path}.pair", $"must use both sequences A and B (it uses A {a} times and B {b} times)");
            }
        }

        private int Id(JsonElement v, string key)
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int id) || id < 0 || id == int.MaxValue)
                throw json.Bad(key, $"must be a token id from 0 to {int.MaxValue - 1}, got {Raw(v)}");
            return id;
        }

        private void KnownId(int id, string key)
        {
            if (!_byId.ContainsKey(id) && !_added.ContainsValue(id))
                throw json.Bad(key, $"id {id} is neither in model.vocab nor an added token");
        }

        // ---- what the rest of Interp needs to know (first pass only, on the checked document) ----

        private void Collect(JsonElement root)
        {
            if (root.TryGetProperty("normalizer", out var n) && n.ValueKind == JsonValueKind.Object) CollectNormalizer(n);
            if (root.TryGetProperty("pre_tokenizer", out var p) && p.ValueKind == JsonValueKind.Object) CollectPreTokenizer(p);
            if (root.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object) CollectDecoder(d);
            if (root.TryGetProperty("post_processor", out var pp) && pp.ValueKind == JsonValueKind.Object)
            {
                var (prefix, suffix) = Around(pp);
                json._templatePrefix.AddRange(prefix);
                json._templateSuffix.AddRange(suffix);
            }
        }

        private void CollectNormalizer(JsonElement e)
        {
            switch (e.GetProperty("type").GetString())
            {
                case "Prepend": json.HasDummyPrefix = true; break;
                case "Sequence": foreach (var item in e.GetProperty("normalizers").EnumerateArray()) CollectNormalizer(item); break;
            }
        }

        private void CollectPreTokenizer(JsonElement e)
        {
            switch (e.GetProperty("type").GetString())
            {
                case "ByteLevel":
                    json.ByteLevel = true;
                    if (e.TryGetProperty("add_prefix_space", out var add) && add.GetBoolean()) json.HasDummyPrefix = true;
                    break;
                case "Metaspace":
                    // The library's default is "always"; an old file's add_prefix_space false means "never".
                    string scheme = e.TryGetProperty("prepend_scheme", out var s) ? s.GetString()!
                        : e.TryGetProperty("add_prefix_space", out var legacy) && !legacy.GetBoolean() ? "never" : "always";
                    if (scheme != "never") json.HasDummyPrefix = true;
                    break;
                case "Sequence": foreach (var item in e.GetProperty("pretokenizers").EnumerateArray()) CollectPreTokenizer(item); break;
            }
        }

        private void CollectDecoder(JsonElement e)
        {
            switch (e.GetProperty("type").GetString())
            {
                case "ByteLevel":
                    json.ByteLevel = json.ByteLevelDecoder = true;
                    break;
                case "Metaspace":
                    json._displayReplacements.Add((e.GetProperty("replacement").GetString()!, " "));
                    break;
                case "Replace" when e.GetProperty("pattern").EnumerateObject().First() is { Name: "String" } literal && literal.Value.GetString()!.Length > 0:
                    json._displayReplacements.Add((literal.Value.GetString()!, e.GetProperty("content").GetString()!));
                    break;
                case "Sequence": foreach (var item in e.GetProperty("decoders").EnumerateArray()) CollectDecoder(item); break;
            }
        }

        /// <summary>The ids a post-processor puts before and after a single text; in a Sequence each wraps the previous.</summary>
        private static (List<int> Prefix, List<int> Suffix) Around(JsonElement e)
        {
            var prefix = new List<int>();
            var suffix = new List<int>();
            switch (e.GetProperty("type").GetString())
            {
                case "BertProcessing":
                case "RobertaProcessing":
                    prefix.Add(e.GetProperty("cls")[1].GetInt32());
                    suffix.Add(e.GetProperty("sep")[1].GetInt32());
                    break;
                case "TemplateProcessing":
                    var specials = e.GetProperty("special_tokens");
                    bool seen = false;
                    foreach (var piece in e.GetProperty("single").EnumerateArray())
                    {
                        var inner = piece.EnumerateObject().First();
                        if (inner.Name == "Sequence") { seen = true; continue; }
                        var ids = specials.GetProperty(inner.Value.GetProperty("id").GetString()!).GetProperty("ids").EnumerateArray().Select(i => i.GetInt32());
                        (seen ? suffix : prefix).AddRange(ids);
                    }
                    break;
                case "Sequence":
                    foreach (var item in e.GetProperty("processors").EnumerateArray())
                    {
                        var (p, s) = Around(item);
                        prefix.InsertRange(0, p);
                        suffix.AddRange(s);
                    }
                    break;
            }
            return (prefix, suffix);
        }

        private static bool TypeIs(JsonElement e, string type) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == type;
    }

    /// <summary>One Unicode scalar value: what the library's <c>char</c> fields hold.</summary>
    private static bool IsOneCharacter(string s) =>
        (s.Length == 1 && !char.IsSurrogate(s[0])) || (s.Length == 2 && char.IsSurrogatePair(s[0], s[1]));

    private static string Raw(JsonElement v)
    {
        string raw = v.ValueKind == JsonValueKind.Undefined ? "nothing" : v.GetRawText();
        return raw.Length <= 60 ? raw : raw[..57] + "…";
    }

    private static JsonWriterOptions WriterOptions => new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}

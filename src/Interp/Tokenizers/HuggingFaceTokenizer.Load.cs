using System.Text.Json;
using Interp.Loading;

namespace Interp.Tokenizers;

/// <summary>The special tokens of tokenizer_config.json and special_tokens_map.json, resolved to ids.</summary>
internal sealed record SpecialTokenSettings(int? BosId, int? EosId, int? PadId, int? UnkId, bool? AddBos, bool? AddEos);

public sealed partial class HuggingFaceTokenizer
{
    /// <summary>Name of the tokenizer file in a Hugging Face model folder.</summary>
    public const string FileName = "tokenizer.json";

    /// <summary>transformers' settings file beside tokenizer.json.</summary>
    public const string ConfigFileName = "tokenizer_config.json";

    /// <summary>The older file of special tokens beside tokenizer.json.</summary>
    public const string SpecialTokensMapFileName = "special_tokens_map.json";

    /// <summary>Largest tokenizer_config.json or special_tokens_map.json read.</summary>
    public const long MaxConfigBytes = 1L << 20;

    /// <summary>
    /// Loads <paramref name="folderOrFile"/>: a tokenizer.json file, or a folder holding one. tokenizer_config.json and
    /// special_tokens_map.json beside it, when present, give BOS, EOS, padding and unknown tokens (tokenizer_config.json
    /// first, special_tokens_map.json for the keys it lacks) and <c>add_bos_token</c> / <c>add_eos_token</c>.
    /// </summary>
    /// <exception cref="ModelFileException">
    /// A file is missing, too large (tokenizer.json over 64 MiB, the others over 1 MiB), not JSON, nested too deep, or
    /// has a missing or mistyped key, an unsupported model or component type, or a token that is not in the vocabulary;
    /// the message names the file and the key.
    /// </exception>
    /// <exception cref="InterpException">Hugging Face tokenizers' native library does not load on this platform.</exception>
    public static HuggingFaceTokenizer Load(string folderOrFile)
    {
        ArgumentNullException.ThrowIfNull(folderOrFile);
        string path = Directory.Exists(folderOrFile) ? System.IO.Path.Combine(folderOrFile, FileName) : folderOrFile;
        var json = TokenizerJson.Read(path);
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        var special = ReadSpecialTokens(json, System.IO.Path.Combine(dir, ConfigFileName), System.IO.Path.Combine(dir, SpecialTokensMapFileName));
        var plain = NativeHfTokenizer.Create(path, json.Write(TokenizerJsonVariant.Plain));
        try
        {
            var asWritten = NativeHfTokenizer.Create(path, json.Write(TokenizerJsonVariant.AsWritten));
            return new HuggingFaceTokenizer(json, plain, asWritten, special);
        }
        catch
        {
            plain.Dispose();
            throw;
        }
    }

    private static SpecialTokenSettings ReadSpecialTokens(TokenizerJson json, string configPath, string mapPath)
    {
        using var config = ReadSmallJson(configPath);
        using var map = ReadSmallJson(mapPath);

        int? Resolve(string key)
        {
            foreach (var (doc, file) in new[] { (config, configPath), (map, mapPath) })
            {
                if (doc is null || !doc.RootElement.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) continue;
                string token = v.ValueKind switch
                {
                    JsonValueKind.String => v.GetString()!,
                    // An AddedToken written as an object: {"__type": "AddedToken", "content": "<s>", …}.
                    JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString()!,
                    _ => throw new ModelFileException(file, null, $"key '{key}': must be a token string, an object with a \"content\" string, or null; got {v.ValueKind}"),
                };
                return json.Ids.TryGetValue(token, out int id) ? id
                    : throw new ModelFileException(file, null, $"key '{key}': '{token}' is not a token of {json.Path}");
            }
            return null;
        }

        bool? Flag(string key)
        {
            if (config is null || !config.RootElement.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            return v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
                : throw new ModelFileException(configPath, null, $"key '{key}': must be true, false or null; got {v.ValueKind}");
        }

        int? bos = Resolve("bos_token"), eos = Resolve("eos_token");
        bool? addBos = Flag("add_bos_token"), addEos = Flag("add_eos_token");
        int? bosForTemplate = bos ?? (json.TemplatePrefix.Count > 0 ? json.TemplatePrefix[0] : null);
        if (addBos == true && bosForTemplate is null)
            throw new ModelFileException(configPath, null, "key 'add_bos_token': is true, but there is no bos_token (in it or in special_tokens_map.json) to add");
        if (addEos == true && eos is null)
            throw new ModelFileException(configPath, null, "key 'add_eos_token': is true, but there is no eos_token (in it or in special_tokens_map.json) to add");
        return new SpecialTokenSettings(bos, eos, Resolve("pad_token"), Resolve("unk_token"), addBos, addEos);
    }

    /// <summary>Parses a small JSON object file (1 MiB, 32 deep), or returns null when there is none.</summary>
    private static JsonDocument? ReadSmallJson(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) return null;
        if (info.Length > MaxConfigBytes)
            throw new ModelFileException(path, null, $"is {info.Length:N0} bytes; refusing a tokenizer settings file over {MaxConfigBytes >> 20} MiB");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFileException(path, null, $"cannot read it: {e.Message}", e);
        }
        if (bytes.LongLength > MaxConfigBytes)
            throw new ModelFileException(path, null, $"is {bytes.LongLength:N0} bytes; refusing a tokenizer settings file over {MaxConfigBytes >> 20} MiB");
        return JsonChecks.ParseObject(path, bytes, 32);
    }
}

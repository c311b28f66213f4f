using System.CommandLine;
using System.Globalization;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tokenizers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using static TorchSharp.torch;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp cache --model PATH (--tokens 1,2,3 | --text "...") [--token-types 0,0,1] [--attention-mask 1,1,0]
/// [--hooks GLOB,…] [--sae DIR …] [--sae-error-term] --out FILE.safetensors</c>: runs <see cref="HookedTransformer.RunWithCache(Tensor, Tensor?, Tensor?, Func{string, bool}?)"/>
/// and writes every cached activation, float32 and shaped [batch, …] as in the cache, under its hook name. A batch is
/// several sequences: <c>--tokens</c> given several times or separated by <c>;</c> (the masks and token types likewise,
/// one row per sequence), or <c>--text</c> given several times (right-padded and masked). The file is written under a
/// temporary name and renamed into place. With <c>--sae</c> the SAEs are spliced in and their stages
/// (<c>…hook_sae_acts_post</c> and the rest) are hook points like any other.
/// </summary>
public sealed class CacheCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<CacheCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var model = ModelOption();
        var tokenizer = TokenizerOption();
        var device = DeviceOption();
        var tokens = new Option<string[]>("--tokens")
        {
            Description = "Token ids of one sequence, comma-separated (1,2,3); for a batch repeat the option or separate sequences with ';' (\"1,2,3;4,5,6\")",
        };
        var text = new Option<string[]>("--text") { Description = "Text to tokenise with the model's tokenizer; repeat for a batch (shorter rows are right-padded and masked)" };
        var noBos = new Option<bool>("--no-bos") { Description = "Do not prepend the tokenizer's BOS token to --text (by default it is prepended when the tokenizer has one)" };
        var types = new Option<string[]>("--token-types") { Description = "Token types (BERT segments), one row per sequence like --tokens: 0,0,1 or \"0,0,1;0,1,1\"" };
        var mask = new Option<string[]>("--attention-mask") { Description = "Attention mask, 1 at real tokens and 0 at padding, one row per sequence like --tokens: 1,1,0" };
        // Hook names come from HookNames only; "blocks.*." stands for every layer's prefix.
        static string EveryLayer(Func<int, string> name) => name(0).Replace(HookNames.Block(0), "blocks.*.", StringComparison.Ordinal);
        var hooks = new Option<string[]>("--hooks")
        {
            Description = $"Hook names or globs (* matches any characters), comma-separated or repeated, e.g. {EveryLayer(HookNames.Pattern)}; " +
                          $"default: every hook point except the per-head results ({EveryLayer(HookNames.Result)})",
        };
        var output = new Option<string>("--out", "-o") { Description = "Output safetensors file (its folder must exist)", Required = true };
        var sae = SaeOptions.Sae();
        var errorTerm = SaeOptions.ErrorTerm();
        var command = new Command("cache", "Run the model with a cache and write the activations to a safetensors file")
            { model, tokenizer, device, tokens, text, noBos, types, mask, hooks, sae, errorTerm, output };
        command.Validators.Add(result =>
        {
            if ((result.GetValue(tokens) is not { Length: > 0 }) == (result.GetValue(text) is not { Length: > 0 }))
                result.AddError("give exactly one of --tokens and --text");
        });
        command.SetAction((parse, ct) => Guard(async () =>
        {
            string outPath = CacheOutput.Check(parse.GetValue(output)!);
            using var loaded = LoadModel(parse.GetValue(model)!, parse.GetValue(tokenizer), parse.GetValue(device));
            var batch = CacheInputs.Resolve(parse.GetValue(tokens), parse.GetValue(text), !parse.GetValue(noBos),
                parse.GetValue(types), parse.GetValue(mask), loaded);
            using var saes = SaeOptions.Open(loaded.Model, parse.GetValue(sae), parse.GetValue(errorTerm));
            foreach (var line in saes.Describe()) Logger.LogInformation("{Sae}", line);
            var selected = parse.GetValue(hooks) is { Length: > 0 } globs ? HookGlobs.Match(loaded.Model, globs) : null;
            int written;
            long bytes;
            // Torch's grad mode and dispose scopes are per thread: finish the tensor work before awaiting.
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var (logits, cache) = loaded.Model.RunWithCache(batch.TokensTensor(), batch.MaskTensor(), batch.TypesTensor(),
                    selected is null ? null : selected.Contains);
                using (cache)
                {
                    ct.ThrowIfCancellationRequested();
                    CacheOutput.Write(outPath, cache, batch.Metadata(loaded));
                    written = cache.Count;
                    bytes = cache.Names.Sum(n => cache[n].NumberOfElements * sizeof(float));
                }
            }
            Logger.LogInformation("Wrote {Count} activations ({Bytes:N0} bytes of data) to {Path}", written, bytes, outPath);
            await Console.Out.WriteLineAsync(
                $"wrote {outPath}: {written} activations of {batch.Rows} sequence(s) × {batch.Positions} positions, " +
                (bytes < 1 << 20 ? $"{bytes / 1024.0:F1} KiB" : $"{bytes / 1048576.0:F1} MiB") + " of float32");
            return 0;
        }));
        return command;
    }
}

/// <summary>
/// The input of one <c>cache</c> run: token ids [batch, pos] with the attention mask and token types when there are
/// any, as flat row-major arrays.
/// </summary>
/// <param name="Rows">The batch size.</param>
/// <param name="Positions">The positions of each row (the longest text's, for padded texts).</param>
/// <param name="Ids">Token ids, [Rows × Positions].</param>
/// <param name="Mask">1 at real tokens, 0 at padding, [Rows × Positions]; null when no row is padded and none was given.</param>
/// <param name="Types">Token types, [Rows × Positions]; null when none were given.</param>
public sealed record CacheInputs(int Rows, int Positions, long[] Ids, long[]? Mask, long[]? Types)
{
    /// <summary>
    /// Reads <c>--tokens</c> rows (all of one length) or encodes <c>--text</c> rows (right-padded with the tokenizer's
    /// pad id, the mask generated), then the <c>--token-types</c> and <c>--attention-mask</c> rows, each checked
    /// against the tokens' rows. Ids, mask values and types are checked against the model by its forward pass.
    /// </summary>
    /// <exception cref="InterpException">A value is not an integer, or a row count or row length disagrees with the tokens; the message names the option.</exception>
    public static CacheInputs Resolve(string[]? tokens, string[]? texts, bool prependBos, string[]? types, string[]? mask, LoadedModel loaded)
    {
        long[][] rows;
        long[][]? maskRows = null;
        string source;
        if (tokens is { Length: > 0 })
        {
            rows = IntRows.Parse("--tokens", tokens);
            source = "--tokens";
            for (int b = 1; b < rows.Length; b++)
                if (rows[b].Length != rows[0].Length)
                    throw new InvalidTokensException(
                        $"--tokens: sequence {b} has {rows[b].Length} tokens but sequence 0 has {rows[0].Length}; the sequences of a batch need one length (pad the shorter ones and mark the padding with --attention-mask)");
            if (mask is { Length: > 0 }) maskRows = Matching("--attention-mask", IntRows.Parse("--attention-mask", mask), rows, "--tokens sequence", padded: false);
        }
        else
        {
            if (mask is { Length: > 0 })
                throw new InvalidTokensException("--attention-mask goes with --tokens: the mask of --text rows comes from their lengths (right padding)");
            var tokenizer = loaded.RequireTokenizer();
            if (prependBos && tokenizer.BosId is null) prependBos = false; // BOS as the tokenizer says: none when it has none
            rows = new long[texts!.Length][];
            for (int b = 0; b < texts.Length; b++)
            {
                rows[b] = tokenizer.Encode(texts[b], prependBos).Select(i => (long)i).ToArray();
                if (rows[b].Length == 0) throw new InvalidTokensException($"--text {b} (\"{texts[b]}\") encodes to no tokens");
            }
            source = "--text";
            int longest = rows.Max(r => r.Length);
            if (rows.Any(r => r.Length != longest))
                maskRows = rows.Select(r => Enumerable.Range(0, longest).Select(p => p < r.Length ? 1L : 0L).ToArray()).ToArray();
        }
        var typeRows = types is { Length: > 0 } ? Matching("--token-types", IntRows.Parse("--token-types", types), rows, $"{source} sequence", padded: source == "--text") : null;
        int n = rows.Length, pos = rows.Max(r => r.Length);
        int pad = source == "--text" ? PaddedTokens.PadIdOf(loaded.RequireTokenizer()) : 0;
        return new CacheInputs(n, pos, Flatten(rows, pos, pad), maskRows is null ? null : Flatten(maskRows, pos, 0),
            typeRows is null ? null : Flatten(typeRows, pos, 0));
    }

    /// <summary>Checks that <paramref name="given"/> has one row per sequence, each as long as its sequence.</summary>
    private static long[][] Matching(string option, long[][] given, long[][] rows, string what, bool padded)
    {
        if (given.Length != rows.Length)
            throw new InvalidTokensException($"{option}: {given.Length} row(s) for {rows.Length} sequence(s); give one row per sequence");
        for (int b = 0; b < rows.Length; b++)
            if (given[b].Length != rows[b].Length)
                throw new InvalidTokensException(
                    $"{option}: row {b} has {given[b].Length} entries, but {what} {b} has {rows[b].Length} token(s)" + (padded ? " (padding after it gets type 0)" : ""));
        return given;
    }

    private static long[] Flatten(long[][] rows, int pos, long pad)
    {
        var flat = new long[rows.Length * pos];
        Array.Fill(flat, pad);
        for (int b = 0; b < rows.Length; b++) rows[b].CopyTo(flat, b * pos);
        return flat;
    }

    /// <summary>The tokens as int64 [batch, pos].</summary>
    public Tensor TokensTensor() => tensor(Ids, [Rows, Positions]);
    /// <summary>The mask as int64 [batch, pos], or null.</summary>
    public Tensor? MaskTensor() => Mask is null ? null : tensor(Mask, [Rows, Positions]);
    /// <summary>The token types as int64 [batch, pos], or null.</summary>
    public Tensor? TypesTensor() => Types is null ? null : tensor(Types, [Rows, Positions]);

    /// <summary>The safetensors <c>__metadata__</c>: the model, and the input rows in the command line's syntax.</summary>
    public Dictionary<string, string> Metadata(LoadedModel loaded)
    {
        var metadata = new Dictionary<string, string>
        {
            ["model"] = loaded.Model.Config.Name,
            ["format"] = loaded.Format,
            ["tokens"] = IntRows.Format(Ids, Positions),
        };
        if (Mask is not null) metadata["attention_mask"] = IntRows.Format(Mask, Positions);
        if (Types is not null) metadata["token_types"] = IntRows.Format(Types, Positions);
        return metadata;
    }
}

/// <summary>Rows of integers as the command line writes them: <c>1,2,3;4,5,6</c>, or one row per repetition of the option.</summary>
public static class IntRows
{
    /// <summary>Parses every value of <paramref name="option"/>, each one or more <c>;</c>-separated rows of comma-separated integers.</summary>
    /// <exception cref="InvalidTokensException">A row is empty or holds something that is not an integer; the message names the option.</exception>
    public static long[][] Parse(string option, IEnumerable<string> values)
    {
        var rows = new List<long[]>();
        foreach (string value in values)
            foreach (string row in value.Split(';', StringSplitOptions.TrimEntries))
            {
                var parts = row.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length == 0)
                    throw new InvalidTokensException($"{option}: row {rows.Count} is empty: give comma-separated integers, e.g. 1,2,3");
                rows.Add(parts.Select(p => long.TryParse(p, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v) ? v
                    : throw new InvalidTokensException($"{option}: '{p}' in row {rows.Count} is not an integer")).ToArray());
            }
        return rows.ToArray();
    }

    /// <summary>Writes a flat [rows × <paramref name="width"/>] array as <c>1,2,3;4,5,6</c>.</summary>
    public static string Format(long[] flat, int width) =>
        string.Join(';', Enumerable.Range(0, flat.Length / width).Select(b => string.Join(',', flat.Skip(b * width).Take(width))));
}

/// <summary>Hook names chosen by globs: <c>*</c> matches any run of characters (dots included), everything else itself.</summary>
public static class HookGlobs
{
    /// <summary>
    /// The model's hook names that match at least one of <paramref name="globs"/> (each value may hold several,
    /// comma-separated).
    /// </summary>
    /// <exception cref="InterpException">A glob is empty or matches no hook point; the message lists the closest names.</exception>
    public static IReadOnlySet<string> Match(HookedTransformer model, IEnumerable<string> globs)
    {
        var names = model.HookPoints.Select(h => h.Name).ToArray();
        var selected = new HashSet<string>(StringComparer.Ordinal);
        foreach (string glob in globs.SelectMany(g => g.Split(',', StringSplitOptions.TrimEntries)))
        {
            if (glob.Length == 0) throw new InterpException("--hooks: an empty hook name; give names or globs separated by commas");
            var matches = names.Where(n => IsMatch(glob, n)).ToArray();
            if (matches.Length == 0)
                throw new InterpException(
                    $"--hooks: '{glob}' matches no hook point of {model.Config.Name}; closest names: {string.Join(", ", NameSuggestions.Closest(glob, names))} (`interp info` lists them all)");
            selected.UnionWith(matches);
        }
        return selected;
    }

    /// <summary>True when <paramref name="name"/> matches <paramref name="glob"/> as a whole.</summary>
    public static bool IsMatch(string glob, string name)
    {
        var parts = glob.Split('*');
        if (parts.Length == 1) return glob == name;
        if (!name.StartsWith(parts[0], StringComparison.Ordinal) || !name.EndsWith(parts[^1], StringComparison.Ordinal)
            || name.Length < parts[0].Length + parts[^1].Length) return false;
        // Greedy left-to-right: each middle literal at its first place after the previous one is optimal for '*'.
        int at = parts[0].Length, end = name.Length - parts[^1].Length;
        for (int i = 1; i < parts.Length - 1; i++)
        {
            int found = name.IndexOf(parts[i], at, end - at, StringComparison.Ordinal);
            if (found < 0) return false;
            at = found + parts[i].Length;
        }
        return true;
    }
}

/// <summary>The output file of <c>cache</c>: checked before the run, written atomically after it.</summary>
public static class CacheOutput
{
    /// <summary>The full path of <paramref name="path"/>, after checking that its folder exists and that it is no folder itself.</summary>
    /// <exception cref="InterpException">The folder does not exist, or the path is a folder.</exception>
    public static string Check(string path)
    {
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception ex) when (ex is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new InterpException($"--out '{path}' is not a valid path: {ex.Message}");
        }
        if (Directory.Exists(full)) throw new InterpException($"--out {path} is a folder; name the .safetensors file to write");
        string folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder)) throw new InterpException($"--out {path}: the folder {folder} does not exist");
        return full;
    }

    /// <summary>
    /// Writes every activation of <paramref name="cache"/> under its hook name, float32, in the cache's order; the file
    /// appears only when complete (<see cref="SafeTensorsWriter"/> writes a temporary sibling and renames it).
    /// </summary>
    /// <exception cref="InterpException">The file cannot be written (permissions, disk full); names the path.</exception>
    public static void Write(string path, ActivationCache cache, IReadOnlyDictionary<string, string> metadata)
    {
        try
        {
            SafeTensorsWriter.Write(path, cache.Names.Select(n => KeyValuePair.Create(n, cache[n])), metadata, SafeTensorsDType.F32);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"--out {path}: cannot write the activations: {ex.Message}", ex);
        }
    }
}

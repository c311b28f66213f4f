using Interp.Experiments;
using System.CommandLine;
using System.Text.Json;
using Interp.Loading;
using Interp.Tokenizers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp tokens (--model PATH | --tokenizer PATH) (--text "..." | --jsonl FILE) [--no-special]</c>: the token ids
/// and display strings of a text, or of every line <c>{"text": …}</c> of a JSON Lines file (one output line
/// <c>{"ids": […], "tokens": […]}</c> per input line, in order, streamed). Special tokens are added as the tokenizer's
/// own files say (<see cref="ITokenizer.EncodeWithSpecialTokens"/>) unless <c>--no-special</c>.
/// </summary>
public sealed class TokensCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<TokensCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "Model whose tokenizer to use: a llama2.c .bin file, a Hugging Face directory or an Interp model directory" };
        var tokenizer = new Option<string?>("--tokenizer")
        {
            Description = "Tokenizer: a Hugging Face tokenizer.json, a llama2.c tokenizer .bin, or a folder holding one (with --model: used instead of the model's, checked against its vocabulary)",
        };
        var text = new Option<string?>("--text") { Description = "Text to tokenise" };
        var jsonl = new Option<string?>("--jsonl") { Description = "JSON Lines file of {\"text\": …} objects: one {\"ids\": […], \"tokens\": […]} line out per line in" };
        var noSpecial = new Option<bool>("--no-special") { Description = "Add no special tokens (no BOS, no post-processor template)" };
        var command = new Command("tokens", "Tokenise a text or a JSON Lines data set: token ids and display strings")
            { model, tokenizer, text, jsonl, noSpecial };
        command.Validators.Add(result =>
        {
            if (result.GetValue(model) is null && result.GetValue(tokenizer) is null)
                result.AddError("give --model or --tokenizer (or both)");
            if ((result.GetValue(text) is null) == (result.GetValue(jsonl) is null))
                result.AddError("give exactly one of --text and --jsonl");
        });
        command.SetAction((parse, ct) => Guard(async () =>
        {
            using var owned = OpenTokenizer(parse.GetValue(model), parse.GetValue(tokenizer), out var tok);
            bool special = !parse.GetValue(noSpecial);
            if (parse.GetValue(text) is { } one)
            {
                int[] ids = special ? tok.EncodeWithSpecialTokens(one) : tok.Encode(one);
                await Console.Out.WriteLineAsync("ids:    " + JsonSerializer.Serialize(ids));
                await Console.Out.WriteLineAsync("tokens: " + Strings(tok.ToStrTokens(ids)));
                return 0;
            }
            await TokeniseLines(parse.GetValue(jsonl)!, tok, special, ct);
            return 0;
        }));
        return command;
    }

    /// <summary>The tokenizer to use, and what to dispose once done (the model and/or the tokenizer loaded here).</summary>
    private IDisposable? OpenTokenizer(string? modelPath, string? tokenizerPath, out ITokenizer tokenizer)
    {
        if (modelPath is null)
        {
            tokenizer = TokenizerLoader.Load(tokenizerPath!);
            return tokenizer as IDisposable;
        }
        ApplyThreads();
        Logger.LogInformation("Loading {Model}", modelPath);
        var loaded = ModelLoader.Load(modelPath, new ModelLoadOptions { Device = "cpu" });
        try
        {
            if (tokenizerPath is null)
            {
                tokenizer = loaded.RequireTokenizer();
                return loaded;
            }
            tokenizer = TokenizerLoader.Load(tokenizerPath, loaded.Model.Config.DVocab);
            return new Both(tokenizer as IDisposable, loaded);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    private sealed class Both(IDisposable? first, IDisposable second) : IDisposable
    {
        public void Dispose()
        {
            first?.Dispose();
            second.Dispose();
        }
    }

    /// <summary>Reads <paramref name="path"/> line by line and writes one result line per input line (blank lines skipped).</summary>
    private async Task TokeniseLines(string path, ITokenizer tok, bool special, CancellationToken ct)
    {
        StreamReader reader;
        try { reader = new StreamReader(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"{path}: cannot read the JSON Lines file: {e.Message}", e);
        }
        using (reader)
        {
            int lineNumber = 0;
            while (await reader.ReadLineAsync(ct) is { } line)
            {
                lineNumber++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                string text = TextOf(line, path, lineNumber);
                int[] ids;
                string[] tokens;
                try
                {
                    ids = special ? tok.EncodeWithSpecialTokens(text) : tok.Encode(text);
                    tokens = tok.ToStrTokens(ids);
                }
                catch (InvalidTokensException ex) { throw new InvalidTokensException($"{path}: line {lineNumber}: {ex.Message}"); }
                await Console.Out.WriteLineAsync(Result(ids, tokens));
            }
        }
    }

    private static string TextOf(string line, string path, int lineNumber)
    {
        try
        {
            using var doc = JsonDocument.Parse(line, new JsonDocumentOptions { MaxDepth = 64 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InterpException($"{path}: line {lineNumber}: is not a JSON object with a \"text\" string");
            if (!doc.RootElement.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw new InterpException($"{path}: line {lineNumber}: has no \"text\" string");
            return text.GetString()!;
        }
        catch (JsonException ex) { throw new InterpException($"{path}: line {lineNumber}: is not valid JSON: {ex.Message}", ex); }
        catch (InvalidOperationException ex) { throw new InterpException($"{path}: line {lineNumber}: \"text\" is not valid Unicode: {ex.Message}", ex); }
    }

    private static string Result(int[] ids, string[] tokens) =>
        $"{{\"ids\":{JsonSerializer.Serialize(ids)},\"tokens\":{Strings(tokens)}}}";

    /// <summary>
    /// The tokens as a JSON array, every character written as itself except those JSON must escape (quote, backslash,
    /// control characters), so that emoji and CJK stay readable (System.Text.Json escapes everything outside the BMP).
    /// </summary>
    private static string Strings(string[] tokens)
    {
        var sb = new System.Text.StringBuilder("[");
        for (int t = 0; t < tokens.Length; t++)
        {
            if (t > 0) sb.Append(',');
            sb.Append('"');
            foreach (char c in tokens[t])
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case < ' ': sb.Append($"\\u{(int)c:x4}"); break;
                    default: sb.Append(c); break;
                }
            }
            sb.Append('"');
        }
        return sb.Append(']').ToString();
    }
}

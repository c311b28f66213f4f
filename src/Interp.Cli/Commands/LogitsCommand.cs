using Interp.Experiments;
using System.CommandLine;
using Interp.Loading;
using Interp.Results;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using static TorchSharp.torch;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp logits --model PATH (--tokens 1,2,3 | --text "...") [--sae DIR …] [--sae-error-term] --out FILE.parquet</c>:
/// the logits of one sequence, every vocabulary entry at every position, as Parquet columns position (int32), vocab
/// (int32), logit (float32); with <c>--sae</c>, of the model with those SAEs spliced in.
/// </summary>
public sealed class LogitsCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<LogitsCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var model = ModelOption();
        var tokenizer = TokenizerOption();
        var device = DeviceOption();
        var tokens = new Option<string?>("--tokens") { Description = "Comma-separated token ids, e.g. 1,2,3" };
        var text = new Option<string?>("--text") { Description = "Text to tokenise with the model's tokenizer" };
        var bos = new Option<bool>("--prepend-bos") { Description = "Prepend the tokenizer's BOS token to --text" };
        var output = new Option<string>("--out", "-o") { Description = "Output Parquet file", Required = true };
        var sae = SaeOptions.Sae();
        var errorTerm = SaeOptions.ErrorTerm();
        var command = new Command("logits", "Write the logits of one sequence to Parquet") { model, tokenizer, device, tokens, text, bos, sae, errorTerm, output };
        command.Validators.Add(result =>
        {
            if ((result.GetValue(tokens) is null) == (result.GetValue(text) is null))
                result.AddError("give exactly one of --tokens and --text");
        });
        command.SetAction((parse, ct) => Guard(async () =>
        {
            using var loaded = LoadModel(parse.GetValue(model)!, parse.GetValue(tokenizer), parse.GetValue(device));
            int[] ids = TokenInput.Resolve(parse.GetValue(tokens), parse.GetValue(text), parse.GetValue(bos), loaded);
            string outPath = parse.GetValue(output)!;
            using var saes = SaeOptions.Open(loaded.Model, parse.GetValue(sae), parse.GetValue(errorTerm));
            foreach (var line in saes.Describe()) Logger.LogInformation("{Sae}", line);
            ParquetTable table;
            // Torch's grad mode and dispose scopes are per thread: finish the tensor work before awaiting.
            using (var scope = NewDisposeScope())
            using (no_grad())
                table = LogitsTable.From(loaded.Model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length])));
            await table.WriteAsync(outPath, ct);
            Logger.LogInformation("Wrote {Rows:N0} rows to {Path}", (long)ids.Length * loaded.Model.Config.DVocab, outPath);
            await Console.Out.WriteLineAsync($"wrote {outPath}: {ids.Length} positions × {loaded.Model.Config.DVocab} vocabulary entries");
            return 0;
        }));
        return command;
    }
}

/// <summary>Turns <c>--tokens</c> or <c>--text</c> into token ids, with errors that name the bad value.</summary>
public static class TokenInput
{
    /// <summary>Parses the ids in "1,2,3" or encodes the text with the model's tokenizer.</summary>
    public static int[] Resolve(string? tokens, string? text, bool prependBos, LoadedModel loaded)
    {
        if (tokens is not null)
        {
            var parts = tokens.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) throw new InvalidTokensException("--tokens is empty: give comma-separated token ids, e.g. 1,2,3");
            return parts.Select(p => int.TryParse(p, out int id) ? id
                : throw new InvalidTokensException($"--tokens: '{p}' is not an integer token id")).ToArray();
        }
        var ids = loaded.RequireTokenizer().Encode(text!, prependBos);
        if (ids.Length == 0) throw new InvalidTokensException("--text encodes to no tokens");
        return ids;
    }
}

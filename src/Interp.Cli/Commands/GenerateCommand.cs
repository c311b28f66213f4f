using Interp.Experiments;
using System.CommandLine;
using Interp.Models;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary><c>interp generate --model PATH --text "..." --max-new N</c>: greedy continuation, printed as text.</summary>
public sealed class GenerateCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<GenerateCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var model = ModelOption();
        var tokenizer = TokenizerOption();
        var device = DeviceOption();
        var text = new Option<string>("--text") { Description = "The prompt", Required = true };
        var maxNew = new Option<int>("--max-new") { Description = "Number of tokens to generate", DefaultValueFactory = _ => 50 };
        var command = new Command("generate", "Continue a prompt greedily and print the text") { model, tokenizer, device, text, maxNew };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            int n = parse.GetValue(maxNew);
            if (n < 0) throw new InterpException($"--max-new must not be negative, got {n}");
            using var loaded = LoadModel(parse.GetValue(model)!, parse.GetValue(tokenizer), parse.GetValue(device));
            var tok = loaded.RequireTokenizer();
            string prompt = parse.GetValue(text)!;
            var ids = tok.Encode(prompt, prependBos: tok.BosId is not null);
            var generated = loaded.Model.GenerateGreedy(ids, n, tok.EosId, ct);
            // The prompt as typed, then the continuation (decoding BOS/EOS would print markers such as <|endoftext|>).
            await Console.Out.WriteLineAsync(prompt + tok.Decode(generated.Where(id => id != tok.EosId).ToArray()));
            return 0;
        }));
        return command;
    }
}

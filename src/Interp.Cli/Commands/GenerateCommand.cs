using System.Globalization;
using Interp.Experiments;
using System.CommandLine;
using Interp.Models;
using Interp.Tokenizers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp generate --model PATH --text "..." [--max-new N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
/// [--stop LIST] [--sae DIR …] [--sae-error-term] [--steer SAE:FEATURE:ALPHA …] [--clamp SAE:FEATURE:VALUE …]</c>: the
/// prompt's continuation (greedy unless a temperature is given), printed as text; optionally with SAEs spliced in, a
/// feature's decoder direction added, or a feature clamped, at every position of the prompt and of each new token.
/// </summary>
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
        var maxNew = new Option<int>("--max-new") { Description = "Number of tokens to generate (at most)", DefaultValueFactory = _ => 50 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 (default): greedy decoding" };
        var topK = new Option<int>("--top-k") { Description = "Sample from the k most likely tokens only (0, default: all); needs --temperature" };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling: the most likely tokens up to probability p, in (0, 1] (1, default: all); needs --temperature", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int?>("--seed") { Description = "Seed of the sampler (default: the configured seed)" };
        var stop = new Option<string?>("--stop")
        {
            Description = "Comma-separated stop tokens, each an integer token id or a text that is one token (e.g. \"13,.\"; \\, is a comma); the tokenizer's EOS always stops",
        };
        var sae = SaeOptions.Sae();
        var errorTerm = SaeOptions.ErrorTerm();
        var steer = SaeOptions.Steer();
        var clamp = SaeOptions.Clamp();
        var command = new Command("generate", "Continue a prompt (greedy, or sampled with --temperature) and print the text")
        {
            model, tokenizer, device, text, maxNew, temperature, topK, topP, seed, stop, sae, errorTerm, steer, clamp,
        };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            int n = parse.GetValue(maxNew);
            if (n < 0) throw new InterpException($"--max-new must not be negative, got {n}");
            double t = parse.GetValue(temperature);
            if (!double.IsFinite(t) || t < 0) throw new InterpException($"--temperature must be 0 (greedy) or positive, got {t}");
            int k = parse.GetValue(topK);
            if (k < 0) throw new InterpException($"--top-k must be 0 (off) or positive, got {k}");
            double p = parse.GetValue(topP);
            if (!(p > 0 && p <= 1)) throw new InterpException($"--top-p must lie in (0, 1], got {p}");
            if (t == 0 && (k > 0 || p < 1)) throw new InterpException("--top-k and --top-p shape sampling: give a --temperature > 0 too (1: the model's own distribution)");
            using var loaded = LoadModel(parse.GetValue(model)!, parse.GetValue(tokenizer), parse.GetValue(device));
            var tok = loaded.RequireTokenizer();
            var stops = StopTokens(parse.GetValue(stop), tok, loaded.Model.Config.DVocab);
            if (tok.EosId is int eos) stops.Add(eos);
            string prompt = parse.GetValue(text)!;
            var ids = tok.Encode(prompt, prependBos: tok.BosId is not null);
            var generation = new GenerationOptions
            {
                MaxNewTokens = n, Temperature = t, TopK = k, TopP = p, Seed = parse.GetValue(seed) ?? Options.Seed, StopTokens = stops,
            };
            using var saes = SaeOptions.Open(loaded.Model, parse.GetValue(sae), parse.GetValue(errorTerm), parse.GetValue(steer), parse.GetValue(clamp));
            foreach (var line in saes.Describe()) Logger.LogInformation("{Sae}", line);
            using var hooks = loaded.Model.Hooks(saes.Hooks.Select(h => h.Hook).ToArray());
            using var result = loaded.Model.Generate(ids, generation, ct);
            // The prompt as typed, then the continuation, stop tokens included except EOS (decoding it would print a
            // marker such as <|endoftext|>).
            await Console.Out.WriteLineAsync(prompt + tok.Decode(result.Tokens[0].Where(id => id != tok.EosId).ToArray()));
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// <c>--stop</c>: comma-separated items, each a token id (an integer) or a text that is exactly one continuation
    /// token of <paramref name="tokenizer"/>; surrounding spaces are trimmed, <c>\,</c> is a literal comma and
    /// <c>\\</c> a literal backslash.
    /// </summary>
    /// <exception cref="InterpException">An item is empty, an id is outside the vocabulary, or a text is not exactly one token (the message shows its split).</exception>
    internal static HashSet<int> StopTokens(string? list, ITokenizer tokenizer, int vocab)
    {
        var stops = new HashSet<int>();
        if (string.IsNullOrWhiteSpace(list)) return stops;
        foreach (var (item, literal) in Split(list))
        {
            if (item.Length == 0) throw new InterpException($"--stop: empty item in \"{list}\" (write a comma as \\,)");
            if (!literal && int.TryParse(item, NumberStyles.Integer, CultureInfo.InvariantCulture, out int id))
            {
                if (id < 0 || id >= vocab) throw new InterpException($"--stop: token id {id} is outside the vocabulary [0, {vocab})");
                stops.Add(id);
            }
            else if (SingleTokens.TryOf(tokenizer, item, out id)) stops.Add(id);
            else throw new InterpException($"--stop: a stop text must be one token, but {SingleTokens.DescribeSplit(tokenizer, item, tokenizer.EncodeContinuation(item))}");
        }
        return stops;
    }

    /// <summary>The items of a comma-separated list with <c>\,</c> and <c>\\</c> escapes, trimmed; literal: the item held an escape.</summary>
    private static IEnumerable<(string Item, bool Literal)> Split(string list)
    {
        var item = new System.Text.StringBuilder();
        bool escaped = false;
        for (int i = 0; i < list.Length; i++)
        {
            char c = list[i];
            if (c == '\\' && i + 1 < list.Length && list[i + 1] is ',' or '\\')
            {
                item.Append(list[++i]);
                escaped = true;
            }
            else if (c == ',')
            {
                yield return (item.ToString().Trim(), escaped);
                item.Clear();
                escaped = false;
            }
            else item.Append(c);
        }
        yield return (item.ToString().Trim(), escaped);
    }
}

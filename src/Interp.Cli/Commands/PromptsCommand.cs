using Interp.Experiments;
using System.CommandLine;
using Interp.Prompts;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp prompts ioi --model PATH --n 64 --out ioi.jsonl [--templates ioi|stories|FILE] [--names A,B,…] [--seed N]</c>:
/// writes a name-mover (IOI-style) prompt set for the model's tokenizer, keeping only names that are one token.
/// </summary>
public sealed class PromptsCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<PromptsCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var model = ModelOption();
        var tokenizer = TokenizerOption();
        var count = new Option<int>("--n") { Description = "Prompts to write", DefaultValueFactory = _ => 64 };
        var output = new Option<string>("--out", "-o") { Description = "The prompt set to write (JSON Lines)", Required = true };
        var templates = new Option<string>("--templates")
        {
            Description = "ioi (web-text templates, e.g. \"When [A] and [B] went to the store, [B] gave a drink to\"), stories (children's-story templates) or a file with one template per line",
            DefaultValueFactory = _ => "ioi",
        };
        var names = new Option<string?>("--names") { Description = "Comma-separated names to draw from (default: a list of common first names); only single-token ones are kept" };
        var seed = new Option<long>("--seed") { Description = "Seed of the draw", DefaultValueFactory = _ => 0 };
        var ioi = new Command("ioi", "Name-mover prompts: answer = the indirect object, wrong = the subject, corrupted = the subject's second mention replaced by a third name")
            { model, tokenizer, count, output, templates, names, seed };
        ioi.SetAction((parse, ct) => Guard(async () =>
        {
            using var loaded = LoadModel(parse.GetValue(model)!, parse.GetValue(tokenizer), "cpu");
            string which = parse.GetValue(templates)!;
            IReadOnlyList<string> chosen = which switch
            {
                "ioi" => NameMoverPrompts.IoiTemplates,
                "stories" => NameMoverPrompts.StoryTemplates,
                _ when File.Exists(which) => File.ReadAllLines(which).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray(),
                _ => throw new InterpException($"--templates: '{which}' is neither ioi, stories nor an existing file"),
            };
            var nameList = parse.GetValue(names) is { } given
                ? given.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                : NameMoverPrompts.DefaultNames;
            var lines = NameMoverPrompts.Generate(loaded.RequireTokenizer(), chosen, nameList, parse.GetValue(count), parse.GetValue(seed));
            string path = parse.GetValue(output)!;
            PromptSet.Write(path, lines);
            var used = NameMoverPrompts.SingleTokenNames(loaded.RequireTokenizer(), nameList);
            await Console.Out.WriteLineAsync($"wrote {lines.Count} prompts to {path} (names that are one token: {string.Join(", ", used)})");
            return 0;
        }));
        return new Command("prompts", "Write prompt sets for the experiments' --prompts") { ioi };
    }
}

using Interp.Experiments;
using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary><c>interp list</c>: the experiment scripts, with what each shows and its file.</summary>
public sealed class ListCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<ListCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var command = new Command("list", "List the experiment scripts that `interp run` can run");
        command.SetAction((parse, ct) => Guard(async () =>
        {
            var all = ExperimentCatalog.All();
            if (all.Count == 0) throw new InterpException("no experiments folder found: run interp from a checkout of the repository");
            int width = all.Max(e => e.Name.Length);
            string root = Path.GetDirectoryName(ExperimentCatalog.Folder()!)!;
            foreach (var e in all)
                await Console.Out.WriteLineAsync($"{e.Name.PadRight(width)}  {e.Description}{(e.Shards ? " [shards]" : "")}  ({Path.GetRelativePath(root, e.Path)})");
            return 0;
        }));
        return command;
    }
}

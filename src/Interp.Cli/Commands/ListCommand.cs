using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary><c>interp list</c>: the experiments, with what each shows and its script.</summary>
public sealed class ListCommand(CliConsole console, IOptions<InterpOptions> options, ILogger<ListCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var command = new Command("list", "List the experiments that `interp run` can run");
        command.SetAction((parse, ct) => Guard(async () =>
        {
            int width = ExperimentCatalog.All.Max(e => e.Name.Length);
            foreach (var e in ExperimentCatalog.All)
                await Console.Out.WriteLineAsync($"{e.Name.PadRight(width)}  {e.Description}{(e.UsesModel ? " [model]" : "")}  (experiments/{e.Name}.cs)");
            return 0;
        }));
        return command;
    }
}

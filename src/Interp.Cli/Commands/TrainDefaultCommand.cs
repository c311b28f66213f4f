using Interp.Loading;
using System.CommandLine;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Training;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp train-default [--out DIR] [--steps N] [--seed N]</c>: trains the built-in default model (a 2-layer
/// attention-only transformer in which the induction circuit forms) with a progress bar and the running loss,
/// and saves it with its training curve. Rebuilding embeds the result.
/// </summary>
public sealed class TrainDefaultCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<TrainDefaultCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var output = new Option<string>("--out", "-o") { Description = "Output folder", DefaultValueFactory = _ => BuiltInModel.RepositoryPath };
        var steps = new Option<int?>("--steps") { Description = $"Training steps (default {InductionRecipe.Training.Steps})" };
        var seed = new Option<long>("--seed") { Description = "Seed of the initial weights and the data", DefaultValueFactory = _ => 0 };
        var command = new Command("train-default", "Train the built-in default model (2-layer attention-only, induction circuit)") { output, steps, seed };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            int? n = parse.GetValue(steps);
            if (n is < 1) throw new InterpException($"--steps must be positive, got {n}");
            ApplyThreads();
            string dir = parse.GetValue(output)!;
            var display = ProgressDisplay.ForConsole(Console.Error);
            Logger.LogInformation("Training the built-in model into {Directory}", dir);
            var report = await DefaultModelTraining.TrainAsync(dir, n, parse.GetValue(seed),
                p => display.Report(new ExperimentProgress(
                    $"step {p.Step}/{p.Steps}  loss {p.Loss:F3}  first copy {p.FirstHalfLoss:F3}  repeated copy {p.RepeatedHalfLoss:F3}", (double)p.Step / p.Steps)),
                ct);
            var prev = report.Scores.Best(HeadScoreKind.PreviousToken, 0);
            var ind = report.Scores.Best(HeadScoreKind.Induction, 1);
            await Console.Out.WriteLineAsync(
                $"trained in {report.Result.Elapsed.TotalSeconds:F0} s: loss first copy {report.Result.FirstHalfLoss[^1]:F3}, repeated copy {report.Result.RepeatedHalfLoss[^1]:F3}; " +
                $"previous-token head 0.{prev.Head} ({prev.Score:F2}), induction head 1.{ind.Head} ({ind.Score:F2}); saved to {dir}");
            return 0;
        }));
        return command;
    }
}

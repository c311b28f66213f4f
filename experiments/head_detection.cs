#:project ../src/Interp.Cli/Interp.Cli.csproj
// Head detection on repeated random tokens [BOS] + r + r: previous-token, duplicate-token and induction scores of every
// head, and with --set offsets=2,3 "attend k tokens back" scores (TransformerLens's detect_head with a detection pattern).
// Run: dotnet run experiments/head_detection.cs [-- --model PATH] [--set offsets=2,3] [--set exclude_bos=true] [--set exclude_current_token=true]

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new HeadDetectionExperiment(), args);
#endif

/// <summary>Head scores of the built-in model, or of any model given with --model.</summary>
sealed class HeadDetectionExperiment : IExperiment
{
    public string Name => "head_detection";
    public string Description => "Score every head: previous-token, duplicate-token, induction, and attend-k-back patterns (--set offsets=2,3)";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        HeadDetectionStudy.RunAsync(context, context.Model, new HeadDetectionStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context),
            Offsets = HeadDetectionStudy.ParseOffsets(context.Option("offsets", "")),
            Detection = new DetectionOptions
            {
                ExcludeBos = context.Option("exclude_bos", "false") == "true",
                ExcludeCurrentToken = context.Option("exclude_current_token", "false") == "true",
            },
            // The built-in model's sequences start with BOS = 0; other models use their tokenizer's BOS.
        }, cancellationToken);
}

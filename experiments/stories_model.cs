#:project ../src/Interp.Cli/Interp.Cli.csproj
// The induction analysis on any model: repeated random tokens, previous-token / duplicate-token / induction scores
// for every head, the top heads' patterns, and the loss per position with each head ablated.
// Run: dotnet run experiments/stories_model.cs -- --model ../shared/models/stories260K/stories260K.bin

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new StoriesModelExperiment(), args);
#endif

/// <summary>Induction heads in any model given with --model (the built-in model otherwise).</summary>
sealed class StoriesModelExperiment : IExperiment
{
    public string Name => "stories_model";
    public string Description => "Induction analysis of any model (--model), e.g. the TinyStories LLaMA stories260K";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        InductionStudy.RunAsync(context, context.Model, new InductionStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context),
        }, cancellationToken);
}

#:project ../src/Interp.Cli/Interp.Cli.csproj
// Ablation: remove each head, attention layer and MLP layer of a model in turn (zero, mean or resample ablation) and
// measure how much the loss on repeated random sequences rises. The sweep reuses the clean run up to the ablated layer
// and runs several ablations in one batched forward pass.
// Run: dotnet run experiments/ablation.cs [-- --model PATH] [--set metric=repeated_loss|loss] [--set positions=all|repeated|3,4]
//      [--set batch=32] [--set half=24] [--set ablations_per_forward=N]

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new AblationExperiment(), args);
#endif

/// <summary>Zero, mean and resample ablation of every head and layer of the built-in model, or of any model given with --model.</summary>
sealed class AblationExperiment : IExperiment
{
    public string Name => "ablation";
    public string Description => "Ablate every head, attention layer and MLP layer (zero, mean, resample) and measure the loss on repeated random sequences";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        AblationStudy.RunAsync(context, context.Model, new AblationStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context),
            Metric = context.Option("metric", "repeated_loss"),
            Positions = context.Option("positions", "all"),
            AblationsPerForward = context.Options.ContainsKey("ablations_per_forward") ? context.IntOption("ablations_per_forward", 0) : null,
        }, cancellationToken);
}

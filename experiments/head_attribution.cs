#:project ../src/Interp.Cli/Interp.Cli.csproj
// Direct logit attribution: the next-token logit on repeated random sequences split into what each embedding, head,
// MLP and bias writes directly, per position — for the correct token and for the difference correct − current token.
// The components sum to the model's logit; on the built-in model the induction head carries the repeated half.
// Run: dotnet run experiments/head_attribution.cs [-- --model PATH] [--set batch=32] [--set half=24] [--set process_weights=false]

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new HeadAttributionExperiment(), args);
#endif

/// <summary>Direct logit attribution of every head of the built-in model, or of any model given with --model.</summary>
sealed class HeadAttributionExperiment : IExperiment
{
    public string Name => "head_attribution";
    public string Description => "Direct logit attribution: the next-token logit split into embeddings, every head, every MLP and the biases, per position";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        HeadAttributionStudy.RunAsync(context, context.Model, new HeadAttributionStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context),
            ProcessWeights = context.Option("process_weights", "true") != "false",
        }, cancellationToken);
}

#:project ../src/Interp.Cli/Interp.Cli.csproj
// What every component writes into the residual stream (norm, cosine with the stream it joins, projection on the
// correct next token's unembedding), and the logit lens: the stream after each layer decoded through the final norm
// and unembedding — probability and rank of the correct next token per layer and position.
// Run: dotnet run experiments/residual_writes.cs [-- --model PATH] [--set batch=32] [--set half=24] [--set process_weights=false]

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new ResidualWritesExperiment(), args);
#endif

/// <summary>Residual writes and the logit lens on the built-in model, or on any model given with --model.</summary>
sealed class ResidualWritesExperiment : IExperiment
{
    public string Name => "residual_writes";
    public string Description => "Residual-stream writes per layer and component (norm, cosine, projection) and the logit lens per layer";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        ResidualWritesStudy.RunAsync(context, context.Model, new ResidualWritesStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context),
            ProcessWeights = context.Option("process_weights", "true") != "false",
        }, cancellationToken);
}

#:project ../src/Interp.Cli/Interp.Cli.csproj
// Every head split into its pattern circuit W_Q·W_Kᵀ (where a token looks) and its message circuit W_V·W_O (what it
// moves), compared side by side: spectra, copying scores, Q/K/V composition against a random baseline, the strongest
// token → token and token → logit entries, and how the weights line up with what the heads do.
// Run: dotnet run experiments/pattern_vs_message.cs [-- --model PATH] [--set top_k=20] [--set process_weights=false]

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new PatternVsMessageExperiment(), args);
#endif

/// <summary>Pattern (QK) vs message (OV) circuits of every head of the built-in model, or of any model given with --model.</summary>
sealed class PatternVsMessageExperiment : IExperiment
{
    public string Name => "pattern_vs_message";
    public string Description => "Split every head into its pattern (QK) and message (OV) circuits: spectra, copying and composition scores, top token entries";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        PatternVsMessage.RunAsync(context, context.Model, new PatternVsMessage.Settings
        {
            TopK = context.IntOption("top_k", 10),
            BaselineSamples = context.IntOption("baseline_samples", 256),
            ProcessWeights = context.Option("process_weights", "true") != "false",
            Input = RepeatedSequenceSettings.FromOptions(context),
        }, cancellationToken);
}

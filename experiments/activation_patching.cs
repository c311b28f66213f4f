#:project ../src/Interp.Cli/Interp.Cli.csproj
// Activation patching on repeated random tokens: clean = [BOS] + r + r, corrupted = [BOS] + c + r (the first copy
// replaced, so that the second copy has nothing to copy from). Every residual stream entry, attention/MLP output, head
// output and head pattern is patched from the clean run into the corrupted one in turn; the metric (mean log-probability
// of the correct token over the repeated half) says how much of the clean behaviour each one restores.
// Run: dotnet run experiments/activation_patching.cs [-- --model PATH] [--set batch=32] [--set half=24] [--set per_position=false]

using Interp.Analysis;
using Interp.Experiments;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new ActivationPatchingExperiment(), args);
#endif

/// <summary>Activation patching of the induction task on the built-in model, or on any model given with --model.</summary>
sealed class ActivationPatchingExperiment : IExperiment
{
    public string Name => "activation_patching";
    public string Description => "Patch every activation from clean [BOS] r r into corrupted [BOS] c r runs: which ones restore induction";
    public bool UsesModel => true;

    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) =>
        ActivationPatchingStudy.RunAsync(context, context.Model, new ActivationPatchingStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context),
            PerPosition = context.Option("per_position", "true") != "false",
            SequencesPerPass = context.IntOption("sequences_per_pass", 1024),
        }, cancellationToken);
}

#:project ../src/Interp.Cli/Interp.Cli.csproj
// THE MAIN JOB. On the built-in default model (a 2-layer attention-only transformer the project trains itself),
// find the previous-token head and the induction head, show their attention patterns on a repeated sequence,
// and show the loss per position on the repeated half with and without each head.
// Run: dotnet run experiments/induction_heads.cs   (or: interp run induction_heads)

using Interp.Analysis;
using Interp.Experiments;
using Interp.Plots;
using Interp.Results;

#if !INTERP_CLI
return await Interp.Cli.CliApp.RunScriptAsync(new InductionHeadsExperiment(), args);
#endif

/// <summary>The induction circuit of the built-in model: previous-token head in layer 0, induction head in layer 1.</summary>
sealed class InductionHeadsExperiment : IExperiment
{
    public string Name => "induction_heads";
    public string Description => "MAIN JOB: find the previous-token and induction heads of the built-in model, their patterns and ablations";
    public bool UsesModel => true;

    public async Task RunAsync(ExperimentContext context, CancellationToken cancellationToken)
    {
        var loaded = context.Model;
        bool twoLayer = loaded.Model.Config.NLayers == 2;
        context.AddText("An induction head completes patterns: having seen `… A B … A`, it predicts `B`. It needs two heads in " +
                        "different layers: a previous-token head writes \"the token before me was A\" into each position, and the " +
                        "induction head's keys read that (K-composition), so that a query `A` finds the position right after the earlier `A`.");
        await InductionStudy.RunAsync(context, loaded, new InductionStudy.Settings
        {
            Input = RepeatedSequenceSettings.FromOptions(context, batch: 64),
            // In a 2-layer model the circuit is layer 0 → layer 1 by construction.
            PreviousTokenLayer = twoLayer ? 0 : null,
            InductionLayer = twoLayer ? 1 : null,
        }, cancellationToken);

        // The training curve ships with the built-in model: it shows the phase change when the circuit forms.
        string curve = Path.Combine(loaded.Source, "training_loss.parquet");
        if (File.Exists(curve))
        {
            var t = await ParquetTableReader.ReadNumericAsync(curve, cancellationToken);
            context.SaveFigure("training_loss.png",
                Figures.Lines("Training loss of the built-in model", "step", "loss", t["step"], ("first half (random tokens)", t["loss_first_half"]), ("repeated half", t["loss_repeated_half"])),
                "Training: the loss on repeated tokens drops suddenly when the induction circuit forms (the phase change).", 1000, 500);
        }
    }
}

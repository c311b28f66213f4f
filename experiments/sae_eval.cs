#:project ../src/Interp.Run/Interp.Run.csproj
// SAELens's evals of any SAE on any model: sparsity (L0, L1, dead and dense features), reconstruction (explained
// variance, MSE, cosine, the relative reconstruction bias) and what splicing it in costs downstream (CE loss score, KL
// score against zero-ablating its hook point), on a corpus of the model's own text (or a file you give). One row of the
// sae_eval table per run; the feature densities as a table and a histogram.
// Run: dotnet run --project src/Interp.Cli -- run sae_eval --model ../shared/models/stories260K/stories260K.bin --sae DIR

using System.ComponentModel;
using Interp;
using Interp.Experiments;
using Interp.Plots;
using Interp.Saes;
using Interp.Training.Saes;
using static TorchSharp.torch;

return await Experiment.RunAsync<SaeEvalSettings>(args, new("sae_eval", "SAELens's evals of an SAE (--sae DIR) on a model: L0, explained variance, CE loss score, KL score, dead/dense features"), async (context, settings, ct) =>
{
    var model = context.Model.Model;
    if (settings.Sae is null) throw new InterpException("sae_eval needs an SAE: pass --sae DIR (a folder in SAELens's format, e.g. one `interp sae train` wrote)");
    using var sae = Sae.Load(settings.Sae);
    context.AddText($"**SAE** `{settings.Sae}`: {sae.Config.ArchitectureName}, d_in {sae.Config.DIn}, d_sae {sae.Config.DSae}, at `{sae.Config.HookName}`" +
                    (sae.Config.ModelName is { } m ? $" (trained on {m})" : "") + ".");

    // The corpus: the model's own samples from BOS (a seed no recipe trains on), or a text / JSON Lines file.
    int bos = context.Model.Tokenizer?.BosId ?? settings.Bos;
    int contextSize = Math.Min(settings.ContextSize, model.Config.NCtx);
    ISaeTokenSource corpus = settings.Corpus switch
    {
        null => new GeneratedTokenSource(model, bos, 2 * settings.Sequences, contextSize - 1, settings.CorpusSeed, batchSize: 32),
        var f when f.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) => new JsonLinesTokenSource(f, context.Model.RequireTokenizer()),
        var f => new TextFileTokenSource(f, context.Model.RequireTokenizer()),
    };
    context.ReportProgress("corpus", 0.05);
    using var scope = NewDisposeScope();
    var tokens = TokenWindows.Batch(corpus, contextSize, bos, settings.Sequences, ct);   // [sequences, pos]

    context.ReportProgress("evaluating", 0.2);
    var result = SaeEvaluation.Run(model, sae, tokens, new SaeEvalOptions(settings.BatchSize, settings.ExcludeFirstPosition), ct);
    await context.WriteTableAsync("sae_eval.parquet", result.ToTable(),
        $"SAELens's evals on {tokens.shape[0]} windows of {contextSize} tokens of {corpus.Description} (definitions in docs/saes.md)", ct);

    context.ReportProgress("features", 0.8);
    var acts = SaeFeatureActivations.Collect(model, sae, tokens, cancellationToken: ct);
    await context.WriteTableAsync("sae_feature_stats.parquet", acts.StatsTable(), "each feature's firing density, log10 density, max and mean when active on the corpus", ct);
    var histogram = FeatureDensityHistogram.Of(acts.Stats);
    context.SaveFigure("feature_density.png", Figures.FeatureDensity(histogram, $"Feature density: SAE at {sae.Config.HookName}"),
        $"log10 of the fraction of positions each feature fires on; {histogram.Dead} of {sae.Config.DSae} features never fire (counted apart).", 850, 500);

    context.AddNumber("l0", result.L0, "mean features active per position", "0.0");
    context.AddNumber("explained_variance", result.ExplainedVariance, "1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over all positions");
    context.AddNumber("ce_loss_score", result.CeLossScore, "(CE zero-ablated − CE with the SAE) / (CE zero-ablated − CE clean)");
    context.AddNumber("kl_div_score", result.KlDivScore, "(KL zero-ablated − KL with the SAE) / KL zero-ablated");
    context.AddNumber("dead_fraction", result.DeadFraction, "features never active on the corpus");
    context.AddText($"CE loss: clean {result.CeLossClean:0.000}, with the SAE {result.CeLossWithSae:0.000}, with `{sae.Config.HookName}` zero-ablated " +
                    $"{result.CeLossZeroAblated:0.000}. Dense features (active on > 10 % of positions): {result.DenseFraction:P1}. " +
                    $"MSE {result.Mse:0.000}, cosine {result.CosineSimilarity:0.000}, relative reconstruction bias {result.RelativeReconstructionBias:0.000}.");
    context.ReportProgress("done", 1.0);
});

/// <summary>Settings of sae_eval (--set key=value).</summary>
sealed record SaeEvalSettings
{
    [Description("the SAE folder, in SAELens's format (also --sae DIR)")]
    public string? Sae { get; init; }
    [Description("a text file (documents separated by blank lines) or a .jsonl file of {\"text\": …}; default: text the model samples from BOS")]
    public string? Corpus { get; init; }
    [Description("sequences (windows) evaluated")]
    public int Sequences { get; init; } = 64;
    [Description("tokens per window (at most the model's n_ctx), BOS first")]
    public int ContextSize { get; init; } = 128;
    [Description("seed of the generated corpus (the recipes train on seed 1)")]
    public int CorpusSeed { get; init; } = 2_000_001;
    [Description("the BOS id of a model without a tokenizer (the built-in model's is 0)")]
    public int Bos { get; init; }
    [Description("sequences per forward pass")]
    public int BatchSize { get; init; } = 8;
    [Description("leave position 0 (BOS) out of the sparsity and reconstruction metrics")]
    public bool ExcludeFirstPosition { get; init; }
}

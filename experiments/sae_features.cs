#:project ../src/Interp.Run/Interp.Run.csproj
// Features of a sparse autoencoder on the residual stream: train one with the default recipe (stories260K's middle
// residual stream, on stories the model writes itself; or the built-in model's), or load one with --sae DIR; evaluate it
// (L0, explained variance, CE loss score); then read its top features: where each fires most (token-coloured contexts),
// which tokens it promotes and suppresses through the unembedding, and which heads' message circuits move it.
// Run: dotnet run --project src/Interp.Cli -- run sae_features --model ../shared/models/stories260K/stories260K.bin

using System.ComponentModel;
using Interp;
using Interp.Experiments;
using Interp.Plots;
using Interp.Results;
using Interp.Saes;
using Interp.Training.Saes;
using ScottPlot;
using static TorchSharp.torch;

return await Experiment.RunAsync<SaeFeaturesSettings>(args, new("sae_features", "Train (or load with --sae) an SAE on the residual stream, evaluate it, and show its top features: contexts, logit effects, heads that move them") { Shards = true }, async (context, settings, ct) =>
{
    var model = context.Model.Model;
    var tokenizer = context.Model.Tokenizer;
    int bos = tokenizer?.BosId ?? settings.Bos;
    bool sharded = context.Shard is not null || context.IsMerge;

    // 1. The SAE: loaded, or trained here with the recipe for this model.
    string saeDir;
    if (settings.Sae is { } given) saeDir = given;
    else if (sharded)
        throw new InterpException("sae_features --shard: every shard would train an SAE of its own; train it once (interp run sae_features, or a training script) and pass its folder with --sae DIR");
    else
    {
        var recipe = SaeRecipe.Named(settings.Recipe ?? (context.Model.Tokenizer is null ? "builtin" : "stories260K"));
        if (settings.TrainingTokens is long budget)
        {
            // A shorter run (a quick look, or a test): the schedule's warm-up and decay shrink with it.
            int steps = (int)Math.Max(1, budget / recipe.Options.BatchSizeTokens);
            recipe = recipe with { Options = recipe.Options with { TrainingTokens = budget, LrWarmUpSteps = Math.Min(recipe.Options.LrWarmUpSteps, steps / 4), LrDecaySteps = Math.Min(recipe.Options.LrDecaySteps, steps / 4) } };
        }
        saeDir = Path.Combine(context.OutputDirectory, "sae");
        context.ReportProgress($"training ({recipe.Name} recipe)", 0.0);
        var progress = new Progress<SaeTrainingProgress>(p => context.ReportProgress($"training: step {p.Step}/{p.TotalSteps}, L0 {p.L0:0.0}, EV {p.ExplainedVariance:0.000}", 0.6 * p.Step / p.TotalSteps));
        var report = recipe.Run(model, saeDir, context.Logger, progress, ct);
        context.AddText($"**Trained** with the `{recipe.Name}` recipe at `{recipe.HookName}`: {recipe.Options.Architecture} (k {recipe.Options.K}), d_sae {recipe.Options.DSae}, " +
                        $"{report.Training.Tokens:N0} activations in {report.Training.Steps} steps, {report.Training.Elapsed.TotalSeconds:0} s of training " +
                        $"(+ {report.GenerationTime.TotalSeconds:0} s generating a corpus of {report.CorpusTokens:N0} tokens). Saved in SAELens's format in `sae/`.");
        context.AddNumber("training_seconds", report.Training.Elapsed.TotalSeconds, "wall time of SAE training (buffer filling included)", "0");
    }
    using var sae = Sae.Load(saeDir);

    // 2. Held-out text the model samples itself (a seed the recipe did not train on). A merge reads the shards' tokens.
    int contextSize = Math.Min(settings.ContextSize, model.Config.NCtx);
    using var scope = NewDisposeScope();
    Tensor? tokens = null;   // [sequences, pos]
    if (!context.IsMerge)
    {
        context.ReportProgress("held-out corpus", 0.65);
        var corpus = new GeneratedTokenSource(model, bos, 2 * settings.Sequences, contextSize - 1, settings.CorpusSeed, batchSize: 32);
        tokens = TokenWindows.Batch(corpus, contextSize, bos, settings.Sequences, ct);
    }

    // 3. The sweep, in units of unit_size windows (a shard does its share): each unit's evaluation sums, tokens and
    // non-zero feature activations become its rows; the metrics and tables are computed from every unit's rows.
    var units = context.Chunks(settings.Sequences, settings.UnitSize);
    var unitRows = new List<SaeUnitRow>();
    for (int k = 0; k < units.Count; k++)
    {
        var (u, start, n) = units[k];
        context.ReportProgress($"unit {u + 1}: evaluation and feature activations", 0.7 + 0.1 * k / units.Count);
        using var unitScope = NewDisposeScope();
        var unitTokens = tokens!.narrow(0, start, n);                                                    // [n, pos]
        var sums = SaeEvaluation.Accumulate(model, sae, unitTokens, cancellationToken: ct);
        var unitActs = SaeFeatureActivations.Collect(model, sae, unitTokens, cancellationToken: ct);
        unitRows.AddRange(SaeUnitRow.Of(u, start, sums, unitActs));
    }
    var gathered = await context.GatherAsync("sae_units", unitRows, ct);
    var (statistics, tokenIds, entries) = SaeUnitRow.Read(gathered, context.UnitCount, sae.Config, contextSize);

    // 4. Evaluation.
    var eval = SaeEvaluation.Finish(sae, statistics);
    await context.WriteTableAsync("sae_eval.parquet", eval.ToTable(), $"SAELens's evals on {settings.Sequences} held-out windows of {contextSize} tokens (docs/saes.md)", ct);
    context.AddNumber("l0", eval.L0, "mean features active per position", "0.0");
    context.AddNumber("explained_variance", eval.ExplainedVariance, "1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² on held-out text");
    context.AddNumber("ce_loss_score", eval.CeLossScore, "(CE zero-ablated − CE with the SAE) / (CE zero-ablated − CE clean)");
    context.AddNumber("dead_fraction", eval.DeadFraction, "features never active on the held-out text");
    context.AddText($"CE loss on held-out text: clean {eval.CeLossClean:0.000}, with the SAE spliced in {eval.CeLossWithSae:0.000}, with `{sae.Config.HookName}` " +
                    $"zero-ablated {eval.CeLossZeroAblated:0.000}; KL score {eval.KlDivScore:0.000}.");

    // 5. Feature activations: the sparse table, densities.
    context.ReportProgress("features", 0.8);
    var acts = SaeFeatureActivations.FromEntries(sae.Config.DSae, contextSize, tokenIds, entries);
    await context.WriteTableAsync("sae_feature_acts.parquet", acts.ToTable(), "every non-zero feature activation: sequence, position, feature, value", ct);
    await context.WriteTableAsync("sae_feature_stats.parquet", acts.StatsTable(), "each feature's density, log10 density, max and mean when active", ct);
    var histogram = FeatureDensityHistogram.Of(acts.Stats);
    context.SaveFigure("feature_density.png", Figures.FeatureDensity(histogram, $"Feature density: SAE at {sae.Config.HookName}"),
        $"log10 of the fraction of held-out positions each feature fires on; {histogram.Dead} of {sae.Config.DSae} never fire.", 850, 500);

    // 6. The top features: the most total activation among those that are not dense (> 10 % of positions), so that
    // the list is not a few always-on features.
    var top = acts.Stats.Where(s => !s.IsDead && s.Density <= settings.MaxDensity)
        .OrderByDescending(s => s.Density * s.MeanWhenActive).ThenBy(s => s.Feature).Take(settings.TopFeatures).Select(s => s.Feature).ToArray();
    if (top.Length == 0) throw new InterpException("no feature fires on the held-out text below the density limit");
    var contexts = SaeFeatureContexts.Top(acts, tokenizer, new SaeFeatureContextOptions { TopN = settings.ContextsPerFeature, Features = top });
    await context.WriteTableAsync("sae_feature_contexts.parquet", contexts.ToTable(), "the top-activating contexts of the top features: the window around each maximum, with the feature's activation on every token", ct);
    // The first held-out windows, each token coloured by a top feature's activation (0 where it does not fire).
    int shownWindows = Math.Min(4, acts.Sequences);
    var windowIds = Enumerable.Range(0, shownWindows).Select(q => (IReadOnlyList<int>)Enumerable.Range(0, acts.Positions).Where(p => acts.IsReal(q, p)).Select(p => acts.TokenAt(q, p)).ToArray()).ToArray();
    string Piece(int id) => tokenizer?.ToStrTokens([id])[0] ?? id.ToString(System.Globalization.CultureInfo.InvariantCulture);
    await context.WriteTableAsync("tokens.parquet", TokenTable.From(windowIds, windowIds.Select(w => (IReadOnlyList<string>)w.Select(Piece).ToArray()).ToArray()),
        "the tokens of the held-out windows the report's views show", ct);
    var featureValues = new TokenValuesTable.Builder();
    foreach (int f in top)
        for (int q = 0; q < shownWindows; q++)
            featureValues.Add($"feature {f}", q, Enumerable.Range(0, windowIds[q].Count).Select(p => (double)acts.ValueAt(q, p, f)).ToArray());
    await context.WriteTableAsync("token_features.parquet", featureValues.ToTable(), "each top feature's activation on every token of the first held-out windows (0 where it does not fire)", ct);
    await context.AddViewAsync(new TokenValuesView("Feature activations per token", "The first held-out windows, each token coloured by a top feature's activation; choose the feature.",
        "token_features.parquet", "tokens.parquet"), ct);
    var contextPlot = Figures.FeatureContexts(contexts.Contexts, acts.Stats);
    var (w, h) = Figures.FeatureContextsSize(contexts.Contexts);
    context.SaveFigure("feature_contexts.png", contextPlot,
        $"The top {top.Length} features (most total activation, density ≤ {settings.MaxDensity:P0}): each panel the feature's top contexts, tokens coloured by its activation.", w, h);

    bool onStream = true;
    try { SaeLogitEffects.CheckApplies(model, sae); }
    catch (InterpException) { onStream = false; }
    if (!onStream)   // no direct path to the logits: cards without logit effects
        await context.AddViewAsync(new FeatureView("Feature cards", "Each top feature's density and top contexts (tokens coloured by its activation).",
            "sae_feature_stats.parquet", "sae_feature_contexts.parquet", null), ct);
    if (onStream)
    {
        var effects = SaeLogitEffects.Compute(model, sae, new SaeLogitEffectOptions { TopK = 8, Features = top }, tokenizer, ct);
        await context.WriteTableAsync("sae_logit_effects.parquet", effects.ToTable(), "W_dec[f]·W_U for the top features: the tokens each promotes and suppresses most (direct path)", ct);
        var shown = top.Take(6).ToArray();
        context.SaveFigure("logit_effects.png", Figures.LogitEffects(effects.Rows, shown),
            "Direct logit effect of the top features: W_dec[f]·W_U, the 8 most promoted (right) and suppressed (left) tokens of each.", 900, 220 * shown.Length + 120);

        await context.AddViewAsync(new FeatureView("Feature cards", "Each top feature's density, top contexts (tokens coloured by its activation) and the tokens it promotes and suppresses.",
            "sae_feature_stats.parquet", "sae_feature_contexts.parquet", "sae_logit_effects.parquet"), ct);

        var alignment = SaeMessageAlignment.Compute(model, sae, new SaeMessageAlignmentOptions { Features = top }, ct);
        await context.WriteTableAsync("sae_message_alignment.parquet", alignment.ToTable(),
            "each top feature's decoder direction through every later head's message (OV) circuit: the gain ‖d·W_V·W_O‖/‖d‖ and the feature the result is most like", ct);
        // The heads that read the SAE's stream: layers FirstLayer … n_layers − 1 (GainMap is over all layers).
        int readers = alignment.Layers - alignment.FirstLayer;
        var gains = new double[top.Length, readers * alignment.Heads];
        for (int i = 0; i < top.Length; i++)
        {
            var map = alignment.GainMap(top[i]);
            for (int l = 0; l < readers; l++)
                for (int hd = 0; hd < alignment.Heads; hd++) gains[i, l * alignment.Heads + hd] = map[alignment.FirstLayer + l, hd];
        }
        var heads = Enumerable.Range(0, readers * alignment.Heads).Select(i => $"{alignment.FirstLayer + i / alignment.Heads}.{i % alignment.Heads}").ToArray();
        if (readers > 0) context.SaveFigure("message_gains.png", Figures.Matrix(gains, "How much each head's message circuit moves each top feature", "head (layer.head)", "feature",
                top.Select(f => $"f{f}").ToArray(), heads),
            "Gain ‖d_f·W_V·W_O‖/‖d_f‖ of each top feature's decoder direction d_f through each head that reads it (layer norms ignored, as in the direct-path circuits).", 900, 120 + 40 * top.Length);

        // The report: each top feature in words.
        foreach (int f in top.Take(6))
        {
            var stat = acts.Stats[f];
            string promoted = string.Join(" ", effects.Of(f, LogitEffectDirection.Promoted).Take(5).Select(e => $"`{Figures.VisibleToken(e.Token)}`"));
            var best = contexts.Of(f).FirstOrDefault();
            string window = best is null ? "" : string.Concat(best.Tokens.Select(t => t.Offset == 0 ? $"**[{t.Token}]**" : t.Token));
            var strongest = alignment.Rows.Where(r => r.Feature == f).OrderByDescending(r => r.Gain).FirstOrDefault();
            string moved = strongest is null ? "no later head reads it"
                : $"moved most by head {strongest.Layer}.{strongest.Head} (gain {strongest.Gain:0.00}, writes most like feature {strongest.TopTargetFeature}, cosine {strongest.Cosine:0.00})";
            context.AddText($"- **feature {f}**: fires on {stat.Density:P2} of positions (max {stat.Max:0.00}); top context “{window.Replace("\n", "↵")}”; " +
                            $"promotes {promoted}; {moved}.");
        }
    }
    else context.AddText($"The SAE reads `{sae.Config.HookName}`, not a residual-stream write: logit effects and message alignment are skipped.");
    context.ReportProgress("done", 1.0);
});

/// <summary>Settings of sae_features (--set key=value).</summary>
sealed record SaeFeaturesSettings
{
    [Description("an SAE folder in SAELens's format to read (also --sae DIR); default: train one with the recipe")]
    public string? Sae { get; init; }
    [Description("the training recipe: builtin or stories260K (default: builtin for a model without a tokenizer, else stories260K)")]
    public string? Recipe { get; init; }
    [Description("activations to train on (default: the recipe's 2,000,000)")]
    public long? TrainingTokens { get; init; }
    [Description("held-out windows evaluated and read")]
    public int Sequences { get; init; } = 64;
    [Description("tokens per held-out window (at most n_ctx), BOS first")]
    public int ContextSize { get; init; } = 128;
    [Description("seed of the held-out corpus (the recipes train on seed 1 and evaluate on 1000001)")]
    public int CorpusSeed { get; init; } = 2_000_001;
    [Description("the BOS id of a model without a tokenizer (the built-in model's is 0)")]
    public int Bos { get; init; }
    [Description("features shown")]
    public int TopFeatures { get; init; } = 12;
    [Description("top contexts per feature")]
    public int ContextsPerFeature { get; init; } = 5;
    [Description("features denser than this fraction of positions are left out of the top list")]
    public double MaxDensity { get; init; } = 0.1;
    [Description("held-out windows per work unit: each unit is evaluated alone, and a sharded run (--shard i/n, which needs --sae) splits the units")]
    public int UnitSize { get; init; } = 16;
}

/// <summary>
/// One value of a unit's sweep, the rows a shard writes (<c>shards/sae_units/</c>): <c>token</c> (the id at sequence,
/// position: <c>index</c>), <c>act</c> (feature <c>index</c>'s activation there), the evaluation's sums by name
/// (<see cref="SaeEvalStatistics"/>: <c>sum_residual</c>, … with index 0), <c>sum_x</c> and <c>fired</c> per dimension or
/// feature, and per evaluated position (<c>index</c> in unit order) <c>residual</c> and the input's values (<c>input</c>,
/// index p · d_out + i). Sequences are numbered in the whole held-out set.
/// </summary>
sealed record SaeUnitRow(int Unit, string Part, int Sequence, int Position, int Index, double Value) : IUnitRow
{
    private static readonly string[] Sums = ["positions", "sum_residual", "sum_norm_sq", "sum_l0", "sum_l1", "sum_cos", "sum_ratio", "sum_recon_sq", "sum_recon_dot",
        "ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero", "predicted", "positions_all"];

    public static IEnumerable<SaeUnitRow> Of(int unit, int start, SaeEvalStatistics s, SaeFeatureActivations acts)
    {
        double[] sums = [s.Positions, s.SumResidual, s.SumNormSq, s.SumL0, s.SumL1, s.SumCos, s.SumRatio, s.SumReconSq, s.SumReconDot,
            s.CeClean, s.CeSae, s.CeZero, s.KlSae, s.KlZero, s.Predicted, s.PositionsAll];
        for (int i = 0; i < Sums.Length; i++) yield return new(unit, Sums[i], -1, -1, 0, sums[i]);
        for (int i = 0; i < s.SumX.Length; i++) yield return new(unit, "sum_x", -1, -1, i, s.SumX[i]);
        for (int f = 0; f < s.Fired.Length; f++) yield return new(unit, "fired", -1, -1, f, s.Fired[f]);
        for (int p = 0; p < s.Residuals.Length; p++) yield return new(unit, "residual", -1, -1, p, s.Residuals[p]);
        for (int i = 0; i < s.Inputs.Length; i++) yield return new(unit, "input", -1, -1, i, s.Inputs[i]);
        for (int q = 0; q < acts.Sequences; q++)
            for (int p = 0; p < acts.Positions; p++) yield return new(unit, "token", start + q, p, acts.TokenAt(q, p), 0);
        foreach (var e in acts.Entries) yield return new(unit, "act", start + e.Sequence, e.Position, e.Feature, e.Value);
    }

    /// <summary>Every unit's rows (in unit order) back as the evaluation's statistics, the token ids and the activations.</summary>
    public static (SaeEvalStatistics Statistics, int[] Tokens, FeatureActivation[] Entries) Read(IReadOnlyList<SaeUnitRow> rows, int units, SaeConfig sae, int positions)
    {
        var parts = new List<SaeEvalStatistics>();
        var tokens = new List<int>();
        var entries = new List<FeatureActivation>();
        foreach (var unit in rows.GroupBy(r => r.Unit))
        {
            if (unit.Key != parts.Count) throw new InterpException($"sae_features: the rows of unit {parts.Count} are missing (found unit {unit.Key} next)");
            var sums = new double[Sums.Length];
            var seen = new bool[Sums.Length];
            var sumX = new double[sae.DOut];
            var fired = new long[sae.DSae];
            var residuals = new List<double>();
            var inputs = new List<float>();
            foreach (var r in unit)
            {
                if ((r.Part == "sum_x" && (uint)r.Index >= sumX.Length) || (r.Part == "fired" && (uint)r.Index >= fired.Length))
                    throw new InterpException($"sae_features: unit {r.Unit}'s '{r.Part}' row of index {r.Index} is outside the SAE's d_out {sae.DOut} and d_sae {sae.DSae}: the shards read another SAE");
                switch (r.Part)
                {
                    case "sum_x": sumX[r.Index] = r.Value; break;
                    case "fired": fired[r.Index] = (long)r.Value; break;
                    case "residual": residuals.Add(r.Value); break;
                    case "input": inputs.Add((float)r.Value); break;
                    case "token": tokens.Add(r.Index); break;
                    case "act": entries.Add(new FeatureActivation(r.Sequence, r.Position, r.Index, (float)r.Value)); break;
                    default:
                        int i = Array.IndexOf(Sums, r.Part);
                        if (i < 0) throw new InterpException($"sae_features: unit {r.Unit} has a row of unknown part '{r.Part}'");
                        (sums[i], seen[i]) = (r.Value, true);
                        break;
                }
            }
            if (Array.IndexOf(seen, false) is int missing and >= 0) throw new InterpException($"sae_features: unit {unit.Key} has no '{Sums[missing]}' row");
            parts.Add(new SaeEvalStatistics
            {
                Positions = (long)sums[0], SumResidual = sums[1], SumNormSq = sums[2], SumL0 = sums[3], SumL1 = sums[4], SumCos = sums[5], SumRatio = sums[6],
                SumReconSq = sums[7], SumReconDot = sums[8], CeClean = sums[9], CeSae = sums[10], CeZero = sums[11], KlSae = sums[12], KlZero = sums[13],
                Predicted = (long)sums[14], PositionsAll = (long)sums[15], SumX = sumX, Fired = fired, Residuals = [.. residuals], Inputs = [.. inputs],
            });
        }
        if (parts.Count != units) throw new InterpException($"sae_features: rows of {parts.Count} units, but the sweep has {units}");
        if (tokens.Count % positions != 0) throw new InterpException($"sae_features: {tokens.Count} token rows do not make windows of {positions}");
        return (SaeEvalStatistics.Combine(parts), [.. tokens], [.. entries]);
    }
}

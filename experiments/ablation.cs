#:project ../src/Interp.Run/Interp.Run.csproj
// Ablation: remove each head, attention layer and MLP layer of a model in turn (zero, mean or resample ablation) and
// measure how much the metric changes: the loss on repeated random sequences, or — with --prompts FILE — the logit
// difference logit(answer) − logit(wrong) at each prompt's last token, averaged over the prompts (which run as one
// right-padded batch, swept in units of unit_size). The sweep reuses the clean run up to the ablated layer and runs several ablations per forward pass.
// Run: dotnet run experiments/ablation.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set metric=repeated_loss|loss] [--set positions=all|repeated|3,4] [--set batch=32] [--set half=24] [--set ablations_per_forward=N]
//      [--set unit_size=8] [--shard i/n --out DIR, then: interp merge DIR]

using System.ComponentModel;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Loading;
using Interp.Plots;
using Interp.Prompts;
using Interp.Results;
using static TorchSharp.torch;

AblationKind[] Kinds = [AblationKind.Zero, AblationKind.Mean, AblationKind.Resample];

return await Experiment.RunAsync<AblationSettings>(args, new("ablation", "Ablate every head, attention layer and MLP layer (zero, mean, resample) and measure the loss on repeated random sequences or the logit difference on your prompts") { Shards = true }, async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();

    // The input: the researcher's prompts, or repeated random sequences [BOS] + r + r.
    Tensor tokens;
    Tensor? mask = null;
    AblationReference reference;
    string metricName, input;
    Metric metric;
    int[]? positions = null;
    int half = 0, prefix = 0;
    using var prompts = settings.Prompts is { } file ? PromptSet.Load(file, model) : null;
    if (prompts is not null)
    {
        if (settings.Positions != "all")
            throw new InterpException($"setting 'positions' = '{settings.Positions}' applies to repeated random sequences; with --prompts every position of every prompt is ablated");
        (tokens, mask) = (prompts.Clean.Tokens, prompts.Clean.AttentionMask);
        reference = new AblationReference(model, tokens, context.Seed, mask);   // means and resamples over the same prompts' real tokens
        (metricName, metric) = ("logit_diff", prompts.LogitDiff());
        input = $"{prompts.Count} prompts of {Path.GetFileName(prompts.Source)} ({prompts.Clean.Lengths.Min()}–{prompts.Clean.MaxLength} tokens, one right-padded batch)";
    }
    else
    {
        var drawn = settings.Input(cfg).Draw(loaded, context.Seed);
        (tokens, half, prefix) = (drawn.Tokens, drawn.Half, drawn.Prefix);
        reference = new AblationReference(model, (settings.Input(cfg) with { Half = half }).Draw(loaded, context.Seed + 1L).Tokens, context.Seed);
        (metricName, metric) = settings.Metric switch
        {
            "repeated_loss" => ("repeated_half_loss", Metrics.Loss(prefix + half + 1)),
            "loss" => ("loss", Metrics.Loss()),
            var m => throw new InterpException($"setting 'metric': unknown metric '{m}', expected repeated_loss or loss"),
        };
        positions = ParsePositions(settings.Positions, prefix, half, (int)tokens.shape[1]);
        input = $"{settings.Batch} repeated random sequences ({half} random tokens repeated once)";
    }
    using var _reference = reference;
    // A loss rises when a head that helps is removed; a logit difference falls.
    double helps = prompts is null ? 1 : -1;
    var options = new AblationSweepOptions { AblationsPerForward = settings.AblationsPerForward };

    var targets = AblationTarget.AllHeads(cfg, positions).Concat(AblationTarget.AllLayers(cfg, positions)).ToArray();
    // The work units: chunks of unit_size sequences (or prompts), each swept alone. A shard (--shard i/n) does its share
    // of the units; every unit's rows are then gathered (from every shard, in a merge) and averaged over all sequences.
    long sequences = tokens.shape[0];
    var units = context.Chunks(sequences, settings.UnitSize);
    var unitRows = new List<AblationUnitRow>();
    for (int k = 0; k < units.Count; k++)
    {
        var (u, start, n) = units[k];
        using var unitScope = NewDisposeScope();
        var unitTokens = tokens.narrow(0, start, n);                                                   // [n, pos]
        var unitMask = mask?.narrow(0, start, n);
        var unitMetric = prompts is null ? metric
            : Metrics.LogitDiff(prompts.AnswerIds[start..(start + n)], prompts.WrongIds[start..(start + n)], prompts.LastPositions[start..(start + n)]);
        var unitReference = reference.Rows(start);   // resampling by each sequence's place in the whole batch
        for (int i = 0; i < Kinds.Length; i++)
        {
            context.ReportProgress($"unit {u + 1}: {Ablation.Name(Kinds[i])} ablation of {targets.Length} sites", 0.9 * (k * Kinds.Length + i) / (units.Count * Kinds.Length));
            var swept = AblationSweep.Run(model, unitTokens, targets, Kinds[i], unitMetric, unitReference, options, ct, unitMask);
            for (int t = 0; t < swept.Count; t++)
                unitRows.Add(new AblationUnitRow(u, n, Ablation.Name(Kinds[i]), t, swept[t].MetricClean, swept[t].MetricAblated));
        }
    }
    var gathered = await context.GatherAsync("ablation_units", unitRows, ct);

    // Each site's metric over all sequences: the sequence-weighted mean of its units' means, summed in unit order.
    var sums = new Dictionary<(string Kind, int Site), (double N, double Clean, double Ablated)>();
    foreach (var r in gathered)
    {
        var (n, c, a) = sums.GetValueOrDefault((r.Ablation, r.Site));
        sums[(r.Ablation, r.Site)] = (n + r.Sequences, c + r.Sequences * r.MetricClean, a + r.Sequences * r.MetricAblated);
    }
    var rows = new List<AblationRow>();
    foreach (var kind in Kinds)
        for (int t = 0; t < targets.Length; t++)
        {
            var (n, c, a) = sums.TryGetValue((Ablation.Name(kind), t), out var sum) ? sum
                : throw new InterpException($"ablation: no unit row for site {t} ({targets[t].ComponentName} {targets[t].Layer}) under {Ablation.Name(kind)} ablation");
            if (n != sequences) throw new InterpException($"ablation: site {t} under {Ablation.Name(kind)} ablation covers {n} of {sequences} sequences");
            var target = targets[t];
            rows.Add(new AblationRow(target.Layer, target.Head, target.ComponentName, kind, target.PositionsName, c / n, a / n) { Feature = target.Feature, Sae = target.SaeHookName ?? "" });
        }
    await context.WriteTableAsync("ablation.parquet", AblationSweep.ToTable(rows, metricName),
        $"{metricName} on {input}, clean and with each head (hook_z slice), attention layer (hook_attn_out) " +
        "and MLP layer (hook_mlp_out) zero-, mean- or resample-ablated alone (mean and resample over a reference batch of as many sequences)", ct);

    await context.AddViewAsync(new HeatmapView("Head ablations", $"Change in {metricName} with each head ablated alone (layer × head); choose the ablation.",
        "ablation.parquet", [Columns.Layer], [Columns.Head], "delta", "ablation") { Where = new Dictionary<string, string> { [Columns.Component] = "head" } }, ct);

    context.ReportProgress("figures", 0.9);
    foreach (var kind in Kinds)
        context.SaveFigure($"ablation_heads_{Ablation.Name(kind)}.png",
            Figures.LayerHead(AblationSweep.HeadDeltas(rows.Where(r => r.Kind == kind), cfg), $"{Ablation.Name(kind)} ablation: change in {metricName}", $"Δ {metricName}"),
            $"Change in {metricName} when each head is {Ablation.Name(kind)}-ablated alone (layer × head); {(helps > 0 ? "positive" : "negative")} = the head helps.",
            Math.Max(500, 90 * cfg.NHeads + 200), Math.Max(300, 70 * cfg.NLayers + 150));
    var layerRows = rows.Where(r => r.Component != "head").ToArray();
    var layerLabels = layerRows.Select(r => $"{r.Component} {r.Layer}").Distinct().ToArray();
    var layerDeltas = new double[layerLabels.Length, Kinds.Length];
    foreach (var r in layerRows) layerDeltas[Array.IndexOf(layerLabels, $"{r.Component} {r.Layer}"), Array.IndexOf(Kinds, r.Kind)] = r.Delta;
    context.SaveFigure("ablation_layers.png",
        Figures.Matrix(layerDeltas, $"Layer ablation: change in {metricName}", "ablation", "component", layerLabels, Kinds.Select(Ablation.Name).ToArray(), $"Δ {metricName}", annotate: true),
        $"Change in {metricName} when a whole attention layer (hook_attn_out) or MLP layer (hook_mlp_out) is ablated.",
        700, Math.Max(350, 45 * layerLabels.Length + 200));

    // The heads whose zero-ablation costs most, and (on repeated sequences) the loss per position without the first.
    var ranked = rows.Where(r => r.Kind == AblationKind.Zero && r.Component == "head").OrderByDescending(r => helps * r.Delta).ToArray();
    var top = ranked[0];
    var topTarget = AblationTarget.OfHead(top.Layer, top.Head, positions);
    double clean = top.MetricClean;
    context.AddNumber("metric_clean", clean, $"{metricName} of the clean model");
    context.AddNumber("top_head_layer", top.Layer, "layer of the head whose zero-ablation costs the most", "0");
    context.AddNumber("top_head", top.Head, "index of that head", "0");
    context.AddNumber("top_head_delta", top.Delta, $"change of {metricName} when head {top.Layer}.{top.Head} is zero-ablated");
    string second = "";
    if (ranked.Length > 1)
    {
        var next = ranked[1];
        context.AddNumber("second_head_layer", next.Layer, "layer of the head whose zero-ablation costs the second most", "0");
        context.AddNumber("second_head", next.Head, "index of that head", "0");
        context.AddNumber("second_head_delta", next.Delta, $"change of {metricName} when head {next.Layer}.{next.Head} is zero-ablated");
        second = $"; second comes head **{next.Layer}.{next.Head}** ({next.Delta:+0.000;-0.000})";
    }
    string Delta(AblationKind kind) => $"{rows.Single(r => r.Kind == kind && r.Component == "head" && r.Layer == top.Layer && r.Head == top.Head).Delta:+0.000;-0.000}";
    context.AddText($"**Most important head.** Zero-ablating head **{top.Layer}.{top.Head}** changes {metricName} from {clean:0.000} to " +
                    $"{top.MetricAblated:0.000} ({top.Delta:+0.000;-0.000}){second}. Mean and resample ablation of the same head: " +
                    $"{Delta(AblationKind.Mean)} and {Delta(AblationKind.Resample)}. Input: {input}; ablated at positions {topTarget.PositionsName}.");
    if (prompts is not null)
    {
        context.ReportProgress("done", 1.0);
        return;
    }
    var cleanLoss = LossByPosition.Mean(model, tokens);
    var series = new List<(string, double[])> { ("clean", cleanLoss) };
    foreach (var kind in Kinds)
        series.Add(($"head {top.Layer}.{top.Head} {Ablation.Name(kind)}-ablated",
            LossByPosition.Mean(model, tokens, Ablation.Hooks(model, kind, reference, topTarget))));
    var xs = Enumerable.Range(1, cleanLoss.Length).Select(p => (double)p).ToArray();
    var lossPlot = Figures.Lines($"Loss per position without head {top.Layer}.{top.Head}", "position of the predicted token", "mean loss", xs, [.. series]);
    lossPlot.ShowLegend(ScottPlot.Alignment.LowerLeft);   // empty: every curve is high before the repeated copy
    context.SaveFigure("loss_by_position_top_head.png", lossPlot,
        $"Loss per predicted position, clean and with head {top.Layer}.{top.Head} (the costliest to zero-ablate) ablated three ways; " +
        $"the repeated copy starts after position {prefix + half}.", 1000, 550);
    context.ReportProgress("done", 1.0);
});

// all → null; repeated → prefix + half … length − 1; else a comma list of positions.
static int[]? ParsePositions(string text, int prefix, int half, int length)
{
    if (text == "all") return null;
    if (text == "repeated") return Enumerable.Range(prefix + half, length - prefix - half).ToArray();
    var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
    var positions = new int[parts.Length];
    for (int i = 0; i < parts.Length; i++)
        if (!int.TryParse(parts[i], out positions[i]) || positions[i] < 0 || positions[i] >= length)
            throw new InterpException($"option positions: '{parts[i]}' is not a position of a sequence of {length} tokens (expected all, repeated or a comma list of 0…{length - 1})");
    return positions;
}

/// <summary>Settings of ablation (--set key=value).</summary>
sealed record AblationSettings : RepeatedInputSettings
{
    [Description("(repeated sequences) repeated_loss: mean loss on the repeated half, the predicted positions prefix + half + 1 … (the tokens copying can predict); loss: mean loss over every predicted position.")]
    public string Metric { get; init; } = "repeated_loss";
    [Description("(repeated sequences) all, repeated (the second copy's positions prefix + half …) or a comma list of positions.")]
    public string Positions { get; init; } = "all";
    [Description("Ablations per forward pass (none: as many as a 256 MiB budget allows).")]
    public int? AblationsPerForward { get; init; }
    [Description("a prompt set (JSON Lines: prompt, answer, wrong[, corrupted]) to run on instead of repeated random sequences; the metric is then logit(answer) − logit(wrong) at each prompt's last token")]
    public string? Prompts { get; init; }
    [Description("sequences (or prompts) per work unit: each unit is swept as one batch, and a sharded run (--shard i/n) splits the units")]
    public int UnitSize { get; init; } = 8;
}

/// <summary>One site's clean and ablated metric on one unit of sequences (their mean): the rows a shard writes and the tables are made from.</summary>
sealed record AblationUnitRow(int Unit, int Sequences, string Ablation, int Site, double MetricClean, double MetricAblated) : IUnitRow;

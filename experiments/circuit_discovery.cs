#:project ../src/Interp.Run/Interp.Run.csproj
// Circuit discovery by edge attribution patching, on the activation_patching experiment's inputs: clean = [BOS] + r + r,
// corrupted = [BOS] + c + r, metric = mean log-probability of the correct token over the repeated half (or, with
// --prompts FILE, each line's prompt and corrupted prompt and the mean logit difference). Every edge of the graph
// (embeddings, heads, MLPs → every head's q, k and v input, every MLP, the logits) is scored by EAP and EAP-IG; the top-n
// circuits are run with every other edge patched from the corrupted run (and again mean-ablated), giving the faithfulness
// curves; the strongest edges are also patched one by one, to set the estimate against the real effect; and the clean
// input's tokens are attributed a logit difference by integrated gradients. The scores and the input attribution are
// computed in work units of unit_size sequences, which a sharded run (--shard i/n) splits; the circuits are ranked by
// the scores of all units, so their faithfulness is measured once every unit is in (in the merge, for a sharded run).
// Run: dotnet run experiments/circuit_discovery.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set batch=16] [--set steps=30] [--set circuit_edges=10] [--set scatter_edges=300]

using System.ComponentModel;
using System.Globalization;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Loading;
using Interp.Plots;
using Interp.Prompts;
using Interp.Results;
using TorchSharp;
using static TorchSharp.torch;

return await Experiment.RunAsync<CircuitDiscoverySettings>(args, new("circuit_discovery", "Edge attribution patching (EAP, EAP-IG), circuits and their faithfulness, input attribution") { Shards = true }, async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    Tensor clean, corrupted;
    Tensor? mask = null;
    Metric metric;
    Func<int, int, Metric> unitMetric, unitInputMetric;   // (first sequence, count): the metric of those sequences alone
    string setup;
    PromptSet? prompts = null;
    try
    {
        if (settings.Prompts is { } file)
        {
            prompts = PromptSet.Load(file, model);
            (clean, corrupted, mask) = prompts.PatchingInputs("circuit discovery");
            metric = prompts.LogitDiff();
            var set = prompts;
            unitMetric = unitInputMetric = (start, n) => Metrics.LogitDiff(set.AnswerIds[start..(start + n)], set.WrongIds[start..(start + n)], set.LastPositions[start..(start + n)]);
            setup = prompts.PatchingDescription;
        }
        else
        {
            var input = settings.Input(cfg).Draw(loaded, context.Seed);
            clean = input.Tokens;
            corrupted = input.CorruptFirstCopy(context.Seed + 1);
            metric = input.RepeatedHalfLogProb();
            // Input attribution: logit(correct last token) − logit(the corrupted first copy's token there), predicted at pos − 2.
            var answers = clean[.., -1].contiguous().cpu().data<long>().Select(x => (int)x).ToArray();
            var wrongs = corrupted[.., input.Prefix + input.Half - 1].contiguous().cpu().data<long>().Select(x => (int)x).ToArray();
            var predictedAt = Enumerable.Repeat((int)clean.shape[1] - 2, answers.Length).ToArray();
            var repeated = metric;
            unitMetric = (_, _) => repeated;   // the same positions in every sequence
            unitInputMetric = (start, n) => Metrics.LogitDiff(answers[start..(start + n)], wrongs[start..(start + n)], predictedAt[start..(start + n)]);
            setup = $"{settings.Batch} clean sequences [BOS] + r + r of {input.Half} random tokens and corrupted twins whose first copy is replaced; metric the mean log-probability of the correct token over the repeated half";
        }

        // The baseline of the input attribution: the corrupted prompt's token embeddings (what the tokens that differ
        // contribute to the answer), or zero embeddings (ill-conditioned for models without additive position embeddings).
        string baselineName = settings.InputBaseline == InputBaseline.Corrupted ? "the corrupted input's token embeddings as baseline" : "zero-embedding baseline";

        // The work units: each unit's sequences are scored by EAP and EAP-IG (for the mean metric over the unit) and
        // attributed by integrated gradients; a shard does its share, and the rows of all units are gathered.
        int sequences = (int)clean.shape[0], positions = (int)clean.shape[1];
        var units = context.Chunks(sequences, settings.UnitSize ?? sequences);
        var unitRows = new List<CircuitUnitRow>();
        for (int k = 0; k < units.Count; k++)
        {
            var (u, start, n) = units[k];
            context.ReportProgress($"unit {u + 1}: clean run, corrupted run, EAP and EAP-IG ({settings.Steps} steps)", 0.45 * k / units.Count);
            using var unitScope = NewDisposeScope();
            var unitClean = clean.narrow(0, start, n);                                              // [n, pos]
            var unitCorrupted = corrupted.narrow(0, start, n);
            var unitMask = mask?.narrow(0, start, n);
            using var unitEap = new EdgeAttribution(model, unitClean, unitCorrupted, unitMetric(start, n), unitMask, settings.SequencesPerPass, ct);
            unitRows.Add(new(u, "sequences", -1, -1, 0, n));
            foreach (var (method, part) in new[] { (EdgeMethod.Eap, "eap"), (EdgeMethod.EapIg, "eap_ig") })
            {
                var scores = unitEap.Scores(method, settings.Steps, ct);
                for (int e = 0; e < scores.Count; e++) unitRows.Add(new(u, part, -1, -1, e, scores[e].Score));
            }
            var unitBaseline = settings.InputBaseline == InputBaseline.Corrupted ? InputAttribution.Embeddings(model, unitCorrupted, unitMask) : null;
            var unitAttribution = InputAttribution.IntegratedGradients(model, unitClean, unitInputMetric(start, n), settings.Steps, unitBaseline, unitMask, ct);
            for (int b = 0; b < n; b++)
            {
                unitRows.Add(new(u, "input_metric", start + b, -1, 0, unitAttribution.Metric[b]));
                unitRows.Add(new(u, "input_baseline_metric", start + b, -1, 0, unitAttribution.BaselineMetric[b]));
                for (int p = 0; p < positions; p++) unitRows.Add(new(u, "input_attribution", start + b, p, 0, unitAttribution.Attributions[b][p]));
            }
        }
        var gathered = await context.GatherAsync("circuit_units", unitRows, ct);

        // Each edge's score over the whole batch: the sequence-weighted mean of its units' scores, summed in unit order.
        context.ReportProgress("clean run and corrupted run of the whole batch", 0.45);
        using var eap = new EdgeAttribution(model, clean, corrupted, metric, mask, settings.SequencesPerPass, ct);
        double gap = eap.CleanMetric - eap.CorruptedMetric;
        if (gap == 0) throw new InterpException("circuit discovery: the metric is the same on the clean and the corrupted run; there is nothing to recover");
        var (eapScores, igScores, attribution) = CircuitUnitRow.Read(gathered, context.UnitCount, eap.Graph, sequences, positions, settings.Steps);
        await context.WriteTableAsync("edge_attribution.parquet", EdgeTable.Build((EdgeMethod.Eap, eapScores), (EdgeMethod.EapIg, igScores)),
            $"every edge of the graph scored by EAP (method = eap) and EAP-IG with {settings.Steps} steps (method = eap_ig): score = Σ over the batch and positions of " +
            "(upstream clean − upstream corrupted) · ∂metric/∂(downstream input), the estimated change of the metric when the edge alone is restored", ct);

        await context.AddViewAsync(new HeatmapView("Edge scores", "Each edge's estimated effect on the metric when restored alone (upstream × downstream input); choose EAP or EAP-IG.",
            "edge_attribution.parquet", ["upstream"], ["downstream", "input"], "score", "method"), ct);

        context.ReportProgress("faithfulness curves", 0.5);
        var sizes = EdgeAttribution.DefaultSizes(eap.Graph.Edges.Count);
        var byMethod = new[] { (EdgeMethod.Eap, eapScores), (EdgeMethod.EapIg, igScores) };
        var curves = byMethod.SelectMany(m => eap.FaithfulnessCurve(m.Item1, m.Item2, sizes, cancellationToken: ct)).ToArray();
        var meanCurves = byMethod.SelectMany(m => eap.FaithfulnessCurve(m.Item1, m.Item2, sizes, CircuitAblation.Mean, ct)).ToArray();
        double meanAblated = eap.MeanAblatedMetric(ct);
        await context.WriteTableAsync("circuit_faithfulness.parquet", EdgeTable.Faithfulness(curves.Concat(meanCurves)),
            "faithfulness of the circuit of the top `edges` edges by |score| of `method`, run on the clean input with every other edge's upstream output replaced: " +
            "ablation = corrupted, by its output on the corrupted run, faithfulness = (m_circuit − m_corrupted) / (m_clean − m_corrupted); " +
            "ablation = mean, by its mean clean output at that position, faithfulness = (m_circuit − m_mean) / (m_clean − m_mean) with m_mean the metric with every edge mean-ablated", ct);

        context.ReportProgress("edges patched one by one", 0.7);
        var ranked = EdgeCircuit.Ranked(igScores).ToArray();
        var eapByEdge = eapScores.ToDictionary(s => s.Edge, s => s.Score);
        var scatter = new List<(string Label, double X, double Y)>();
        var patchedValues = new List<double>();
        var eapValues = new List<double>();
        var igValues = new List<double>();
        foreach (var s in ranked.Take(settings.ScatterEdges))
        {
            double patched = (eap.EdgePatchedMetric(s.Edge, ct) - eap.CorruptedMetric) / gap;
            patchedValues.Add(patched);
            eapValues.Add(eapByEdge[s.Edge] / gap);
            igValues.Add(s.Score / gap);
            scatter.Add((scatter.Count < 12 ? s.Edge.ToString() : "", patched, eapByEdge[s.Edge] / gap));
        }
        double rEap = AttributionPatching.Pearson(patchedValues, eapValues), rIg = AttributionPatching.Pearson(patchedValues, igValues);
        context.SaveFigure("edge_attribution_vs_patching.png",
            Figures.Scatter("EAP vs patching each edge alone", "edge patched alone (0 = corrupted, 1 = clean)", "EAP estimate (same scale)", scatter, xLine: 0, yLine: 0),
            $"The {scatter.Count} edges of largest |EAP-IG| score, each patched alone into the corrupted run (x) against its EAP score (y), both divided by m_clean − m_corrupted; Pearson r = {rEap:0.000} (EAP-IG: {rIg:0.000}).");

        context.ReportProgress("figures and input attribution", 0.85);
        var circuit = EdgeCircuit.Top(igScores, settings.CircuitEdges, EdgeMethod.EapIg);
        double circuitFaithfulness = eap.Faithfulness(circuit.EdgeSet, cancellationToken: ct);
        context.SaveFigure("circuit_graph.png", Figures.CircuitGraph(eap.Graph, circuit, $"Top {circuit.Edges.Count} EAP-IG edges (faithfulness {circuitFaithfulness:0.000})"),
            $"The circuit of the {circuit.Edges.Count} edges of largest |EAP-IG| score: nodes by layer, edge width by |score|, blue positive, red negative; it recovers {circuitFaithfulness:0.000} of m_clean − m_corrupted.",
            900, Math.Max(500, 160 * (2 * cfg.NLayers + 2)));
        double[] xs = sizes.Select(n => (double)n).ToArray();
        context.SaveFigure("circuit_faithfulness.png",
            Figures.Lines("Faithfulness of the top-n circuits", "edges kept", "faithfulness (0 = corrupted, 1 = clean)", xs,
                ("EAP", curves.Where(c => c.Method == EdgeMethod.Eap).Select(c => c.Faithfulness).ToArray()),
                ("EAP-IG", curves.Where(c => c.Method == EdgeMethod.EapIg).Select(c => c.Faithfulness).ToArray())),
            "Faithfulness of the circuit of the top n edges by |score| for each method (every other edge patched from the corrupted run).");
        context.SaveFigure("circuit_faithfulness_mean.png",
            Figures.Lines("Faithfulness of the top-n circuits, other edges mean-ablated", "edges kept", "faithfulness (0 = every edge mean-ablated, 1 = clean)", xs,
                ("EAP", meanCurves.Where(c => c.Method == EdgeMethod.Eap).Select(c => c.Faithfulness).ToArray()),
                ("EAP-IG", meanCurves.Where(c => c.Method == EdgeMethod.EapIg).Select(c => c.Faithfulness).ToArray())),
            $"The same circuits with every other edge carrying its upstream node's mean clean output at each position: 0 = every edge mean-ablated ({meanAblated:0.000}), 1 = clean ({eap.CleanMetric:0.000}). " +
            "EAP's scores estimate the effect of the corrupted run, not of the mean, so these circuits need not be faithful in this sense.");

        int shown = (int)(mask is null ? clean.shape[1] : mask[0].sum().item<long>());
        var ids = clean[0].cpu().data<long>().Take(shown).Select(x => (int)x).ToArray();
        string Text(int id) => loaded.Tokenizer?.ToStrTokens([id])[0] ?? id.ToString(CultureInfo.InvariantCulture);
        var tokenText = ids.Select(Text).ToArray();
        var realTokens = Enumerable.Range(0, (int)clean.shape[0]).Select(b =>
        {
            int n = (int)(mask is null ? clean.shape[1] : mask[b].sum().item<long>());
            return (IReadOnlyList<int>)clean[b].cpu().data<long>().Take(n).Select(x => (int)x).ToArray();
        }).ToArray();
        await context.WriteTableAsync("input_attribution.parquet", InputAttributionTable.Build(attribution, realTokens, Text),
            $"each clean sequence's real tokens and their integrated-gradients attribution ({settings.Steps} steps, {baselineName}) of the logit difference; " +
            "completeness_gap = Σ attributions − (metric − baseline metric) of the sequence", ct);
        await context.AddViewAsync(new TokenValuesView("Input attribution", $"Each token of the clean sequences coloured by its integrated-gradients attribution ({settings.Steps} steps, {baselineName}) of the logit difference.",
            "input_attribution.parquet", "input_attribution.parquet", "attribution", Quantity: null), ct);
        context.SaveFigure("input_attribution.png",
            Figures.TokenAttribution(tokenText, attribution.Attributions[0].Take(shown).ToArray(), "Integrated gradients of the logit difference, per input token (sequence 0)"),
            $"Each token of the first clean sequence coloured by its integrated-gradients attribution ({settings.Steps} steps, {baselineName}) of the logit difference; they sum to {attribution.Attributions[0].Sum():0.000} against metric − baseline = {attribution.Metric[0] - attribution.BaselineMetric[0]:0.000}.",
            1100, 120 + 90 * ((shown + 15) / 16));

        int Needed(EdgeMethod m) => curves.Where(c => c.Method == m && c.Faithfulness >= 0.9).Select(c => c.Edges).DefaultIfEmpty(-1).Min();
        double At(IEnumerable<FaithfulnessPoint> points, EdgeMethod m, int n) => points.Where(c => c.Method == m && c.Edges <= n).OrderBy(c => c.Edges).Last().Faithfulness;
        context.AddNumber("metric_clean", eap.CleanMetric, "the metric on the clean run");
        context.AddNumber("metric_corrupted", eap.CorruptedMetric, "the metric on the corrupted run");
        context.AddNumber("edges", eap.Graph.Edges.Count, "edges of the graph", "0");
        context.AddNumber("metric_mean_ablated", meanAblated, "the metric on the clean run with every edge mean-ablated");
        context.AddNumber("faithfulness_eap_ig_10_edges", At(curves, EdgeMethod.EapIg, 10), "faithfulness of the top 10 EAP-IG edges (of the largest curve size ≤ 10)");
        context.AddNumber("faithfulness_eap_10_edges", At(curves, EdgeMethod.Eap, 10), "faithfulness of the top 10 EAP edges (of the largest curve size ≤ 10)");
        context.AddNumber("faithfulness_eap_ig_10_edges_mean_ablated", At(meanCurves, EdgeMethod.EapIg, 10), "the same with the other edges mean-ablated");
        context.AddNumber("edges_for_90_percent_eap_ig", Needed(EdgeMethod.EapIg), "the smallest curve size whose EAP-IG circuit recovers ≥ 90 % (−1: none)", "0");
        context.AddNumber("edges_for_90_percent_eap", Needed(EdgeMethod.Eap), "the same for EAP", "0");
        if (!double.IsNaN(rEap)) context.AddNumber("correlation_eap_vs_edge_patching", rEap, "Pearson correlation of EAP and patching each edge alone, over the scatter's edges");
        if (!double.IsNaN(rIg)) context.AddNumber("correlation_eap_ig_vs_edge_patching", rIg, "the same for EAP-IG");
        context.AddNumber("input_attribution_completeness_gap", Enumerable.Range(0, attribution.Metric.Length).Max(b => Math.Abs(attribution.CompletenessGap(b))),
            "the largest |Σ attributions − (metric − baseline metric)| over the sequences", "0.0000");
        string Curve(IEnumerable<FaithfulnessPoint> points, EdgeMethod m) => string.Join(", ", points.Where(c => c.Method == m).Select(c => $"{c.Edges}: {c.Faithfulness:0.000}"));
        context.AddText($"**Set-up.** {setup}: **{eap.CleanMetric:0.000}** clean, **{eap.CorruptedMetric:0.000}** corrupted; {eap.Graph.Edges.Count} edges " +
                        $"({eap.Graph.Upstream.Count} upstream nodes, {eap.Graph.Downstream.Count} downstream inputs). EAP-IG with {settings.Steps} steps.");
        context.AddText($"**Top EAP-IG edges** (score in metric units): {string.Join(", ", ranked.Take(10).Select(s => $"{s.Edge} {s.Score:0.000}"))}.");
        context.AddText($"**Faithfulness** by edges kept, the other edges patched from the corrupted run. EAP-IG: {Curve(curves, EdgeMethod.EapIg)}. EAP: {Curve(curves, EdgeMethod.Eap)}. " +
                        $"Against patching each of the {scatter.Count} strongest edges alone: r = {rEap:0.000} (EAP), {rIg:0.000} (EAP-IG).");
        context.AddText($"**Mean-ablated** (the other edges carry their upstream node's mean clean output; every edge mean-ablated gives {meanAblated:0.000}). " +
                        $"EAP-IG: {Curve(meanCurves, EdgeMethod.EapIg)}. EAP: {Curve(meanCurves, EdgeMethod.Eap)}.");
        context.ReportProgress("done", 1.0);
    }
    finally
    {
        prompts?.Dispose();
    }
});

/// <summary>Settings of circuit_discovery (--set key=value).</summary>
sealed record CircuitDiscoverySettings : RepeatedInputSettings
{
    [Description("integrated-gradients steps of EAP-IG and of the input attribution")]
    public int Steps { get; init; } = 30;
    [Description("edges of the circuit drawn as a graph (the top EAP-IG edges)")]
    public int CircuitEdges { get; init; } = 10;
    [Description("the most edges (by |EAP-IG|) patched one by one for the scatter against EAP")]
    public int ScatterEdges { get; init; } = 300;
    [Description("the most sequences in one pass (none: the whole batch; a prompt set's logit difference needs the whole batch)")]
    public int? SequencesPerPass { get; init; }
    [Description("a prompt set (JSON Lines: prompt, answer, wrong, corrupted) to patch from prompt into corrupted prompt instead of repeated random sequences")]
    public string? Prompts { get; init; }
    [Description("the input attribution's baseline: the corrupted input's token embeddings, or zero embeddings")]
    public InputBaseline InputBaseline { get; init; } = InputBaseline.Corrupted;
    [Description("sequences (or prompts) per work unit, scored alone (none: the whole batch); a sharded run (--shard i/n) splits the units")]
    public int? UnitSize { get; init; }
}

/// <summary>
/// One value of a unit's work, the rows a shard writes (<c>shards/circuit_units/</c>): <c>sequences</c> (the unit's
/// count), <c>eap</c> and <c>eap_ig</c> (edge <c>index</c>'s score for the unit's mean metric), and per sequence of the
/// whole batch <c>input_metric</c>, <c>input_baseline_metric</c> and <c>input_attribution</c> (at position).
/// </summary>
sealed record CircuitUnitRow(int Unit, string Part, int Sequence, int Position, int Index, double Value) : IUnitRow
{
    /// <summary>Every unit's rows (in unit order) back as the batch's edge scores (the sequence-weighted mean of the units') and input attribution.</summary>
    public static (EdgeScore[] Eap, EdgeScore[] EapIg, InputAttributionResult Attribution) Read(IReadOnlyList<CircuitUnitRow> rows, int units, EdgeGraph graph,
        int sequences, int positions, int steps)
    {
        var eap = new double[graph.Edges.Count];
        var ig = new double[graph.Edges.Count];
        var attributions = new double[sequences][];
        var metric = new double[sequences];
        var baseline = new double[sequences];
        for (int b = 0; b < sequences; b++) attributions[b] = new double[positions];
        int seen = 0;
        foreach (var unit in rows.GroupBy(r => r.Unit))
        {
            if (unit.Key != seen++) throw new InterpException($"circuit_discovery: the rows of unit {seen - 1} are missing (found unit {unit.Key} next)");
            double weight = (unit.SingleOrDefault(r => r.Part == "sequences")?.Value
                ?? throw new InterpException($"circuit_discovery: unit {unit.Key} has no 'sequences' row")) / sequences;
            foreach (var r in unit)
            {
                bool edge = r.Part is "eap" or "eap_ig", input = r.Part.StartsWith("input_", StringComparison.Ordinal);
                if ((edge && (uint)r.Index >= eap.Length) || (input && ((uint)r.Sequence >= sequences || (r.Part == "input_attribution" && (uint)r.Position >= positions))))
                    throw new InterpException($"circuit_discovery: unit {r.Unit}'s '{r.Part}' row (sequence {r.Sequence}, position {r.Position}, index {r.Index}) is outside " +
                                              $"{graph.Edges.Count} edges and {sequences} sequences × {positions} positions: the shards ran other inputs");
                switch (r.Part)
                {
                    case "sequences": break;
                    case "eap": eap[r.Index] += weight * r.Value; break;
                    case "eap_ig": ig[r.Index] += weight * r.Value; break;
                    case "input_metric": metric[r.Sequence] = r.Value; break;
                    case "input_baseline_metric": baseline[r.Sequence] = r.Value; break;
                    case "input_attribution": attributions[r.Sequence][r.Position] = r.Value; break;
                    default: throw new InterpException($"circuit_discovery: unit {r.Unit} has a row of unknown part '{r.Part}'");
                }
            }
        }
        if (seen != units) throw new InterpException($"circuit_discovery: rows of {seen} units, but the batch has {units}");
        EdgeScore[] Scores(double[] s) => [.. graph.Edges.Select((edge, e) => new EdgeScore(edge, s[e]))];
        return (Scores(eap), Scores(ig), new InputAttributionResult(attributions, metric, baseline, steps));
    }
}

/// <summary>The baseline of the input attribution.</summary>
enum InputBaseline
{
    /// <summary>The corrupted input's token embeddings.</summary>
    Corrupted,
    /// <summary>Zero embeddings.</summary>
    Zero,
}

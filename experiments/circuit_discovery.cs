#:project ../src/Interp.Run/Interp.Run.csproj
// Circuit discovery by edge attribution patching, on the activation_patching experiment's inputs: clean = [BOS] + r + r,
// corrupted = [BOS] + c + r, metric = mean log-probability of the correct token over the repeated half (or, with
// --prompts FILE, each line's prompt and corrupted prompt and the mean logit difference). Every edge of the graph
// (embeddings, heads, MLPs → every head's q, k and v input, every MLP, the logits) is scored by EAP and EAP-IG; the top-n
// circuits are run with every other edge patched from the corrupted run (and again mean-ablated), giving the faithfulness
// curves; the strongest edges are also patched one by one, to set the estimate against the real effect; and the clean
// input's tokens are attributed a logit difference by integrated gradients.
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

return await Experiment.RunAsync<CircuitDiscoverySettings>(args, new("circuit_discovery", "Edge attribution patching (EAP, EAP-IG), circuits and their faithfulness, input attribution"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    Tensor clean, corrupted;
    Tensor? mask = null;
    Metric metric, inputMetric;
    string setup;
    PromptSet? prompts = null;
    try
    {
        if (settings.Prompts is { } file)
        {
            prompts = PromptSet.Load(file, model);
            (clean, corrupted, mask) = prompts.PatchingInputs("circuit discovery");
            metric = inputMetric = prompts.LogitDiff();
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
            inputMetric = Metrics.LogitDiff(answers, wrongs, Enumerable.Repeat((int)clean.shape[1] - 2, answers.Length).ToArray());
            setup = $"{settings.Batch} clean sequences [BOS] + r + r of {input.Half} random tokens and corrupted twins whose first copy is replaced; metric the mean log-probability of the correct token over the repeated half";
        }

        context.ReportProgress("clean run, corrupted run and EAP", 0.05);
        using var eap = new EdgeAttribution(model, clean, corrupted, metric, mask, settings.SequencesPerPass, ct);
        double gap = eap.CleanMetric - eap.CorruptedMetric;
        if (gap == 0) throw new InterpException("circuit discovery: the metric is the same on the clean and the corrupted run; there is nothing to recover");
        var eapScores = eap.Scores(EdgeMethod.Eap, cancellationToken: ct);
        context.ReportProgress($"EAP-IG ({settings.Steps} steps)", 0.15);
        var igScores = eap.Scores(EdgeMethod.EapIg, settings.Steps, ct);
        await context.WriteTableAsync("edge_attribution.parquet", EdgeTable.Build((EdgeMethod.Eap, eapScores), (EdgeMethod.EapIg, igScores)),
            $"every edge of the graph scored by EAP (method = eap) and EAP-IG with {settings.Steps} steps (method = eap_ig): score = Σ over the batch and positions of " +
            "(upstream clean − upstream corrupted) · ∂metric/∂(downstream input), the estimated change of the metric when the edge alone is restored", ct);

        context.ReportProgress("faithfulness curves", 0.5);
        var sizes = EdgeAttribution.DefaultSizes(eap.Graph.Edges.Count);
        var curves = new[] { EdgeMethod.Eap, EdgeMethod.EapIg }.SelectMany(m => eap.FaithfulnessCurve(m, sizes, settings.Steps, cancellationToken: ct)).ToArray();
        var meanCurves = new[] { EdgeMethod.Eap, EdgeMethod.EapIg }.SelectMany(m => eap.FaithfulnessCurve(m, sizes, settings.Steps, CircuitAblation.Mean, ct)).ToArray();
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

        // The baseline of the input attribution: the corrupted prompt's token embeddings (what the tokens that differ
        // contribute to the answer), or zero embeddings (ill-conditioned for models without additive position embeddings).
        var baseline = settings.InputBaseline == InputBaseline.Corrupted ? InputAttribution.Embeddings(model, corrupted, mask) : null;
        string baselineName = settings.InputBaseline == InputBaseline.Corrupted ? "the corrupted input's token embeddings as baseline" : "zero-embedding baseline";
        var attribution = InputAttribution.IntegratedGradients(model, clean, inputMetric, settings.Steps, baseline, mask, ct);
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
}

/// <summary>The baseline of the input attribution.</summary>
enum InputBaseline
{
    /// <summary>The corrupted input's token embeddings.</summary>
    Corrupted,
    /// <summary>Zero embeddings.</summary>
    Zero,
}

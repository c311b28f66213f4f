#:project ../src/Interp.Run/Interp.Run.csproj
// Attribution patching next to activation patching, on the activation_patching experiment's inputs: clean = [BOS] + r + r,
// corrupted = [BOS] + c + r, metric = mean log-probability of the correct token over the repeated half (or, with
// --prompts FILE, each line's prompt and corrupted prompt and the mean logit difference). Every site is measured both
// ways: activation patching reruns the corrupted input with the site patched; attribution patching estimates the same
// from one clean pass and one corrupted forward + backward pass, (clean − corrupted) · ∂metric/∂activation. The table
// holds both; the report gives their Pearson correlation per site kind.
// Run: dotnet run experiments/attribution_patching.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set batch=32] [--set half=24] [--set per_position=false]

using System.ComponentModel;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Models;
using Interp.Prompts;
using Interp.Results;
using TorchSharp;
using static TorchSharp.torch;

return await Experiment.RunAsync<AttributionPatchingSettings>(args, new("attribution_patching", "Attribution patching (gradient estimate) against activation patching on every site"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    Tensor clean, corrupted;
    Tensor? mask = null;
    Metric metric;
    string setup;
    PromptSet? prompts = null;
    try
    {
        if (settings.Prompts is { } file)
        {
            prompts = PromptSet.Load(file, model);
            (clean, corrupted, mask) = prompts.PatchingInputs("attribution patching");
            metric = prompts.LogitDiff();
            setup = prompts.PatchingDescription;
        }
        else
        {
            var input = settings.Input(cfg).Draw(loaded, context.Seed);
            clean = input.Tokens;
            corrupted = input.CorruptFirstCopy(context.Seed + 1);
            metric = input.RepeatedHalfLogProb();
            setup = $"{settings.Batch} clean sequences [BOS] + r + r of {input.Half} random tokens and corrupted twins whose first copy is replaced; metric the mean log-probability of the correct token over the repeated half";
        }
        int positions = (int)clean.shape[1];
        var sites = Sites(cfg, positions, settings.PerPosition);

        context.ReportProgress("activation patching", 0.05);
        using var activation = new ActivationPatching(model, clean, corrupted, metric, mask) { SequencesPerPass = settings.SequencesPerPass };
        activation.Normalise(activation.CleanMetric);   // fails now, with the reason, if there is nothing to recover
        var patched = activation.Sweep(sites, new Progress<double>(f => context.ReportProgress("activation patching", 0.05 + 0.8 * f)), ct);

        context.ReportProgress("attribution patching", 0.85);
        using var attribution = new AttributionPatching(model, clean, corrupted, metric, mask, ct);
        var estimated = attribution.Sweep(sites, ct);

        await context.WriteTableAsync("attribution_patching.parquet", PatchingTable.Build(patched, estimated),
            "every site patched (method = activation) and estimated from gradients (method = attribution): value = (m − m_corrupted) / (m_clean − m_corrupted), " +
            "raw = the patched (or estimated) metric, attribution = Σ (clean − corrupted) · ∂metric/∂activation over the site (NaN for activation rows); " +
            "head −1 = not a head site, position −1 = every position (query position for head_pattern)", ct);

        await context.AddViewAsync(new HeatmapView("Patched and estimated heads", "Each head's output patched (activation) or estimated from gradients (attribution), as the fraction of the clean metric restored; choose the method.",
            "attribution_patching.parquet", [Columns.Layer], [Columns.Head], Facet: PatchingTable.Method)
            { Where = new Dictionary<string, string> { ["patch"] = "head_out", [Columns.Position] = "-1" } }, ct);

        var comparison = AttributionPatching.Compare(patched, estimated);
        // One point per head output (every position): the sites where attribution patching is used most.
        var headPoints = comparison.Rows.Where(r => r.Site.Kind == PatchKind.HeadOut)
            .Select(r => (Label: r.Site.Position < 0 ? $"{r.Site.Layer}.{r.Site.Head}" : "", X: r.Activation, Y: r.Attribution)).ToArray();
        if (headPoints.Length > 0)
        {
            double lo = Math.Min(0, headPoints.Min(p => Math.Min(p.X, p.Y))), hi = Math.Max(1, headPoints.Max(p => Math.Max(p.X, p.Y)));
            var scatter = Interp.Plots.Figures.Scatter("Head outputs: attribution vs activation patching", "activation patching (normalised)",
                "attribution patching (normalised)", headPoints, (lo - 0.05, hi + 0.05), (lo - 0.05, hi + 0.05));
            scatter.Add.Line(lo, lo, hi, hi).LinePattern = ScottPlot.LinePattern.Dotted;
            context.SaveFigure("attribution_vs_activation.png", scatter,
                "Each head's output patched from clean into corrupted (x) against the gradient estimate of the same patch (y); labelled points patch every position, unlabelled ones a single position; dotted: y = x.", 800, 650);
        }
        context.AddNumber("metric_clean", activation.CleanMetric, "the metric on the clean run");
        context.AddNumber("metric_corrupted", activation.CorruptedMetric, "the metric on the corrupted run");
        if (!double.IsNaN(comparison.Correlation)) context.AddNumber("correlation_all_sites", comparison.Correlation, "Pearson correlation of activation and attribution patching over every site");
        var lines = new List<string>();
        foreach (var kind in sites.Select(s => s.Kind).Distinct())
            foreach (bool perPosition in new[] { false, true })
            {
                var rows = comparison.Rows.Where(r => r.Site.Kind == kind && (r.Site.Position >= 0) == perPosition).ToArray();
                if (rows.Length < 3) continue;
                double r = AttributionPatching.Pearson(rows.Select(x => x.Activation).ToArray(), rows.Select(x => x.Attribution).ToArray());
                if (double.IsNaN(r)) continue;   // a constant column (e.g. every whole-layer resid_pre restores everything)
                string name = $"correlation_{PatchSite.Name(kind)}{(perPosition ? "_per_position" : "")}";
                context.AddNumber(name, r, $"Pearson correlation over the {rows.Length} {PatchSite.Name(kind)} sites{(perPosition ? " (one position each)" : " (every position)")}");
                lines.Add($"{PatchSite.Name(kind)}{(perPosition ? " per position" : "")}: r = {r:0.000} over {rows.Length} sites");
            }
        var heads = comparison.Rows.Where(r => r.Site.Kind == PatchKind.HeadOut && r.Site.Position < 0).OrderByDescending(r => Math.Abs(r.Activation)).Take(5)
            .Select(r => $"{r.Site.Layer}.{r.Site.Head}: {r.Activation:0.000} patched, {r.Attribution:0.000} estimated");
        var patterns = comparison.Rows.Where(r => r.Site.Kind == PatchKind.HeadPattern).OrderByDescending(r => Math.Abs(r.Activation)).Take(5)
            .Select(r => $"{r.Site.Layer}.{r.Site.Head}: {r.Activation:0.000} patched, {r.Attribution:0.000} estimated");
        context.AddText($"**Set-up.** {setup}: **{activation.CleanMetric:0.000}** clean, **{activation.CorruptedMetric:0.000}** corrupted. " +
                        $"Correlation of the two methods, by site kind: {string.Join("; ", lines)}. Heads with the largest patching effect (output, all positions): {string.Join(", ", heads)}. " +
                        $"Head patterns with the largest effect: {string.Join(", ", patterns)}.");
        context.ReportProgress("done", 1.0);
    }
    finally
    {
        prompts?.Dispose();
    }
});

// Every site: resid_pre, attn_out, mlp_out and head outputs (per position too, when asked) and head patterns.
static List<PatchSite> Sites(ModelConfig cfg, int positions, bool perPosition)
{
    var sites = new List<PatchSite>();
    foreach (var kind in new[] { PatchKind.ResidPre, PatchKind.AttnOut, PatchKind.MlpOut, PatchKind.HeadOut })
        sites.AddRange(ActivationPatching.Sites(cfg, positions, kind, perPosition));
    sites.AddRange(ActivationPatching.Sites(cfg, positions, PatchKind.HeadPattern, perPosition: false));
    return sites;
}

/// <summary>Settings of attribution_patching (--set key=value).</summary>
sealed record AttributionPatchingSettings : RepeatedInputSettings
{
    [Description("Also measure each position on its own (resid_pre, attn_out, mlp_out, head_out).")]
    public bool PerPosition { get; init; } = true;
    [Description("The most sequences in one forward pass of activation patching (patches run as batches of copies).")]
    public int SequencesPerPass { get; init; } = 1024;
    [Description("a prompt set (JSON Lines: prompt, answer, wrong, corrupted) to patch from prompt into corrupted prompt instead of repeated random sequences")]
    public string? Prompts { get; init; }
}

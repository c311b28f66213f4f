#:project ../src/Interp.Run/Interp.Run.csproj
// Activation patching on repeated random tokens: clean = [BOS] + r + r, corrupted = [BOS] + c + r (the first copy
// replaced, so that the second copy has nothing to copy from). Every residual stream entry, attention/MLP output, head
// output and head pattern is patched from the clean run into the corrupted one in turn; the metric (mean log-probability
// of the correct token over the repeated half) says how much of the clean behaviour each one restores. With --prompts
// FILE the clean and corrupted runs are each line's prompt and corrupted prompt (one right-padded batch each) and the
// metric is logit(answer) − logit(wrong) at each prompt's last token, averaged over the prompts.
// Run: dotnet run experiments/activation_patching.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set batch=32] [--set half=24] [--set per_position=false] [--set unit_size=8] [--shard i/n --out DIR, then: interp merge DIR]

using System.ComponentModel;
using System.Globalization;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Models;
using Interp.Loading;
using Interp.Plots;
using Interp.Prompts;
using Interp.Results;
using TorchSharp;
using static TorchSharp.torch;

return await Experiment.RunAsync<ActivationPatchingSettings>(args, new("activation_patching", "Patch every activation from clean [BOS] r r into corrupted [BOS] c r runs: which ones restore induction") { Shards = true }, async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    if (settings.Prompts is { } file)
    {
        await PatchPromptsAsync(context, loaded, settings, file, ct);
        return;
    }

    var input = settings.Input(cfg).Draw(loaded, context.Seed);
    var (clean, half, prefix) = (input.Tokens, input.Half, input.Prefix);
    var corrupted = input.CorruptFirstCopy(context.Seed + 1);
    int positions = (int)clean.shape[1];
    var sites = Sites(cfg, positions, settings.PerPosition);
    var metric = input.RepeatedHalfLogProb();
    var patched = await PatchUnitsAsync(context, model, clean, corrupted, null, (_, _) => metric, sites, settings, ct);
    context.AddNumber("metric_clean", patched.Clean, "mean log-probability of the correct token over the repeated half, clean run");
    context.AddNumber("metric_corrupted", patched.Corrupted, "the same, corrupted run (first copy replaced by other random tokens)");

    await WriteTableAsync(context, patched.Results, "metric with one activation patched from the clean into the corrupted run", ct);

    context.ReportProgress("figures", 0.9);
    var value = patched.Results.ToDictionary(r => r.Site, r => r.Value);
    var scores = HeadDetection.Score(model, clean, half, ct);
    int fromLayer = Math.Min(1, cfg.NLayers - 1);
    var ind = Enumerable.Range(fromLayer, cfg.NLayers - fromLayer).Select(l => scores.Best(HeadScoreKind.Induction, l)).MaxBy(b => b.Score);
    Summarise(context, cfg, patched, value, ind, positions, prefix, half, settings.Batch);
    DrawFigures(context, loaded, value, clean, corrupted, settings.PerPosition);
    context.ReportProgress("done", 1.0);
});

// The work units are chunks of unit_size sequence pairs, each patched alone (a shard, --shard i/n, does its share); the
// raw metrics of every unit are then gathered and averaged over all sequences, and normalised once from those means.
static async Task<Patched> PatchUnitsAsync(ExperimentContext context, HookedTransformer model, Tensor clean, Tensor corrupted, Tensor? mask,
    Func<int, int, Metric> metricOf, IReadOnlyList<PatchSite> sites, ActivationPatchingSettings settings, CancellationToken ct)
{
    long sequences = clean.shape[0];
    var units = context.Chunks(sequences, settings.UnitSize);
    var rows = new List<PatchUnitRow>();
    for (int k = 0; k < units.Count; k++)
    {
        var (u, start, n) = units[k];
        using var unitScope = NewDisposeScope();
        context.ReportProgress($"unit {u + 1}: clean and corrupted runs", 0.85 * k / units.Count);
        using var patching = new ActivationPatching(model, clean.narrow(0, start, n), corrupted.narrow(0, start, n), metricOf(start, n), mask?.narrow(0, start, n))
            { SequencesPerPass = settings.SequencesPerPass };
        var progress = new Progress<double>(f => context.ReportProgress($"unit {u + 1}: patching", 0.85 * (k + f) / units.Count));
        var raw = patching.PatchedMetrics(sites, progress: progress, cancellationToken: ct);
        for (int i = 0; i < sites.Count; i++) rows.Add(new PatchUnitRow(u, n, i, raw[i], patching.CleanMetric, patching.CorruptedMetric));
    }
    var gathered = await context.GatherAsync("activation_patching_units", rows, ct);

    // Sequence-weighted means over the units, summed in unit order; then (m − m_corrupted) / (m_clean − m_corrupted).
    var patchedSum = new double[sites.Count];
    var covered = new double[sites.Count];
    double cleanSum = 0, corruptedSum = 0, total = 0;
    foreach (var r in gathered)
    {
        patchedSum[r.Site] += r.Sequences * r.Patched;
        covered[r.Site] += r.Sequences;
        if (r.Site == 0) (cleanSum, corruptedSum, total) = (cleanSum + r.Sequences * r.Clean, corruptedSum + r.Sequences * r.Corrupted, total + r.Sequences);
    }
    if (covered.Any(c => c != sequences)) throw new InterpException($"activation_patching: the units' rows cover {covered.Min()} of {sequences} sequences for some site");
    double m_clean = cleanSum / total, m_corrupted = corruptedSum / total;
    ActivationPatching.Normalise(m_clean, m_clean, m_corrupted);   // fails now, with the reason, if there is nothing to recover
    var results = sites.Select((site, i) => new PatchResult(site, patchedSum[i] / total, ActivationPatching.Normalise(patchedSum[i] / total, m_clean, m_corrupted))).ToArray();
    return new Patched(m_clean, m_corrupted, results);
}

// The researcher's prompts: patch from each prompt into its corrupted twin; the metric is the mean logit difference.
static async Task PatchPromptsAsync(ExperimentContext context, LoadedModel loaded, ActivationPatchingSettings settings, string file, CancellationToken ct)
{
    var cfg = loaded.Model.Config;
    using var prompts = PromptSet.Load(file, loaded.Model);
    var (clean, corrupted, mask) = prompts.PatchingInputs("activation patching");
    int positions = (int)clean.shape[1];
    var sites = Sites(cfg, positions, settings.PerPosition);
    var patched = await PatchUnitsAsync(context, loaded.Model, clean, corrupted, mask,
        (start, n) => Metrics.LogitDiff(prompts.AnswerIds[start..(start + n)], prompts.WrongIds[start..(start + n)], prompts.LastPositions[start..(start + n)]), sites, settings, ct);
    context.AddNumber("metric_clean", patched.Clean, "mean logit(answer) − logit(wrong) at each prompt's last token, clean prompts");
    context.AddNumber("metric_corrupted", patched.Corrupted, "the same, corrupted prompts");
    var results = patched.Results;
    await WriteTableAsync(context, results, $"mean logit difference over the {prompts.Count} prompts of {Path.GetFileName(file)} with one activation patched from the clean into the corrupted prompts", ct);

    var value = results.ToDictionary(r => r.Site, r => r.Value);
    var heads = value.Where(kv => kv.Key.Kind == PatchKind.HeadOut && kv.Key.Position < 0).OrderByDescending(kv => kv.Value).Take(5)
        .Select(kv => $"{kv.Key.Layer}.{kv.Key.Head}: {kv.Value:0.000}");
    context.AddText($"**Set-up.** {prompts.Count} prompts of {Path.GetFileName(file)} and their corrupted twins, right-padded to {positions} tokens. " +
                    $"Metric: logit(answer) − logit(wrong) at each prompt's last token, mean **{patched.Clean:0.000}** clean and **{patched.Corrupted:0.000}** corrupted. " +
                    $"Heads whose output (every position) restores most: {string.Join(", ", heads)}. Per-position figures label the first prompt's tokens.");
    DrawFigures(context, loaded, value, clean, corrupted, settings.PerPosition);
    context.ReportProgress("done", 1.0);
}

// Every site: resid_pre, attn_out, mlp_out and head outputs (per position too, when asked) and head patterns.
static List<PatchSite> Sites(ModelConfig cfg, int positions, bool perPosition)
{
    var sites = new List<PatchSite>();
    foreach (var kind in new[] { PatchKind.ResidPre, PatchKind.AttnOut, PatchKind.MlpOut, PatchKind.HeadOut })
        sites.AddRange(ActivationPatching.Sites(cfg, positions, kind, perPosition));
    sites.AddRange(ActivationPatching.Sites(cfg, positions, PatchKind.HeadPattern, perPosition: false));
    return sites;
}

// The activation_patching table: patch, layer, head, position, value (normalised), raw.
static async Task WriteTableAsync(ExperimentContext context, IReadOnlyList<PatchResult> results, string measured, CancellationToken ct)
{
    var rows = new ParquetColumns();
    foreach (var r in results)
        rows.Row(("patch", PatchSite.Name(r.Site.Kind)), (Columns.Layer, r.Site.Layer), (Columns.Head, r.Site.Head), (Columns.Position, r.Site.Position),
            (Columns.Value, r.Value), ("raw", r.Raw));
    await context.WriteTableAsync("activation_patching.parquet", rows.ToTable(),
        $"{measured}: value = (m_patched − m_corrupted) / (m_clean − m_corrupted), raw = m_patched; " +
        "head −1 = not a head patch, position −1 = every position (query position for head_pattern)", ct);
    await context.AddViewAsync(new HeatmapView("Patching whole outputs", "Fraction of the clean metric restored by patching one whole output (layer × head; head −1: a layer's stream or output); choose what was patched.",
        "activation_patching.parquet", [Columns.Layer], [Columns.Head], Facet: "patch") { Where = new Dictionary<string, string> { [Columns.Position] = "-1" } }, ct);
    if (results.Any(r => r.Site.Position >= 0 && !r.Site.IsHead))
        await context.AddViewAsync(new HeatmapView("Patching one position", "Fraction of the clean metric restored by patching one position of a layer's stream or output (layer × position; position −1: every position).",
            "activation_patching.parquet", [Columns.Layer], [Columns.Position], Facet: "patch") { Where = new Dictionary<string, string> { [Columns.Head] = "-1" } }, ct);
}

static void Summarise(ExperimentContext context, ModelConfig cfg, Patched patching, Dictionary<PatchSite, double> value,
    (int Layer, int Head, double Score) ind, int positions, int prefix, int half, int batch)
{
    double inductionOut = value[PatchSite.HeadOut(ind.Layer, ind.Head)];
    double inductionPattern = value[PatchSite.HeadPattern(ind.Layer, ind.Head)];
    var heads = value.Where(kv => kv.Key.Kind == PatchKind.HeadOut && kv.Key.Position < 0).OrderByDescending(kv => kv.Value).ToArray();
    context.AddNumber("induction_head_layer", ind.Layer, "layer of the strongest induction head (by its attention on the clean run)", "0");
    context.AddNumber("induction_head", ind.Head, "index of the strongest induction head", "0");
    context.AddNumber("induction_head_out_recovery", inductionOut, $"normalised metric with head {ind.Layer}.{ind.Head}'s output (hook_z, all positions) patched from clean into corrupted");
    context.AddNumber("induction_head_pattern_recovery", inductionPattern, $"the same with head {ind.Layer}.{ind.Head}'s attention pattern patched");
    context.AddNumber("resid_pre_layer_0_all_positions", value[PatchSite.ResidPre(0)], "patching the whole input of layer 0 (a check: must be 1)");
    context.AddText($"**Set-up.** {batch} clean sequences [BOS] + r + r of {half} random tokens repeated once, and corrupted twins whose first " +
                    $"copy is replaced by other random tokens (each differs at every position), so that the second copy has nothing to copy from. " +
                    $"Metric: mean log-probability of the correct next token over the repeated half (predicted positions {prefix + half + 1}–{positions - 1}), " +
                    $"**{patching.Clean:0.000}** clean and **{patching.Corrupted:0.000}** corrupted. Each value is " +
                    "(m_patched − m_corrupted) / (m_clean − m_corrupted): 0 = the patch restores nothing, 1 = it restores the clean behaviour, below 0 = it makes things worse.");
    if (patching.Clean - patching.Corrupted < 0.5)
        context.AddText($"**Caution.** Corrupting the first copy changes the metric by only {patching.Clean - patching.Corrupted:0.000} nats: " +
                        "this model barely uses the earlier copy on these tokens (no induction on random tokens), so the normalised values below are " +
                        "ratios of small differences and say little; the raw column is the measurement.");
    string layerHeads = string.Join(", ", heads.Select(kv => $"{kv.Key.Layer}.{kv.Key.Head}: {kv.Value:0.000}"));
    context.AddText($"**Heads.** Patching a whole head's output (all positions): {layerHeads}. The induction head by behaviour is " +
                    $"**{ind.Layer}.{ind.Head}** (induction score {ind.Score:0.00}); patching its output restores **{inductionOut:0.000}** of the metric, " +
                    $"its attention pattern alone {inductionPattern:0.000}.");
    var outputs = value.Where(kv => kv.Key.Kind is PatchKind.AttnOut or PatchKind.MlpOut && kv.Key.Position < 0)
        .Select(kv => $"{PatchSite.Name(kv.Key.Kind)} of layer {kv.Key.Layer}: {kv.Value:0.000}");
    context.AddText($"**Whole outputs** (all positions): {string.Join("; ", outputs)}.");
    if (value.ContainsKey(PatchSite.ResidPre(0, 0)))
    {
        // One position can fix at most one predicted token of the repeated half: 1 / (half − 1) of the metric.
        var lines = Enumerable.Range(0, cfg.NLayers).Select(l =>
        {
            var first = Enumerable.Range(prefix, half).Select(p => (p, v: value[PatchSite.ResidPre(l, p)])).ToArray();
            var best = first.MaxBy(x => x.v);
            return $"entering layer {l}, {first.Average(x => x.v):0.000} on average over the first copy's positions (best: position {best.p}, {best.v:0.000})";
        });
        context.AddText($"**Residual stream, one position at a time** (one position can repair at most one of the {half - 1} predicted tokens, " +
                        $"{1.0 / (half - 1):0.000} of the metric): {string.Join("; ", lines)}.");
    }
}

static void DrawFigures(ExperimentContext context, LoadedModel loaded, Dictionary<PatchSite, double> value, Tensor clean, Tensor corrupted, bool perPosition)
{
    var cfg = loaded.Model.Config;
    int positions = (int)clean.shape[1];
    var labels = Labels(loaded, clean[0], corrupted[0]);
    // Each map on its own scale (one position restores little), always including 0.
    static (double Min, double Max) Scale(double[,] m) =>
        (Math.Min(0, m.Cast<double>().Min()), Math.Max(m.Cast<double>().Max(), m.Cast<double>().Min() + 1e-6));
    int wide = Math.Max(900, 24 * positions + 250);
    string[] layers = Enumerable.Range(0, cfg.NLayers).Select(l => l.ToString(CultureInfo.InvariantCulture)).ToArray();
    string[] heads = Enumerable.Range(0, cfg.NLayers).SelectMany(l => Enumerable.Range(0, cfg.NHeads).Select(h => $"{l}.{h}")).ToArray();
    const string Meaning = "0 = corrupted, 1 = clean";

    if (perPosition)
    {
        var kinds = new List<PatchKind> { PatchKind.ResidPre, PatchKind.AttnOut };
        if (cfg.Mlp != MlpKind.None) kinds.Add(PatchKind.MlpOut);
        foreach (var kind in kinds)
        {
            var m = new double[cfg.NLayers, positions];
            for (int l = 0; l < cfg.NLayers; l++)
                for (int p = 0; p < positions; p++) m[l, p] = value[new PatchSite(kind, l, -1, p)];
            string name = PatchSite.Name(kind);
            context.SaveFigure($"patch_{name}.png",
                Figures.Matrix(m, $"Patching {name} per layer and position ({Meaning})", "position: clean token / corrupted token", "layer", layers, labels, "restored", min: Scale(m).Min, max: Scale(m).Max),
                $"Normalised metric with blocks.{{layer}}.hook_{name} at one position patched from the clean into the corrupted run; token labels of the first sequence (clean/corrupted where they differ).",
                wide, Math.Max(400, 60 * cfg.NLayers + 300));
        }
        var hp = new double[heads.Length, positions];
        for (int i = 0; i < heads.Length; i++)
            for (int p = 0; p < positions; p++) hp[i, p] = value[PatchSite.HeadOut(i / cfg.NHeads, i % cfg.NHeads, p)];
        context.SaveFigure("patch_head_out_by_position.png",
            Figures.Matrix(hp, $"Patching one head's output at one position ({Meaning})", "position: clean token / corrupted token", "head (layer.head)", heads, labels, "restored", min: Scale(hp).Min, max: Scale(hp).Max),
            "Normalised metric with one head's hook_z at one position patched from the clean into the corrupted run.",
            wide, Math.Max(400, 22 * heads.Length + 300));
    }
    foreach (var (kind, title) in new[] { (PatchKind.HeadOut, "output (hook_z)"), (PatchKind.HeadPattern, "attention pattern") })
    {
        var m = new double[cfg.NLayers, cfg.NHeads];
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < cfg.NHeads; h++) m[l, h] = value[new PatchSite(kind, l, h)];
        context.SaveFigure($"patch_{PatchSite.Name(kind)}.png",
            Figures.LayerHead(m, $"Patching each head's {title}, all positions", "restored"),
            $"Normalised metric with one head's {title} patched from the clean into the corrupted run at every position ({Meaning}; below 0 = worse than corrupted).",
            Math.Max(700, 90 * cfg.NHeads + 200), Math.Max(350, 70 * cfg.NLayers + 150));
    }
}

// "position:token" labels, "position:clean/corrupted" where the two runs differ.
static string[] Labels(LoadedModel loaded, Tensor clean, Tensor corrupted)
{
    string[] Text(Tensor t)
    {
        var ids = t.data<long>().Select(i => (int)i).ToArray();
        return (loaded.Tokenizer?.ToStrTokens(ids) ?? ids.Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray())
            .Select(s => s.Replace("\n", "\\n")).ToArray();
    }
    var a = Text(clean.cpu());
    var b = Text(corrupted.cpu());
    return a.Select((s, p) => s == b[p] ? $"{p}:{s}" : $"{p}:{s}/{b[p]}").ToArray();
}

/// <summary>Settings of activation_patching (--set key=value).</summary>
sealed record ActivationPatchingSettings : RepeatedInputSettings
{
    [Description("Also patch each position on its own (resid_pre, attn_out, mlp_out, head_out).")]
    public bool PerPosition { get; init; } = true;
    [Description("The most sequences in one forward pass (patches run as batches of copies).")]
    public int SequencesPerPass { get; init; } = 1024;
    [Description("a prompt set (JSON Lines: prompt, answer, wrong, corrupted) to patch from prompt into corrupted prompt instead of repeated random sequences")]
    public string? Prompts { get; init; }
    [Description("sequence pairs (or prompts) per work unit: each unit is patched as one batch, and a sharded run (--shard i/n) splits the units")]
    public int UnitSize { get; init; } = 8;
}

/// <summary>The clean and corrupted metrics (means over every sequence) and each site's result.</summary>
sealed record Patched(double Clean, double Corrupted, IReadOnlyList<PatchResult> Results);

/// <summary>One site's raw patched metric on one unit, with the unit's clean and corrupted metrics (means over its sequences): the rows a shard writes.</summary>
sealed record PatchUnitRow(int Unit, int Sequences, int Site, double Patched, double Clean, double Corrupted) : IUnitRow;

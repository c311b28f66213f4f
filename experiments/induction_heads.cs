#:project ../src/Interp.Run/Interp.Run.csproj
// THE MAIN JOB. On the built-in default model (a 2-layer attention-only transformer the project trains itself),
// find the previous-token head and the induction head, show their attention patterns on a repeated sequence,
// and show the loss per position on the repeated half with and without each head. The same analysis runs on any
// model: --model ../shared/models/stories260K/stories260K.bin (the TinyStories LLaMA).
// Run: dotnet run experiments/induction_heads.cs [-- --model PATH] [--set batch=64] [--set half=24]   (or: interp run induction_heads)

using System.ComponentModel;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Plots;
using Interp.Results;
using static TorchSharp.torch;

return await Experiment.RunAsync<InductionSettings>(args, new("induction_heads", "MAIN JOB: find the previous-token and induction heads of the built-in model (or of --model), their patterns and ablations"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    var tokenizer = loaded.Tokenizer;
    // In a 2-layer model the circuit is layer 0 → layer 1 by construction.
    bool twoLayer = cfg.NLayers == 2;
    int? inductionLayer = settings.InductionLayer ?? (twoLayer ? 1 : null), previousTokenLayer = settings.PreviousTokenLayer ?? (twoLayer ? 0 : null);
    context.AddText("An induction head completes patterns: having seen `… A B … A`, it predicts `B`. It needs two heads in " +
                    "different layers: a previous-token head writes \"the token before me was A\" into each position, and the " +
                    "induction head's keys read that (K-composition), so that a query `A` finds the position right after the earlier `A`.");
    using var scope = NewDisposeScope();
    using var _ = no_grad();

    context.ReportProgress("scoring heads", 0.1);
    var input = settings.Input(cfg).Draw(loaded, context.Seed);
    var (tokens, half, prefix, low, high) = (input.Tokens, input.Half, input.Prefix, input.Low, input.High);
    var scores = HeadDetection.Score(model, tokens, half, ct);
    await context.WriteTableAsync("head_scores.parquet", scores.ToTable(),
        "previous-token, duplicate-token and induction score of every head on repeated random sequences", ct);
    foreach (var kind in Enum.GetValues<HeadScoreKind>())
        context.SaveFigure($"head_scores_{HeadScores.Name(kind)}.png",
            Figures.LayerHead(scores.Values[kind], $"{HeadScores.Name(kind).Replace('_', '-')} score per head", "score"),
            $"{HeadScores.Name(kind).Replace('_', '-')} score of every head (layer × head); 1 = all attention on the predicted position.",
            Math.Max(500, 90 * cfg.NHeads + 200), Math.Max(300, 70 * cfg.NLayers + 150));

    // An induction head needs an earlier previous-token head to compose with: pick the induction head first.
    var ind = inductionLayer is int il ? scores.Best(HeadScoreKind.Induction, il)
        : Enumerable.Range(Math.Min(1, cfg.NLayers - 1), cfg.NLayers - Math.Min(1, cfg.NLayers - 1)).Select(l => scores.Best(HeadScoreKind.Induction, l)).MaxBy(b => b.Score);
    var prev = previousTokenLayer is int pl ? scores.Best(HeadScoreKind.PreviousToken, pl)
        : Enumerable.Range(0, Math.Max(1, ind.Layer)).Select(l => scores.Best(HeadScoreKind.PreviousToken, l)).MaxBy(b => b.Score);
    context.AddNumber("previous_token_head_layer", prev.Layer, "layer of the strongest previous-token head", "0");
    context.AddNumber("previous_token_head", prev.Head, "index of the strongest previous-token head", "0");
    context.AddNumber("previous_token_score", prev.Score, $"previous-token score of head {prev.Layer}.{prev.Head}");
    context.AddNumber("induction_head_layer", ind.Layer, "layer of the strongest induction head", "0");
    context.AddNumber("induction_head", ind.Head, "index of the strongest induction head", "0");
    context.AddNumber("induction_score", ind.Score, $"induction score of head {ind.Layer}.{ind.Head}");
    context.AddText($"**Heads found.** Previous-token head **{prev.Layer}.{prev.Head}** (score {prev.Score:0.00}); " +
                    $"induction head **{ind.Layer}.{ind.Head}** (score {ind.Score:0.00}). Scores are mean attention weights on " +
                    $"{settings.Batch} sequences of {half} random tokens (ids {low}–{high - 1}) repeated once." +
                    (ind.Score < 0.3 ? " No head reaches an induction score of 0.3: this model shows no clear induction circuit on repeated random tokens." : ""));

    await context.AddViewAsync(new HeatmapView("Head scores", "Mean attention on the position each score predicts, per head; choose the score.",
        "head_scores.parquet", [Columns.Layer], [Columns.Head], Facet: Columns.Score), ct);

    // Every head's pattern on a few short repeated sequences: two tables and the report's attention explorer; two figures.
    context.ReportProgress("drawing patterns", 0.4);
    int shortHalf = Math.Min(half, 12), shown = Math.Min(4, settings.Batch);
    var sample = tokens[..shown, ..(prefix + shortHalf)];
    var shortTokens = prefix == 0 ? cat([sample, sample], 1) : cat([sample, sample[.., prefix..]], 1);    // [shown, prefix + 2·shortHalf]
    await AttentionExplorer.AddAsync(context, model, shortTokens, tokenizer, ind.Layer, ind.Head,
        $"Every head on {shown} short repeated sequences; head {ind.Layer}.{ind.Head} (induction) is selected. Hover a token to see what it attends to and what attends to it.", ct);
    var labels = Labels(shortTokens[0], tokenizer);
    var (_, cache) = model.RunWithCache(shortTokens, n => HookNames.Is(n, HookNames.Pattern));
    using (cache)
    {
        foreach (var (role, l, h) in new[] { ("previous-token", prev.Layer, prev.Head), ("induction", ind.Layer, ind.Head) })
            context.SaveFigure($"pattern_{role.Replace("-", "_")}_head_{l}_{h}.png",
                Figures.AttentionPattern(TensorData.ToMatrix(cache[HookNames.Pattern(l)][0, h]), labels, $"Head {l}.{h} ({role}) on a repeated sequence"),
                role == "induction"
                    ? $"Head {l}.{h}: in the second copy each token attends to the token after its earlier occurrence (the off-diagonal stripe)."
                    : $"Head {l}.{h}: each token attends to the token just before it (the sub-diagonal).",
                900, 800);
    }

    // Loss per position, clean and with each head zero-ablated.
    context.ReportProgress("ablating heads", 0.6);
    var clean = LossByPosition.Mean(model, tokens);
    var lossRows = new ParquetColumns();
    void AddLoss(int layer, int head, double[] loss)
    {
        for (int p = 0; p < loss.Length; p++) lossRows.Row(("ablated_layer", layer), ("ablated_head", head), ("position", p + 1), ("loss", (float)loss[p]));
    }
    AddLoss(-1, -1, clean);
    var ablated = new Dictionary<(int, int), double[]>();
    for (int l = 0; l < cfg.NLayers; l++)
        for (int h = 0; h < cfg.NHeads; h++)
        {
            ct.ThrowIfCancellationRequested();
            var loss = LossByPosition.Mean(model, tokens, (HookNames.Z(l), ZeroHead(h)));
            ablated[(l, h)] = loss;
            AddLoss(l, h, loss);
            context.ReportProgress($"ablating heads: {l}.{h}", 0.6 + 0.35 * (l * cfg.NHeads + h + 1) / (cfg.NLayers * cfg.NHeads));
        }
    await context.WriteTableAsync("loss_by_position.parquet", lossRows.ToTable(),
        "mean next-token loss at each position (predicting token position from the ones before), clean (ablated_layer −1) and with each head zero-ablated", ct);

    // Positions whose target lies in the repeated half are predictable by induction.
    double FirstHalf(double[] loss) => loss[prefix..(prefix + half - 1)].Average();
    double Repeated(double[] loss) => loss[(prefix + half)..].Average();
    context.AddNumber("loss_first_half", FirstHalf(clean), "mean loss predicting the first (random) copy");
    context.AddNumber("loss_repeated_half", Repeated(clean), "mean loss predicting the repeated copy");
    context.AddNumber("loss_repeated_half_without_induction_head", Repeated(ablated[(ind.Layer, ind.Head)]), $"same, with head {ind.Layer}.{ind.Head} zero-ablated");
    // The previous-token mechanism may be spread over several heads of its layer (the built-in model has two, each
    // dispensable alone): ablate every head of that layer scoring at least half the best one, together.
    var prevHeads = Enumerable.Range(0, cfg.NHeads).Where(h => scores.Values[HeadScoreKind.PreviousToken][prev.Layer, h] >= 0.5 * prev.Score).ToArray();
    string prevNames = string.Join(" + ", prevHeads.Select(h => $"{prev.Layer}.{h}"));
    (string, HookFunction) AblatePrevious() => (HookNames.Z(prev.Layer), (z, _) =>
    {
        var c = z.clone();
        foreach (int h in prevHeads) c[.., .., h] = 0;
        return c;
    });
    var withoutPrevious = LossByPosition.Mean(model, tokens, AblatePrevious());
    context.AddNumber("loss_repeated_half_without_previous_token_heads", Repeated(withoutPrevious), $"same, with the previous-token head(s) {prevNames} zero-ablated together");
    var worst = ablated.MaxBy(kv => Repeated(kv.Value));
    context.AddText($"Zero-ablating each head in turn, the repeated-half loss rises most without head {worst.Key.Item1}.{worst.Key.Item2} " +
                    $"({Repeated(clean):0.000} → {Repeated(worst.Value):0.000})" +
                    (prevHeads.Length > 1
                        ? $". The previous-token job is shared by heads {prevNames}: without one of them it rises only to " +
                          string.Join(" / ", prevHeads.Select(h => Repeated(ablated[(prev.Layer, h)]).ToString("0.000"))) +
                          $", without all of them to {Repeated(withoutPrevious):0.000}."
                        : "."));
    var xs = Enumerable.Range(1, clean.Length).Select(p => (double)p).ToArray();
    context.SaveFigure("loss_by_position.png",
        Figures.Lines("Loss per position on repeated random tokens", "position of the predicted token", "mean loss", xs,
            ("clean", clean), ($"without {ind.Layer}.{ind.Head} (induction)", ablated[(ind.Layer, ind.Head)]),
            ($"without {prevNames} (previous-token)", withoutPrevious)),
        $"Loss drops in the repeated copy (after position {prefix + half}); ablating either part of the circuit brings it back up.", 1000, 550);

    var ablation = new ParquetColumns();
    foreach (var ((l, h), loss) in ablated)
        ablation.Row(("layer", l), ("head", h), ("metric", "repeated_half_loss"), ("value", Repeated(loss)))
                .Row(("layer", l), ("head", h), ("metric", "repeated_half_loss_increase"), ("value", Repeated(loss) - Repeated(clean)));
    await context.WriteTableAsync("head_ablation.parquet", ablation.ToTable(), "mean loss on the repeated half with each head zero-ablated, and its increase over the clean run", ct);
    await context.AddViewAsync(new HeatmapView("Zero-ablating each head", "Repeated-half loss with the head zero-ablated (or its increase over the clean run).",
        "head_ablation.parquet", [Columns.Layer], [Columns.Head], Facet: Columns.Metric), ct);

    // Per-token loss on the short sequences of the attention explorer, clean and without each part of the circuit.
    var perToken = new TokenValuesTable.Builder();
    foreach (var (name, hooks) in new[] { ("loss", Array.Empty<(string, HookFunction)>()),
                                          ($"loss without {ind.Layer}.{ind.Head}", [(HookNames.Z(ind.Layer), ZeroHead(ind.Head))]),
                                          ($"loss without {prevNames}", [AblatePrevious()]) })
    {
        var loss = LossByPosition.PerSequence(model, shortTokens, hooks);
        for (int b = 0; b < loss.Length; b++) perToken.Add(name, b, loss[b], firstPosition: 1);   // entry i predicts token i + 1
    }
    await context.WriteTableAsync("token_loss.parquet", perToken.ToTable(), "next-token loss of each token of the short repeated sequences, clean and with either part of the circuit ablated", ct);
    await context.AddViewAsync(new TokenValuesView("Loss per token", "Each token coloured by the loss of predicting it; choose clean or an ablation.", "token_loss.parquet", "tokens.parquet"), ct);

    // K-composition evidence: the induction head needs the previous-token heads' output to find its target.
    using (model.Hooks(AblatePrevious()))
    {
        var without = HeadDetection.Score(model, tokens, half, ct);
        context.AddNumber("induction_score_without_previous_token_heads", without.Values[HeadScoreKind.Induction][ind.Layer, ind.Head],
            $"induction score of {ind.Layer}.{ind.Head} when {prevNames} are zero-ablated (the circuit's K-composition)");
    }

    // The training curve ships with the built-in model: it shows the phase change when the circuit forms.
    string curve = Path.Combine(loaded.Source, "training_loss.parquet");
    if (File.Exists(curve))
    {
        var t = await ParquetTableReader.ReadNumericAsync(curve, ct);
        context.SaveFigure("training_loss.png",
            Figures.Lines("Training loss of the built-in model", "step", "loss", t["step"], ("first half (random tokens)", t["loss_first_half"]), ("repeated half", t["loss_repeated_half"])),
            "Training: the loss on repeated tokens drops suddenly when the induction circuit forms (the phase change).", 1000, 500);
    }
    context.ReportProgress("done", 1.0);
});


static HookFunction ZeroHead(int head) => (z, _) => { var c = z.clone(); c[.., .., head] = 0; return c; };

static string[] Labels(Tensor tokens, Interp.Tokenizers.ITokenizer? tokenizer)
{
    var ids = tokens.data<long>().Select(i => (int)i).ToArray();
    var labels = tokenizer?.ToStrTokens(ids) ?? ids.Select(i => i.ToString()).ToArray();
    // Position prefixes keep repeated tokens apart on the axes.
    return labels.Select((l, p) => $"{p}:{l.Replace("\n", "\\n")}").ToArray();
}

/// <summary>Settings of induction_heads (--set key=value).</summary>
sealed record InductionSettings : RepeatedInputSettings
{
    public InductionSettings() => Batch = 64;

    [Description("Layer to search for the induction head (none: layer 1 in a 2-layer model, else any layer but the first).")]
    public int? InductionLayer { get; init; }
    [Description("Layer to search for the previous-token head (none: layer 0 in a 2-layer model, else any layer before the induction head's).")]
    public int? PreviousTokenLayer { get; init; }
}

#:project ../src/Interp.Run/Interp.Run.csproj
// Direct logit attribution: the next-token logit on repeated random sequences split into what each embedding, head,
// MLP and bias writes directly, per position — for the correct token and for the difference correct − current token.
// The components sum to the model's logit; on the built-in model the induction head carries the repeated half.
// With --prompts FILE the direction is unembed(answer) − unembed(wrong) at each prompt's last real token (the prompts run
// as one right-padded batch): the components sum to the logit difference logit(answer) − logit(wrong) of each prompt.
// Run: dotnet run experiments/head_attribution.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set batch=32] [--set half=24] [--set process_weights=false] [--set unit_size=8 with --prompts; --shard i/n --out DIR, then: interp merge DIR]

using System.ComponentModel;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Loading;
using Interp.Models;
using Interp.Plots;
using Interp.Prompts;
using Interp.Results;
using static TorchSharp.torch;

return await Experiment.RunAsync<HeadAttributionSettings>(args, new("head_attribution", "Direct logit attribution: the next-token logit split into embeddings, every head, every MLP and the biases, per position") { Shards = true }, async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    if (settings.ProcessWeights)
        context.ProcessWeights(model, "the attributed logits are centred over the vocabulary.");
    if (settings.Prompts is { } file)
    {
        await AttributePromptsAsync(context, model, file, settings.UnitSize, ct);
        return;
    }
    if (context.Shard is not null || context.IsMerge)
        throw new InterpException("head_attribution shards with --prompts only: its repeated random sequences are one batch (run it without --shard)");

    context.ReportProgress("scoring heads", 0.1);
    var input = settings.Input(cfg).Draw(loaded, context.Seed);
    var tokens = input.Tokens;
    var halves = RepeatedHalves.Of(input);
    var scores = HeadDetection.Score(model, tokens, input.Half, ct);
    ct.ThrowIfCancellationRequested();

    context.ReportProgress("attributing logits", 0.3);
    var (logits, cache) = model.RunWithCache(tokens, HeadAttribution.CacheFilter);
    LogitAttribution correct, diff;
    using (cache)
    {
        correct = HeadAttribution.NextToken(model, cache, logits, tokens);
        diff = HeadAttribution.NextToken(model, cache, logits, tokens, wrong: tokens[.., ..^1]);
    }
    double maxError = new[] { correct, diff }.Max(a => (a.Total() - a.Logit).abs().max().item<double>());

    var rows = new ParquetColumns();
    foreach (var (target, attribution) in new[] { ("correct_token", correct), ("logit_diff", diff) })
    {
        var mean = TensorData.ToMatrix(attribution.Values.mean([1]));                   // [component, position]
        var logit = TensorData.ToVector(attribution.Logit.mean([0]));                   // [position]
        for (int p = 0; p < logit.Length; p++)
        {
            for (int c = 0; c < attribution.Components.Count; c++)
            {
                var component = attribution.Components[c];
                rows.Row(("position", p), ("component", component.Name), ("layer", component.Layer), ("head", component.Head),
                    ("target", target), ("value", mean[c, p]));
            }
            rows.Row(("position", p), ("component", "logit"), ("layer", -1), ("head", -1), ("target", target), ("value", logit[p]));
        }
    }
    await context.WriteTableAsync("head_attribution.parquet", rows.ToTable(),
        "direct logit attribution per residual position (which predicts the token at position + 1) and component, mean over the batch; " +
        "component 'logit' is the model's own logit (correct_token) or logit difference correct − current token (logit_diff), the sum of the others", ct);
    await context.AddViewAsync(new HeatmapView("Direct logit attribution per head", "Each head's direct contribution at each position (head × position, mean over the batch); choose the target.",
        "head_attribution.parquet", [Columns.Layer, Columns.Head], [Columns.Position], Facet: "target") { Where = new Dictionary<string, string> { [Columns.Component] = "head" } }, ct);

    // Per token, on the first sequences: each component's direct contribution to the logit of the token it predicts.
    int shown = (int)Math.Min(4, tokens.shape[0]);
    await context.WriteTableAsync("tokens.parquet", TokenTable.From(tokens[..shown], loaded.Tokenizer), "the tokens of the sequences the report's views show", ct);
    var perToken = new TokenValuesTable.Builder();
    for (int b = 0; b < shown; b++)
    {
        perToken.Add("logit", b, TensorData.ToVector(correct.Logit[b]), firstPosition: 1);   // residual position p predicts token p + 1
        for (int c = 0; c < correct.Components.Count; c++)
            perToken.Add($"DLA {correct.Components[c].Label}", b, TensorData.ToVector(correct.Values[c, b]), firstPosition: 1);
    }
    await context.WriteTableAsync("token_attribution.parquet", perToken.ToTable(),
        "per token of the first sequences: the model's logit of that token and each component's direct attribution to it (quantity 'DLA <component>'), from the residual position before it", ct);
    await context.AddViewAsync(new TokenValuesView("Direct logit attribution per token", "Each token coloured by the logit the model gives it, or by one component's direct contribution to that logit; choose the quantity.",
        "token_attribution.parquet", "tokens.parquet"), ct);

    context.ReportProgress("figures", 0.8);
    Summarise(context, cfg, scores, correct, diff, halves, maxError, settings.Batch, input.Half);
    DrawFigures(context, cfg, correct, diff, halves, input);
    context.ReportProgress("done", 1.0);
});

// The researcher's prompts: logit(answer) − logit(wrong) at each prompt's last real token, split into its direct components.
// Centring the unembedding (process_weights) shifts every logit of a position by the same amount, so a logit difference
// and its attribution are the same with raw or processed weights.
static async Task AttributePromptsAsync(ExperimentContext context, HookedTransformer model, string file, int unitSize, CancellationToken ct)
{
    var cfg = model.Config;
    using var prompts = PromptSet.Load(file, model);
    int n = prompts.Count;
    var last = prompts.LastPositions;
    // The work units: chunks of unit_size prompts, each attributed as one batch (a shard, --shard i/n, does its share);
    // every prompt's rows are then gathered, and the table and the means are made from all of them.
    var units = context.Chunks(n, unitSize);
    var unitRows = new List<AttributionUnitRow>();
    for (int k = 0; k < units.Count; k++)
    {
        var (u, start, count) = units[k];
        context.ReportProgress($"attributing logit differences, unit {u + 1}", 0.7 * k / units.Count);
        using var unitScope = NewDisposeScope();
        var unitAttribution = HeadAttribution.AtLastTokens(model, prompts.Clean.Tokens.narrow(0, start, count), prompts.Clean.AttentionMask.narrow(0, start, count),
            prompts.AnswerIds[start..(start + count)], prompts.WrongIds[start..(start + count)]);
        ct.ThrowIfCancellationRequested();
        var unitValues = TensorData.ToMatrix(unitAttribution.Values.squeeze(-1));      // [component, prompt of the unit]
        var unitLogit = TensorData.ToVector(unitAttribution.Logit.squeeze(-1));         // [prompt of the unit]
        for (int b = 0; b < count; b++)
        {
            foreach (var (component, c) in unitAttribution.Components.Select((x, i) => (x, i)))
                unitRows.Add(new AttributionUnitRow(u, start + b, last[start + b], component.Kind.ToString(), component.Layer, component.Head, unitValues[c, b]));
            unitRows.Add(new AttributionUnitRow(u, start + b, last[start + b], "logit", -1, -1, unitLogit[b]));
        }
    }
    var gathered = await context.GatherAsync("head_attribution_units", unitRows, ct);

    // Back to [component, prompt]: the components in the order of the first prompt's rows, the model's logit apart.
    var components = gathered.Where(r => r.Prompt == 0 && r.Kind != "logit").Select(r => new ResidualComponent(Enum.Parse<ComponentKind>(r.Kind), r.Layer, r.Head)).ToArray();
    var index = components.Select((c, i) => (c, i)).ToDictionary(x => x.c, x => x.i);
    var values = new double[components.Length, n];
    var logit = new double[n];
    foreach (var r in gathered)
        if (r.Kind == "logit") logit[r.Prompt] = r.Value;
        else values[index[new ResidualComponent(Enum.Parse<ComponentKind>(r.Kind), r.Layer, r.Head)], r.Prompt] = r.Value;
    var total = Enumerable.Range(0, n).Select(b => Enumerable.Range(0, components.Length).Sum(c => values[c, b])).ToArray();

    var rows = new ParquetColumns();
    for (int b = 0; b < n; b++)
    {
        for (int c = 0; c < components.Length; c++)
        {
            var component = components[c];
            rows.Row(("prompt", b), ("position", last[b]), ("component", component.Name), ("layer", component.Layer), ("head", component.Head), ("value", values[c, b]));
        }
        rows.Row(("prompt", b), ("position", last[b]), ("component", "logit"), ("layer", -1), ("head", -1), ("value", logit[b]));
    }
    await context.WriteTableAsync("head_attribution.parquet", rows.ToTable(),
        $"direct logit attribution of logit(answer) − logit(wrong) at each prompt's last real token (position) for the {n} prompts of {Path.GetFileName(file)} " +
        "(prompt = line index among the file's prompts), one row per prompt and component along the direction unembed(answer) − unembed(wrong); " +
        "component 'logit' is the model's own logit difference, the sum of the others; the mean over prompts is the mean of the rows of each component", ct);
    await context.AddViewAsync(new HeatmapView("Direct logit attribution per head", "Each head's direct contribution to logit(answer) − logit(wrong) on each prompt (head × prompt).",
        "head_attribution.parquet", [Columns.Layer, Columns.Head], ["prompt"]) { Where = new Dictionary<string, string> { [Columns.Component] = "head" } }, ct);

    double metric = logit.Average(), attributionTotal = total.Average();
    double maxError = Enumerable.Range(0, n).Max(b => Math.Abs(total[b] - logit[b]));
    var mean = new double[components.Length];
    for (int c = 0; c < mean.Length; c++) mean[c] = Enumerable.Range(0, n).Average(b => values[c, b]);
    var map = new double[cfg.NLayers, cfg.NHeads];
    var heads = new List<(int Layer, int Head, double Value)>();
    for (int c = 0; c < mean.Length; c++)
        if (components[c] is { Kind: ComponentKind.Head } h)
        {
            map[h.Layer, h.Head] = mean[c];
            heads.Add((h.Layer, h.Head, mean[c]));
        }
    var ranked = heads.OrderByDescending(x => x.Value).ToArray();
    var top = ranked[0];
    var against = ranked[^1];

    context.AddNumber("metric_clean", metric, $"mean logit(answer) − logit(wrong) at each prompt's last token over the {n} prompts");
    context.AddNumber("attribution_total", attributionTotal, "mean over the prompts of the sum of every direct component (= metric_clean)");
    context.AddNumber("max_sum_error", maxError, "largest |sum of components − model logit difference| over the prompts (the identity)", "0.0e+0");
    context.AddNumber("top_head_layer", top.Layer, "layer of the head with the largest mean direct attribution toward the answer", "0");
    context.AddNumber("top_head", top.Head, "index of that head", "0");
    context.AddNumber("top_head_attribution", top.Value, $"mean direct attribution of head {top.Layer}.{top.Head} to logit(answer) − logit(wrong)");
    context.AddNumber("most_negative_head_attribution", against.Value, $"mean direct attribution of head {against.Layer}.{against.Head}, the one pushing most toward the wrong token");
    context.AddNumber("prompts_toward_answer", logit.Count(v => v > 0), "prompts whose logit difference is positive (the answer is preferred)", "0");

    var pushing = ranked.Take(Math.Min(3, ranked.Length)).Select(x => $"**{x.Layer}.{x.Head}** ({x.Value:+0.000;−0.000})");
    var strongest = Enumerable.Range(0, mean.Length).Where(c => components[c].Kind != ComponentKind.Head)
        .OrderByDescending(c => Math.Abs(mean[c])).Take(3).Select(c => $"{components[c].Label} {mean[c]:+0.000;−0.000}");
    context.AddText($"**Direct logit attribution on your prompts.** {n} prompts of {Path.GetFileName(file)} ({prompts.Clean.Lengths.Min()}–{prompts.Clean.MaxLength} tokens, " +
                    $"one right-padded batch). At each prompt's last token the model prefers the answer by a mean logit difference of **{metric:0.000}** " +
                    $"({logit.Count(v => v > 0)} of {n} prompts positive). The heads that push most toward the answer directly: {string.Join(", ", pushing)}; " +
                    $"head {against.Layer}.{against.Head} pushes most toward the wrong token ({against.Value:+0.000;−0.000}). Largest other components: {string.Join(", ", strongest)}. " +
                    $"The components sum to the model's logit difference within {maxError:0.0e+0} (mean {attributionTotal:0.000}).");

    context.ReportProgress("figures", 0.8);
    context.SaveFigure("head_attribution_prompts.png",
        Figures.LayerHead(map, "Direct attribution, logit(answer) − logit(wrong)", "logit difference"),
        $"Mean over the {n} prompts of each head's direct contribution (layer × head) to logit(answer) − logit(wrong) at the prompt's last token; positive = toward the answer.",
        Math.Max(600, 90 * cfg.NHeads + 200), Math.Max(300, 70 * cfg.NLayers + 150));
    var others = Enumerable.Range(0, mean.Length).Where(c => components[c].Kind != ComponentKind.Head).ToArray();
    var matrix = new double[others.Length + 1, 1];
    for (int i = 0; i < others.Length; i++) matrix[i, 0] = mean[others[i]];
    matrix[others.Length, 0] = heads.Sum(x => x.Value);
    context.SaveFigure("components_prompts.png",
        Figures.Matrix(matrix, "Direct attribution of the other components", "mean over prompts", "component",
            others.Select(c => components[c].Label).Append("all heads").ToArray(), ["logit diff"], "logit difference", annotate: true),
        "Mean direct contribution to logit(answer) − logit(wrong) of the embeddings, every MLP and the biases, and of all heads together.",
        500, Math.Max(350, 30 * others.Length + 200));
    context.ReportProgress("done", 1.0);
}

static void Summarise(ExperimentContext context, ModelConfig cfg, HeadScores scores, LogitAttribution correct, LogitAttribution diff,
    RepeatedHalves halves, double maxError, int batch, int half)
{
    var induction = scores.Best(HeadScoreKind.Induction);
    var map = correct.HeadMap(cfg, halves.Repeated);
    var ranked = Enumerable.Range(0, cfg.NLayers).SelectMany(l => Enumerable.Range(0, cfg.NHeads).Select(h => (l, h, v: map[l, h])))
        .OrderByDescending(x => x.v).ToArray();
    var top = ranked[0];
    int inductionRank = Array.FindIndex(ranked, x => x.l == induction.Layer && x.h == induction.Head) + 1;
    var meanRepeated = correct.Mean(halves.Repeated);
    double logitRepeated = Mean(correct.Logit, halves.Repeated), logitFirst = Mean(correct.Logit, halves.First);

    context.AddNumber("top_head_layer", top.l, "layer of the head with the largest mean direct attribution to the correct token on the repeated half", "0");
    context.AddNumber("top_head", top.h, "index of that head", "0");
    context.AddNumber("top_head_attribution", top.v, $"mean direct logit attribution of head {top.l}.{top.h} to the correct token on the repeated half");
    context.AddNumber("induction_head_layer", induction.Layer, "layer of the head with the highest induction score (found by behaviour)", "0");
    context.AddNumber("induction_head", induction.Head, "index of that head", "0");
    context.AddNumber("induction_score", induction.Score, $"induction score of head {induction.Layer}.{induction.Head}");
    context.AddNumber("induction_head_attribution", map[induction.Layer, induction.Head], $"mean direct attribution of head {induction.Layer}.{induction.Head} on the repeated half");
    context.AddNumber("induction_head_attribution_rank", inductionRank, "rank of the induction head among all heads by that attribution (1 = largest)", "0");
    context.AddNumber("logit_repeated_half", logitRepeated, "mean logit of the correct token on the repeated half");
    context.AddNumber("logit_first_half", logitFirst, "mean logit of the correct token on the first (random) half");
    context.AddNumber("logit_diff_repeated_half", Mean(diff.Logit, halves.Repeated), "mean logit difference correct − current token on the repeated half");
    context.AddNumber("max_sum_error", maxError, "largest |sum of components − model logit| over every sequence, position and target (the identity)", "0.0e+0");

    var strongest = Enumerable.Range(0, correct.Components.Count).OrderByDescending(c => Math.Abs(meanRepeated[c])).Take(5)
        .Select(c => $"{correct.Components[c].Label} {meanRepeated[c]:+0.00;−0.00}");
    context.AddText($"**Direct logit attribution** on {batch} sequences of {half} random tokens repeated once. On the repeated half the correct " +
                    $"token's logit averages {logitRepeated:0.00} (first half: {logitFirst:0.00}); the head that writes most of it directly is " +
                    $"**{top.l}.{top.h}** ({top.v:0.00}). The induction head found by behaviour, {induction.Layer}.{induction.Head} (induction score " +
                    $"{induction.Score:0.00}), ranks **{inductionRank}** of {cfg.NLayers * cfg.NHeads} heads. Largest components: {string.Join(", ", strongest)}. " +
                    $"The components sum to the model's logit within {maxError:0.0e+0}.");
}

static void DrawFigures(ExperimentContext context, ModelConfig cfg, LogitAttribution correct, LogitAttribution diff, RepeatedHalves halves, RepeatedTokens input)
{
    int width = Math.Max(600, 90 * cfg.NHeads + 200), height = Math.Max(300, 70 * cfg.NLayers + 150);
    context.SaveFigure("head_attribution_repeated.png",
        Figures.LayerHead(correct.HeadMap(cfg, halves.Repeated), "Direct attribution, correct token (repeated half)", "logit"),
        "Mean direct contribution of each head (layer × head) to the correct next token's logit on the repeated half, where an induction head can predict it.",
        width, height);
    context.SaveFigure("head_attribution_first_half.png",
        Figures.LayerHead(correct.HeadMap(cfg, halves.First), "Direct attribution, correct token (first half)", "logit"),
        "The same on the first (random, unpredictable) half, for contrast.", width, height);
    context.SaveFigure("head_attribution_logit_diff.png",
        Figures.LayerHead(diff.HeadMap(cfg, halves.Repeated), "Direct attribution, correct − current (repeated half)", "logit difference"),
        "Mean direct contribution of each head to the logit difference between the correct next token and the current token on the repeated half.",
        width, height);

    // Components along the positions: the eight largest on average, and the model's logit (their sum with the rest).
    var mean = TensorData.ToMatrix(correct.Values.mean([1]));                           // [component, position]
    int positions = mean.GetLength(1);
    var strongest = Enumerable.Range(0, correct.Components.Count)
        .OrderByDescending(c => Enumerable.Range(0, positions).Average(p => Math.Abs(mean[c, p]))).Take(8).OrderBy(c => c).ToArray();
    var xs = Enumerable.Range(0, positions).Select(p => (double)p).ToArray();
    var series = strongest.Select(c => (correct.Components[c].Label, Enumerable.Range(0, positions).Select(p => mean[c, p]).ToArray()))
        .Append(("logit (sum of all)", TensorData.ToVector(correct.Logit.mean([0])))).ToArray();
    var plot = Figures.Lines("Direct attribution to the correct next token by position", "position (predicts the token at position + 1)", "mean logit contribution", xs, series);
    plot.Add.VerticalLine(input.Prefix + input.Half - 0.5, 1, ScottPlot.Colors.Gray, ScottPlot.LinePattern.Dashed);
    context.SaveFigure("components_by_position.png", plot,
        $"Mean direct contribution of the {strongest.Length} largest components at each position (dashed: the second copy starts).",
        1100, 600);
}

static double Mean(Tensor values, int[] positions)
{
    using var scope = NewDisposeScope();
    return values.index_select(1, tensor(positions.Select(p => (long)p).ToArray(), device: values.device)).mean().item<double>();
}

/// <summary>Settings of head_attribution (--set key=value).</summary>
sealed record HeadAttributionSettings : RepeatedInputSettings
{
    [Description("Process the weights first (fold LN, centre writing weights and unembedding, fold value biases), as TransformerLens's from_pretrained does: the attributed logit is then the centred one.")]
    public bool ProcessWeights { get; init; } = true;
    [Description("a prompt set (JSON Lines: prompt, answer, wrong[, corrupted]) to run on instead of repeated random sequences; the direction attributed is then unembed(answer) − unembed(wrong) at each prompt's last token")]
    public string? Prompts { get; init; }
    [Description("(with --prompts) prompts per work unit: each unit is attributed as one batch, and a sharded run (--shard i/n) splits the units")]
    public int UnitSize { get; init; } = 8;
}

/// <summary>One prompt's direct attribution to one component (kind, layer, head; kind "logit" = the model's own logit difference): the rows a shard writes.</summary>
sealed record AttributionUnitRow(int Unit, int Prompt, int Position, string Kind, int Layer, int Head, double Value) : IUnitRow;

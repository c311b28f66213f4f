#:project ../src/Interp.Run/Interp.Run.csproj
// What every component writes into the residual stream (norm, cosine with the stream it joins, projection on the
// correct next token's unembedding), and the logit lens: the stream after each layer decoded through the final norm
// and unembedding — probability and rank of the correct next token per layer and position.
// With --prompts FILE (one right-padded batch) it measures the writes at each prompt's last real token, projected on the
// direction unembed(answer) − unembed(wrong), and reads the logit difference logit(answer) − logit(wrong) after every layer.
// Run: dotnet run experiments/residual_writes.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set batch=32] [--set half=24] [--set process_weights=false]

using System.ComponentModel;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Plots;
using Interp.Prompts;
using Interp.Results;
using static TorchSharp.torch;

return await Experiment.RunAsync<ResidualWritesSettings>(args, new("residual_writes", "Residual-stream writes per layer and component (norm, cosine, projection) and the logit lens per layer"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    if (settings.ProcessWeights)
        context.ProcessWeights(model, "the final norm's gain is folded into W_U and the unembedding is centred, so W_U[:, t] " +
                                               "is the direction that raises token t's logit relative to the others.");
    if (settings.Prompts is { } file)
    {
        await MeasurePromptsAsync(context, model, file, ct);
        return;
    }

    context.ReportProgress("running the model", 0.1);
    var input = settings.Input(cfg).Draw(loaded, context.Seed);
    var tokens = input.Tokens;
    var halves = RepeatedHalves.Of(input);
    var scores = HeadDetection.Score(model, tokens, input.Half, ct);
    var (logits, cache) = model.RunWithCache(tokens, n => ResidualWrites.CacheFilter(n) || LogitLens.CacheFilter(n));
    IReadOnlyList<ResidualWrite> writes;
    LogitLensResult lens;
    using (cache)
    {
        writes = ResidualWrites.Measure(model, cache, ResidualWrites.UnembedDirections(model, tokens[.., 1..]));
        lens = LogitLens.NextToken(model, cache, tokens);
        // The lens's top 5 tokens on the first sequences, for the report's logit lens table.
        int shown = (int)Math.Min(4, tokens.shape[0]);
        var top = LogitLens.Top(model, cache, 5);
        await context.WriteTableAsync("tokens.parquet", TokenTable.From(tokens[..shown], loaded.Tokenizer), "the tokens of the sequences the report's views show", ct);
        await context.WriteTableAsync("logit_lens_top.parquet", LogitLensTopTable.From(top with { Ids = top.Ids[.., ..shown], Probability = top.Probability[.., ..shown] }, loaded.Tokenizer),
            "logit lens: the 5 most probable tokens of the stream entering block 'layer' (n_layers = the final stream) at every position of the first sequences", ct);
    }
    // Per token of the same sequences: the lens's rank of that token after each layer (1 = the top prediction).
    var ranks = new TokenValuesTable.Builder();
    for (int b = 0; b < Math.Min(4, tokens.shape[0]); b++)
        for (int l = 0; l < lens.Layers.Count; l++)
            ranks.Add($"lens rank, stream entering layer {lens.Layers[l].Layer}", b, TensorData.ToVector(lens.Rank[l, b]), firstPosition: 1);   // position p predicts p + 1
    await context.WriteTableAsync("token_lens_rank.parquet", ranks.ToTable(), "per token of the first sequences: its rank under the logit lens of the stream entering each layer (1 = top; the last layer is the model)", ct);
    await context.AddViewAsync(new TokenValuesView("Logit lens rank per token", "Each token coloured by the rank the lens gives it after each layer (1 = predicted); choose the layer.",
        "token_lens_rank.parquet", "tokens.parquet"), ct);
    await context.AddViewAsync(new LogitLensView("Logit lens", "The stream entering each layer read through the final norm and unembedding: its top token at each position, coloured by probability (hover for the top 5).",
        "logit_lens_top.parquet", "tokens.parquet"), ct);
    ct.ThrowIfCancellationRequested();

    context.ReportProgress("tables", 0.5);
    var writeRows = new ParquetColumns();
    foreach (var w in writes)
        foreach (var (metric, values) in new[] { ("norm", w.Norm), ("cosine", w.Cosine), ("projection", w.Projection) })
        {
            if (values is null) continue;
            var mean = TensorData.ToVector(values.mean([0]));
            for (int p = 0; p < mean.Length; p++)
                writeRows.Row(("layer", w.Component.Layer), ("component", w.Component.Name), ("head", w.Component.Head),
                    ("position", p), ("metric", metric), ("value", mean[p]));
        }
    await context.WriteTableAsync("residual_writes.parquet", writeRows.ToTable(),
        "each component's write into the residual stream per position, mean over the batch: norm, cosine with the stream it is added to, " +
        "projection on the unit unembedding direction of the next token", ct);
    await context.AddViewAsync(new HeatmapView("Residual writes", "What each component writes into the residual stream at each position (mean over the batch); choose norm, cosine or projection.",
        "residual_writes.parquet", [Columns.Component, Columns.Layer, Columns.Head], [Columns.Position], Facet: Columns.Metric), ct);

    var lensRows = new ParquetColumns();
    foreach (var (metric, values) in new[] { ("probability", lens.Probability), ("rank", lens.Rank), ("logit", lens.Logit) })
    {
        var mean = TensorData.ToMatrix(values.mean([1]));                                  // [layer, position]
        for (int l = 0; l < mean.GetLength(0); l++)
            for (int p = 0; p < mean.GetLength(1); p++)
                lensRows.Row(("layer", lens.Layers[l].Layer), ("position", p), ("metric", metric), ("value", mean[l, p]));
    }
    await context.WriteTableAsync("logit_lens.parquet", lensRows.ToTable(),
        "logit lens: the stream entering block 'layer' (layer n_layers = the final stream) through the final norm and unembedding; " +
        "probability, rank (1 = top) and logit of the next token per position, mean over the batch", ct);

    // The identity: at the final stream the lens is the model.
    double lensError;
    using (NewDisposeScope())
    {
        var own = logits[.., ..^1].softmax(-1).gather(-1, tokens[.., 1..].unsqueeze(-1)).squeeze(-1).to(ScalarType.Float64);
        lensError = (lens.Probability[^1] - own).abs().max().item<double>();
    }

    context.ReportProgress("figures", 0.8);
    Summarise(context, cfg, scores, writes, lens, halves, lensError);
    DrawFigures(context, cfg, writes, lens, halves);
    context.ReportProgress("done", 1.0);
});

// The researcher's prompts: every write at each prompt's last real token, its projection on the unit direction
// unembed(answer) − unembed(wrong), and the logit lens's logit difference after every layer.
static async Task MeasurePromptsAsync(ExperimentContext context, HookedTransformer model, string file, CancellationToken ct)
{
    var cfg = model.Config;
    using var prompts = PromptSet.Load(file, model);
    var (tokens, mask) = (prompts.Clean.Tokens, prompts.Clean.AttentionMask);
    int n = prompts.Count, positions = prompts.Clean.MaxLength;
    var lastPositions = prompts.LastPositions;
    context.ReportProgress("running the model", 0.1);
    Tensor Each(int[] ids) => tensor(ids.Select(i => (long)i).ToArray()).view(n, 1).expand(n, positions).contiguous();   // [prompt, pos]
    var answers = Each(prompts.AnswerIds);
    var wrongs = Each(prompts.WrongIds);
    var last = tensor(lastPositions.Select(p => (long)p).ToArray()).view(n, 1);
    double[] AtLast(Tensor values) => TensorData.ToVector(values.gather(-1, last.to(values.device).expand(values.shape[0], 1)).squeeze(-1));   // [prompt, pos] → [prompt]

    var (logits, cache) = model.RunWithCache(tokens, mask, n => ResidualWrites.CacheFilter(n) || LogitLens.CacheFilter(n));
    IReadOnlyList<ResidualWrite> writes;
    LogitLensResult lensAnswer, lensWrong;
    using (cache)
    {
        var direction = ResidualWrites.UnembedDirections(model, answers).sub(ResidualWrites.UnembedDirections(model, wrongs));   // [prompt, pos, d_model]
        writes = ResidualWrites.Measure(model, cache, direction, mask);
        lensAnswer = LogitLens.Target(model, cache, answers);
        lensWrong = LogitLens.Target(model, cache, wrongs);
    }
    ct.ThrowIfCancellationRequested();

    context.ReportProgress("tables", 0.5);
    var measured = writes.Select(w => (w.Component, Norm: AtLast(w.Norm), Cosine: w.Cosine is null ? null : AtLast(w.Cosine), Projection: AtLast(w.Projection!))).ToArray();
    var writeRows = new ParquetColumns();
    for (int b = 0; b < n; b++)
        foreach (var (component, norm, cosine, projection) in measured)
            foreach (var (metric, values) in new[] { ("norm", norm), ("cosine", cosine), ("projection", projection) })
                if (values is not null)
                    writeRows.Row(("prompt", b), ("layer", component.Layer), ("component", component.Name), ("head", component.Head),
                        ("position", lastPositions[b]), ("metric", metric), ("value", values[b]));
    await context.WriteTableAsync("residual_writes.parquet", writeRows.ToTable(),
        $"each component's write into the residual stream at the last real token (position) of each of the {n} prompts of {Path.GetFileName(file)} " +
        "(prompt = line index among the file's prompts): norm, cosine with the stream it is added to, projection on the unit direction " +
        "unembed(answer) − unembed(wrong) (raw, before the final norm); heads without b_O, attn_out = every head plus b_O", ct);

    // The lens at each prompt's last token, [layer][prompt].
    var layers = lensAnswer.Layers;
    var lensDiff = new double[layers.Count][];
    var lensProbability = new double[layers.Count][];
    var lensRank = new double[layers.Count][];
    for (int l = 0; l < layers.Count; l++)
    {
        using var step = NewDisposeScope();
        lensDiff[l] = AtLast(lensAnswer.Logit[l].sub(lensWrong.Logit[l]));
        lensProbability[l] = AtLast(lensAnswer.Probability[l]);
        lensRank[l] = AtLast(lensAnswer.Rank[l]);
    }
    var lensRows = new ParquetColumns();
    for (int b = 0; b < n; b++)
        for (int l = 0; l < layers.Count; l++)
            foreach (var (metric, values) in new[] { ("logit_diff", lensDiff), ("answer_probability", lensProbability), ("answer_rank", lensRank) })
                lensRows.Row(("prompt", b), ("layer", layers[l].Layer), ("position", lastPositions[b]), ("metric", metric), ("value", values[l][b]));
    await context.WriteTableAsync("logit_lens.parquet", lensRows.ToTable(),
        "logit lens at each prompt's last real token: the stream entering block 'layer' (layer n_layers = the final stream) through the final norm and " +
        "unembedding; logit_diff = logit(answer) − logit(wrong), answer_probability, answer_rank (1 = top)", ct);

    // The identity: at the final stream the lens is the model (the same run's logits at each prompt's last token).
    double[] own;
    using (NewDisposeScope())
    {
        var at = logits.to(ScalarType.Float64).gather(1, last.to(logits.device).view(n, 1, 1).expand(n, 1, logits.shape[2])).squeeze(1);   // [prompt, vocab]
        own = TensorData.ToVector(at.gather(1, answers[.., ..1].to(at.device)).sub(at.gather(1, wrongs[.., ..1].to(at.device))).squeeze(1));
    }
    double lensError = Enumerable.Range(0, n).Max(b => Math.Abs(lensDiff[^1][b] - own[b]));

    context.ReportProgress("figures", 0.8);
    double MeanOf(double[] v) => v.Average();
    var heads = measured.Where(m => m.Component.Kind == ComponentKind.Head).ToArray();
    var topHead = heads.MaxBy(m => MeanOf(m.Projection))!;
    var layerParts = measured.Where(m => m.Component.Kind is ComponentKind.Embed or ComponentKind.PosEmbed or ComponentKind.AttnOut or ComponentKind.MlpOut).ToArray();
    var topPart = layerParts.MaxBy(m => Math.Abs(MeanOf(m.Projection)))!;
    // The parts that add up to the final stream: embeddings, then every layer's attention output and MLP output.
    double streamProjection = Enumerable.Range(0, n).Average(b => layerParts.Sum(m => m.Projection[b]));
    double meanDiff = MeanOf(lensDiff[^1]), before = MeanOf(lensDiff[^2]);
    context.AddNumber("metric_clean", meanDiff, $"mean logit(answer) − logit(wrong) at each prompt's last token over the {n} prompts (the lens at the final stream = the model)");
    context.AddNumber("lens_logit_diff_before_last_layer", before, $"the same read from the stream entering the last block ({layers[^2].Label})");
    context.AddNumber("lens_final_max_abs_difference", lensError, "largest |lens logit difference at the final stream − the model's| over the prompts (the identity; 0 = exact)", "0.0e+0");
    context.AddNumber("final_stream_projection", streamProjection, "mean over the prompts of the final stream's projection on the unit direction unembed(answer) − unembed(wrong): the sum of the embeddings', attention outputs' and MLP outputs' projections");
    context.AddNumber("top_projection_head_layer", topHead.Component.Layer, "layer of the head whose write projects most on unembed(answer) − unembed(wrong) at the last token", "0");
    context.AddNumber("top_projection_head", topHead.Component.Head, "index of that head", "0");
    context.AddNumber("top_projection", MeanOf(topHead.Projection), $"mean projection of head {topHead.Component.Layer}.{topHead.Component.Head}'s write on the unit direction unembed(answer) − unembed(wrong)");

    var perLayer = string.Join(", ", Enumerable.Range(0, layers.Count).Select(l => $"{layers[l].Label} {MeanOf(lensDiff[l]):+0.000;−0.000}"));
    context.AddText($"**Your prompts.** {n} prompts of {Path.GetFileName(file)} ({prompts.Clean.Lengths.Min()}–{positions} tokens, one right-padded batch), measured at each " +
                    $"prompt's last token. **Logit lens:** the mean logit difference logit(answer) − logit(wrong) read after each layer is {perLayer}; at the final stream it is the " +
                    $"model's own (**{meanDiff:0.000}**, largest difference {lensError:0.0e+0}). **Writes:** head **{topHead.Component.Layer}.{topHead.Component.Head}** writes most along " +
                    $"unembed(answer) − unembed(wrong) ({MeanOf(topHead.Projection):+0.000;−0.000}); of the embeddings and whole layers, {topPart.Component.Label} projects most " +
                    $"({MeanOf(topPart.Projection):+0.000;−0.000}, norm {MeanOf(topPart.Norm):0.00}). The projections of the embeddings, attention and MLP outputs add up to the final " +
                    $"stream's ({streamProjection:+0.000;−0.000}); the final norm divides it by the stream's scale before the unembedding, so projections rank writes but are not logits " +
                    "(head_attribution gives the exact direct contributions).");

    var xs = Enumerable.Range(0, layers.Count).Select(l => (double)l).ToArray();
    var plot = Figures.Lines("Logit lens: logit(answer) − logit(wrong) per layer", "stream read (after that many blocks)", "mean logit difference", xs,
        ("mean over prompts", lensDiff.Select(MeanOf).ToArray()));
    plot.Axes.Bottom.SetTicks(xs, layers.Select(l => l.Label).ToArray());
    context.SaveFigure("logit_lens_logit_diff.png", plot,
        "Mean logit(answer) − logit(wrong) at each prompt's last token when the stream after each layer is decoded through the final norm and unembedding (final_post = the model's own).",
        900, 550);
    var map = new double[cfg.NLayers, cfg.NHeads];
    foreach (var h in heads) map[h.Component.Layer, h.Component.Head] = MeanOf(h.Projection);
    context.SaveFigure("write_projection_heads.png", Figures.LayerHead(map, "Head writes along unembed(answer) − unembed(wrong)", "mean projection"),
        "Mean scalar projection of each head's write (layer × head) at the prompt's last token on the unit direction unembed(answer) − unembed(wrong).",
        Math.Max(600, 90 * cfg.NHeads + 200), Math.Max(300, 70 * cfg.NLayers + 150));
    var matrix = new double[layerParts.Length, 1];
    for (int i = 0; i < layerParts.Length; i++) matrix[i, 0] = MeanOf(layerParts[i].Projection);
    context.SaveFigure("write_projection.png",
        Figures.Matrix(matrix, "Projection of each write on unembed(answer) − unembed(wrong)", "last token", "component",
            layerParts.Select(p => p.Component.Label).ToArray(), ["projection"], "mean projection", annotate: true),
        "Mean scalar projection of the embeddings' and every layer's attention and MLP output at the prompt's last token on the unit direction unembed(answer) − unembed(wrong).",
        500, Math.Max(350, 30 * layerParts.Length + 200));
    context.ReportProgress("done", 1.0);
}

static double Mean(Tensor values, int[] positions)
{
    using var scope = NewDisposeScope();
    return values.index_select(-1, tensor(positions.Select(p => (long)p).ToArray(), device: values.device)).mean().item<double>();
}

static void Summarise(ExperimentContext context, ModelConfig cfg, HeadScores scores, IReadOnlyList<ResidualWrite> writes,
    LogitLensResult lens, RepeatedHalves halves, double lensError)
{
    int last = lens.Layers.Count - 1;
    double finalRepeated = Mean(lens.Probability[last], halves.Repeated);
    double beforeRepeated = Mean(lens.Probability[last - 1], halves.Repeated);
    double finalFirst = Mean(lens.Probability[last], halves.First);
    double rankFinal = Mean(lens.Rank[last], halves.Repeated), rankBefore = Mean(lens.Rank[last - 1], halves.Repeated);
    var heads = writes.Where(w => w.Component.Kind == ComponentKind.Head).ToArray();
    var topProjection = heads.MaxBy(w => Mean(w.Projection!, halves.Repeated))!;
    var induction = scores.Best(HeadScoreKind.Induction);
    var inductionWrite = heads.Single(w => w.Component.Layer == induction.Layer && w.Component.Head == induction.Head);

    context.AddNumber("lens_probability_final_repeated", finalRepeated, "logit lens at the final stream: mean probability of the correct token on the repeated half (= the model's)");
    context.AddNumber("lens_probability_before_last_layer_repeated", beforeRepeated, $"the same read from the stream entering the last block ({lens.Layers[last - 1].Label})");
    context.AddNumber("lens_probability_final_first_half", finalFirst, "final probability of the correct token on the first (random) half");
    context.AddNumber("lens_rank_final_repeated", rankFinal, "mean rank (1 = top) of the correct token at the final stream, repeated half");
    context.AddNumber("lens_rank_before_last_layer_repeated", rankBefore, $"the same from {lens.Layers[last - 1].Label}");
    context.AddNumber("lens_final_max_abs_difference", lensError, "largest |lens probability at the final stream − model probability| (the identity; 0 = exact)", "0.0e+0");
    context.AddNumber("top_projection_head_layer", topProjection.Component.Layer, "layer of the head whose write projects most on the correct token's unembedding (repeated half)", "0");
    context.AddNumber("top_projection_head", topProjection.Component.Head, "index of that head", "0");
    context.AddNumber("top_projection", Mean(topProjection.Projection!, halves.Repeated), $"mean projection of head {topProjection.Component.Label}'s write on the unit unembedding direction of the correct token (repeated half)");
    context.AddNumber("induction_head_projection", Mean(inductionWrite.Projection!, halves.Repeated), $"the same for the induction head {induction.Layer}.{induction.Head} (found by behaviour)");
    context.AddText($"**Logit lens.** Read through the final norm and unembedding, the stream entering the last block ({lens.Layers[last - 1].Label}) gives the " +
                    $"correct token of the repeated half a mean probability of {beforeRepeated:0.000} (mean rank {rankBefore:0.0}); the final stream gives " +
                    $"{finalRepeated:0.000} (rank {rankFinal:0.0}), against {finalFirst:0.000} on the random first half. At the final stream the lens equals the " +
                    $"model (largest difference {lensError:0.0e+0}). **Writes.** Head {topProjection.Component.Layer}.{topProjection.Component.Head} writes most along the " +
                    $"correct token's unembedding direction on the repeated half ({Mean(topProjection.Projection!, halves.Repeated):0.00}); the induction head " +
                    $"{induction.Layer}.{induction.Head} (by behaviour) writes {Mean(inductionWrite.Projection!, halves.Repeated):0.00}.");
}

static void DrawFigures(ExperimentContext context, ModelConfig cfg, IReadOnlyList<ResidualWrite> writes, LogitLensResult lens, RepeatedHalves halves)
{
    // Stacked write norms: one bar for the embeddings, one per layer, split into heads and the MLP (repeated half).
    var categories = new[] { "embed" }.Concat(Enumerable.Range(0, cfg.NLayers).Select(l => $"L{l}")).ToArray();
    double NormOf(Func<ResidualComponent, bool> which, int category)
    {
        var w = writes.Where(x => which(x.Component) && (category == 0 ? x.Component.Layer == -1 : x.Component.Layer == category - 1)).ToArray();
        return w.Length == 0 ? 0 : w.Sum(x => Mean(x.Norm, halves.Repeated));
    }
    var series = new List<(string, double[])>
    {
        ("token embedding", categories.Select((_, c) => NormOf(k => k.Kind == ComponentKind.Embed, c)).ToArray()),
        ("position embedding", categories.Select((_, c) => NormOf(k => k.Kind == ComponentKind.PosEmbed, c)).ToArray()),
    };
    for (int h = 0; h < cfg.NHeads; h++)
    {
        int head = h;
        series.Add(($"head {h}", categories.Select((_, c) => NormOf(k => k.Kind == ComponentKind.Head && k.Head == head, c)).ToArray()));
    }
    series.Add(("MLP", categories.Select((_, c) => NormOf(k => k.Kind == ComponentKind.MlpOut, c)).ToArray()));
    context.SaveFigure("write_norms.png",
        Figures.StackedBars("Norm of each component's write (repeated half)", "layer", "mean ‖write‖", categories, series),
        "Mean norm of what each component adds to the residual stream on the repeated half, stacked per layer (heads without b_O; norms of parts, not of their sum).",
        Math.Max(700, 90 * categories.Length + 300), 550);

    // The lens per layer.
    var xs = Enumerable.Range(0, lens.Layers.Count).Select(l => (double)l).ToArray();
    double[] PerLayer(Tensor values, int[] positions) => Enumerable.Range(0, lens.Layers.Count).Select(l => Mean(values[l], positions)).ToArray();
    var labels = lens.Layers.Select(l => l.Label).ToArray();
    foreach (var (name, values, axis) in new[] { ("probability", lens.Probability, "mean probability of the correct token"), ("rank", lens.Rank, "mean rank of the correct token (1 = top)") })
    {
        var plot = Figures.Lines($"Logit lens: {name} of the correct next token per layer", "stream read (after that many blocks)", axis, xs,
            ("repeated half", PerLayer(values, halves.Repeated)), ("first half (random)", PerLayer(values, halves.First)));
        plot.Axes.Bottom.SetTicks(xs, labels);
        context.SaveFigure($"logit_lens_{name}.png", plot,
            $"The correct next token's {name} when the stream after each layer is decoded through the final norm and unembedding (final_post = the model's own).",
            900, 550);
    }
    var heat = TensorData.ToMatrix(lens.Probability.mean([1]));                            // [layer, position]
    context.SaveFigure("logit_lens_heatmap.png",
        Figures.Matrix(heat, "Logit lens: probability of the correct next token", "position (predicts position + 1)", "stream", labels, null, "probability", min: 0, max: 1),
        "Mean probability of the correct next token per stream (rows) and position (columns): the second copy lights up once the induction layer has written.",
        1100, Math.Max(350, 60 * labels.Length + 200));

    // Projections of each head's and MLP's write on the correct token's direction, first vs repeated half.
    var parts = writes.Where(w => w.Component.Kind is ComponentKind.Head or ComponentKind.MlpOut or ComponentKind.Embed or ComponentKind.PosEmbed).ToArray();
    var matrix = new double[parts.Length, 2];
    for (int i = 0; i < parts.Length; i++)
    {
        matrix[i, 0] = Mean(parts[i].Projection!, halves.First);
        matrix[i, 1] = Mean(parts[i].Projection!, halves.Repeated);
    }
    context.SaveFigure("write_projection.png",
        Figures.Matrix(matrix, "Projection of each write on the correct token's unembedding", "half", "component",
            parts.Select(p => p.Component.Label).ToArray(), ["first", "repeated"], "mean projection", annotate: true),
        "Mean scalar projection of each component's write on the unit unembedding direction of the correct next token, on the first and repeated halves.",
        600, Math.Max(400, 28 * parts.Length + 200));
}

/// <summary>Settings of residual_writes (--set key=value).</summary>
sealed record ResidualWritesSettings : RepeatedInputSettings
{
    [Description("Process the weights first (as TransformerLens's from_pretrained), so that the unembedding direction includes the final norm's gain and is centred.")]
    public bool ProcessWeights { get; init; } = true;
    [Description("a prompt set (JSON Lines: prompt, answer, wrong[, corrupted]) to run on instead of repeated random sequences; the writes are then measured at each prompt's last token along unembed(answer) − unembed(wrong)")]
    public string? Prompts { get; init; }
}

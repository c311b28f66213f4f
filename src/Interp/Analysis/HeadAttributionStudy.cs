using Interp.Experiments;
using Interp.Loading;
using Interp.Models;
using Interp.Plots;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// The <c>head_attribution</c> pass: direct logit attribution of the next-token prediction on repeated random
/// sequences [prefix] + r + r, per position and component, for two targets — the correct next token
/// (<c>correct_token</c>) and the difference between it and the current token (<c>logit_diff</c>: predicting the
/// successor rather than repeating the token just read). Table <c>head_attribution.parquet</c>; figures: layer × head
/// heatmaps of the mean attribution on the repeated half, and the components along the positions.
/// </summary>
public static class HeadAttributionStudy
{
    /// <summary>Knobs of the pass.</summary>
    public sealed record Settings
    {
        /// <summary>The repeated random sequences the pass runs on.</summary>
        public RepeatedSequenceSettings Input { get; init; } = new();
        /// <summary>Process the weights first (fold LN, centre writing weights and unembedding, fold value biases), as
        /// TransformerLens's <c>from_pretrained</c> does: the attributed logit is then the centred one.</summary>
        public bool ProcessWeights { get; init; } = true;
    }

    /// <summary>The positions of a repeated sequence: residual positions whose next token is in the first copy, and in the repeated copy.</summary>
    /// <param name="First">Positions prefix … prefix + half − 2: they predict the first copy's r[1 …] (unpredictable).</param>
    /// <param name="Repeated">Positions prefix + half … prefix + 2·half − 2: they read r[i] of the second copy and predict r[i + 1], predictable by induction.</param>
    public sealed record Halves(int[] First, int[] Repeated)
    {
        /// <summary>The halves of <paramref name="input"/>.</summary>
        public static Halves Of(RepeatedTokens input) => new(
            Enumerable.Range(input.Prefix, input.Half - 1).ToArray(),
            Enumerable.Range(input.Prefix + input.Half, input.Half - 1).ToArray());
    }

    /// <summary>Runs the pass on <paramref name="loaded"/>, writing through <paramref name="context"/>.</summary>
    public static async Task RunAsync(ExperimentContext context, LoadedModel loaded, Settings settings, CancellationToken cancellationToken)
    {
        var model = loaded.Model;
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (settings.ProcessWeights)
            ProcessedWeights.Apply(context, model, "the attributed logits are centred over the vocabulary.");

        context.ReportProgress("scoring heads", 0.1);
        var input = settings.Input.Draw(loaded, context.Seed);
        var tokens = input.Tokens;
        var halves = Halves.Of(input);
        var scores = HeadDetection.Score(model, tokens, input.Half, cancellationToken);
        cancellationToken.ThrowIfCancellationRequested();

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
            "component 'logit' is the model's own logit (correct_token) or logit difference correct − current token (logit_diff), the sum of the others", cancellationToken);

        context.ReportProgress("figures", 0.8);
        Summarise(context, cfg, scores, correct, diff, halves, maxError, settings.Input.Batch, input.Half);
        DrawFigures(context, cfg, correct, diff, halves, input);
        context.ReportProgress("done", 1.0);
    }

    /// <summary>Mean attribution of every head over <paramref name="positions"/>, [layer, head].</summary>
    public static double[,] HeadMap(LogitAttribution attribution, ModelConfig cfg, IEnumerable<int> positions)
    {
        var mean = attribution.Mean(positions);
        var map = new double[cfg.NLayers, cfg.NHeads];
        for (int c = 0; c < attribution.Components.Count; c++)
            if (attribution.Components[c] is { Kind: ComponentKind.Head } head) map[head.Layer, head.Head] = mean[c];
        return map;
    }

    private static void Summarise(ExperimentContext context, ModelConfig cfg, HeadScores scores, LogitAttribution correct, LogitAttribution diff,
        Halves halves, double maxError, int batch, int half)
    {
        var induction = scores.Best(HeadScoreKind.Induction);
        var map = HeadMap(correct, cfg, halves.Repeated);
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

    private static void DrawFigures(ExperimentContext context, ModelConfig cfg, LogitAttribution correct, LogitAttribution diff, Halves halves, RepeatedTokens input)
    {
        int width = Math.Max(600, 90 * cfg.NHeads + 200), height = Math.Max(300, 70 * cfg.NLayers + 150);
        context.SaveFigure("head_attribution_repeated.png",
            Figures.LayerHead(HeadMap(correct, cfg, halves.Repeated), "Direct attribution, correct token (repeated half)", "logit"),
            "Mean direct contribution of each head (layer × head) to the correct next token's logit on the repeated half, where an induction head can predict it.",
            width, height);
        context.SaveFigure("head_attribution_first_half.png",
            Figures.LayerHead(HeadMap(correct, cfg, halves.First), "Direct attribution, correct token (first half)", "logit"),
            "The same on the first (random, unpredictable) half, for contrast.", width, height);
        context.SaveFigure("head_attribution_logit_diff.png",
            Figures.LayerHead(HeadMap(diff, cfg, halves.Repeated), "Direct attribution, correct − current (repeated half)", "logit difference"),
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

    private static double Mean(Tensor values, int[] positions)
    {
        using var scope = NewDisposeScope();
        return values.index_select(1, tensor(positions.Select(p => (long)p).ToArray(), device: values.device)).mean().item<double>();
    }
}

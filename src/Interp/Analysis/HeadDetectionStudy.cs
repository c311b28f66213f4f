using Interp.Experiments;
using Interp.Loading;
using Interp.Plots;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// The <c>head_detection</c> experiment: previous-token, duplicate-token and induction scores of every head on repeated
/// random sequences (<see cref="HeadDetection.Score"/>), plus "attend k tokens back" scores for chosen offsets
/// (<see cref="HeadDetection.Detect(Models.HookedTransformer, Tensor, Tensor, DetectionOptions?, CancellationToken)"/>).
/// Table <c>head_scores.parquet</c> (layer, head, score, value) and one layer × head heatmap per score.
/// </summary>
public static class HeadDetectionStudy
{
    /// <summary>Knobs of the study.</summary>
    public sealed record Settings
    {
        /// <summary>The repeated random sequences the pass runs on.</summary>
        public RepeatedSequenceSettings Input { get; init; } = new();
        /// <summary>Offsets k for extra "attend k tokens back" scores (score <c>attend_{k}_back</c>).</summary>
        public IReadOnlyList<int> Offsets { get; init; } = [];
        /// <summary>How the attend-k-back patterns are compared with the heads' attention.</summary>
        public DetectionOptions Detection { get; init; } = new();
    }

    /// <summary>Parses an offsets option such as <c>2,3</c>; a bad entry is a clear error.</summary>
    public static int[] ParseOffsets(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(s => int.TryParse(s, out int k) && k >= 0 ? k : throw new InterpException($"option 'offsets' must be a comma-separated list of integers ≥ 0, got '{text}' ('{s}')"))
        .Distinct().ToArray();

    /// <summary>Runs the study on <paramref name="loaded"/>, writing through <paramref name="context"/>.</summary>
    public static async Task RunAsync(ExperimentContext context, LoadedModel loaded, Settings settings, CancellationToken cancellationToken)
    {
        var model = loaded.Model;
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        context.ReportProgress("scoring heads", 0.1);
        var input = settings.Input.Draw(loaded, context.Seed);
        int positions = (int)input.Tokens.shape[1];
        foreach (int k in settings.Offsets)
            if (k >= positions) throw new InterpException($"offset {k} does not fit sequences of {positions} tokens: an attend-k-back pattern needs k < {positions}");

        var standard = HeadDetection.Score(model, input.Tokens, input.Half, cancellationToken);
        var scores = standard.Values.Select(kv => (Name: HeadScores.Name(kv.Key), kv.Value)).ToList();
        if (settings.Offsets.Count > 0)
        {
            context.ReportProgress("attend-k-back scores", 0.5);
            var back = HeadDetection.Detect(model, input.Tokens, settings.Offsets.Select(k => DetectionPatterns.AttendBack(positions, k)).ToArray(), settings.Detection, cancellationToken);
            scores.AddRange(settings.Offsets.Select((k, i) => ($"attend_{k}_back", back[i])));
        }
        await context.WriteTableAsync("head_scores.parquet", HeadScores.ToTable(scores),
            "score of every head on repeated random sequences: previous_token, duplicate_token, induction (mean attention on the predicted position) and attend_{k}_back " +
            "(TransformerLens's detect_head with the attend-k-back pattern)", cancellationToken);

        context.ReportProgress("figures", 0.8);
        var lines = new List<string>();
        foreach (var (name, values) in scores)
        {
            string title = name.Replace('_', '-');
            context.SaveFigure($"head_scores_{name}.png", Figures.LayerHead(values, $"{title} score per head", "score"),
                $"{title} score of every head (layer × head); 1 = all attention where the pattern says.",
                Math.Max(500, 90 * cfg.NHeads + 200), Math.Max(300, 70 * cfg.NLayers + 150));
            var best = Best(values);
            context.AddNumber($"best_{name}_score", best.Score, $"highest {title} score, head {best.Layer}.{best.Head}");
            lines.Add($"{title}: **{best.Layer}.{best.Head}** ({best.Score:0.00})");
        }
        context.AddText($"**Strongest head per score** ({settings.Input.Batch} sequences of {input.Half} random tokens, ids {input.Low}–{input.High - 1}, repeated once): {string.Join("; ", lines)}.");
        context.ReportProgress("done", 1.0);
    }

    private static (int Layer, int Head, double Score) Best(double[,] v)
    {
        var best = (Layer: -1, Head: -1, Score: double.NegativeInfinity);
        for (int l = 0; l < v.GetLength(0); l++)
            for (int h = 0; h < v.GetLength(1); h++)
                if (v[l, h] > best.Score) best = (l, h, v[l, h]);
        return best;
    }
}

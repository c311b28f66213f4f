#:project ../src/Interp.Run/Interp.Run.csproj
// Head detection on repeated random tokens [BOS] + r + r: previous-token, duplicate-token and induction scores of every
// head, and with --set offsets=2,3 "attend k tokens back" scores (TransformerLens's detect_head with a detection pattern).
// Run: dotnet run experiments/head_detection.cs [-- --model PATH] [--set offsets=2,3] [--set exclude_bos=true] [--set exclude_current_token=true]

using System.ComponentModel;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Loading;
using Interp.Plots;
using static TorchSharp.torch;

return await Experiment.RunAsync<HeadDetectionSettings>(args, new("head_detection", "Score every head: previous-token, duplicate-token, induction, and attend-k-back patterns (--set offsets=2,3)"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    context.ReportProgress("scoring heads", 0.1);
    var input = settings.Input(cfg).Draw(loaded, context.Seed);
    int positions = (int)input.Tokens.shape[1];
    foreach (int k in settings.Offsets)
        if (k < 0 || k >= positions) throw new InterpException($"offset {k} does not fit sequences of {positions} tokens: an attend-k-back pattern needs k < {positions}");

    var standard = HeadDetection.Score(model, input.Tokens, input.Half, ct);
    var scores = standard.Values.Select(kv => (Name: HeadScores.Name(kv.Key), kv.Value)).ToList();
    if (settings.Offsets.Length > 0)
    {
        context.ReportProgress("attend-k-back scores", 0.5);
        var back = HeadDetection.Detect(model, input.Tokens, settings.Offsets.Select(k => DetectionPatterns.AttendBack(positions, k)).ToArray(), new DetectionOptions { ExcludeBos = settings.ExcludeBos, ExcludeCurrentToken = settings.ExcludeCurrentToken }, ct);
        scores.AddRange(settings.Offsets.Select((k, i) => ($"attend_{k}_back", back[i])));
    }
    await context.WriteTableAsync("head_scores.parquet", HeadScores.ToTable(scores),
        "score of every head on repeated random sequences: previous_token, duplicate_token, induction (mean attention on the predicted position) and attend_{k}_back " +
        "(TransformerLens's detect_head with the attend-k-back pattern)", ct);

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
    context.AddText($"**Strongest head per score** ({settings.Batch} sequences of {input.Half} random tokens, ids {input.Low}–{input.High - 1}, repeated once): {string.Join("; ", lines)}.");
    context.ReportProgress("done", 1.0);
});

static (int Layer, int Head, double Score) Best(double[,] v)
{
    var best = (Layer: -1, Head: -1, Score: double.NegativeInfinity);
    for (int l = 0; l < v.GetLength(0); l++)
        for (int h = 0; h < v.GetLength(1); h++)
            if (v[l, h] > best.Score) best = (l, h, v[l, h]);
    return best;
}

/// <summary>Settings of head_detection (--set key=value).</summary>
sealed record HeadDetectionSettings : RepeatedInputSettings
{
    [Description("Offsets k for extra \"attend k tokens back\" scores (score attend_{k}_back).")]
    public int[] Offsets { get; init; } = [];
    [Description("attend-k-back scores leave out attention on the first (BOS) position")]
    public bool ExcludeBos { get; init; }
    [Description("attend-k-back scores leave out attention on the current token")]
    public bool ExcludeCurrentToken { get; init; }
}

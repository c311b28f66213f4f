#:project ../src/Interp.Run/Interp.Run.csproj
// Head detection on repeated random tokens [BOS] + r + r: previous-token, duplicate-token and induction scores of every
// head, and with --set offsets=2,3 "attend k tokens back" scores (TransformerLens's detect_head with a detection pattern).
// With --prompts FILE the heads are scored on your prompts (one right-padded batch, padded queries unscored): previous-token,
// and duplicate-token and induction patterns built from each prompt's own tokens; each score is the mean over the prompts
// of the score of each prompt alone.
// Run: dotnet run experiments/head_detection.cs [-- --model PATH] [--prompts experiments/prompts/stories_names.jsonl]
//      [--set offsets=2,3] [--set exclude_bos=true] [--set exclude_current_token=true]

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

return await Experiment.RunAsync<HeadDetectionSettings>(args, new("head_detection", "Score every head: previous-token, duplicate-token, induction, and attend-k-back patterns (--set offsets=2,3)"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    if (settings.Prompts is { } file)
    {
        await DetectOnPromptsAsync(context, model, settings, file, ct);
        return;
    }
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
    var lines = ReportScores(context, cfg, scores);
    await AddScoreViewAsync(context, ct);
    var best = standard.Best(HeadScoreKind.Induction, Math.Min(1, cfg.NLayers - 1));
    await AttentionExplorer.AddAsync(context, model, input.Tokens[..Math.Min(4, settings.Batch)], loaded.Tokenizer, best.Layer, best.Head,
        $"Every head on the first repeated sequences; head {best.Layer}.{best.Head} (the strongest induction head past layer 0) is selected. Hover a token to see what it attends to.", ct);
    context.AddText($"**Strongest head per score** ({settings.Batch} sequences of {input.Half} random tokens, ids {input.Low}–{input.High - 1}, repeated once): {string.Join("; ", lines)}.");
    context.ReportProgress("done", 1.0);
});

// The researcher's prompts, one right-padded batch: every pattern is scored on real query positions only, per prompt
// (Σ attention where the pattern marks ÷ Σ attention of the rows it marks a key in), then averaged over the prompts.
static async Task DetectOnPromptsAsync(ExperimentContext context, HookedTransformer model, HeadDetectionSettings settings, string file, CancellationToken ct)
{
    var cfg = model.Config;
    using var prompts = PromptSet.Load(file, model);
    var (tokens, mask) = (prompts.Clean.Tokens, prompts.Clean.AttentionMask);
    int positions = prompts.Clean.MaxLength;
    foreach (int k in settings.Offsets)
        if (k < 0 || k >= positions)
            throw new InterpException($"setting 'offsets': offset {k} does not fit the prompts of {file}, the longest of which has {positions} tokens: an attend-k-back pattern needs 0 ≤ k < {positions}");

    context.ReportProgress("scoring heads", 0.1);
    var real = mask.to(ScalarType.Float32);
    var pairs = real.unsqueeze(2).mul(real.unsqueeze(1));                               // [prompt, q, k]: both real
    var candidates = new (string Name, Tensor Pattern)[]
    {
        ("previous_token", DetectionPatterns.PreviousToken(positions)),
        ("duplicate_token", DetectionPatterns.DuplicateToken(tokens).mul(pairs)),      // earlier positions holding the query's token
        ("induction", DetectionPatterns.Induction(tokens).mul(pairs)),                 // the positions after them
    };
    var skipped = candidates.Where(c => !c.Pattern.ne(Scalars.Zero).any().item<bool>()).Select(c => c.Name).ToArray();
    var standard = candidates.Where(c => !skipped.Contains(c.Name)).ToArray();
    var found = HeadDetection.Detect(model, tokens, standard.Select(c => c.Pattern).ToArray(), mask, cancellationToken: ct);
    var scores = standard.Select((c, i) => (c.Name, found[i])).ToList();
    if (settings.Offsets.Length > 0)
    {
        context.ReportProgress("attend-k-back scores", 0.5);
        var back = HeadDetection.Detect(model, tokens, settings.Offsets.Select(k => DetectionPatterns.AttendBack(positions, k)).ToArray(), mask,
            new DetectionOptions { ExcludeBos = settings.ExcludeBos, ExcludeCurrentToken = settings.ExcludeCurrentToken }, ct);
        scores.AddRange(settings.Offsets.Select((k, i) => ($"attend_{k}_back", back[i])));
    }
    await context.WriteTableAsync("head_scores.parquet", HeadScores.ToTable(scores),
        $"score of every head on the {prompts.Count} prompts of {Path.GetFileName(file)} (one right-padded batch; padded query positions are not scored): " +
        "previous_token (attention on q − 1), duplicate_token (on earlier positions holding the query's token), induction (on the positions after them), " +
        "attend_{k}_back; per prompt Σ attention where the pattern marks ÷ Σ attention of the query rows it marks a key in, then the mean over the prompts " +
        "(a prompt with no such row is left out)", ct);

    context.ReportProgress("figures", 0.8);
    var lines = ReportScores(context, cfg, scores);
    await AddScoreViewAsync(context, ct);
    string missing = skipped.Length == 0 ? "" : $" No prompt repeats a token, so there is no {string.Join(" or ", skipped.Select(s => s.Replace('_', '-')))} score.";
    context.AddText($"**Strongest head per score** on {prompts.Count} prompts of {Path.GetFileName(file)} ({prompts.Clean.Lengths.Min()}–{positions} tokens, " +
                    $"scored at real positions only; the mean over the prompts of each prompt's score): {string.Join("; ", lines)}.{missing}");
    context.ReportProgress("done", 1.0);
}

static Task AddScoreViewAsync(ExperimentContext context, CancellationToken ct) =>
    context.AddViewAsync(new HeatmapView("Head scores", "Each head's score (layer × head); choose the score.", "head_scores.parquet", [Columns.Layer], [Columns.Head], Facet: Columns.Score), ct);

// A heatmap and a key number per score; returns the report's phrase for each ("title: **l.h** (score)").
static List<string> ReportScores(ExperimentContext context, ModelConfig cfg, IEnumerable<(string Name, double[,] Values)> scores)
{
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
    return lines;
}

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
    [Description("a prompt set (JSON Lines: prompt, answer, wrong[, corrupted]) to score the heads on instead of repeated random sequences (duplicate-token and induction patterns from each prompt's own tokens)")]
    public string? Prompts { get; init; }
}

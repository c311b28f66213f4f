using System.Globalization;
using System.Text.RegularExpressions;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Tests.Experiments;
using Interp.Tests.Support;
using static TorchSharp.torch;
using static Interp.Tests.Support.Browser;

namespace Interp.Tests.Reports;

/// <summary>The main job, run once for the browser tests of its report.</summary>
public sealed class MainJobRun : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    public string Dir => _dir.Path;
    public string Page => Path.Combine(Dir, "report.html");
    public RunManifest Manifest { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (Browser.Unavailable.Value is not null) return;   // every test here is skipped
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(Dir, "run", "induction_heads");
        Assert.True(code == 0, err);
        Manifest = manifest;
    }

    public Task DisposeAsync() { _dir.Dispose(); return Task.CompletedTask; }
}

/// <summary>
/// The main job's report.html opened in headless Chromium: it loads offline from one file, its views show the numbers of
/// the run's Parquet tables (read here by ParquetSharp) and of a fresh forward pass, and each view draws something.
/// </summary>
public sealed class MainJobReportTests(MainJobRun run) : IClassFixture<MainJobRun>
{
    private const string Attention = "[data-interp-view=attention]";
    private const string Tokens = "[data-interp-view=tokens]";
    private const string HeadScores = "[data-interp-view=heatmap][data-interp-tables~='head_scores.parquet']";
    private const string Ablation = "[data-interp-view=heatmap][data-interp-tables~='head_ablation.parquet']";

    [BrowserFact]
    public async Task Report_opens_offline_from_one_file_and_every_view_draws_something()
    {
        var record = new TestRecord("main-job-views");
        long size = new FileInfo(run.Page).Length;
        Assert.True(size < 1_000_000, $"report.html is {size:N0} bytes; the main job's bound is 1 MB");
        var views = new[] { ("attention", Attention), ("tokens", Tokens), ("heatmap-head-scores", HeadScores), ("heatmap-ablation", Ablation) };
        var shots = views.Select(v => Path.Combine(Artifacts, $"main-job-{v.Item1}.png")).ToArray();
        // Token 20 of the second copy hovered: the attention screenshot shows its row and column (the README's picture).
        var result = await ProbeAsync(run.Page, [Read("[data-interp-view]"), Hover($"{Attention} [data-interp-strip=attends-to] [data-pos='20']"),
            .. views.Select((v, i) => Screenshot(v.Item2, shots[i]))]);
        result.AssertNoErrors();
        Assert.Equal(["heatmap", "attention", "heatmap", "tokens"], result.Elements(0).Select(e => e.Data["interpView"]));
        var variances = shots.Select(PixelVariance).ToArray();
        for (int i = 0; i < shots.Length; i++)
            Assert.True(variances[i] > 100, $"{shots[i]}: grey-level variance {variances[i]:F1}, a blank view");
        record.Pass($"report.html {size / 1024.0:F0} KiB, no console error, no request; screenshots {string.Join(", ", shots.Select(Path.GetFileName))} " +
                    $"(grey variance {string.Join(", ", variances.Select(v => v.ToString("F0", CultureInfo.InvariantCulture)))})");
    }

    [BrowserFact]
    public async Task Hovering_a_token_of_the_induction_head_shows_the_weights_of_the_table_and_of_the_cache()
    {
        var record = new TestRecord("main-job-attention-hover");
        int layer = (int)Number("induction_head_layer"), head = (int)Number("induction_head");
        var t = ParquetRead.Columns(Path.Combine(run.Dir, "attention_patterns.parquet"));
        var tokens = ParquetRead.Columns(Path.Combine(run.Dir, "tokens.parquet"));
        int n = tokens["sequence"].Count(s => (int)s == 0), half = (n - 1) / 2;   // [BOS] r r
        var weight = new Dictionary<(int Q, int K), float>();
        for (int i = 0; i < t["weight"].Length; i++)
            if ((int)t["sequence"][i] == 0 && (int)t["layer"][i] == layer && (int)t["head"][i] == head)
                weight[((int)t["query"][i], (int)t["key"][i])] = (float)t["weight"][i];

        // The cache of a fresh pass over the same tokens (sequence 0, from tokens.parquet).
        using var loaded = BuiltInModel.Load();
        var ids = Enumerable.Range(0, tokens["sequence"].Length).Where(i => (int)tokens["sequence"][i] == 0)
            .OrderBy(i => (int)tokens["position"][i]).Select(i => (long)(int)tokens["token_id"][i]).ToArray();
        using var input = tensor(ids).unsqueeze(0);
        var (_, cache) = loaded.Model.RunWithCache(input, name => name == HookNames.Pattern(layer));
        double[,] pattern;
        using (cache) pattern = Interp.Plots.TensorData.ToMatrix(cache[HookNames.Pattern(layer)][0, head]);

        // Hover every token of the second copy and read what the strip shows it attends to.
        int[] queries = Enumerable.Range(1 + half, half).ToArray();
        var steps = queries.SelectMany(q => new[]
        {
            Hover($"{Attention} [data-interp-strip=attends-to] [data-pos='{q}']"),
            Read($"{Attention} [data-interp-strip=attends-to] [data-pos]"),
            Read("[data-interp-tooltip]"),
        }).ToArray();
        var result = await ProbeAsync(run.Page, steps);
        result.AssertNoErrors();
        int stripe = 0;
        for (int j = 0; j < queries.Length; j++)
        {
            int q = queries[j];
            var strip = result.Elements(3 * j + 1);
            Assert.Equal(n, strip.Length);
            for (int k = 0; k <= q; k++)
            {
                float shown = float.Parse(strip[k].Data["value"], CultureInfo.InvariantCulture);
                Assert.Equal(weight[(q, k)], shown);                                  // the table's float, exactly
                Assert.True(Math.Abs(shown - pattern[q, k]) < 1e-6, $"query {q}, key {k}: view {shown}, cache {pattern[q, k]}");
            }
            // The tooltip names the most-attended key with its weight to 3 decimals.
            int best = Enumerable.Range(0, q + 1).MaxBy(k => weight[(q, k)]);
            var tip = Regex.Match(result.Elements(3 * j + 2)[0].Text, @"attends to: (\d+):\S* ([0-9.]+)");
            Assert.True(tip.Success, result.Elements(3 * j + 2)[0].Text);
            Assert.Equal(best, int.Parse(tip.Groups[1].Value, CultureInfo.InvariantCulture));
            Assert.Equal(weight[(q, best)].ToString("0.000", CultureInfo.InvariantCulture), tip.Groups[2].Value);
            if (best == q - half + 1) stripe++;                                        // the token after the earlier occurrence
        }
        Assert.True(stripe >= queries.Length - 1, $"head {layer}.{head} attends to the induction target at {stripe} of {queries.Length} positions");
        record.Pass($"head {layer}.{head}: {queries.Length} hovered tokens show the table's weights (= the cache's to 1e-6); the stripe at {stripe} of {queries.Length}");
    }

    [BrowserFact]
    public async Task Switching_the_token_quantity_recolours_the_tokens_with_the_tables_values()
    {
        var record = new TestRecord("main-job-token-quantity");
        var t = ParquetRead.Columns(Path.Combine(run.Dir, "token_loss.parquet"));
        string ablated = $"loss without {(int)Number("induction_head_layer")}.{(int)Number("induction_head")}";
        float Value(string quantity, int position) => Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["quantity"][i] == quantity && (int)t["sequence"][i] == 0 && (int)t["position"][i] == position)
            .Select(i => (float)t["value"][i]).Single();
        var spans = $"{Tokens} [data-pos]";
        var result = await ProbeAsync(run.Page, Read(spans), Select($"{Tokens} select[data-interp-control=quantity]", ablated), Read(spans),
            Hover($"{Tokens} [data-pos='20']"), Read("[data-interp-tooltip]"));
        result.AssertNoErrors();
        var (before, after) = (result.Elements(0), result.Elements(2));
        int changed = before.Zip(after).Count(p => p.First.Background != p.Second.Background);
        Assert.True(changed >= before.Length / 2, $"{changed} of {before.Length} tokens changed colour");
        for (int p = 1; p < after.Length; p++)
        {
            Assert.Equal(Value("loss", p), float.Parse(before[p].Data["value"], CultureInfo.InvariantCulture));
            Assert.Equal(Value(ablated, p), float.Parse(after[p].Data["value"], CultureInfo.InvariantCulture));
        }
        Assert.False(before[0].Data.ContainsKey("value"));                              // nothing predicts the first token
        Assert.Contains($"{ablated} = {Value(ablated, 20).ToString("0.000", CultureInfo.InvariantCulture)}", result.Elements(4)[0].Text);
        record.Pass($"'loss' → '{ablated}' recoloured {changed} of {before.Length} tokens; values equal token_loss.parquet");
    }

    [BrowserFact]
    public async Task Heatmap_cells_show_the_tables_values_for_each_facet()
    {
        var record = new TestRecord("main-job-heatmap-hover");
        var t = ParquetRead.Columns(Path.Combine(run.Dir, "head_scores.parquet"));
        int layer = (int)Number("induction_head_layer"), head = (int)Number("induction_head");
        float Score(string score) => Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["score"][i] == score && (int)t["layer"][i] == layer && (int)t["head"][i] == head).Select(i => (float)t["value"][i]).Single();
        string cell = $"{HeadScores} td[data-row='{layer}'][data-col='{head}']";
        var result = await ProbeAsync(run.Page, Select($"{HeadScores} select[data-interp-control=facet]", "induction"), Hover(cell), Read("[data-interp-tooltip]"), Read(cell));
        result.AssertNoErrors();
        Assert.Equal(Score("induction"), float.Parse(result.Elements(3)[0].Data["value"], CultureInfo.InvariantCulture));
        Assert.Contains($"layer {layer}, head {head}: {Score("induction").ToString("0.000", CultureInfo.InvariantCulture)}", result.Elements(2)[0].Text);
        Assert.Equal(Number("induction_score").ToString("0.000", CultureInfo.InvariantCulture), Score("induction").ToString("0.000", CultureInfo.InvariantCulture));
        record.Pass($"head {layer}.{head}'s induction cell shows {Score("induction"):0.000}, as head_scores.parquet and the key number");
    }

    private double Number(string name) => run.Manifest.KeyNumbers.Single(k => k.Name == name).Value;
}

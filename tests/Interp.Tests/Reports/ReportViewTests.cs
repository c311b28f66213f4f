using System.Text.Json;
using System.Text.RegularExpressions;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Results;
using Interp.Tests.Experiments;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Reports;

/// <summary>
/// The report's views without a browser: the tables they read (exact identities with the cache and the lens), the data
/// they put into report.html (bounded, escaped, nothing fetched), and the errors that name the table or column at fault.
/// </summary>
public sealed class ReportViewTests
{
    private static async Task<RunManifest> Run(string dir, Func<ExperimentContext, CancellationToken, Task> body)
    {
        await new ExperimentRunner().RunAsync(new Scripted(body), new ExperimentRunOptions { OutputDirectory = dir });
        return RunManifest.Load(dir);
    }

    // The JSON parts of report.html, by section index and part name.
    private static Dictionary<(int, string), JsonElement> Parts(string html) =>
        Regex.Matches(html, "<section [^>]*id=\"view-(\\d+)\"[^>]*>(.*?)</section>", RegexOptions.Singleline)
            .SelectMany(s => Regex.Matches(s.Groups[2].Value, "<script type=\"application/json\" data-interp-part=\"(\\w+)\">(.*?)</script>", RegexOptions.Singleline)
                .Select(p => (Key: (int.Parse(s.Groups[1].Value), p.Groups[1].Value), Value: JsonDocument.Parse(p.Groups[2].Value).RootElement.Clone())))
            .ToDictionary(x => x.Key, x => x.Value);

    [Fact]
    public async Task Attention_table_holds_every_causal_entry_of_the_cache_and_the_token_table_every_token()
    {
        using var scope = NewDisposeScope();
        var model = TestModels.Random(TestModels.Gpt2Like);
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 6);
        var (_, cache) = model.RunWithCache(tokens, n => HookNames.Is(n, HookNames.Pattern));
        using (cache)
        {
            var patterns = Enumerable.Range(0, model.Config.NLayers).Select(l => cache[HookNames.Pattern(l)]).ToArray();
            var table = AttentionTable.From(patterns);
            Assert.Equal(2L * model.Config.NLayers * model.Config.NHeads * 6 * 7 / 2, table.RowCount);
            using var tmp = new TempDir();
            await table.WriteAsync(tmp.File("a.parquet"));
            var t = ParquetRead.Columns(tmp.File("a.parquet"));
            for (int i = 0; i < t["weight"].Length; i++)
            {
                int b = (int)t["sequence"][i], l = (int)t["layer"][i], h = (int)t["head"][i], q = (int)t["query"][i], k = (int)t["key"][i];
                Assert.True(k <= q);
                Assert.Equal(patterns[l][b, h, q, k].item<float>(), (float)t["weight"][i]);
            }
        }
        var ids = TokenTable.From(tokens, null);
        Assert.Equal(12, ids.RowCount);
        Assert.Throws<InterpException>(() => TokenTable.From(tokens[0], null));
        Assert.Throws<InterpException>(() => AttentionTable.From([zeros(2, 3, 4, 5)]));   // not [batch, head, pos, pos]
    }

    [Fact]
    public void Logit_lens_top_at_the_final_stream_is_the_models_own_top_k()
    {
        using var scope = NewDisposeScope();
        var model = TestModels.Random(TestModels.LlamaLike);
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 5);
        var (logits, cache) = model.RunWithCache(tokens, LogitLens.CacheFilter);
        using (cache)
        {
            var top = LogitLens.Top(model, cache, 4);
            Assert.Equal([model.Config.NLayers + 1, 2, 5, 4], top.Ids.shape);
            var (p, ids) = logits.to(ScalarType.Float64).softmax(-1).topk(4, -1);
            Assert.True(top.Ids[-1].eq(ids).all().item<bool>(), "the lens's last entry is the model's top 4");
            Assert.True((top.Probability[-1] - p).abs().max().item<double>() < 1e-9);
            Assert.True((top.Probability[.., .., .., ..^1] >= top.Probability[.., .., .., 1..]).all().item<bool>(), "largest first");
            var table = LogitLensTopTable.From(top, null);
            Assert.Equal((model.Config.NLayers + 1) * 2 * 5 * 4, table.RowCount);
            Assert.Throws<InterpException>(() => LogitLens.Top(model, cache, 0));
        }
    }

    [Fact]
    public void Token_values_refuse_a_value_that_is_not_a_number_by_quantity_and_position()
    {
        var e = Assert.Throws<InterpException>(() => new TokenValuesTable.Builder().Add("loss", 3, [1.0, double.NaN], firstPosition: 1));
        Assert.Contains("'loss' is NaN at sequence 3, position 2", e.Message);
    }

    [Fact]
    public async Task A_view_of_a_table_the_run_has_not_written_fails_the_run_naming_both()
    {
        using var tmp = new TempDir();
        var manifest = await Run(tmp.Path, (ctx, ct) => ctx.AddViewAsync(new HeatmapView("Scores", "c", "scores.parquet", ["layer"], ["head"]), ct));
        Assert.Equal(RunStatus.Failed, manifest.Status);
        Assert.Contains("the heatmap view 'Scores' reads scores.parquet, which this run has not written", manifest.Error);
    }

    [Fact]
    public async Task A_heatmap_names_the_missing_column_and_the_rows_it_cannot_tell_apart()
    {
        using var tmp = new TempDir();
        // A fresh table per run: writing one appends its run_id column.
        static ParquetTable Table() => new ParquetTable().Add("layer", new[] { 0, 0, 1 }).Add("head", new[] { 0, 0, 1 }).Add("metric", new[] { "a", "b", "a" }).Add("value", new[] { 1f, 2f, 3f });
        var manifest = await Run(tmp.File("missing"), async (ctx, ct) =>
        {
            await ctx.WriteTableAsync("t.parquet", Table(), "t", ct);
            await ctx.AddViewAsync(new HeatmapView("H", "c", "t.parquet", ["layer"], ["position"]), ct);
        });
        Assert.Contains("t.parquet has no column 'position' (it has: layer, head, metric, value, run_id)", manifest.Error);
        manifest = await Run(tmp.File("duplicate"), async (ctx, ct) =>
        {
            await ctx.WriteTableAsync("t.parquet", Table(), "t", ct);
            await ctx.AddViewAsync(new HeatmapView("H", "c", "t.parquet", ["layer"], ["head"]), ct);
        });
        Assert.Contains("heatmap 'H': t.parquet has several rows for layer 0, head 0: name a Facet or a Where filter", manifest.Error);
        // With the facet (or a filter) it is a view; its cells are the table's values.
        manifest = await Run(tmp.File("facet"), async (ctx, ct) =>
        {
            await ctx.WriteTableAsync("t.parquet", Table(), "t", ct);
            await ctx.AddViewAsync(new HeatmapView("H", "c", "t.parquet", ["layer"], ["head"], Facet: "metric"), ct);
            await ctx.AddViewAsync(new HeatmapView("H", "c", "t.parquet", ["layer"], ["head"]) { Where = new Dictionary<string, string> { ["metric"] = "b" } }, ct);
        });
        Assert.Equal(RunStatus.Completed, manifest.Status);
        var parts = Parts(File.ReadAllText(tmp.File("facet/report.html")));
        var faceted = parts[(0, "data")].GetProperty("facets");
        Assert.Equal(["a", "b"], faceted.EnumerateArray().Select(f => f.GetProperty("name").GetString()));
        Assert.Equal(3f, faceted[0].GetProperty("values")[1][1].GetSingle());
        Assert.Equal(JsonValueKind.Null, faceted[1].GetProperty("values")[1][1].ValueKind);   // no row: no value
        Assert.Equal(2f, parts[(1, "data")].GetProperty("facets")[0].GetProperty("values")[0][0].GetSingle());
    }

    [Fact]
    public async Task Views_above_their_bound_show_a_part_and_say_what_was_left_out()
    {
        using var tmp = new TempDir();
        using var scope = NewDisposeScope();
        var model = TestModels.Random(TestModels.Gpt2Like);
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, 20);
        var manifest = await Run(tmp.Path, async (ctx, ct) =>
        {
            await AttentionExplorer.AddAsync(ctx, model, tokens, null, 0, 1, "c", ct);
            // Room for one sequence of 10 positions: the first sequence, cut.
            long weights = (long)model.Config.NLayers * model.Config.NHeads * 10 * 11 / 2;
            await ctx.AddViewAsync(new AttentionView("Cut", "c", "attention_patterns.parquet", "tokens.parquet"), new ReportViewLimits { AttentionWeights = weights }, ct);
            var values = new TokenValuesTable.Builder();
            for (int b = 0; b < 3; b++) values.Add("x", b, Enumerable.Range(0, 20).Select(p => (double)p).ToArray());
            await ctx.WriteTableAsync("values.parquet", values.ToTable(), "v", ct);
            await ctx.AddViewAsync(new TokenValuesView("V", "c", "values.parquet", "tokens.parquet"), new ReportViewLimits { TokenValues = 45 }, ct);
        });
        Assert.Equal(RunStatus.Completed, manifest.Status);
        string html = File.ReadAllText(tmp.File("report.html"));
        var parts = Parts(html);
        Assert.Equal(3, parts[(0, "meta")].GetProperty("sequences").GetArrayLength());             // the default bound holds it all
        Assert.Equal(10, parts[(1, "s0")].GetProperty("tokens").GetArrayLength());
        Assert.False(parts.ContainsKey((1, "s1")));
        Assert.Contains("Sequence 0 is shown for its first 10 of 20 positions", html);
        Assert.Contains("1 of 3 sequences are shown", html);
        Assert.Equal(2, parts[(2, "meta")].GetProperty("sequences").GetArrayLength());             // 2 × 20 ≤ 45 < 3 × 20
        Assert.Contains("2 of 3 sequences are shown (bound: 45 token values per view); values.parquet holds all of them.", html);
        // The attention weights are the table's floats (base64 float32), row by row.
        var w = Convert.FromBase64String(parts[(1, "s0")].GetProperty("w")[1].GetString()!);
        var t = ParquetRead.Columns(tmp.File("attention_patterns.parquet"));
        int row = Enumerable.Range(0, t["weight"].Length).First(i => (int)t["sequence"][i] == 0 && (int)t["layer"][i] == 0 && (int)t["head"][i] == 1 && (int)t["query"][i] == 3 && (int)t["key"][i] == 2);
        Assert.Equal((float)t["weight"][row], BitConverter.ToSingle(w, 4 * (3 * 4 / 2 + 2)));
    }

    [Fact]
    public async Task Report_html_needs_nothing_but_itself_and_keeps_token_text_inert()
    {
        using var tmp = new TempDir();
        string nasty = "</script><script>alert(1)</script>&<b>";
        var manifest = await Run(tmp.Path, async (ctx, ct) =>
        {
            var tokens = new ParquetTable().Add("sequence", new[] { 0, 0 }).Add("position", new[] { 0, 1 }).Add("token_id", new[] { 5, 6 }).Add("token", new[] { nasty, "b" });
            await ctx.WriteTableAsync("tokens.parquet", tokens, "t", ct);
            var values = new TokenValuesTable.Builder().Add("x", 0, [1.0, 2.0]);
            await ctx.WriteTableAsync("values.parquet", values.ToTable(), "v", ct);
            await ctx.AddViewAsync(new TokenValuesView("V", "c", "values.parquet", "tokens.parquet"), ct);
            ctx.SaveFigure("f.png", new ScottPlot.Plot(), "a figure");
        });
        Assert.Equal(RunStatus.Completed, manifest.Status);
        string html = File.ReadAllText(tmp.File("report.html"));
        Assert.DoesNotContain("<script>alert", html);
        Assert.Equal(nasty, Parts(html)[(0, "s0")].GetProperty("tokens")[0].GetString());
        // Every src is inline; no link leaves the page.
        Assert.All(Regex.Matches(html, "(src|href)=\"([^\"]*)\"").Select(m => m.Groups[2].Value), v => Assert.StartsWith("data:", v));
        Assert.Contains("data:image/png;base64,", html);
        Assert.Contains("section class=\"interp-view\" id=\"view-0\" data-interp-view=\"tokens\"", html);
        Assert.Contains("*Interactive in report.html — V:* c", File.ReadAllText(tmp.File("report.md")));
    }
}

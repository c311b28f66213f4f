using System.Globalization;
using Interp.Tests.Experiments;
using Interp.Tests.Support;

namespace Interp.Tests.Reports;

/// <summary>
/// One run of each analysis experiment on the built-in model (small settings), its report.html opened in headless
/// Chromium: no console error, no request, every view's numbers equal its table's, no view blank.
/// </summary>
public sealed class AnalysisReportTests
{
    /// <summary>The bound on any run's report.html: each view's data is bounded (<c>ReportViewLimits</c>, ~4.5 MB), plus the PNGs.</summary>
    internal const long SizeBound = 8_000_000;

    // "--model NAME" names a model of ../shared/models (stories260K: its .bin); every other entry is a --set key=value.
    internal static IEnumerable<string> Arguments(string[] settings)
    {
        for (int i = 0; i < settings.Length; i++)
            if (settings[i] == "--model") { yield return "--model"; yield return settings[++i] == "stories260K" ? TestModels.StoriesBin : SharedData.Model(settings[i]); }
            else { yield return "--set"; yield return settings[i]; }
    }

    [Fact]
    public async Task A_1024_token_run_of_stories260K_keeps_its_report_within_the_bound_and_says_what_it_left_out()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, ["run", "head_detection", .. Arguments(["--model", "stories260K", "batch=4", "half=128"])]);
        Assert.True(code == 0, err);
        Assert.Equal(4 * 257, ParquetRead.Columns(Path.Combine(tmp.Path, "tokens.parquet"))["token"].Length);
        Assert.Equal(4L * 5 * 8 * 257 * 258 / 2, manifest.Artifacts.Single(a => a.File == "attention_patterns.parquet").Rows);   // the table keeps every weight
        string html = File.ReadAllText(Path.Combine(tmp.Path, "report.html"));
        Assert.True(html.Length < SizeBound, $"report.html is {html.Length:N0} bytes, above the bound of {SizeBound:N0}");
        Assert.Matches(@"Sequence 0 is shown for its first \d+ of 257 positions \(bound: 800,000 attention weights per view\); attention_patterns.parquet holds all of them.", html);
        Assert.Contains("1 of 4 sequences are shown", html);
        // Printed by .ci/run with the browser tests (a line that is not "passed:"/"failed:" is not counted).
        File.WriteAllText(Path.Combine(Browser.Artifacts, "size-stories260K.txt"),
            $"size: head_detection on stories260K over 1,028 tokens: report.html {html.Length:N0} bytes (bound {SizeBound:N0}){Environment.NewLine}");
    }

    [BrowserTheory]
    [InlineData("head_detection", new[] { "batch=8" }, new[] { "heatmap", "attention" })]
    [InlineData("ablation", new[] { "batch=8" }, new[] { "heatmap" })]
    [InlineData("activation_patching", new[] { "batch=8", "per_position=true" }, new[] { "heatmap", "heatmap" })]
    [InlineData("attribution_patching", new[] { "batch=8" }, new[] { "heatmap" })]
    [InlineData("head_attribution", new[] { "batch=8" }, new[] { "heatmap", "tokens" })]
    [InlineData("pattern_vs_message", new[] { "batch=8", "baseline_samples=20" }, new[] { "heatmap" })]
    [InlineData("residual_writes", new[] { "batch=8" }, new[] { "tokens", "logit-lens", "heatmap" })]
    [InlineData("circuit_discovery", new[] { "batch=4", "half=8", "steps=3" }, new[] { "heatmap", "tokens" })]
    [InlineData("lstm_analogy", new[] { "batch=8", "lstm_steps=50", "probe_batch=32" }, new[] { "tokens", "heatmap" })]
    [InlineData("head_detection", new[] { "--model", "stories260K", "batch=4", "half=128" }, new[] { "heatmap", "attention" })]   // 1,028 tokens: the views cut, and say so
    [InlineData("encoder_context", new[] { "--model", "all-MiniLM-L6-v2" }, new[] { "attention" })]   // bidirectional: every entry
    [InlineData("sae_features", new[] { "training_tokens=65536", "sequences=12", "context_size=64", "top_features=6" }, new[] { "tokens", "feature" })]
    public async Task The_report_of_each_analysis_shows_its_tables_in_the_browser(string experiment, string[] settings, string[] kinds)
    {
        string name = $"report-{experiment}" + (experiment != "encoder_context" && settings.Contains("--model") ? "-" + settings[Array.IndexOf(settings, "--model") + 1] : "");
        var record = new Browser.TestRecord(name);
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, ["run", experiment, .. Arguments(settings)]);
        Assert.True(code == 0, err);
        Assert.Equal(Interp.Experiments.RunStatus.Completed, manifest.Status);
        var result = await ReportViewChecks.AssertViewsMatchTablesAsync(tmp.Path, name);
        Assert.Equal(kinds, result.Kinds);
        long size = new FileInfo(Path.Combine(tmp.Path, "report.html")).Length;
        Assert.True(size < SizeBound, $"report.html is {size:N0} bytes, above the bound of {SizeBound:N0}");
        record.Pass($"{result.Kinds.Length} views ({string.Join(", ", result.Screenshots.Select(Path.GetFileName))}), {result.Values:N0} shown values equal the tables; " +
                    $"report.html {size / 1024.0:F0} KiB; grey variance ≥ {result.Variances.Min().ToString("F0", CultureInfo.InvariantCulture)}");
    }
}

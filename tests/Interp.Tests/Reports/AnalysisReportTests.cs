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
    [BrowserTheory]
    [InlineData("head_detection", new[] { "batch=8" }, new[] { "heatmap", "attention" })]
    [InlineData("ablation", new[] { "batch=8" }, new[] { "heatmap" })]
    [InlineData("activation_patching", new[] { "batch=8", "per_position=true" }, new[] { "heatmap", "heatmap" })]
    [InlineData("attribution_patching", new[] { "batch=8" }, new[] { "heatmap" })]
    [InlineData("head_attribution", new[] { "batch=8" }, new[] { "heatmap" })]
    [InlineData("pattern_vs_message", new[] { "batch=8", "baseline_samples=20" }, new[] { "heatmap" })]
    [InlineData("residual_writes", new[] { "batch=8" }, new[] { "logit-lens", "heatmap" })]
    [InlineData("circuit_discovery", new[] { "batch=4", "half=8", "steps=3" }, new[] { "heatmap", "tokens" })]
    [InlineData("sae_features", new[] { "training_tokens=65536", "sequences=12", "context_size=64", "top_features=6" }, new[] { "feature" })]
    public async Task The_report_of_each_analysis_shows_its_tables_in_the_browser(string experiment, string[] settings, string[] kinds)
    {
        var record = new Browser.TestRecord($"report-{experiment}");
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, ["run", experiment, .. settings.SelectMany(s => new[] { "--set", s })]);
        Assert.True(code == 0, err);
        Assert.Equal(Interp.Experiments.RunStatus.Completed, manifest.Status);
        var result = await ReportViewChecks.AssertViewsMatchTablesAsync(tmp.Path, $"report-{experiment}");
        Assert.Equal(kinds, result.Kinds);
        long size = new FileInfo(Path.Combine(tmp.Path, "report.html")).Length;
        record.Pass($"{result.Kinds.Length} views ({string.Join(", ", result.Screenshots.Select(Path.GetFileName))}), {result.Values:N0} shown values equal the tables; " +
                    $"report.html {size / 1024.0:F0} KiB; grey variance ≥ {result.Variances.Min().ToString("F0", CultureInfo.InvariantCulture)}");
    }
}

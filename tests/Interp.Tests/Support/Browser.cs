using System.Diagnostics;
using System.Text.Json;
using Interp.Tests.Experiments;
using SkiaSharp;

namespace Interp.Tests.Support;

/// <summary>
/// A fact that opens a report in a real browser: Debian's Chromium driven by npm's playwright-core (<c>tests/browser</c>,
/// which <c>.ci/run</c> installs). Skipped, with the reason, where either is missing — never passed without a browser.
/// </summary>
public sealed class BrowserFactAttribute : FactAttribute
{
    public BrowserFactAttribute()
    {
        if (Browser.Unavailable.Value is { } why) Skip = why;
    }
}

/// <summary>
/// Drives <c>tests/browser/probe.mjs</c>: opens a page, does the steps, returns what the browser saw. The expected values
/// stay in the C# tests, read from the run's Parquet tables by ParquetSharp.
/// </summary>
internal static class Browser
{
    public static string Chromium => Environment.GetEnvironmentVariable("CHROMIUM") ?? "/usr/bin/chromium";
    private static string Folder => Path.Combine(ExperimentScriptTests.RepoRoot(), "tests", "browser");

    /// <summary>Where the screenshots and the pass/fail lines that <c>.ci/run</c> prints go.</summary>
    public static string Artifacts => Directory.CreateDirectory(Path.Combine(ExperimentScriptTests.RepoRoot(), "artifacts", "browser")).FullName;

    public static readonly Lazy<string?> Unavailable = new(() =>
    {
        if (!File.Exists(Chromium)) return $"no Chromium at {Chromium}; .ci/run installs Debian's chromium (apt-get install chromium)";
        if (!Directory.Exists(Path.Combine(Folder, "node_modules", "playwright-core")))
            return $"playwright-core is not installed in {Folder}; .ci/run installs it (npm ci --prefix tests/browser)";
        try
        {
            using var p = Process.Start(new ProcessStartInfo("node", ["--version"]) { RedirectStandardOutput = true })!;
            p.WaitForExit(10_000);
            return p.ExitCode == 0 ? null : $"node --version failed (exit {p.ExitCode})";
        }
        catch (System.ComponentModel.Win32Exception) { return "Node.js is not installed here (no node on PATH)"; }
    });

    public sealed record Step(string Op, string Selector, string? Value = null, string? File = null);

    public sealed record Element(string Text, IReadOnlyDictionary<string, string> Data, string Background);

    public sealed record Result(string[] Console, string[] Requests, JsonElement[] Steps)
    {
        /// <summary>The elements a <c>read</c> step found (the step's index in the list given to <see cref="ProbeAsync"/>).</summary>
        public Element[] Elements(int step)
        {
            var s = Steps[step];
            if (s.TryGetProperty("error", out var error)) throw new Xunit.Sdk.XunitException($"step {step}: {error.GetString()}");
            return s.GetProperty("elements").EnumerateArray().Select(e => new Element(
                e.GetProperty("text").GetString() ?? "",
                e.GetProperty("data").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? ""),
                e.GetProperty("background").GetString() ?? "")).ToArray();
        }

        public void AssertNoErrors()
        {
            Assert.True(Console.Length == 0, "console errors: " + string.Join(" | ", Console));
            Assert.True(Requests.Length == 0, "requests other than the page itself: " + string.Join(", ", Requests));
            for (int i = 0; i < Steps.Length; i++)
                Assert.False(Steps[i].TryGetProperty("error", out var e), $"step {i}: {(Steps[i].TryGetProperty("error", out var m) ? m.GetString() : e.ToString())}");
        }
    }

    public static Step Hover(string selector) => new("hover", selector);
    public static Step Read(string selector) => new("read", selector);
    public static Step Select(string selector, string value) => new("select", selector, value);
    public static Step Screenshot(string selector, string file) => new("screenshot", selector, File: file);

    /// <summary>Opens <paramref name="page"/> in headless Chromium (offline) and does <paramref name="steps"/> in order.</summary>
    public static async Task<Result> ProbeAsync(string page, params Step[] steps)
    {
        string spec = Path.Combine(Path.GetTempPath(), $"probe-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(spec, JsonSerializer.Serialize(new
        {
            page = Path.GetFullPath(page),
            steps = steps.Select(s => new { op = s.Op, selector = s.Selector, value = s.Value, file = s.File }),
        }));
        try
        {
            var psi = new ProcessStartInfo("node", [Path.Combine(Folder, "probe.mjs"), spec]) { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.Environment["CHROMIUM"] = Chromium;
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            try { await p.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { p.Kill(true); throw new TimeoutException($"the browser probe of {page} did not finish within 2 minutes: {await stderr}"); }
            Assert.True(p.ExitCode == 0, $"the browser probe of {page} failed (exit {p.ExitCode}): {await stderr}");
            using var doc = JsonDocument.Parse(await stdout);
            var root = doc.RootElement.Clone();
            return new Result(root.GetProperty("console").EnumerateArray().Select(e => e.GetString() ?? "").ToArray(),
                root.GetProperty("requests").EnumerateArray().Select(e => e.GetString() ?? "").ToArray(),
                root.GetProperty("results").EnumerateArray().ToArray());
        }
        finally { File.Delete(spec); }
    }

    /// <summary>Variance of a screenshot's grey levels (0–255²): a blank or single-colour image gives ~0.</summary>
    public static double PixelVariance(string png)
    {
        using var bitmap = SKBitmap.Decode(png) ?? throw new Xunit.Sdk.XunitException($"{png} is not a readable PNG");
        double sum = 0, squares = 0;
        long n = 0;
        for (int y = 0; y < bitmap.Height; y++)
            for (int x = 0; x < bitmap.Width; x++)
            {
                var c = bitmap.GetPixel(x, y);
                double g = 0.299 * c.Red + 0.587 * c.Green + 0.114 * c.Blue;
                sum += g; squares += g * g; n++;
            }
        double mean = sum / n;
        return squares / n - mean * mean;
    }

    /// <summary>
    /// The line <c>.ci/run</c> prints for a browser test: "failed" from the start, replaced by "passed" when the test
    /// reaches <see cref="TestRecord.Pass"/>, so a test that throws is counted as failed.
    /// </summary>
    public sealed class TestRecord
    {
        private readonly string _path, _name;

        public TestRecord(string name)
        {
            _name = name;
            _path = Path.Combine(Artifacts, name + ".txt");
            File.WriteAllText(_path, $"failed: {name} (did not finish){Environment.NewLine}");
        }

        public void Pass(string detail) => File.WriteAllText(_path, $"passed: {_name} — {detail}{Environment.NewLine}");
    }
}

/// <summary>A theory that opens reports in a real browser; skipped, with the reason, as <see cref="BrowserFactAttribute"/>.</summary>
public sealed class BrowserTheoryAttribute : TheoryAttribute
{
    public BrowserTheoryAttribute()
    {
        if (Browser.Unavailable.Value is { } why) Skip = why;
    }
}

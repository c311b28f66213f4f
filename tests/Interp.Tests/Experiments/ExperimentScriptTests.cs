using Interp.Cli;
using Interp.Experiments;
using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>The experiments that need no model, run through <c>interp run</c>, with every artefact checked.</summary>
public sealed class ExperimentScriptTests
{
    internal static async Task<(int Code, string Out, string Err, RunManifest Manifest)> Run(string dir, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync([.. args, "--out", dir], output, error);
        return (code, output.ToString(), error.ToString(), RunManifest.Load(dir));
    }

    internal static async Task<(int Code, string Out, string Err)> RunRaw(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>Every table the manifest lists is read back by ParquetSharp with the recorded row count and run_id.</summary>
    internal static void AssertArtifactsComplete(string dir, RunManifest manifest)
    {
        Assert.Equal(RunStatus.Completed, manifest.Status);
        Assert.NotNull(manifest.Ended);
        foreach (var a in manifest.Artifacts)
        {
            string path = Path.Combine(dir, a.File);
            Assert.True(File.Exists(path), a.File);
            if (a.Kind == "table")
            {
                var columns = ParquetRead.Columns(path);
                Assert.Equal(a.Rows, columns["run_id"].LongLength);
                Assert.All(columns["run_id"], v => Assert.Equal(manifest.RunId, v));
            }
            if (a.Kind == "figure") Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(path)[..4]);
        }
        string report = File.ReadAllText(Path.Combine(dir, "report.md"));
        foreach (var figure in manifest.Artifacts.Where(a => a.Kind == "figure")) Assert.Contains($"]({figure.File})", report);
        Assert.Contains("<img src=", File.ReadAllText(Path.Combine(dir, "report.html")));
        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));
    }

    [Fact]
    public async Task Mouse_context_moves_mouse_toward_animal_then_toward_tech()
    {
        using var tmp = new TempDir();
        var (code, output, err, manifest) = await Run(tmp.Path, "run", "mouse_context");
        Assert.True(code == 0, err);
        AssertArtifactsComplete(tmp.Path, manifest);
        Assert.Contains("mouse_shift_sentence1", output);

        // Recompute the shift from the table (read independently), not from the numbers the run printed.
        var e = ParquetRead.Columns(Path.Combine(tmp.Path, "embeddings.parquet"));
        double Coordinate(int sentence, string stage, string column) => Enumerable.Range(0, e["token"].Length)
            .Where(i => (int)e["sentence"][i] == sentence && (string)e["token"][i] == "mouse" && (string)e["stage"][i] == stage)
            .Select(i => (double)(float)e[column][i]).Single();
        double Shift(int s) => (Coordinate(s, "output", "animal") - Coordinate(s, "output", "tech")) - (Coordinate(s, "input", "animal") - Coordinate(s, "input", "tech"));
        Assert.True(Shift(1) > 0.2, $"sentence 1 (cat, friends) should pull mouse toward animal: {Shift(1)}");
        Assert.True(Shift(2) < -0.2, $"sentence 2 (keyboard, useful) should pull mouse toward tech: {Shift(2)}");
        Assert.Equal(Shift(1), manifest.KeyNumbers.Single(k => k.Name == "mouse_shift_sentence1").Value, 1e-5);

        // Attention rows are probability distributions.
        var a = ParquetRead.Columns(Path.Combine(tmp.Path, "attention.parquet"));
        var rowSums = Enumerable.Range(0, a["weight"].Length).GroupBy(i => ((int)a["sentence"][i], (int)a["query"][i])).Select(g => g.Sum(i => (double)(float)a["weight"][i]));
        Assert.All(rowSums, s => Assert.Equal(1.0, s, 5));
    }

    [Fact]
    public async Task Positional_encoding_table_is_the_textbook_formula()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await Run(tmp.Path, "run", "positional_encoding", "--set", "positions=16", "--set", "d_model=8");
        Assert.True(code == 0, err);
        AssertArtifactsComplete(tmp.Path, manifest);
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "positional_encoding.parquet"));
        Assert.Equal(16 * 8, t["value"].Length);
        for (int i = 0; i < t["value"].Length; i++)
        {
            int pos = (int)t["position"][i], dim = (int)t["dimension"][i];
            double angle = pos / Math.Pow(10000, (dim - dim % 2) / 8.0);
            Assert.Equal(dim % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle), (float)t["value"][i], 1e-5);
        }
        Assert.True(manifest.KeyNumbers.Single(k => k.Name == "shift_invariance_error").Value < 1e-5);
    }

    [Fact]
    public async Task Qkv_walkthrough_stages_are_consistent()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await Run(tmp.Path, "run", "qkv_walkthrough");
        Assert.True(code == 0, err);
        AssertArtifactsComplete(tmp.Path, manifest);
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "stages.parquet"));
        double V(string stage, string row, string column) => Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["stage"][i] == stage && (string)t["row_token"][i] == row && (string)t["column"][i] == column)
            .Select(i => (double)(float)t["value"][i]).Single();
        string[] words = ["The", "car", "is", "red"];
        foreach (var q in words)
        {
            // scaled = scores / √d_head; weights = causal softmax of scaled; output = weights · values.
            foreach (var k in words) Assert.Equal(V("scores", q, k) / 2.0, V("scaled_scores", q, k), 1e-4);
            Assert.Equal(1.0, words.Sum(k => V("weights", q, k)), 1e-5);
            for (int d = 0; d < 4; d++)
                Assert.Equal(words.Sum(k => V("weights", q, k) * V("values", k, $"d{d}")), V("output", q, $"d{d}"), 1e-4);
        }
        Assert.Equal(0.0, V("weights", "The", "car"), 1e-6);
        Assert.True(V("weights", "red", "car") > 0.8, "the learned head sends 'red' to 'car'");
    }

    [Fact]
    public async Task Unknown_experiment_and_bad_options_are_clear_errors()
    {
        var (code, _, err) = await RunRaw("run", "mouse_contex");
        Assert.Equal(1, code);
        Assert.Contains("no experiment 'mouse_contex'. Did you mean: mouse_context", err);

        using var tmp = new TempDir();
        (code, _, err) = await RunRaw("run", "positional_encoding", "--out", tmp.Path, "--set", "positions=many");
        Assert.Equal(1, code);
        Assert.Contains("positional_encoding: setting 'positions' = 'many': 'many' is not an integer (expected integer; default 64)", err);
        Assert.False(File.Exists(Path.Combine(tmp.Path, "manifest.json")), "a run whose settings do not bind never starts");
    }

    [Fact]
    public async Task An_unknown_setting_names_itself_and_lists_the_valid_ones_with_their_defaults()
    {
        using var tmp = new TempDir();
        var (code, _, err) = await RunRaw("run", "ablation", "--out", tmp.Path, "--set", "bogus=1");
        Assert.NotEqual(0, code);
        Assert.Contains("ablation: unknown setting 'bogus'. Valid settings (default):", err);   // no near miss to suggest
        foreach (var valid in new[] { "batch (32)", "half (24)", "low (none)", "high (none)", "metric (repeated_loss)", "positions (all)", "ablations_per_forward (none)", "prompts (none)" })
            Assert.Contains(valid, err);
        Assert.False(File.Exists(Path.Combine(tmp.Path, "manifest.json")));

        // A near miss is suggested.
        (code, _, err) = await RunRaw("run", "ablation", "--out", tmp.Path, "--set", "batchh=8");
        Assert.NotEqual(0, code);
        Assert.Contains("unknown setting 'batchh' (did you mean batch", err);
    }

    [Fact]
    public async Task Help_of_an_experiment_lists_its_settings_with_defaults_and_the_manifest_records_them_bound()
    {
        var (code, output, err) = await RunRaw("run", "positional_encoding", "--help");
        Assert.True(code == 0, err);
        Assert.Contains("positions (64)", output);
        Assert.Contains("d_model (128)", output);
        Assert.Contains("dimensions of the table (even)", output);

        using var tmp = new TempDir();
        var (runCode, _, runErr, manifest) = await Run(tmp.Path, "run", "positional_encoding", "--set", "positions=16", "--set", "d_model=8");
        Assert.True(runCode == 0, runErr);
        // Typed values, defaults included: numbers as JSON numbers, not the strings given.
        Assert.Equal(16, (int)manifest.Settings["positions"]!);
        Assert.Equal(8, (int)manifest.Settings["d_model"]!);
        Assert.Equal(System.Text.Json.JsonValueKind.Number, manifest.Settings["positions"]!.GetValueKind());
    }

    [Fact]
    public async Task List_shows_every_experiment_with_its_script()
    {
        var output = new StringWriter();
        Assert.Equal(0, await CliApp.RunAsync(["list"], output, new StringWriter()));
        foreach (var name in new[] { "mouse_context", "positional_encoding", "qkv_walkthrough" })
        {
            Assert.Contains($"(experiments/{name}.cs)", output.ToString());
            Assert.True(File.Exists(Path.Combine(RepoRoot(), "experiments", name + ".cs")));
        }
    }

    internal static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Interp.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("repository root (Interp.sln) not found");
    }
}

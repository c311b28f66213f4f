using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>
/// The pattern_vs_message experiment end to end, every table read back by ParquetSharp; the claims of the report are
/// recomputed from the tables.
/// </summary>
public sealed class PatternVsMessageTests
{
    private static (int L, int H) Best(Dictionary<string, object[]> scores, string kind, Func<int, bool> layer)
    {
        var rows = Enumerable.Range(0, scores["value"].Length)
            .Where(i => (string)scores["score"][i] == kind && layer((int)scores["layer"][i]))
            .MaxBy(i => (float)scores["value"][i]);
        return ((int)scores["layer"][rows], (int)scores["head"][rows]);
    }

    [Fact]
    public async Task Built_in_model_induction_head_reads_the_previous_token_head_and_copies()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "pattern_vs_message", "--set", "top_k=5");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);

        var scores = ParquetRead.Columns(Path.Combine(tmp.Path, "head_scores.parquet"));
        var prev = Best(scores, "previous_token", l => l == 0);
        var ind = Best(scores, "induction", l => l == 1);

        var circuits = ParquetRead.Columns(Path.Combine(tmp.Path, "head_circuits.parquet"));
        Assert.Equal(["layer", "head", "circuit", "d_head", "norm", "spectral_norm", "effective_rank", "full_norm", "full_effective_rank", "copying_score", "singular_values", "run_id"], circuits.Keys);
        Assert.Equal(2 * 2 * 2, circuits["layer"].Length);
        for (int i = 0; i < 8; i++)
        {
            var sv = (double[])circuits["singular_values"][i];
            Assert.InRange(sv.Length, 1, 32);
            Assert.Equal(sv.OrderDescending(), sv);
            Assert.Equal(Math.Sqrt(sv.Sum(s => s * s)), (double)circuits["norm"][i], 1e-6);
            Assert.Equal(sv[0], (double)circuits["spectral_norm"][i], 1e-12);
            Assert.InRange((double)circuits["effective_rank"][i], 1, 32);
        }
        int inductionMessage = Enumerable.Range(0, 8).Single(i => (int)circuits["layer"][i] == ind.L && (int)circuits["head"][i] == ind.H && (string)circuits["circuit"][i] == "message");
        Assert.True((double)circuits["copying_score"][inductionMessage] > 0.7, $"copying score {circuits["copying_score"][inductionMessage]}");

        // The largest K-composition of all goes from a previous-token head into an induction head, far above random; every
        // induction head's K-composition with the best previous-token head is above random.
        var comp = ParquetRead.Columns(Path.Combine(tmp.Path, "composition.parquet"));
        Assert.Equal(3 * 2 * 2, comp["score"].Length);
        var k = Enumerable.Range(0, comp["score"].Length).Where(i => (string)comp["kind"][i] == "K").ToArray();
        int largest = k.MaxBy(i => (double)comp["score"][i]);
        Assert.Equal(0, (int)comp["from_layer"][largest]);
        double PreviousScore(int h) => Enumerable.Range(0, scores["value"].Length)
            .Where(i => (string)scores["score"][i] == "previous_token" && (int)scores["layer"][i] == 0 && (int)scores["head"][i] == h).Select(i => (float)scores["value"][i]).Single();
        Assert.True(PreviousScore((int)comp["from_head"][largest]) >= 0.5 * PreviousScore(prev.H));
        double InductionScore(int l, int h) => Enumerable.Range(0, scores["value"].Length)
            .Where(i => (string)scores["score"][i] == "induction" && (int)scores["layer"][i] == l && (int)scores["head"][i] == h).Select(i => (float)scores["value"][i]).Single();
        Assert.True(InductionScore((int)comp["to_layer"][largest], (int)comp["to_head"][largest]) > 0.8);
        Assert.True((double)comp["score"][largest] > (double)comp["baseline"][largest] + 10 * (double)comp["baseline_std"][largest]);
        Assert.Equal((double)comp["score"][largest], manifest.KeyNumbers.Single(n => n.Name == "largest_k_composition").Value, 1e-9);
        foreach (int i in k.Where(i => (int)comp["from_layer"][i] == prev.L && (int)comp["from_head"][i] == prev.H && InductionScore((int)comp["to_layer"][i], (int)comp["to_head"][i]) > 0.8))
            Assert.True((double)comp["score"][i] > (double)comp["baseline"][i] + 5 * (double)comp["baseline_std"][i]);

        // A copying head's strongest message entries send a token to its own logit.
        var top = ParquetRead.Columns(Path.Combine(tmp.Path, "top_entries.parquet"));
        Assert.Equal(2 * 2 * 2 * 5, top["value"].Length);
        var own = Enumerable.Range(0, top["value"].Length)
            .Where(i => (int)top["layer"][i] == ind.L && (int)top["head"][i] == ind.H && (string)top["circuit"][i] == "message").ToArray();
        Assert.Equal(5, own.Length);
        Assert.Equal(own.Select(i => (double)top["value"][i]).OrderDescending(), own.Select(i => (double)top["value"][i]));
        Assert.True(own.Count(i => (int)top["source_id"][i] == (int)top["target_id"][i]) >= 4);

        foreach (var figure in new[] { "spectra_layer_0.png", "composition_k.png", "copying_vs_induction.png", "pattern_vs_message_strength.png", "positional_pattern.png", "copying_score.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);
    }

    [Fact]
    public async Task Stories260K_with_grouped_query_attention_runs_to_the_end()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "pattern_vs_message", "--model", TestModels.StoriesBin,
            "--set", "top_k=3", "--set", "batch=4", "--set", "half=8", "--set", "baseline_samples=32");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);

        var circuits = ParquetRead.Columns(Path.Combine(tmp.Path, "head_circuits.parquet"));
        Assert.Equal(5 * 8 * 2, circuits["layer"].Length);
        Assert.All(circuits["singular_values"], sv => Assert.InRange(((double[])sv).Length, 1, 8));   // d_head 8
        var comp = ParquetRead.Columns(Path.Combine(tmp.Path, "composition.parquet"));
        Assert.Equal(3 * 10 * 8 * 8, comp["score"].Length);                                              // 3 kinds × (5 choose 2) layer pairs × 8 × 8 heads
        Assert.All(comp["score"], s => Assert.InRange((double)s, 0, 1));
        var top = ParquetRead.Columns(Path.Combine(tmp.Path, "top_entries.parquet"));
        Assert.Equal(5 * 8 * 2 * 3, top["value"].Length);
        Assert.All(top["source_token"], t => Assert.False(string.IsNullOrEmpty((string)t)));   // token strings from tok512.bin
        Assert.Equal(2, manifest.KeyNumbers.Count(n => n.Name is "induction_head_layer" or "induction_head"));
    }
}

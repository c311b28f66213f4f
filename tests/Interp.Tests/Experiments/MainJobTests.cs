using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>The README's main command: induction_heads on the built-in model.</summary>
public sealed class MainJobTests
{
    [Fact]
    public async Task Induction_heads_finds_the_textbook_circuit_in_the_built_in_model()
    {
        using var tmp = new TempDir();
        var (code, output, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "induction_heads");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        Assert.Contains(manifest.Artifacts, a => a.File == "training_loss.png");

        // From the table, read independently: a layer-0 previous-token head and a layer-1 induction head above 0.5.
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "head_scores.parquet"));
        var rows = Enumerable.Range(0, t["value"].Length).Select(i => (L: (int)t["layer"][i], H: (int)t["head"][i], S: (string)t["score"][i], V: (float)t["value"][i])).ToArray();
        var prev = rows.Where(r => r.S == "previous_token" && r.L == 0).MaxBy(r => r.V);
        var ind = rows.Where(r => r.S == "induction" && r.L == 1).MaxBy(r => r.V);
        Assert.True(prev.V > 0.5, $"previous-token score {prev.V}");
        Assert.True(ind.V > 0.5, $"induction score {ind.V}");

        // The report names both heads with those scores.
        string report = File.ReadAllText(Path.Combine(tmp.Path, "report.md"));
        Assert.Contains($"Previous-token head **0.{prev.H}** (score {prev.V:0.00})", report);
        Assert.Contains($"induction head **1.{ind.H}** (score {ind.V:0.00})", report);

        // Ablation: without the induction head, or without the previous-token heads together, the repeated half is no
        // longer predictable.
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        Assert.True(Number("loss_repeated_half") < 0.5 * Number("loss_first_half"));
        Assert.True(Number("loss_repeated_half_without_previous_token_heads") > 0.8 * Number("loss_first_half"));
        Assert.True(Number("loss_repeated_half_without_induction_head") > 0.8 * Number("loss_first_half"));
        Assert.True(Number("induction_score_without_previous_token_heads") < 0.5 * ind.V, "K-composition: the induction head needs the previous-token heads");

        // Single-head ablations, from the table: the induction head is the one the repeated half cannot do without.
        var loss = ParquetRead.Columns(Path.Combine(tmp.Path, "loss_by_position.parquet"));
        var repeated = Enumerable.Range(0, loss["loss"].Length).Where(i => (int)loss["position"][i] > 1 + 24)
            .GroupBy(i => ((int)loss["ablated_layer"][i], (int)loss["ablated_head"][i]), i => (double)(float)loss["loss"][i])
            .ToDictionary(g => g.Key, g => g.Average());
        var others = repeated.Where(kv => kv.Key != (-1, -1) && kv.Key != (1, ind.H)).Select(kv => kv.Value - repeated[(-1, -1)]);
        Assert.True(repeated[(1, ind.H)] - repeated[(-1, -1)] > 5 * others.Max());
        Assert.Contains("induction_score", output);
    }
}

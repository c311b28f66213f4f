using Interp.Loading;
using Interp.Analysis;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>The activation_patching experiment end to end; the table is read back by ParquetSharp and checked against identities.</summary>
public sealed class ActivationPatchingExperimentTests
{
    private sealed record Row(string Patch, int Layer, int Head, int Position, double Value, double Raw);

    private static Row[] Rows(string dir)
    {
        var t = ParquetRead.Columns(Path.Combine(dir, "activation_patching.parquet"));
        Assert.Equal(["patch", "layer", "head", "position", "value", "raw", "run_id"], t.Keys);
        return Enumerable.Range(0, t["value"].Length).Select(i => new Row((string)t["patch"][i], (int)t["layer"][i], (int)t["head"][i],
            (int)t["position"][i], (double)t["value"][i], (double)t["raw"][i])).ToArray();
    }

    /// <summary>Every value is the normalised raw metric; the whole input of a layer restores everything; the last position nothing.</summary>
    private static void AssertIdentities(Row[] rows, Interp.Experiments.RunManifest manifest, int layers, int positions)
    {
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        double clean = Number("metric_clean"), corrupted = Number("metric_corrupted");
        Assert.All(rows, r => Assert.Equal((r.Raw - corrupted) / (clean - corrupted), r.Value, 9));
        for (int l = 0; l < layers; l++)
        {
            Assert.Equal(1.0, rows.Single(r => r.Patch == "resid_pre" && r.Layer == l && r.Position == -1).Value, 1e-5);
            // The metric reads the logits up to position pos − 2: the last position cannot matter (causality).
            Assert.Equal(0.0, rows.Single(r => r.Patch == "resid_pre" && r.Layer == l && r.Position == positions - 1).Value, 1e-5);
        }
    }

    [Fact]
    public async Task Built_in_model_patching_the_induction_head_output_restores_most_of_the_metric()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "activation_patching", "--set", "batch=16");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var rows = Rows(tmp.Path);
        const int positions = 1 + 2 * 24;
        Assert.Equal(2 * (2 * (1 + positions)) + 4 * (1 + positions) + 4, rows.Length);   // resid_pre, attn_out; head_out; head_pattern
        Assert.DoesNotContain(rows, r => r.Patch == "mlp_out");
        AssertIdentities(rows, manifest, 2, positions);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        Assert.True(Number("metric_clean") > Number("metric_corrupted") + 2, "the corrupted run should lose the repeated half's predictability");

        // The induction head, found from its behaviour on other sequences than the experiment's.
        (int Layer, int Head, double Score) ind;
        using (var loaded = BuiltInModel.Load())
        using (NewDisposeScope())
        {
            var input = HeadDetection.RepeatedRandomTokens(loaded, 32, 24, seed: 123, InductionRecipe.FirstTokenFor(loaded.Model.Config));
            ind = HeadDetection.Score(loaded.Model, input.Tokens, input.Half).Best(HeadScoreKind.Induction, layer: 1);
        }
        Assert.True(ind.Score > 0.5, $"induction score {ind.Score}");
        double restored = rows.Single(r => r.Patch == "head_out" && r.Layer == ind.Layer && r.Head == ind.Head && r.Position == -1).Value;
        Assert.True(restored > 0.5, $"patching head {ind.Layer}.{ind.Head}'s output restores only {restored:0.000}");
        Assert.Equal(restored, manifest.KeyNumbers.Single(k => k.Name == "induction_head_out_recovery").Value, 1e-9);
        foreach (var figure in new[] { "patch_resid_pre.png", "patch_attn_out.png", "patch_head_out_by_position.png", "patch_head_out.png", "patch_head_pattern.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);
    }

    [Fact]
    public async Task Stories260K_runs_with_its_own_vocabulary_and_patches_its_mlps()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "activation_patching", "--model", TestModels.StoriesBin,
            "--set", "batch=2", "--set", "half=6");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var rows = Rows(tmp.Path);
        const int positions = 1 + 2 * 6, layers = 5, heads = 8;
        Assert.Equal(3 * layers * (1 + positions) + layers * heads * (1 + positions) + layers * heads, rows.Length);
        Assert.Equal(layers * (1 + positions), rows.Count(r => r.Patch == "mlp_out"));
        AssertIdentities(rows, manifest, layers, positions);
        Assert.Contains(manifest.Artifacts, a => a.File == "patch_mlp_out.png");
    }
}

using Interp.Loading;
using Interp.Analysis;
using Interp.Hooks;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// The ablation experiment end to end, its table read back by ParquetSharp: on the built-in model the induction head
/// (found by its attention, not by index) is the one head whose zero-ablation wrecks the repeated half.
/// </summary>
public sealed class AblationExperimentTests
{
    private static readonly string[] Columns = ["layer", "head", "component", "sae", "feature", "ablation", "positions", "metric", "metric_clean", "metric_ablated", "delta", "run_id"];

    [Fact]
    public async Task Built_in_model_zero_ablating_the_induction_head_costs_far_more_than_any_other_head()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "ablation");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);

        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "ablation.parquet"));
        Assert.Equal(Columns, t.Keys);
        int n = t["layer"].Length;
        Assert.Equal((2 * 2 + 2) * 3, n);                                   // 4 heads and 2 attention layers (no MLP), 3 kinds
        Assert.All(t["metric"], m => Assert.Equal("repeated_half_loss", m));
        Assert.All(t["positions"], p => Assert.Equal("all", p));
        for (int i = 0; i < n; i++)
        {
            Assert.Equal((double)t["metric_ablated"][i] - (double)t["metric_clean"][i], (double)t["delta"][i], 1e-12);
            Assert.Equal((string)t["component"][i] == "head", (int)t["head"][i] >= 0);
        }

        // Recompute independently: the sequences the run used, the induction head from attention, the clean loss and
        // the zero-ablated loss with a hand-written hook.
        using var loaded = BuiltInModel.Load();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var model = loaded.Model;
        var input = HeadDetection.RepeatedRandomTokens(loaded, 32, 24, manifest.Seed, InductionRecipe.FirstTokenFor(model.Config));
        var induction = HeadDetection.Score(model, input.Tokens, input.Half).Best(HeadScoreKind.Induction);
        int from = input.Prefix + input.Half + 1;                           // first predicted position copying can predict
        double RepeatedLoss(Tensor logits) => Metrics.PerTokenLoss(logits, input.Tokens)[.., (from - 1)..].mean().item<float>();
        double clean = RepeatedLoss(model.forward(input.Tokens));
        double ablated = RepeatedLoss(model.RunWithHooks(input.Tokens, (HookNames.Z(induction.Layer), (z, _) =>
        {
            var c = z.clone();
            c[.., .., induction.Head] = 0;
            return c;
        })));

        var zeroHeads = Enumerable.Range(0, n).Where(i => (string)t["ablation"][i] == "zero" && (string)t["component"][i] == "head").ToArray();
        Assert.Equal(4, zeroHeads.Length);
        int row = zeroHeads.Single(i => (int)t["layer"][i] == induction.Layer && (int)t["head"][i] == induction.Head);
        Assert.Equal(clean, (double)t["metric_clean"][row], 1e-5);
        Assert.Equal(ablated, (double)t["metric_ablated"][row], 1e-4);
        double delta = (double)t["delta"][row];
        Assert.True(delta > 1.0, $"zero-ablating induction head {induction.Layer}.{induction.Head} raises the repeated-half loss by only {delta:0.000}");
        foreach (int i in zeroHeads.Where(i => i != row))
            Assert.True(delta > 5 * (double)t["delta"][i],
                $"induction head {induction.Layer}.{induction.Head}: Δ {delta:0.000}, head {t["layer"][i]}.{t["head"][i]}: Δ {(double)t["delta"][i]:0.000}");

        // The report names the same head.
        Assert.Equal(induction.Layer, manifest.KeyNumbers.Single(k => k.Name == "top_head_layer").Value);
        Assert.Equal(induction.Head, manifest.KeyNumbers.Single(k => k.Name == "top_head").Value);
        Assert.Equal(delta, manifest.KeyNumbers.Single(k => k.Name == "top_head_delta").Value, 1e-9);
        foreach (var figure in new[] { "ablation_heads_zero.png", "ablation_heads_mean.png", "ablation_heads_resample.png", "ablation_layers.png", "loss_by_position_top_head.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);
    }

    [Fact]
    public async Task Stories260K_sweeps_heads_attention_and_mlp_layers_at_the_repeated_positions()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "ablation", "--model", TestModels.StoriesBin,
            "--set", "batch=4", "--set", "half=8", "--set", "positions=repeated", "--set", "ablations_per_forward=7", "--set", "metric=loss");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);

        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "ablation.parquet"));
        Assert.Equal(Columns, t.Keys);
        int n = t["layer"].Length;
        Assert.Equal((5 * 8 + 5 + 5) * 3, n);                               // 5 layers × 8 heads, 5 attention and 5 MLP layers, 3 kinds
        foreach (var kind in new[] { "zero", "mean", "resample" })
        {
            var rows = Enumerable.Range(0, n).Where(i => (string)t["ablation"][i] == kind).ToArray();
            Assert.Equal(50, rows.Length);
            Assert.Equal(40, rows.Count(i => (string)t["component"][i] == "head"));
            Assert.Equal(5, rows.Count(i => (string)t["component"][i] == "mlp" && (int)t["head"][i] == -1));
            Assert.Equal(5, rows.Count(i => (string)t["component"][i] == "attn" && (int)t["head"][i] == -1));
        }
        Assert.All(t["positions"], p => Assert.Equal("9-16", p));          // [BOS] + 8 + 8: the second copy
        Assert.All(t["metric"], m => Assert.Equal("loss", m));
        Assert.Single(t["metric_clean"].Distinct());
        Assert.All(t["metric_ablated"], v => Assert.True(double.IsFinite((double)v)));
        // Removing a whole MLP layer of a trained model hurts.
        Assert.Contains(Enumerable.Range(0, n), i => (string)t["component"][i] == "mlp" && (double)t["delta"][i] > 0.01);
    }

    [Fact]
    public async Task Unknown_metric_is_a_clear_error()
    {
        using var tmp = new TempDir();
        var (code, _, err, _) = await ExperimentScriptTests.Run(tmp.Path, "run", "ablation", "--set", "metric=accuracy", "--set", "batch=2");
        Assert.Equal(1, code);
        Assert.Contains("unknown metric 'accuracy', expected repeated_loss or loss", err);
    }
}

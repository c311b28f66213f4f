using System.Text.Json;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary><see cref="SaeEvaluation"/> on the shared SAE against SAELens's metrics in its reference/metrics.json.</summary>
public sealed class SaeEvaluationTests
{
    private static string Folder => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");

    private static long[] TokenIds() => File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt"))
        .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    [Fact]
    public void Every_metric_matches_metrics_json()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "reference", "metrics.json")));
        var sv = doc.RootElement.GetProperty("sparsity_and_variance");
        var ds = doc.RootElement.GetProperty("downstream");
        double S(string k) => sv.GetProperty(k).GetDouble();
        double D(string k) => ds.GetProperty(k).GetDouble();

        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [1, 40]);
        var r = SaeEvaluation.Run(loaded.Model, sae, tokens);

        Assert.Equal(40, r.Positions);
        Assert.Equal(S("l0_mean"), r.L0, 1e-9);   // the active sets match exactly from tokens (README)
        // From tokens the residual stream differs from the reference input by up to 2e-4 per element.
        Assert.InRange(r.L1, S("l1_mean") - 0.05, S("l1_mean") + 0.05);
        Assert.InRange(r.ExplainedVariance, S("explained_variance") - 1e-3, S("explained_variance") + 1e-3);
        Assert.InRange(r.ExplainedVarianceLegacy, S("explained_variance_legacy") - 1e-3, S("explained_variance_legacy") + 1e-3);
        Assert.InRange(r.Mse, S("mse_sum_over_dims_mean_over_tokens") * 0.999, S("mse_sum_over_dims_mean_over_tokens") * 1.001);
        Assert.InRange(r.CosineSimilarity, S("cossim_mean") - 1e-3, S("cossim_mean") + 1e-3);
        Assert.InRange(r.L2Ratio, S("l2_ratio_mean") - 1e-3, S("l2_ratio_mean") + 1e-3);
        Assert.InRange(r.RelativeReconstructionBias, S("relative_reconstruction_bias") - 1e-3, S("relative_reconstruction_bias") + 1e-3);
        Assert.InRange(r.CeLossClean, D("ce_loss_without_sae") - 1e-3, D("ce_loss_without_sae") + 1e-3);
        Assert.InRange(r.CeLossWithSae, D("ce_loss_with_sae") - 1e-3, D("ce_loss_with_sae") + 1e-3);
        Assert.InRange(r.CeLossZeroAblated, D("ce_loss_with_ablation") - 1e-3, D("ce_loss_with_ablation") + 1e-3);
        Assert.InRange(r.CeLossScore, D("ce_loss_score") - 1e-2, D("ce_loss_score") + 1e-2);
        Assert.InRange(r.KlDivWithSae, D("kl_div_with_sae") - 1e-3, D("kl_div_with_sae") + 1e-3);
        Assert.InRange(r.KlDivZeroAblated, D("kl_div_with_ablation") - 1e-3, D("kl_div_with_ablation") + 1e-3);
        Assert.InRange(r.KlDivScore, D("kl_div_score") - 1e-2, D("kl_div_score") + 1e-2);
        Assert.Equal(0, r.DeadFraction);   // README: no feature is never active on these 40 positions
        Assert.InRange(r.FeatureDensity.Average(), S("active_fraction") - 1e-12, S("active_fraction") + 1e-12);

        var table = r.ToTable();
        Assert.Equal(1, table.RowCount);
    }

    [Fact]
    public void Batches_give_the_same_metrics_as_one_pass()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        using var scope = NewDisposeScope();
        var ids = TokenIds();
        var tokens = tensor(ids, [4, 10]);
        var one = SaeEvaluation.Run(loaded.Model, sae, tokens, new SaeEvalOptions(BatchSize: 4));
        var many = SaeEvaluation.Run(loaded.Model, sae, tokens, new SaeEvalOptions(BatchSize: 3));
        Assert.Equal(one.L0, many.L0, 1e-12);
        Assert.Equal(one.ExplainedVariance, many.ExplainedVariance, 1e-6);
        Assert.Equal(one.ExplainedVarianceLegacy, many.ExplainedVarianceLegacy, 1e-6);
        Assert.Equal(one.CeLossScore, many.CeLossScore, 1e-5);
        Assert.Equal(one.KlDivScore, many.KlDivScore, 1e-5);
        Assert.Throws<ArgumentOutOfRangeException>(() => SaeEvaluation.Run(loaded.Model, sae, tokens, new SaeEvalOptions(BatchSize: 0)));
    }

    [Fact]
    public void Statistics_of_parts_combine_to_the_metrics_of_the_whole()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [4, 10]);
        var whole = SaeEvaluation.Run(loaded.Model, sae, tokens, new SaeEvalOptions(BatchSize: 4));
        var one = SaeEvaluation.Accumulate(loaded.Model, sae, tokens, new SaeEvalOptions(BatchSize: 4));
        // Run is Finish of Accumulate, and a combination of one part is that part.
        var again = SaeEvaluation.Finish(sae, SaeEvalStatistics.Combine([one]));
        Assert.Equal(whole.FeatureDensity, again.FeatureDensity);
        Assert.Equal(whole, again with { FeatureDensity = whole.FeatureDensity });
        var parts = new[] { tokens.narrow(0, 0, 1), tokens.narrow(0, 1, 3) }.Select(t => SaeEvaluation.Accumulate(loaded.Model, sae, t)).ToArray();
        var combined = SaeEvaluation.Finish(sae, SaeEvalStatistics.Combine(parts));
        Assert.Equal(whole.Positions, combined.Positions);
        Assert.Equal(whole.L0, combined.L0, 1e-12);
        Assert.Equal(whole.DeadFraction, combined.DeadFraction);
        Assert.Equal(whole.FeatureDensity, combined.FeatureDensity);
        Assert.Equal(whole.ExplainedVariance, combined.ExplainedVariance, 1e-6);
        // The legacy explained variance needs the mean over all positions: not a weighted mean of the parts' own.
        Assert.Equal(whole.ExplainedVarianceLegacy, combined.ExplainedVarianceLegacy, 1e-6);
        var own = parts.Select(p => SaeEvaluation.Finish(sae, p).ExplainedVarianceLegacy).ToArray();
        Assert.NotEqual(whole.ExplainedVarianceLegacy, (own[0] * 10 + own[1] * 30) / 40, 6);
        Assert.Equal(whole.CeLossScore, combined.CeLossScore, 1e-5);
        Assert.Equal(whole.KlDivScore, combined.KlDivScore, 1e-5);
        var other = parts[0] with { SumX = new double[parts[0].SumX.Length + 1] };
        Assert.Contains("do not combine", Assert.Throws<InterpException>(() => SaeEvalStatistics.Combine([parts[1], other])).Message);
    }
}

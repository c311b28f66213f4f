using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// sae_eval and sae_features run end to end; what they report follows from their own tables (exact identities) and
/// from the SAE and model they read (the logit effects recomputed here).
/// </summary>
public sealed class SaeExperimentTests
{
    private static string SharedSae => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");

    private static double Number(Interp.Experiments.RunManifest m, string name) => m.KeyNumbers.Single(k => k.Name == name).Value;

    [Fact]
    public async Task Sae_eval_on_the_shared_sae_reports_its_own_table_and_l0_is_the_sum_of_the_densities()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "sae_eval", "--model", TestModels.Gpt2TinyDir, "--sae", SharedSae,
            "--set", "sequences=8", "--set", "context_size=32");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var eval = ParquetRead.Columns(Path.Combine(tmp.Path, "sae_eval.parquet"));
        var stats = ParquetRead.Columns(Path.Combine(tmp.Path, "sae_feature_stats.parquet"));
        Assert.Equal(256, stats["density"].Length);
        double l0 = (double)eval["l0"][0];
        Assert.Equal(8L * 32, (long)eval["positions"][0]);
        // Mean features per position = Σ_f (fraction of positions feature f fires on), over the same positions.
        Assert.Equal(l0, stats["density"].Sum(d => (double)d), 1e-9);
        Assert.Equal(l0, Number(manifest, "l0"), 1e-3);
        double clean = (double)eval["ce_loss_without_sae"][0], sae = (double)eval["ce_loss_with_sae"][0], zero = (double)eval["ce_loss_with_ablation"][0];
        Assert.Equal((zero - sae) / (zero - clean), (double)eval["ce_loss_score"][0], 1e-9);
        Assert.Equal((double)eval["ce_loss_score"][0], Number(manifest, "ce_loss_score"), 1e-3);
        Assert.Equal(stats["active_count"].Count(c => (long)c == 0) / 256.0, (double)eval["dead_fraction"][0], 1e-12);
    }

    [Fact]
    public async Task Sae_eval_without_an_sae_says_how_to_pass_one()
    {
        using var tmp = new TempDir();
        var (code, _, err) = await ExperimentScriptTests.RunRaw("run", "sae_eval", "--out", tmp.Path);
        Assert.NotEqual(0, code);
        Assert.Contains("--sae DIR", err);
    }

    [Fact]
    public async Task Sae_features_trains_on_the_built_in_model_and_its_tables_agree_with_the_saved_sae()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "sae_features",
            "--set", "training_tokens=65536", "--set", "sequences=12", "--set", "context_size=64", "--set", "top_features=6");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        // The SAE it trained is in SAELens's layout and loads.
        using var sae = Sae.Load(Path.Combine(tmp.Path, "sae"));
        Assert.Equal(Interp.Hooks.HookNames.ResidPre(1), sae.Config.HookName);

        // Each top feature's best context is its maximum over the corpus (the stats table).
        var stats = ParquetRead.Columns(Path.Combine(tmp.Path, "sae_feature_stats.parquet"));
        var contexts = ParquetRead.Columns(Path.Combine(tmp.Path, "sae_feature_contexts.parquet"));
        var features = contexts["feature"].Cast<int>().Distinct().ToArray();
        Assert.Equal(6, features.Length);
        foreach (int f in features)
        {
            double best = Enumerable.Range(0, contexts["feature"].Length)
                .Where(i => (int)contexts["feature"][i] == f && (int)contexts["rank"][i] == 1 && (int)contexts["offset"][i] == 0)
                .Select(i => (double)(float)contexts["value"][i]).Single();
            Assert.Equal((double)stats["max"][f], best, 1e-5);
            Assert.True((double)stats["density"][f] <= 0.1);
        }

        // The logit effects are W_dec[f]·W_U of the saved SAE and the built-in model.
        using var model = BuiltInModel.Load();
        var effects = ParquetRead.Columns(Path.Combine(tmp.Path, "sae_logit_effects.parquet"));
        using var scope = NewDisposeScope();
        var direct = sae.WDec.matmul(model.Model.Unembed.W_U.detach()).to(ScalarType.Float64);   // [d_sae, d_vocab]
        for (int i = 0; i < effects["feature"].Length; i++)
        {
            int f = (int)effects["feature"][i], token = (int)effects["token_id"][i];
            Assert.Equal(direct[f, token].item<double>(), (double)effects["value"][i], 1e-4);
        }
        Assert.InRange(Number(manifest, "l0"), 1, 16);   // a TopK SAE with k = 16
    }
}

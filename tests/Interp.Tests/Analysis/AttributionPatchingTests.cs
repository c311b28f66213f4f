using Interp.Analysis;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Prompts;
using Interp.Results;
using Interp.Saes;
using Interp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>
/// Attribution patching against activation patching: exactly equal where the metric is linear in the site, and
/// compared (table and correlation) on the built-in model and on stories260K with the shipped name prompts.
/// </summary>
public sealed class AttributionPatchingTests(ITestOutputHelper output)
{
    private const int Batch = 3, Pos = 10;

    /// <summary>Attention-only, no norms: the last layer's head outputs reach the logits linearly.</summary>
    private static ModelConfig LinearLastLayer(PositionalKind positional) => TestModels.AttnOnlySinusoidal with
    {
        Name = "attn-only-no-norm", Norm = NormKind.None, Positional = positional, NLayers = 3,
    };

    private static List<PatchSite> HeadOutSites(ModelConfig cfg, int positions, int? layer = null) =>
        ActivationPatching.Sites(cfg, positions, PatchKind.HeadOut, perPosition: true).Where(s => layer is null || s.Layer == layer).ToList();

    [Theory]
    [InlineData(PositionalKind.Learned)]
    [InlineData(PositionalKind.Rotary)]
    public void Equals_activation_patching_where_the_metric_is_linear_in_the_site(PositionalKind positional)
    {
        var cfg = LinearLastLayer(positional);
        using var model = TestModels.Random(cfg, seed: 9);
        using var scope = NewDisposeScope();
        var clean = TestModels.RandomTokens(cfg.DVocab, Batch, Pos, seed: 11);
        var corrupted = TestModels.RandomTokens(cfg.DVocab, Batch, Pos, seed: 12);
        var metric = Metrics.LogitDiff(3, 5, position: 6);
        using var activation = new ActivationPatching(model, clean, corrupted, metric);
        using var attribution = new AttributionPatching(model, clean, corrupted, metric);
        Assert.Equal(activation.CleanMetric, attribution.CleanMetric, 1e-5);
        Assert.Equal(activation.CorruptedMetric, attribution.CorruptedMetric, 1e-5);

        var linear = HeadOutSites(cfg, Pos, cfg.NLayers - 1);
        var comparison = AttributionPatching.Compare(activation.Sweep(linear), attribution.Sweep(linear));
        Assert.Equal(linear.Count, comparison.Rows.Count);
        Assert.True(comparison.MaxAbsDifference <= 1e-4, $"linear sites differ by up to {comparison.MaxAbsDifference:G3}");
        // The raw estimate too: m_corrupted + attribution = the patched metric.
        var site = PatchSite.HeadOut(cfg.NLayers - 1, 1);
        Assert.Equal(activation.PatchedMetric([site]), attribution.CorruptedMetric + attribution.Attribution(site), 1e-4);
        // After the metric's position nothing can change: both exactly 0.
        Assert.Equal(0, attribution.Attribution(PatchSite.HeadOut(cfg.NLayers - 1, 0, position: 8)), 1e-12);

        // Earlier layers feed the last layer's attention, nonlinearly: there the estimate is only an estimate.
        var earlier = HeadOutSites(cfg, Pos, 0);
        var rough = AttributionPatching.Compare(activation.Sweep(earlier), attribution.Sweep(earlier));
        output.WriteLine($"{positional}: last layer max |Δ| {comparison.MaxAbsDifference:G3}; layer 0 max |Δ| {rough.MaxAbsDifference:G3}, r = {rough.Correlation:0.000}");
    }

    [Fact]
    public void Sweep_normalises_like_activation_patching_and_checks_its_sites()
    {
        using var model = TestModels.Random(TestModels.LlamaLike);
        using var scope = NewDisposeScope();
        var clean = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 11);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 12);
        using var attribution = new AttributionPatching(model, clean, corrupted, Metrics.Loss());
        var sites = Enum.GetValues<PatchKind>().SelectMany(k => ActivationPatching.Sites(model.Config, Pos, k, perPosition: true)).ToList();
        var results = attribution.Sweep(sites);
        Assert.Equal(sites, results.Select(r => r.Site));
        double gap = attribution.CleanMetric - attribution.CorruptedMetric;
        Assert.All(results, r =>
        {
            Assert.Equal(attribution.CorruptedMetric + r.Attribution, r.Raw, 1e-12);
            Assert.Equal(r.Attribution / gap, r.Value, 1e-9);
        });
        // Per-position sites add up to the site over every position (the estimate is linear in the slice).
        double whole = attribution.Attribution(PatchSite.HeadOut(1, 2));
        double sum = attribution.Attribution(Enumerable.Range(0, Pos).Select(p => PatchSite.HeadOut(1, 2, p)).ToArray());
        Assert.Equal(whole, sum, 1e-9);

        Assert.Contains("layer 7", Assert.Throws<InterpException>(() => attribution.Sweep([PatchSite.AttnOut(7)])).Message);
        Assert.Contains("same shape", Assert.Throws<InterpException>(() => new AttributionPatching(model, clean, corrupted[.., ..4], Metrics.Loss())).Message);
        using var same = new AttributionPatching(model, clean, clean, Metrics.Loss());
        Assert.Contains("nothing to recover", Assert.Throws<InterpException>(() => same.Sweep([PatchSite.AttnOut(0)])).Message);

        var table = PatchingTable.Build([], results);
        Assert.Equal(results.Count, table.RowCount);
    }

    [Fact]
    public void Sae_features_are_sites_whose_gradient_is_that_of_the_feature_activations()
    {
        var cfg = TestModels.Gpt2Like;
        using var model = TestModels.Random(cfg, seed: 11);
        const int dSae = 48;
        var config = new SaeConfig(cfg.DModel, dSae, SaeArchitecture.Standard, HookNames.ResidPost(0), true, "float32", "cpu", null, null);
        using var gen = new Generator(11);
        using var scope = NewDisposeScope();
        using var sae = Sae.Create(config, new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn([cfg.DModel, dSae], generator: gen) * 0.3, ["b_enc"] = randn([dSae], generator: gen) * 0.1,
            ["W_dec"] = randn([dSae, cfg.DModel], generator: gen) * 0.3, ["b_dec"] = randn([cfg.DModel], generator: gen) * 0.1,
        });
        var clean = TestModels.RandomTokens(cfg.DVocab, Batch, Pos, seed: 11);
        var corrupted = TestModels.RandomTokens(cfg.DVocab, Batch, Pos, seed: 12);
        var metric = Metrics.Loss();
        string acts = HookNames.SaeLeaf.Of(config.HookName, HookNames.SaeLeaf.ActsPost);
        using var splice = model.WithSaes(sae, useErrorTerm: true);
        using var attribution = new AttributionPatching(model, clean, corrupted, metric);

        // By hand: the feature activations of both runs and the gradient at hook_sae_acts_post.
        Func<Tensor, Tensor> scalar = logits => Metrics.PerSequence(metric, logits, corrupted).mean();
        using var run = model.RunWithCacheAndGradients(corrupted, scalar, n => n == acts);
        var (_, cleanCache) = model.RunWithCache(clean, n => n == acts);
        using var _c = cleanCache;
        var product = (cleanCache[acts] - run.Activations[acts]) * run.Gradients[acts];
        foreach (var (feature, position) in new[] { (3, -1), (7, 4), (0, 0) })
        {
            var slice = position < 0 ? product[.., .., feature] : product[.., position, feature];
            Assert.Equal(slice.sum().item<float>(), attribution.Attribution(PatchSite.SaeFeature(config.HookName, feature, position)), 1e-4);
        }
        // The gradient at the feature activations against central differences (float32: a looser tolerance).
        var d = randn(run.Activations[acts].shape, generator: new Generator(4));
        double Perturb(double eps)
        {
            using var inner = NewDisposeScope();
            using var noGrad = no_grad();
            return scalar(model.RunWithHooks(corrupted, (acts, (a, _) => a + d * eps))).item<float>();
        }
        double fd = (Perturb(1e-2) - Perturb(-1e-2)) / 2e-2;
        double analytic = (run.Gradients[acts] * d).sum().item<float>();
        Assert.True(Math.Abs(fd - analytic) <= 2e-2 * Math.Abs(fd) + 1e-4, $"finite differences {fd:G6}, gradient {analytic:G6}");
    }

    /// <summary>
    /// Freezes what makes the last layer's head outputs nonlinear in the logits — the final norm's scale and the last
    /// MLP's output — at their corrupted-run values, tiled for batched sweeps.
    /// </summary>
    private static HookScope FreezeNonlinearHead(HookedTransformer model, Tensor corrupted, Tensor? mask)
    {
        string scale = HookNames.LnFinalScale, mlpOut = HookNames.MlpOut(model.Config.NLayers - 1);
        var names = new List<string> { scale };
        if (model.Config.Mlp != MlpKind.None) names.Add(mlpOut);
        var (_, cache) = model.RunWithCache(corrupted, mask, n => names.Contains(n));
        var frozen = names.ToDictionary(n => n, n => cache[n].clone().DetachFromDisposeScope());
        cache.Dispose();
        long batch = corrupted.shape[0];
        return model.Hooks(names.Select(n => (n, (HookFunction)((a, _) => frozen[n].repeat(a.shape[0] / batch, 1, 1)))).ToArray());
    }

    private void Report(string model, string setup, ActivationPatching activation, AttributionPatching attribution, IReadOnlyList<PatchSite> sites)
    {
        var act = activation.Sweep(sites);
        var att = attribution.Sweep(sites);
        var all = AttributionPatching.Compare(act, att);
        output.WriteLine($"{model} ({setup}): metric clean {activation.CleanMetric:0.000}, corrupted {activation.CorruptedMetric:0.000}");
        foreach (var kind in sites.Select(s => s.Kind).Distinct())
            foreach (bool perPosition in new[] { false, true })
            {
                var rows = all.Rows.Where(r => r.Site.Kind == kind && (r.Site.Position >= 0) == perPosition).ToArray();
                if (rows.Length < 2) continue;
                double r = AttributionPatching.Pearson(rows.Select(x => x.Activation).ToArray(), rows.Select(x => x.Attribution).ToArray());
                output.WriteLine($"  {PatchSite.Name(kind)} {(perPosition ? "per position" : "all positions")}: {rows.Length} sites, Pearson r = {r:0.000}, max |Δ| = {rows.Max(x => Math.Abs(x.Activation - x.Attribution)):0.000}");
            }
        output.WriteLine("  head_out (all positions): layer.head  activation  attribution");
        foreach (var row in all.Rows.Where(r => r.Site.Kind == PatchKind.HeadOut && r.Site.Position < 0))
            output.WriteLine($"    {row.Site.Layer}.{row.Site.Head}  {row.Activation,9:0.000}  {row.Attribution,9:0.000}");
        Assert.Equal(sites.Count, all.Rows.Count);
        Assert.False(double.IsNaN(all.Correlation));
        Assert.Equal(2 * sites.Count, PatchingTable.Build(act, att).RowCount);
    }

    private static List<PatchSite> ComparedSites(ModelConfig cfg, int positions)
    {
        var sites = new List<PatchSite>();
        foreach (var kind in new[] { PatchKind.ResidPre, PatchKind.AttnOut, PatchKind.MlpOut, PatchKind.HeadOut })
            sites.AddRange(ActivationPatching.Sites(cfg, positions, kind, perPosition: true));
        sites.AddRange(ActivationPatching.Sites(cfg, positions, PatchKind.HeadPattern, perPosition: false));
        return sites;
    }

    [Fact]
    public void BuiltIn_induction_compared_with_activation_patching_and_exact_on_the_last_layer_with_the_final_scale_frozen()
    {
        using var loaded = BuiltInModel.Load();
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        // The activation_patching experiment's default set-up: clean [BOS] r r, corrupted [BOS] c r, mean log-prob over the repeated half.
        var input = HeadDetection.RepeatedRandomTokens(loaded, 16, 24, seed: 0);
        var clean = input.Tokens;
        var corrupted = input.CorruptFirstCopy(1);
        int positions = (int)clean.shape[1];
        var loss = Metrics.Loss(input.Prefix + input.Half + 1);
        Metric logProb = (logits, tokens) => -loss(logits, tokens);
        using (var activation = new ActivationPatching(model, clean, corrupted, logProb))
        using (var attribution = new AttributionPatching(model, clean, corrupted, logProb))
            Report("built-in", "repeated random tokens, 16 × [BOS] + 24 + 24, mean log-prob of the repeated half", activation, attribution, ComparedSites(model.Config, positions));

        // A logit difference with ln_final's scale frozen: the last layer's head outputs reach it linearly.
        var answers = clean[.., -1].contiguous().data<long>().Select(x => (int)x).ToArray();
        var wrongs = corrupted[.., input.Prefix + input.Half - 1].contiguous().data<long>().Select(x => (int)x).ToArray();
        var diff = Metrics.LogitDiff(answers, wrongs, Enumerable.Repeat(positions - 2, answers.Length).ToArray());
        using (FreezeNonlinearHead(model, corrupted, null))
        {
            using var activation = new ActivationPatching(model, clean, corrupted, diff);
            using var attribution = new AttributionPatching(model, clean, corrupted, diff);
            var linear = HeadOutSites(model.Config, positions, model.Config.NLayers - 1);
            var comparison = AttributionPatching.Compare(activation.Sweep(linear), attribution.Sweep(linear));
            output.WriteLine($"built-in, logit diff with ln_final.hook_scale frozen: last-layer head outputs ({linear.Count} sites) max |Δ| = {comparison.MaxAbsDifference:G3}");
            Assert.True(comparison.MaxAbsDifference <= 1e-4, $"max |Δ| {comparison.MaxAbsDifference:G3}");
        }
    }

    [Fact]
    public void Stories_name_prompts_compared_with_activation_patching_and_exact_on_the_last_layer_with_the_head_frozen()
    {
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        using var prompts = PromptSet.Load(RepoFiles.Path("experiments/prompts/stories_names.jsonl"), model);
        var (clean, corrupted, mask) = (prompts.Clean.Tokens, prompts.Corrupted!.Tokens, prompts.Clean.AttentionMask);
        int positions = (int)clean.shape[1];
        var metric = prompts.LogitDiff();
        using (var activation = new ActivationPatching(model, clean, corrupted, metric, mask))
        using (var attribution = new AttributionPatching(model, clean, corrupted, metric, mask))
            Report("stories260K", $"{prompts.Count} name prompts of stories_names.jsonl, logit(answer) − logit(wrong)", activation, attribution, ComparedSites(model.Config, positions));

        using (FreezeNonlinearHead(model, corrupted, mask))
        {
            using var activation = new ActivationPatching(model, clean, corrupted, metric, mask);
            using var attribution = new AttributionPatching(model, clean, corrupted, metric, mask);
            var linear = HeadOutSites(model.Config, positions, model.Config.NLayers - 1);
            var comparison = AttributionPatching.Compare(activation.Sweep(linear), attribution.Sweep(linear));
            output.WriteLine($"stories260K with ln_final.hook_scale and the last hook_mlp_out frozen: last-layer head outputs ({linear.Count} sites) max |Δ| = {comparison.MaxAbsDifference:G3}");
            Assert.True(comparison.MaxAbsDifference <= 1e-4, $"max |Δ| {comparison.MaxAbsDifference:G3}");
        }
    }

}

using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// The analysis passes take SAE features as sites: ablation (one call and the sweep), activation patching and direct
/// logit attribution, each against the same edit written by hand, or against an exact decomposition identity.
/// </summary>
public sealed class SaePassesTests
{
    private const int DSae = 48;

    private static (HookedTransformer Model, Sae Sae) Build(string hook, int seed = 11)
    {
        var cfg = TestModels.Gpt2Like;
        var model = new HookedTransformer(cfg);
        model.InitWeights(seed);
        var config = new SaeConfig(cfg.DModel, DSae, SaeArchitecture.Standard, hook, true, "float32", "cpu", null, null);
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        using var scope = NewDisposeScope();
        var sae = Sae.Create(config, new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn([cfg.DModel, DSae], generator: gen) * 0.3, ["b_enc"] = randn([DSae], generator: gen) * 0.1,
            ["W_dec"] = randn([DSae, cfg.DModel], generator: gen) * 0.3, ["b_dec"] = randn([cfg.DModel], generator: gen) * 0.1,
        });
        return (model, sae);
    }

    private static Tensor Tokens(int seed, long batch = 3, long pos = 8)
    {
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        return randint(0, TestModels.Gpt2Like.DVocab, [batch, pos], generator: gen);
    }

    private static Tensor Clone(Tensor t) => t.detach().clone().DetachFromDisposeScope();

    [Fact]
    public void Ablating_a_feature_equals_zeroing_it_by_hand_and_the_sweep_agrees()
    {
        var (model, sae) = Build(HookNames.ResidPre(1));
        using var _m = model;
        using var _s = sae;
        using var scope = NewDisposeScope();
        var tokens = Tokens(1);
        var metric = Metrics.Loss();
        string acts = HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.ActsPost);
        using var splice = model.WithSaes(sae, useErrorTerm: true);
        // The features that fire somewhere, so that ablating them changes something.
        var (_, cache) = model.RunWithCache(tokens, n => n == acts);
        var firing = cache[acts].gt(0).sum([0L, 1L]).data<long>().Select((c, f) => (c, f)).Where(p => p.c > 0).Select(p => p.f).Take(4).ToArray();
        cache.Dispose();
        Assert.True(firing.Length == 4);
        var targets = firing.Select(f => AblationTarget.OfFeature(sae.Config.HookName, f)).Append(AblationTarget.OfFeature(sae.Config.HookName, firing[0], [2, 5])).ToArray();
        var rows = AblationSweep.Run(model, tokens, targets, AblationKind.Zero, metric);
        for (int i = 0; i < targets.Length; i++)
        {
            var t = targets[i];
            var byHand = Metrics.Evaluate(metric, model.RunWithHooks(tokens, (acts, (a, _) =>
            {
                var e = a.clone();
                if (t.Positions is null) e[TensorIndex.Ellipsis, t.Feature] = zeros(1);
                else foreach (int p in t.Positions) e[TensorIndex.Colon, p, t.Feature] = zeros(1);
                return e;
            })), tokens);
            var one = Ablation.Run(model, tokens, t, AblationKind.Zero, metric);
            Assert.Equal(byHand, one.MetricAblated, 1e-9);
            Assert.Equal(byHand, rows[i].MetricAblated, 1e-5);
            Assert.Equal("sae_feature", rows[i].Component);
            Assert.Equal(t.Feature, rows[i].Feature);
            Assert.NotEqual(one.MetricClean, one.MetricAblated);
        }
        var table = AblationSweep.ToTable(rows, "loss");
        Assert.Contains("feature", table.ColumnNames);
        var mean = Ablation.Run(model, tokens, targets[0], AblationKind.Mean, metric);
        Assert.True(double.IsFinite(mean.MetricAblated));
        Assert.Contains("outside the SAE's features", Assert.Throws<InterpException>(() => Ablation.Run(model, tokens, AblationTarget.OfFeature(sae.Config.HookName, DSae), AblationKind.Zero, metric)).Message);
        splice.Dispose();
        Assert.Contains("WithSaes", Assert.Throws<InterpException>(() => Ablation.Run(model, tokens, targets[0], AblationKind.Zero, metric)).Message);
    }

    [Fact]
    public void Patching_a_feature_copies_its_clean_activation_into_the_corrupted_run()
    {
        var (model, sae) = Build(HookNames.ResidPost(0));
        using var _m = model;
        using var _s = sae;
        using var scope = NewDisposeScope();
        var clean = Tokens(2, 2, 6);
        var corrupted = Tokens(3, 2, 6);
        var metric = Metrics.Loss();
        string acts = HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.ActsPost);
        using var splice = model.WithSaes(sae, useErrorTerm: true);
        using var patching = new ActivationPatching(model, clean, corrupted, metric);
        var (_, cache) = model.RunWithCache(clean, n => n == acts);
        var cleanActs = Clone(cache[acts]);
        cache.Dispose();
        foreach (var (feature, position) in new[] { (3, -1), (7, 4), (0, 0) })
        {
            var byHand = Metrics.Evaluate(metric, model.RunWithHooks(corrupted, (acts, (a, _) =>
            {
                var e = a.clone();
                if (position < 0) e[TensorIndex.Colon, TensorIndex.Colon, feature] = cleanActs[TensorIndex.Colon, TensorIndex.Colon, feature];
                else e[TensorIndex.Colon, position, feature] = cleanActs[TensorIndex.Colon, position, feature];
                return e;
            })), corrupted);
            Assert.Equal(byHand, patching.PatchedMetric([PatchSite.SaeFeature(sae.Config.HookName, feature, position)]), 1e-9);
        }
        Assert.Throws<InterpException>(() => patching.PatchedMetric([PatchSite.SaeFeature(sae.Config.HookName, -2)]));
    }

    [Fact]
    public void Feature_attributions_plus_bias_and_error_are_the_direct_logit_of_the_final_stream()
    {
        int last = TestModels.Gpt2Like.NLayers - 1;
        var (model, sae) = Build(HookNames.ResidPost(last));
        using var _m = model;
        using var _s = sae;
        using var scope = NewDisposeScope();
        var tokens = Tokens(4, 2, 7);
        using var splice = model.WithSaes(sae, useErrorTerm: true);
        var filter = SaeAttribution.CacheFilter(sae);
        var (logits, cache) = model.RunWithCache(tokens, n => filter(n) || HeadAttribution.CacheFilter(n));
        using (cache)
        {
            var correct = tokens.narrow(1, 1, 6);
            var wrong = (correct + 1).remainder(TestModels.Gpt2Like.DVocab);
            var heads = HeadAttribution.Attribute(model, cache, logits, correct, wrong);
            using var features = SaeAttribution.Attribute(model, sae, cache, correct, wrong);
            // The final stream is the SAE's output = Σ acts_f W_dec[f] + b_dec + error; only the final norm's shift
            // and b_U lie outside it.
            var outside = heads.Values[heads.IndexOf(new ResidualComponent(ComponentKind.LnFinalBias))]
                + heads.Values[heads.IndexOf(new ResidualComponent(ComponentKind.UnembedBias))];
            var sum = features.Values.sum([-1L]) + features.DecoderBias + features.Error!;
            TensorAssert.Close(heads.Logit - outside, sum, 1e-4, "features + b_dec + error = direct logit");
            Assert.Equal([2L, 6, DSae], features.Values.shape);
            Assert.True(features.ToTable(5).RowCount == 2 * 6 * 5);
        }
        using var onZ = Sae.Create(new SaeConfig(TestModels.Gpt2Like.DModel, 4, SaeArchitecture.Standard, HookNames.Z(0), true, "float32", "cpu", null, null) { ReshapeHookZ = true },
            new Dictionary<string, Tensor> { ["W_enc"] = zeros(32, 4), ["b_enc"] = zeros(4), ["W_dec"] = zeros(4, 32), ["b_dec"] = zeros(32) });
        using var empty = new ActivationCache();
        Assert.Contains("residual-stream write", Assert.Throws<InterpException>(() => SaeAttribution.Attribute(model, onZ, empty, tokens.narrow(1, 1, 6))).Message);
    }
}

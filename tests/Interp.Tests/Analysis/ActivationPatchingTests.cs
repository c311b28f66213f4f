using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>Activation patching against exact identities and against patches made by hand with hooks.</summary>
public sealed class ActivationPatchingTests
{
    private const int Batch = 3, Pos = 10;

    public static TheoryData<string> Configs => ["gpt2", "llama", "attn-only"];

    private static ModelConfig Config(string name) => name switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        _ => TestModels.AttnOnlySinusoidal,
    };

    /// <summary>Every site of every kind: one per layer (× head) at all positions, and one per position.</summary>
    private static List<PatchSite> AllSites(ModelConfig cfg, int pos) =>
        Enum.GetValues<PatchKind>().SelectMany(k => ActivationPatching.Sites(cfg, pos, k, perPosition: true)).ToList();

    private static (Tensor Clean, Tensor Corrupted) Tokens(int vocab) =>
        (TestModels.RandomTokens(vocab, Batch, Pos, seed: 11), TestModels.RandomTokens(vocab, Batch, Pos, seed: 12));

    [Theory]
    [MemberData(nameof(Configs))]
    public void Clean_into_clean_gives_one_everywhere_for_every_patch_kind(string config)
    {
        var cfg = Config(config);
        using var model = TestModels.Random(cfg);
        using var scope = NewDisposeScope();
        var (clean, corrupted) = Tokens(cfg.DVocab);
        using var patching = new ActivationPatching(model, clean, corrupted, Metrics.Loss()) { SequencesPerPass = 64 };
        var sites = AllSites(cfg, Pos);
        Assert.Equal(cfg.Mlp != MlpKind.None, sites.Any(s => s.Kind == PatchKind.MlpOut));
        var raw = patching.PatchedMetrics(sites, target: clean);
        Assert.Equal(sites.Count, raw.Length);
        Assert.All(raw, r => Assert.Equal(1.0, patching.Normalise(r), 6));
        Assert.Equal(1.0, patching.Normalise(patching.PatchedMetric(sites, target: clean)), 1e-6);   // all at once, too
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void Whole_input_of_layer_zero_restores_everything_and_nothing_restores_nothing(string config)
    {
        var cfg = Config(config);
        using var model = TestModels.Random(cfg);
        using var scope = NewDisposeScope();
        var (clean, corrupted) = Tokens(cfg.DVocab);
        // A metric of the logits alone: the patched run's tokens (the corrupted ones) do not enter it.
        using var patching = new ActivationPatching(model, clean, corrupted, Metrics.LogitDiff(3, 5, position: 6));
        Assert.Equal(1.0, patching.Patch(PatchSite.ResidPre(0)), 1e-6);
        Assert.Equal(1.0, patching.Patch(Enumerable.Range(0, Pos).Select(p => PatchSite.ResidPre(0, p)).ToArray()), 1e-6);
        Assert.Equal(1.0, patching.Patch(PatchSite.ResidPre(cfg.NLayers - 1)), 1e-6);
        Assert.Equal(0.0, patching.Patch(), 1e-6);
        Assert.Equal(patching.CorruptedMetric, patching.PatchedMetric([]), 1e-6);
        Assert.Equal(patching.CleanMetric, patching.PatchedMetric([], target: clean), 1e-6);
        // The clean metric is read from the cached run's last residual stream: exactly what a reads-only clean forward gives.
        var reads = Metrics.ReadsFor(Metrics.LogitDiff(3, 5, position: 6), model)!;
        Assert.Equal(Metrics.PerSequence(reads, model.forward(clean, null, reads)).to(ScalarType.Float64).mean().item<double>(), patching.CleanMetric);
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void Patching_after_the_metric_position_changes_nothing(string config)
    {
        var cfg = Config(config);
        using var model = TestModels.Random(cfg);
        using var scope = NewDisposeScope();
        var (clean, corrupted) = Tokens(cfg.DVocab);
        const int at = 6;
        using var patching = new ActivationPatching(model, clean, corrupted, Metrics.LogitDiff(3, 5, position: at));
        var later = AllSites(cfg, Pos).Where(s => s.Position > at).ToArray();
        Assert.NotEmpty(later);
        Assert.All(patching.Sweep(later), r => Assert.Equal(0.0, r.Value, 6));
        Assert.Equal(0.0, patching.Patch(later), 1e-6);                                            // all of them at once
        Assert.NotEqual(0.0, patching.Patch(PatchSite.ResidPre(0, at)), 3);                     // the metric's own position does matter
    }

    [Fact]
    public void Each_patch_equals_the_same_patch_made_by_hand_with_a_hook()
    {
        var cfg = TestModels.Gpt2Like;
        using var model = TestModels.Random(cfg);
        using var scope = NewDisposeScope();
        var (clean, corrupted) = Tokens(cfg.DVocab);
        var metric = Metrics.Loss(2, 9);
        using var patching = new ActivationPatching(model, clean, corrupted, metric) { SequencesPerPass = 2 * Batch };   // 2 patches per pass
        var (_, cache) = model.RunWithCache(clean);
        using (cache)
        {
            // Each hand-made hook replaces the slice with the clean run's values and leaves the rest alone.
            (PatchSite Site, HookFunction Hook)[] cases =
            [
                (PatchSite.ResidPre(1, 4), (x, _) => { var c = x.clone(); c[.., 4] = cache[HookNames.ResidPre(1)][.., 4]; return c; }),
                (PatchSite.AttnOut(0), (_, _) => cache[HookNames.AttnOut(0)].clone()),
                (PatchSite.MlpOut(1, 7), (x, _) => { var c = x.clone(); c[.., 7] = cache[HookNames.MlpOut(1)][.., 7]; return c; }),
                (PatchSite.HeadOut(1, 2), (x, _) => { var c = x.clone(); c[.., .., 2] = cache[HookNames.Z(1)][.., .., 2]; return c; }),
                (PatchSite.HeadOut(0, 3, 5), (x, _) => { var c = x.clone(); c[.., 5, 3] = cache[HookNames.Z(0)][.., 5, 3]; return c; }),
                (PatchSite.HeadPattern(1, 1), (x, _) => { var c = x.clone(); c[.., 1] = cache[HookNames.Pattern(1)][.., 1]; return c; }),
                (PatchSite.HeadPattern(0, 0, 8), (x, _) => { var c = x.clone(); c[.., 0, 8] = cache[HookNames.Pattern(0)][.., 0, 8]; return c; }),
            ];
            var swept = patching.Sweep(cases.Select(c => c.Site));
            for (int i = 0; i < cases.Length; i++)
            {
                var logits = model.RunWithHooks(corrupted, (cases[i].Site.HookName, cases[i].Hook));
                double expected = Metrics.Evaluate(metric, logits, corrupted);
                Assert.Equal(expected, swept[i].Raw, 1e-5);
                Assert.Equal((expected - patching.CorruptedMetric) / (patching.CleanMetric - patching.CorruptedMetric), swept[i].Value, 1e-5);
            }
        }
        // One patch per pass or many: the same numbers.
        var sites = AllSites(cfg, Pos);
        using var onePerPass = new ActivationPatching(model, clean, corrupted, metric) { SequencesPerPass = 1 };
        var a = onePerPass.PatchedMetrics(sites.Take(40));
        var b = patching.PatchedMetrics(sites.Take(40));
        for (int i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i], 1e-5);
    }

    [Fact]
    public void Inputs_of_different_shapes_are_a_clear_error_naming_both_shapes()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<InterpException>(() => new ActivationPatching(model,
            TestModels.RandomTokens(50, 2, 9), TestModels.RandomTokens(50, 2, 10), Metrics.Loss()));
        Assert.Contains("clean tokens have shape [2, 9], corrupted tokens [2, 10]", ex.Message);

        var tok = ActivationPatching.Tokenize(new Gpt2Tokenizer(), "When Mary and John went", "When Alice and Bob went");
        Assert.Equal(tok.Clean.shape, tok.Corrupted.shape);
        var text = Assert.Throws<InterpException>(() => ActivationPatching.Tokenize(new Gpt2Tokenizer(), "The cat sat", "The cat sat down"));
        Assert.Contains("clean prompt \"The cat sat\" tokenises to shape [1, 4], corrupted prompt \"The cat sat down\" to [1, 5]", text.Message);

        using var patching = new ActivationPatching(model, TestModels.RandomTokens(50, 2, 9, seed: 1), TestModels.RandomTokens(50, 2, 9, seed: 2), Metrics.Loss());
        var target = Assert.Throws<InterpException>(() => patching.PatchedMetric([PatchSite.ResidPre(0)], TestModels.RandomTokens(50, 3, 9)));
        Assert.Contains("clean tokens' shape [2, 9]; got [3, 9]", target.Message);
    }

    [Fact]
    public void Nothing_to_recover_and_bad_sites_are_clear_errors()
    {
        using var model = TestModels.Random(TestModels.AttnOnlySinusoidal);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(50, 2, 8);
        using (var same = new ActivationPatching(model, tokens, tokens.clone(), Metrics.Loss()))
        {
            Assert.Equal(same.CleanMetric, same.PatchedMetric([PatchSite.HeadOut(0, 1)]), 1e-6);     // raw values still work
            var ex = Assert.Throws<InterpException>(() => same.Patch(PatchSite.HeadOut(0, 1)));
            Assert.Contains("nothing to recover", ex.Message);
        }
        using var patching = new ActivationPatching(model, tokens, TestModels.RandomTokens(50, 2, 8, seed: 3), Metrics.Loss());
        Assert.Contains("layer 2 is outside the model's layers [0, 2)", Assert.Throws<InterpException>(() => patching.Patch(PatchSite.ResidPre(2))).Message);
        Assert.Contains("head 4 is outside the model's heads [0, 4)", Assert.Throws<InterpException>(() => patching.Patch(PatchSite.HeadOut(1, 4))).Message);
        Assert.Contains("position 8 is outside the sequence [0, 8)", Assert.Throws<InterpException>(() => patching.Patch(PatchSite.AttnOut(0, 8))).Message);
        Assert.Contains("blocks.0.hook_mlp_out does not exist: this model is attention-only", Assert.Throws<InterpException>(() => patching.Patch(PatchSite.MlpOut(0))).Message);
        Assert.Contains("resid_pre has no heads", Assert.Throws<InterpException>(() => patching.Patch(new PatchSite(PatchKind.ResidPre, 0, 1))).Message);
    }
}

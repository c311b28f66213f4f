using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// <c>model.WithSaes</c> on the shared SAE and gpt2-tiny-random: the spliced logits against SAELens's reference, the
/// error-term identity (exact), an edited feature moving the output by exactly its decoder row, and the SAE's stages as
/// the model's hook points.
/// </summary>
public sealed class SaeSpliceTests
{
    private const int N = 40, DIn = 64, DSae = 256;

    private static string Folder => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");
    private static string Reference(string file) => Path.Combine(Folder, "reference", file);

    private static long[] TokenIds() => File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt"))
        .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    private static string Leaf(Sae sae, string leaf) => HookNames.SaeLeaf.Of(sae.Config.HookName, leaf);

    [Fact]
    public void Spliced_logits_match_SAELens_and_the_scope_removes_the_sae()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [1, N]);
        var clean = model.forward(tokens);
        int before = model.HookPoints.Count;
        using (model.WithSaes(sae))
        {
            TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("logits_with_sae.f32"), N, 1000), model.forward(tokens)[0], 2e-4, "logits_with_sae");
            Assert.Equal(before + 5, model.HookPoints.Count);   // no hook_sae_error without the error term
            Assert.Throws<UnknownHookException>(() => model.GetHookPoint(Leaf(sae, HookNames.SaeLeaf.Error)));
        }
        Assert.Equal(before, model.HookPoints.Count);
        Assert.Throws<UnknownHookException>(() => model.GetHookPoint(Leaf(sae, HookNames.SaeLeaf.ActsPost)));
        TensorAssert.Close(clean, model.forward(tokens), 0, "logits after the scope");
    }

    [Fact]
    public void The_cache_holds_every_stage_under_its_hook_name_in_forward_order()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [1, N]);
        using var splice = model.WithSaes(sae, useErrorTerm: true);
        var (logits, cache) = model.RunWithCache(tokens);
        using (cache)
        {
            string[] leaves = [HookNames.SaeLeaf.Input, HookNames.SaeLeaf.ActsPre, HookNames.SaeLeaf.ActsPost, HookNames.SaeLeaf.Recons, HookNames.SaeLeaf.Error, HookNames.SaeLeaf.Output];
            var names = cache.Names.ToList();
            int host = names.IndexOf(sae.Config.HookName);
            Assert.True(host >= 0);
            Assert.Equal(leaves.Select(l => Leaf(sae, l)), names.Skip(host + 1).Take(leaves.Length));
            Assert.Equal([1L, N, DSae], cache[Leaf(sae, HookNames.SaeLeaf.ActsPost)].shape);
            TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("feature_acts.f32"), N, DSae), cache[Leaf(sae, HookNames.SaeLeaf.ActsPost)][0], 0.005, "acts");
            // The host hook sees what the SAE reads; with the error term and only caching hooks the output is the input, bit for bit.
            TensorAssert.Close(cache[sae.Config.HookName], cache[Leaf(sae, HookNames.SaeLeaf.Output)], 0, "output = input");
            Assert.Equal([1L, N, DSae], model.HookShape(model.GetHookPoint(Leaf(sae, HookNames.SaeLeaf.ActsPre)), 1, N));
        }
        TensorAssert.Close(model.RunWithHooks(tokens), logits, 0, "logits with caching hooks");
    }

    [Fact]
    public void With_the_error_term_and_no_edit_the_logits_are_the_models_own_exactly()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [1, N]);
        var clean = model.forward(tokens);
        using (model.WithSaes(sae, useErrorTerm: true))
        {
            TensorAssert.Close(clean, model.forward(tokens), 0, "logits with the error term");
            // A hook that reads the features but returns nothing changes nothing either.
            var read = model.RunWithHooks(tokens, (Leaf(sae, HookNames.SaeLeaf.ActsPost), (HookFunction)((a, _) => { a.sum().Dispose(); return null; })));
            TensorAssert.Close(clean, read, 0, "logits with a reading hook");
        }
    }

    [Fact]
    public void An_edited_feature_moves_the_output_by_its_decoder_row_and_matches_SAELens()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        const int feature = 22;   // metrics.json ablated_feature
        var x = TensorAssert.ReadRawFloats(Reference("input.f32"), N, DIn).unsqueeze(0);
        // Drive the splice with the reference input at the hook, so the output compares with SAELens's to 1e-4.
        Tensor? output = null, acts = null;
        using (model.WithSaes(sae, useErrorTerm: true))
        using (model.Hooks(
            (sae.Config.HookName, (_, _) => x),
            (Leaf(sae, HookNames.SaeLeaf.ActsPost), (a, _) =>
            {
                acts = a.detach().clone().DetachFromDisposeScope();
                var edited = a.clone();
                edited[TensorIndex.Ellipsis, feature] = zeros(1);
                return edited;
            }),
            (Leaf(sae, HookNames.SaeLeaf.Output), (o, _) => { output = o.detach().clone().DetachFromDisposeScope(); return null; })))
            model.forward(tensor(TokenIds(), [1, N]));
        using var o = output!;
        using var a = acts!;
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("output_error_term_ablated.f32"), N, DIn), o[0], 1e-4, "output_error_term_ablated");
        // output − x = decode(edited) − decode(clean) = −acts[:, f] ⊗ W_dec[f].
        var expected = -(a[0, TensorIndex.Colon, feature].unsqueeze(1) * sae.WDec[feature].unsqueeze(0));
        TensorAssert.Close(expected, o[0] - x[0], 2e-5, "change of the output");
    }

    [Fact]
    public void Splicing_checks_the_hook_point_and_its_width_first()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        int before = model.HookPoints.Count;
        using (model.WithSaes(sae))
        {
            var twice = Assert.Throws<HookException>(() => model.WithSaes(sae));
            Assert.Equal(sae.Config.HookName, twice.HookName);
        }
        using var dir = new TempDir();
        sae.Save(dir.Path);
        string cfg = File.ReadAllText(dir.File(Sae.ConfigFile));
        File.WriteAllText(dir.File(Sae.ConfigFile), cfg.Replace(HookNames.ResidPre(1), HookNames.ResidPre(1) + "x"));
        using (var typo = Sae.Load(dir.Path))
            Assert.Contains(HookNames.ResidPre(1), Assert.Throws<UnknownHookException>(() => model.WithSaes(typo)).Suggestions);
        File.WriteAllText(dir.File(Sae.ConfigFile), cfg.Replace(HookNames.ResidPre(1), HookNames.MlpPost(0)));
        using (var wide = Sae.Load(dir.Path))
        {
            var ex = Assert.Throws<HookException>(() => model.WithSaes(wide));
            Assert.Equal(HookNames.MlpPost(0), ex.HookName);
            Assert.Contains("d_mlp", ex.Message);
        }
        Assert.Equal(before, model.HookPoints.Count);
    }

    [Fact]
    public void A_hook_z_sae_reads_the_heads_flattened_and_writes_them_back()
    {
        var cfg = TestModels.Gpt2Like with { NLayers = 2 };
        using var model = new HookedTransformer(cfg);
        model.InitWeights(3);
        int dIn = cfg.NHeads * cfg.HeadDim;
        using var scope = NewDisposeScope();
        var config = new SaeConfig(dIn, 24, SaeArchitecture.Standard, HookNames.Z(1), true, "float32", "cpu", null, null) { ReshapeHookZ = true };
        using var gen = new TorchSharp.torch.Generator(5);
        using var sae = Sae.Create(config, new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn([dIn, 24], generator: gen), ["b_enc"] = randn([24], generator: gen) * 0.1,
            ["W_dec"] = randn([24, dIn], generator: gen) * 0.2, ["b_dec"] = randn([dIn], generator: gen) * 0.1,
        });
        var tokens = randint(0, cfg.DVocab, [2, 7], generator: gen);
        var clean = model.forward(tokens);
        Tensor? z = null;
        using (model.Hooks((HookNames.Z(1), (a, _) => { z = a.detach().clone().DetachFromDisposeScope(); return null; }))) model.forward(tokens);
        var expected = model.RunWithHooks(tokens, (HookNames.Z(1), (a, _) => sae.Reconstruct(a)));
        using (model.WithSaes(sae))
        {
            var (logits, cache) = model.RunWithCache(tokens);
            using (cache)
            {
                Assert.Equal([2L, 7, dIn], cache[HookNames.SaeLeaf.Of(HookNames.Z(1), HookNames.SaeLeaf.Input)].shape);
                TensorAssert.Close(z!.flatten(-2), cache[HookNames.SaeLeaf.Of(HookNames.Z(1), HookNames.SaeLeaf.Input)], 0, "flattened input");
                Assert.Equal(z!.shape, cache[HookNames.SaeLeaf.Of(HookNames.Z(1), HookNames.SaeLeaf.Output)].shape);
            }
            TensorAssert.Close(expected, logits, 1e-5, "spliced hook_z logits");
        }
        using (model.WithSaes(sae, useErrorTerm: true)) TensorAssert.Close(clean, model.forward(tokens), 0, "hook_z error term");
    }

    [Fact]
    public void A_transcoder_reads_one_hook_and_replaces_another()
    {
        var cfg = TestModels.Gpt2Like with { NLayers = 2 };
        using var model = new HookedTransformer(cfg);
        model.InitWeights(4);
        using var scope = NewDisposeScope();
        int d = cfg.DModel;
        var config = new SaeConfig(d, 32, SaeArchitecture.SkipTranscoder, HookNames.Normalized(0, "ln2"), false, "float32", "cpu", null, null)
        { DOut = d, HookNameOut = HookNames.MlpOut(0) };
        using var gen = new TorchSharp.torch.Generator(6);
        using var tc = Sae.Create(config, new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn([d, 32], generator: gen), ["b_enc"] = zeros(32),
            ["W_dec"] = randn([32, d], generator: gen) * 0.1, ["b_dec"] = randn([d], generator: gen) * 0.1,
            ["W_skip"] = randn([d, d], generator: gen) * 0.05,
        });
        var tokens = randint(0, cfg.DVocab, [1, 9], generator: gen);
        var clean = model.forward(tokens);
        Tensor? read = null;
        var expected = model.RunWithHooks(tokens,
            (HookNames.Normalized(0, "ln2"), (a, _) => { read = a.detach().clone(); return null; }),
            (HookNames.MlpOut(0), (_, _) => tc.Reconstruct(read!)));
        using (model.WithSaes(tc)) TensorAssert.Close(expected, model.forward(tokens), 1e-6, "transcoder logits");
        using (model.WithSaes(tc, useErrorTerm: true)) TensorAssert.Close(clean, model.forward(tokens), 0, "transcoder error term");
        var backwards = config with { HookName = HookNames.MlpOut(1) };
        using var wrong = Sae.Create(backwards, tc.StateDict.ToDictionary(p => p.Key, p => p.Value));
        Assert.Equal(HookNames.MlpOut(0), Assert.Throws<HookException>(() => model.WithSaes(wrong)).HookName);
    }
}

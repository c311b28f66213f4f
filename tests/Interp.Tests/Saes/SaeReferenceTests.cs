using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// The SAELens-format SAE of ../shared/saes/gpt2-tiny-random-res-1 against its float64 references: every forward stage
/// within 1e-4, L0 exact, explained variance within 1e-5, and (from tokens) the spliced model's logits within 2e-4.
/// </summary>
public sealed class SaeReferenceTests
{
    private const int N = 40, DIn = 64, DSae = 256;

    private static string Folder => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");
    private static string Reference(string file) => Path.Combine(Folder, "reference", file);

    [Fact]
    public void Config_and_shapes_load_as_the_readme_lists()
    {
        using var sae = Sae.Load(Folder);
        var c = sae.Config;
        Assert.Equal(DIn, c.DIn);
        Assert.Equal(DSae, c.DSae);
        Assert.Equal(SaeArchitecture.Standard, c.Architecture);
        Assert.Equal(HookNames.ResidPre(1), c.HookName);
        Assert.True(c.ApplyBDecToInput);
        Assert.Equal("float32", c.DType);
        Assert.Equal("cpu", c.Device);
        Assert.Equal("gpt2-tiny-random", c.ModelName);
        Assert.Null(c.K);
        Assert.Equal([DIn, DSae], sae.WEnc.shape);
        Assert.Equal([DSae], sae.BEnc.shape);
        Assert.Equal([DSae, DIn], sae.WDec.shape);
        Assert.Equal([DIn], sae.BDec.shape);
        Assert.Throws<InvalidOperationException>(() => sae.Threshold);
    }

    [Fact]
    public void Forward_matches_every_reference_stage()
    {
        using var sae = Sae.Load(Folder);
        using var scope = NewDisposeScope();
        var x = TensorAssert.ReadRawFloats(Reference("input.f32"), N, DIn);
        using var stages = sae.Forward(x);
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("hidden_pre.f32"), N, DSae), stages.ActsPre, 1e-4, "hidden_pre");
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("feature_acts.f32"), N, DSae), stages.ActsPost, 1e-4, "feature_acts");
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("hook_sae_recons.f32"), N, DIn), stages.Recons, 1e-4, "hook_sae_recons");
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("reconstruction.f32"), N, DIn), stages.Output, 1e-4, "reconstruction");
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("error.f32"), N, DIn), stages.Error(), 1e-4, "error");
        TensorAssert.Close(x, stages.Input, 0, "input");
        TensorAssert.Close(stages.ActsPost, sae.Encode(x), 0, "Encode");
        TensorAssert.Close(stages.Output, sae.Decode(sae.Encode(x)), 0, "Decode");

        var expectedL0 = TensorAssert.ReadRawFloats(Reference("l0.f32"), N).to(ScalarType.Int64);
        Assert.Equal(expectedL0.data<long>().ToArray(), Sae.L0(stages.ActsPost).data<long>().ToArray());

        double ev = TensorAssert.ReadRawFloats(Reference("explained_variance.f32"), 1).item<float>();
        Assert.InRange(Sae.ExplainedVariance(x, stages.Output), ev - 1e-5, ev + 1e-5);

        var names = stages.ByHookName(sae.Config.HookName).Keys.ToArray();
        Assert.Contains(HookNames.SaeLeaf.Of(HookNames.ResidPre(1), HookNames.SaeLeaf.ActsPost), names);
    }

    [Fact]
    public void Error_term_keeps_the_input_and_carries_through_a_feature_edit()
    {
        using var sae = Sae.Load(Folder);
        using var scope = NewDisposeScope();
        var x = TensorAssert.ReadRawFloats(Reference("input.f32"), N, DIn);
        using var stages = sae.Forward(x);
        var error = stages.Error();
        TensorAssert.Close(x, stages.Output + error, 1e-5, "reconstruction + error");
        var edited = stages.ActsPost.clone();
        edited[TensorIndex.Colon, TensorIndex.Single(22)] = zeros(N);
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("output_error_term_ablated.f32"), N, DIn), sae.Decode(edited) + error, 1e-4,
            "output_error_term_ablated");
    }

    [Fact]
    public void From_tokens_the_active_sets_match_and_the_spliced_logits_match()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        var ids = File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt"))
            .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        Assert.Equal(N, ids.Length);
        using var scope = NewDisposeScope();
        var tokens = tensor(ids, [1, N]);
        var (_, cache) = model.RunWithCache(tokens, name => name == sae.Config.HookName);
        using (cache)
        {
            var resid = cache[sae.Config.HookName][0];
            using var stages = sae.Forward(resid);
            var expectedL0 = TensorAssert.ReadRawFloats(Reference("l0.f32"), N).to(ScalarType.Int64);
            Assert.Equal(expectedL0.data<long>().ToArray(), Sae.L0(stages.ActsPost).data<long>().ToArray());
            var expectedActs = TensorAssert.ReadRawFloats(Reference("feature_acts.f32"), N, DSae);
            Assert.True(expectedActs.ne(Scalars.Zero).eq(stages.ActsPost.ne(Scalars.Zero)).all().item<bool>(), "active sets differ");
            TensorAssert.Close(expectedActs, stages.ActsPost, 0.005, "feature_acts from tokens");
            TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("reconstruction.f32"), N, DIn), stages.Output, 0.004, "reconstruction from tokens");
        }

        var logits = model.RunWithHooks(tokens, (sae.Config.HookName, (x, _) =>
        {
            using var s = sae.Forward(x);
            return s.Output.clone();
        }));
        TensorAssert.Close(TensorAssert.ReadRawFloats(Reference("logits_with_sae.f32"), N, 1000), logits[0], 2e-4, "logits_with_sae");
    }

    [Fact]
    public void Spliced_metrics_match_and_the_error_term_leaves_the_logits_unchanged()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        var ids = File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt"))
            .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        using var scope = NewDisposeScope();
        var tokens = tensor(ids, [1, N]);
        var clean = model.RunWithHooks(tokens)[0].to(ScalarType.Float64);
        var spliced = model.RunWithHooks(tokens, (sae.Config.HookName, (x, _) =>
        {
            using var s = sae.Forward(x);
            return s.Output.clone();
        }))[0].to(ScalarType.Float64);
        var withError = model.RunWithHooks(tokens, (sae.Config.HookName, (x, _) =>
        {
            using var s = sae.Forward(x);
            return s.Output + s.Error();
        }))[0].to(ScalarType.Float64);
        TensorAssert.Close(clean, withError, 1e-4, "logits with the error term");

        var targets = tensor(ids[1..]).unsqueeze(1);
        double Ce(Tensor logits) => -nn.functional.log_softmax(logits[TensorIndex.Slice(0, N - 1)], 1).gather(1, targets).mean().item<double>();
        var logP = nn.functional.log_softmax(clean, 1);
        double kl = (logP.exp() * (logP - nn.functional.log_softmax(spliced, 1))).sum(1).mean().item<double>();
        Assert.InRange(Ce(clean), 8.213274043596757 - 1e-3, 8.213274043596757 + 1e-3);
        Assert.InRange(Ce(spliced), 8.598115185331238 - 1e-3, 8.598115185331238 + 1e-3);
        Assert.InRange(kl, 0.7915352739755713 - 1e-3, 0.7915352739755713 + 1e-3);
    }

    [Theory]
    [InlineData("\"d_in\": 64", "\"d_in\": \"64\"", "cfg.json", "d_in")]
    [InlineData("\"d_in\": 64,", "", "cfg.json", "d_in")]
    [InlineData("\"d_in\": 64", "\"d_in\": 65", "sae_weights.safetensors", "W_enc")]
    [InlineData("\"apply_b_dec_to_input\": true", "\"apply_b_dec_to_input\": 1", "cfg.json", "apply_b_dec_to_input")]
    [InlineData("\"normalize_activations\": \"none\"", "\"normalize_activations\": \"batch_norm\"", "cfg.json", "normalize_activations")]
    [InlineData("\"architecture\": \"standard\"", "\"architecture\": \"matryoshka\"", "cfg.json", "architecture")]
    [InlineData("\"architecture\": \"standard\"", "\"architecture\": \"gated\"", "sae_weights.safetensors", "b_gate")]
    [InlineData("\"architecture\": \"standard\"", "\"architecture\": \"transcoder\"", "cfg.json", "d_out")]
    [InlineData("\"architecture\": \"standard\"", "\"architecture\": \"jumprelu\"", "sae_weights.safetensors", "threshold")]
    [InlineData("\"hook_name\": \"blocks.1.hook_resid_pre\"", "\"hook_name\": 3", "cfg.json", "metadata.hook_name")]
    public void Bad_config_names_the_file_and_key(string find, string replace, string faultyFile, string key)
    {
        using var dir = new TempDir();
        File.Copy(Path.Combine(Folder, Sae.WeightsFile), Path.Combine(dir.Path, Sae.WeightsFile));
        string json = File.ReadAllText(Path.Combine(Folder, Sae.ConfigFile));
        Assert.Contains(find, json);
        File.WriteAllText(Path.Combine(dir.Path, Sae.ConfigFile), json.Replace(find, replace));
        var ex = Assert.Throws<ModelFileException>(() => Sae.Load(dir.Path));
        Assert.Equal(faultyFile, Path.GetFileName(ex.FilePath));
        Assert.Equal(key, ex.TensorName);
    }
}

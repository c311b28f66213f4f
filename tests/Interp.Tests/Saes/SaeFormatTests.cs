using System.Text.Json.Nodes;
using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// Every architecture × normalisation SAELens 6 loads (and hook_z reshaping, TopK with decoder-norm rescaling,
/// transcoders) on random weights written in SAELens's on-disk layout, loaded with <see cref="Sae.Load"/>, every stage of
/// <see cref="Sae.Forward"/> against <see cref="ReferenceSae"/> (an independent double-precision implementation of
/// SAELens's source); the pre-6 config layouts against their v6 equivalents; Save → Load round trips.
/// </summary>
public sealed class SaeFormatTests
{
    private const int Rows = 16;

    private static readonly string[] Norms = ["none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"];

    private static IEnumerable<SaeSpec> AllSpecs()
    {
        SaeSpec[] archs = [new("standard"), new("jumprelu"), new("topk", K: 5), new("topk", K: 5, Rescale: true), new("gated")];
        foreach (var a in archs)
            foreach (var n in Norms)
                foreach (bool b in new[] { true, false })
                    yield return a with { Normalize = n, ApplyBDec = b };
        for (int i = 0; i < archs.Length; i++)
            yield return archs[i] with { HookZ = true, Normalize = Norms[i % Norms.Length] };
        foreach (var t in new[] { "transcoder", "skip_transcoder", "jumprelu_transcoder" })
            foreach (var n in new[] { "none", "expected_average_only_in" })
                yield return new SaeSpec(t, n, ApplyBDec: false);
    }

    private static readonly Dictionary<string, SaeSpec> Specs = AllSpecs().ToDictionary(s => s.ToString());

    public static TheoryData<string> SpecNames() => new(Specs.Keys);

    private static int Seed(SaeSpec s) => StringComparer.Ordinal.GetHashCode(s.ToString()) & 0xFFFF;

    /// <summary>Loads the spec's SAE from a folder written in SAELens's layout and checks every stage against the reference.</summary>
    private static void CheckForward(Sae sae, SaeSpec spec, ReferenceSae reference, int seed)
    {
        var x = SaeFiles.InputsAwayFromBoundaries(reference, seed, Rows);
        var r = reference.Forward(x, Rows);
        using var scope = NewDisposeScope();
        long[] shape = spec.HookZ ? [Rows, SaeSpec.NHeads, spec.DIn / SaeSpec.NHeads] : [Rows, spec.DIn];
        using var stages = sae.Forward(tensor(x, shape));
        Assert.Equal([Rows, (long)spec.DIn], stages.Input.shape);
        Assert.Equal([Rows, (long)spec.DSae], stages.ActsPre.shape);
        Assert.Equal([Rows, (long)spec.DSae], stages.ActsPost.shape);
        Assert.Equal([Rows, (long)spec.Out], stages.Recons.shape);
        Assert.Equal(spec.HookZ ? shape : [Rows, spec.Out], stages.Output.shape);
        SaeFiles.Close(r.Input, stages.Input, 0, "hook_sae_input");
        SaeFiles.Close(r.ActsPre, stages.ActsPre, 1e-4, "hook_sae_acts_pre");
        SaeFiles.Close(r.ActsPost, stages.ActsPost, 1e-4, "hook_sae_acts_post");
        SaeFiles.Close(r.Recons, stages.Recons, 1e-4, "hook_sae_recons");
        SaeFiles.Close(r.Output, stages.Output, 1e-4, "hook_sae_output");
        // The active sets, exactly (every decision is ≥ 1e-3 from its boundary), and so L0.
        var acts = SaeFiles.Doubles(stages.ActsPost);
        for (int i = 0; i < acts.Length; i++)
            Assert.True((acts[i] != 0) == (r.ActsPost[i] != 0), $"row {i / spec.DSae} feature {i % spec.DSae}: active {acts[i] != 0}, reference {r.ActsPost[i] != 0}");
        using var l0 = Sae.L0(stages.ActsPost);
        Assert.Equal(r.L0.Select(v => (long)v).ToArray(), l0.data<long>().ToArray());
        if (spec.Architecture == "topk") Assert.All(r.L0, v => Assert.True(v <= spec.K));
    }

    [Theory]
    [MemberData(nameof(SpecNames))]
    public void Every_stage_of_the_forward_matches_the_SAELens_reference(string name)
    {
        var spec = Specs[name];
        var t = SaeFiles.RandomTensors(spec, Seed(spec));
        using var dir = new TempDir();
        SaeFiles.Write(dir.Path, spec, SaeFiles.V6Config(spec, hookNameOutInMetadata: Seed(spec) % 2 == 0), t);
        using var sae = Sae.Load(dir.Path);
        Assert.Equal(spec.Architecture, sae.Config.ArchitectureName);
        Assert.Equal(spec.Normalize, sae.Config.NormalizationName);
        Assert.Equal(spec.HookZ, sae.Config.ReshapeHookZ);
        Assert.Equal(spec.Rescale, sae.Config.RescaleActsByDecoderNorm);
        Assert.Equal(spec.Out, sae.Config.DOut);
        if (spec.IsTranscoder) Assert.Equal(SaeSpec.HookOut, sae.Config.HookNameOut);
        CheckForward(sae, spec, SaeFiles.Reference(spec, t), Seed(spec) + 1);
    }

    [Fact]
    public void TopK_decoder_norm_rescaling_changes_the_chosen_features_on_these_weights()
    {
        // Guards the test data: without rescaling, some position would pick other features.
        var spec = Specs[new SaeSpec("topk", K: 5, Rescale: true).ToString()];
        var t = SaeFiles.RandomTensors(spec, Seed(spec));
        var rescaled = SaeFiles.Reference(spec, t);
        var plain = SaeFiles.Reference(spec with { Rescale = false }, t);
        var x = SaeFiles.InputsAwayFromBoundaries(rescaled, Seed(spec) + 1, Rows);
        var a = rescaled.Forward(x, Rows).ActsPost;
        var b = plain.Forward(x, Rows).ActsPost;
        Assert.Contains(Enumerable.Range(0, a.Length), i => (a[i] != 0) != (b[i] != 0));
    }

    [Theory]
    [InlineData("transcoder", "constant_norm_rescale")]
    [InlineData("skip_transcoder", "layer_norm")]
    public void A_transcoder_with_a_per_input_normalisation_is_refused_naming_the_key(string architecture, string normalize)
    {
        // SAELens normalises a transcoder's input but never de-normalises its output (Transcoder.decode); this
        // toolkit refuses the combination rather than write an output in the normalised space.
        var spec = new SaeSpec(architecture, normalize, ApplyBDec: false);
        using var dir = new TempDir();
        SaeFiles.Write(dir.Path, spec, SaeFiles.V6Config(spec), SaeFiles.RandomTensors(spec, 1));
        var ex = Assert.Throws<ModelFileException>(() => Sae.Load(dir.Path));
        Assert.Equal("normalize_activations", ex.TensorName);
        Assert.Equal(Sae.ConfigFile, Path.GetFileName(ex.FilePath));
    }

    // ---- pre-6 configs ----

    /// <summary>The fields that make the module: everything but the metadata and the dtype's spelling.</summary>
    private static void SameModule(SaeConfig expected, SaeConfig actual)
    {
        Assert.Equal(expected.DIn, actual.DIn);
        Assert.Equal(expected.DSae, actual.DSae);
        Assert.Equal(expected.DOut, actual.DOut);
        Assert.Equal(expected.Architecture, actual.Architecture);
        Assert.Equal(expected.HookName, actual.HookName);
        Assert.Equal(expected.HookNameOut, actual.HookNameOut);
        Assert.Equal(expected.ApplyBDecToInput, actual.ApplyBDecToInput);
        Assert.Equal(expected.Normalization, actual.Normalization);
        Assert.Equal(expected.ReshapeHookZ, actual.ReshapeHookZ);
        Assert.Equal(expected.K, actual.K);
        Assert.Equal(expected.RescaleActsByDecoderNorm, actual.RescaleActsByDecoderNorm);
        Assert.Equal(expected.ModelName, actual.ModelName);
    }

    /// <summary>Loads <paramref name="flat"/> and the v6 config of <paramref name="spec"/> on the same weights: the same module, the same outputs bit for bit.</summary>
    private static void LoadsAsV6(SaeSpec spec, JsonObject flat, params (string, float[], long[])[] extraTensors)
    {
        var t = SaeFiles.RandomTensors(spec, Seed(spec) + 7);
        using var dirFlat = new TempDir();
        using var dirV6 = new TempDir();
        SaeFiles.Write(dirFlat.Path, spec, flat, t, extraTensors);
        SaeFiles.Write(dirV6.Path, spec, SaeFiles.V6Config(spec), t);
        using var a = Sae.Load(dirFlat.Path);
        using var b = Sae.Load(dirV6.Path);
        SameModule(b.Config, a.Config);
        Assert.Equal(b.StateDict.Select(p => p.Key), a.StateDict.Select(p => p.Key));
        var reference = SaeFiles.Reference(spec, t);
        CheckForward(a, spec, reference, 99);
        var x = SaeFiles.InputsAwayFromBoundaries(reference, 98, Rows);
        using var scope = NewDisposeScope();
        long[] shape = spec.HookZ ? [Rows, SaeSpec.NHeads, spec.DIn / SaeSpec.NHeads] : [Rows, spec.DIn];
        using var sa = a.Forward(tensor(x, shape));
        using var sb = b.Forward(tensor(x, shape));
        TensorAssert.Close(sb.ActsPost, sa.ActsPost, 0, "acts: flat vs v6");
        TensorAssert.Close(sb.Output, sa.Output, 0, "output: flat vs v6");
    }

    /// <summary>A v2 config (SAELens ≤ 2.x): hook_point, activation_fn, boolean normalize_activations, no sae_lens_version.</summary>
    private static JsonObject V2Config(SaeSpec s, bool normalize) => new()
    {
        ["model_name"] = "gpt2-tiny-random",
        ["hook_point"] = s.Hook,
        ["hook_point_layer"] = 0,
        ["hook_point_head_index"] = null,
        ["d_in"] = s.DIn,
        ["d_sae"] = s.DSae,
        ["activation_fn"] = "relu",
        ["apply_b_dec_to_input"] = s.ApplyBDec,
        ["normalize_activations"] = normalize,
        ["dtype"] = "torch.float32",
        ["device"] = "cpu",
        ["context_size"] = 128,
        ["prepend_bos"] = true,
        ["dataset_path"] = "Skylion007/openwebtext",
        ["expansion_factor"] = s.DSae / s.DIn,
        ["lr"] = 4e-4,
        ["l1_coefficient"] = 8e-5,
    };

    /// <summary>A flat v3–v5 config: hook_name and activation_fn_str at the top level, sae_lens_version 5.x.</summary>
    private static JsonObject FlatConfig(SaeSpec s, string version = "5.4.2")
    {
        var o = new JsonObject
        {
            ["architecture"] = s.Architecture,
            ["d_in"] = s.DIn,
            ["d_sae"] = s.DSae,
            ["activation_fn_str"] = s.Architecture == "topk" ? "topk" : "relu",
            ["activation_fn_kwargs"] = s.Architecture == "topk" ? new JsonObject { ["k"] = s.K } : new JsonObject(),
            ["apply_b_dec_to_input"] = s.ApplyBDec,
            ["finetuning_scaling_factor"] = false,
            ["context_size"] = 128,
            ["model_name"] = "gpt2-tiny-random",
            ["hook_name"] = s.Hook,
            ["hook_layer"] = 0,
            ["hook_head_index"] = null,
            ["prepend_bos"] = true,
            ["dataset_path"] = "monology/pile-uncopyrighted",
            ["dataset_trust_remote_code"] = true,
            ["normalize_activations"] = s.Normalize,
            ["dtype"] = "float32",
            ["device"] = "cpu",
            ["sae_lens_training_version"] = version,
            ["sae_lens_version"] = version,
            ["neuronpedia_id"] = null,
            ["model_from_pretrained_kwargs"] = new JsonObject(),
            ["seqpos_slice"] = new JsonArray((JsonNode?)null),
        };
        return o;
    }

    [Theory]
    [InlineData(false, "none")]
    [InlineData(true, "expected_average_only_in")]
    public void A_v2_config_loads_as_its_v6_equivalent(bool normalize, string v6Normalize)
    {
        var spec = new SaeSpec("standard", v6Normalize);
        LoadsAsV6(spec, V2Config(spec, normalize));
    }

    [Theory]
    [InlineData("standard", "none", true)]
    [InlineData("jumprelu", "layer_norm", false)]
    [InlineData("gated", "constant_norm_rescale", true)]
    [InlineData("standard", "expected_average_only_in", false)]
    [InlineData("topk", "none", true)]
    public void A_flat_v3_to_v5_config_loads_as_its_v6_equivalent(string architecture, string normalize, bool applyBDec)
    {
        var spec = new SaeSpec(architecture, normalize, applyBDec, K: architecture == "topk" ? 4 : 0);
        LoadsAsV6(spec, FlatConfig(spec));
    }

    [Fact]
    public void A_gated_SAE_in_the_dictionary_learning_style_config_loads_and_matches_the_reference()
    {
        // Gated SAEs converted from dictionary_learning (GatedAutoEncoder: encoder(x − decoder_bias), gate_bias,
        // r_mag, mag_bias) reach SAELens as flat configs: architecture "gated", activation_fn_str relu, b_dec
        // subtracted from the input, no normalisation, and a pre-6 sae_lens_version.
        var spec = new SaeSpec("gated", DIn: 12, DSae: 48);
        var flat = new JsonObject
        {
            ["architecture"] = "gated",
            ["d_in"] = spec.DIn,
            ["d_sae"] = spec.DSae,
            ["dtype"] = "float32",
            ["device"] = "cpu",
            ["model_name"] = "gpt2-tiny-random",
            ["hook_name"] = spec.Hook,
            ["hook_layer"] = 0,
            ["hook_head_index"] = null,
            ["activation_fn_str"] = "relu",
            ["activation_fn_kwargs"] = new JsonObject(),
            ["apply_b_dec_to_input"] = true,
            ["finetuning_scaling_factor"] = false,
            ["sae_lens_training_version"] = null,
            ["prepend_bos"] = true,
            ["dataset_path"] = "monology/pile-uncopyrighted",
            ["context_size"] = 128,
            ["normalize_activations"] = "none",
            ["neuronpedia_id"] = "gpt2-small/0-res_gated",
        };
        LoadsAsV6(spec, flat);
        using var dir = new TempDir();
        SaeFiles.Write(dir.Path, spec, flat, SaeFiles.RandomTensors(spec, 3));
        using var sae = Sae.Load(dir.Path);
        Assert.Throws<InvalidOperationException>(() => sae.BEnc);   // gated has no b_enc (SAELens sets it to None)
        Assert.Equal("gpt2-small/0-res_gated", sae.Config.Metadata["neuronpedia_id"]!.GetValue<string>());
    }

    [Fact]
    public void A_scaling_factor_of_ones_is_dropped_and_any_other_is_refused_naming_it()
    {
        var spec = new SaeSpec("standard");
        var ones = Enumerable.Repeat(1f, spec.DSae).ToArray();
        LoadsAsV6(spec, FlatConfig(spec), ("scaling_factor", ones, [spec.DSae]));
        LoadsAsV6(spec, V2Config(spec, false), ("scaling_factor", ones, [spec.DSae]));

        var twos = ones.Select((v, i) => i == 3 ? 2f : v).ToArray();
        using var dir = new TempDir();
        SaeFiles.Write(dir.Path, spec, FlatConfig(spec), SaeFiles.RandomTensors(spec, 1), ("scaling_factor", twos, [spec.DSae]));
        var ex = Assert.Throws<ModelFileException>(() => Sae.Load(dir.Path));
        Assert.Equal("scaling_factor", ex.TensorName);
        Assert.Equal(Sae.WeightsFile, Path.GetFileName(ex.FilePath));
        Assert.Contains("scaling_factor", ex.Message);
    }

    [Fact]
    public void A_pre_6_hook_z_config_defaults_to_hook_z_reshaping_and_a_v6_one_does_not()
    {
        var spec = new SaeSpec("standard", HookZ: true);
        var flat = FlatConfig(spec);
        Assert.False(flat.ContainsKey("reshape_activations"));
        LoadsAsV6(spec, flat);
        LoadsAsV6(spec, V2Config(spec, false));

        // SAELens 6 defaults reshape_activations only for pre-6 configs (handle_pre_6_0_config); a 6.x config without
        // the key takes SAEConfig's default, "none".
        var v6 = SaeFiles.V6Config(spec);
        v6.Remove("reshape_activations");
        using var dir = new TempDir();
        SaeFiles.Write(dir.Path, spec, v6, SaeFiles.RandomTensors(spec, 1));
        using (var sae = Sae.Load(dir.Path)) Assert.False(sae.Config.ReshapeHookZ);
        // An explicit "none" in a pre-6 config stays none.
        flat["reshape_activations"] = "none";
        File.WriteAllText(dir.File(Sae.ConfigFile), flat.ToJsonString());
        using (var sae = Sae.Load(dir.Path)) Assert.False(sae.Config.ReshapeHookZ);
    }

    // ---- Save → Load ----

    private static void RoundTrips(Sae original, string folder)
    {
        original.Save(folder);
        using var back = Sae.Load(folder);
        Assert.Equal(original.Config with { Metadata = back.Config.Metadata }, back.Config);
        Assert.Equal(original.Config.Metadata.ToJsonString(), back.Config.Metadata.ToJsonString());
        Assert.Equal(original.StateDict.Select(p => p.Key), back.StateDict.Select(p => p.Key));
        foreach (var ((name, a), (_, b)) in original.StateDict.Zip(back.StateDict))
        {
            Assert.Equal(a.shape, b.shape);
            Assert.True(a.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits)
                .SequenceEqual(b.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits)), $"{name} is not bit-identical after Save → Load");
        }
    }

    [Theory]
    [MemberData(nameof(SpecNames))]
    public void Save_then_load_gives_bit_identical_tensors_and_an_equal_config(string name)
    {
        var spec = Specs[name];
        using var dir = new TempDir();
        SaeFiles.Write(dir.Sub("a"), spec, SaeFiles.V6Config(spec), SaeFiles.RandomTensors(spec, Seed(spec)));
        using var sae = Sae.Load(dir.File("a"));
        RoundTrips(sae, dir.File("b"));
    }

    [Fact]
    public void A_pre_6_config_saves_as_v6_and_then_round_trips_exactly()
    {
        var spec = new SaeSpec("topk", "layer_norm", K: 3);
        using var dir = new TempDir();
        SaeFiles.Write(dir.Sub("flat"), spec, FlatConfig(spec), SaeFiles.RandomTensors(spec, 5));
        using var flat = Sae.Load(dir.File("flat"));
        flat.Save(dir.File("v6"));
        var saved = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.File("v6"), Sae.ConfigFile)))!.AsObject();
        Assert.Equal(spec.Hook, saved["metadata"]!["hook_name"]!.GetValue<string>());
        Assert.False(saved.ContainsKey("hook_name"));
        Assert.Equal("topk", saved["architecture"]!.GetValue<string>());
        Assert.Equal(3, saved["k"]!.GetValue<int>());
        using var v6 = Sae.Load(dir.File("v6"));
        SameModule(flat.Config, v6.Config);
        RoundTrips(v6, dir.File("again"));
    }
}

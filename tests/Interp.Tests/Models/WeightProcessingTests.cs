using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// TransformerLens-style weight processing: each step, alone and together, keeps the model's function (logits, or
/// log-probabilities for CenterUnembed) and every hook activation it should keep, and leaves the weights in the
/// documented form.
/// </summary>
public sealed class WeightProcessingTests
{
    private static readonly string[] ModelNames =
        ["gpt2", "gpt2-gqa", "attn-only-sinusoidal", "llama", "llama-biased", "gpt2-tiny-random", "stories260K"];

    private static readonly string[] StepNames = ["FoldLn", "CenterWritingWeights", "CenterUnembed", "FoldValueBiases", "All"];

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in ModelNames)
            foreach (var step in StepNames) data.Add(model, step);
        return data;
    }

    private static WeightProcessingOptions Step(string name) => name switch
    {
        "FoldLn" => new() { FoldLn = true },
        "CenterWritingWeights" => new() { CenterWritingWeights = true },
        "CenterUnembed" => new() { CenterUnembed = true },
        "FoldValueBiases" => new() { FoldValueBiases = true },
        "All" => WeightProcessingOptions.Default,
        _ => throw new ArgumentException(name),
    };

    /// <summary>The named model, processed with <paramref name="options"/> (random ones are seeded, so two calls agree).</summary>
    private static HookedTransformer Build(string name, WeightProcessingOptions options)
    {
        if (name is "gpt2-tiny-random" or "stories260K")
        {
            string path = name == "stories260K" ? TestModels.StoriesBin : TestModels.Gpt2TinyDir;
            return ModelLoader.Load(path, new ModelLoadOptions { Processing = options }).Model;
        }
        var cfg = name switch
        {
            "gpt2" => TestModels.Gpt2Like,
            "gpt2-gqa" => TestModels.Gpt2Like with { NKvHeads = 2 },
            "attn-only-sinusoidal" => TestModels.AttnOnlySinusoidal,
            "llama" => TestModels.LlamaLike,
            "llama-biased" => TestModels.LlamaLike with { UseBias = true },
            _ => throw new ArgumentException(name),
        };
        var model = TestModels.Random(cfg, seed: 5);
        model.ProcessWeights(options);
        return model;
    }

    private static Tensor Tokens(HookedTransformer model) => TestModels.RandomTokens(model.Config.DVocab, 2, Math.Min(model.Config.NCtx, 12));

    /// <summary>max |expected − actual| ≤ 1e-4 · max(1, max |expected|): tight for float32, robust to magnitude.</summary>
    private static void Same(Tensor expected, Tensor actual, string what)
    {
        double scale = Math.Max(1.0, expected.abs().max().item<float>());
        TensorAssert.Close(expected, actual, 1e-4 * scale, what);
    }

    private static Tensor Centred(Tensor t) => t - t.mean([-1], keepdim: true);

    private static double MaxAbsMean(Tensor t, long axis)
    {
        using var _ = NewDisposeScope();
        return t.to(ScalarType.Float64).mean([axis]).abs().max().item<double>();
    }

    [Theory, MemberData(nameof(Cases))]
    public void Processing_keeps_the_function_and_the_hooks(string modelName, string stepName)
    {
        var options = Step(stepName);
        using var original = Build(modelName, WeightProcessingOptions.None);
        using var processed = Build(modelName, options);
        // FoldValueBiases removes the value bias the model has just before it (after FoldLn moved ln1.b into it).
        using var beforeValueFold = Build(modelName, options with { FoldValueBiases = false });
        var applied = processed.Processing;
        bool layerNorm = original.Config.Norm == NormKind.LayerNorm;
        Assert.Equal(options with { CenterWritingWeights = options.CenterWritingWeights && layerNorm }, applied);
        // The report's description names exactly the applied steps.
        Assert.Equal(applied.CenterWritingWeights, applied.Describe().Contains("writing weights centred", StringComparison.Ordinal));
        Assert.Equal(applied.FoldLn, applied.Describe().Contains("norms folded", StringComparison.Ordinal));

        using var scope = NewDisposeScope();
        var tokens = Tokens(original);
        var (logits, cache) = original.RunWithCache(tokens);
        var (logitsP, cacheP) = processed.RunWithCache(tokens);
        using (cache)
        using (cacheP)
        {
            if (applied.CenterUnembed)
            {
                var shift = logitsP - logits;
                Same(zeros_like(shift), Centred(shift), "logit shift constant along the vocabulary");
                Same(logits.log_softmax(-1), logitsP.log_softmax(-1), "log_softmax");
            }
            else Same(logits, logitsP, "logits");

            Assert.Equal(cache.Names, cacheP.Names);
            foreach (var name in cache.Names)
            {
                Tensor expected = cache[name], actual = cacheP[name];
                string leaf = name[(name.LastIndexOf('.') + 1)..];
                switch (leaf)
                {
                    case "hook_embed" or "hook_pos_embed" or "hook_resid_pre" or "hook_resid_mid" or "hook_resid_post"
                        or "hook_attn_out" or "hook_mlp_out":
                        Same(applied.CenterWritingWeights ? Centred(expected) : expected, actual, name);
                        break;
                    case "hook_v" or "hook_z":
                        if (applied.FoldValueBiases) expected = expected - ValueBiasPerHead(beforeValueFold, name, leaf);
                        Same(expected, actual, name);
                        break;
                    case "hook_normalized":
                        // LayerNorm's hook_normalized is taken after w and b, which folding removes.
                        if (!(applied.FoldLn && layerNorm)) Same(expected, actual, name);
                        break;
                    case "hook_attn_scores":
                        break; // -inf above the diagonal; hook_pattern is compared instead
                    case "hook_q" or "hook_k" or "hook_rot_q" or "hook_rot_k" or "hook_pattern" or "hook_scale"
                        or "hook_pre" or "hook_pre_linear" or "hook_post":
                        Same(expected, actual, name);
                        break;
                    default:
                        Assert.Fail($"hook {name} is not classified by this test");
                        break;
                }
            }
        }
    }

    /// <summary>b_V of the layer that <paramref name="hook"/> belongs to, shaped to broadcast over hook_v or hook_z.</summary>
    private static Tensor ValueBiasPerHead(HookedTransformer model, string hook, string leaf)
    {
        int layer = int.Parse(hook.Split('.')[1]);
        var bV = model.Blocks[layer].Attn.b_V; // [kv_head, d_head]
        int group = model.Config.NHeads / model.Config.KvHeads;
        return leaf == "hook_z" ? bV.repeat_interleave(group, dim: 0) : bV;
    }

    [Fact]
    public void LayerNorm_model_ends_with_identity_norms_and_centred_weights()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like with { NKvHeads = 2 }, seed: 3);
        Assert.Equal(WeightProcessingOptions.None, model.Processing);
        Assert.Equal(WeightProcessingOptions.Default, model.ProcessWeights(WeightProcessingOptions.Default));
        Assert.Equal(WeightProcessingOptions.Default, model.Processing);

        using var scope = NewDisposeScope();
        var norms = model.Blocks.SelectMany(b => new[] { b.Ln1!, b.Ln2! }).Append(model.LnFinal!);
        foreach (var norm in norms)
        {
            Assert.True(norm.W.eq(1).all().item<bool>(), "norm gains are one");
            Assert.True(norm.B.eq(0).all().item<bool>(), "norm shifts are zero");
        }
        const double tol = 1e-6;
        Assert.True(MaxAbsMean(model.Embed.W_E, -1) <= tol, "W_E centred over d_model");
        Assert.True(MaxAbsMean(model.PosEmbed!.W_pos, -1) <= tol, "W_pos centred over d_model");
        foreach (var block in model.Blocks)
        {
            var attn = block.Attn;
            var mlp = block.Mlp!;
            foreach (var (what, t, axis) in new[]
            {
                ("W_Q", attn.W_Q, 1L), ("W_K", attn.W_K, 1L), ("W_V", attn.W_V, 1L), ("W_in", mlp.W_in, 0L), // reading: folded LN
                ("W_O", attn.W_O, -1L), ("b_O", attn.b_O, -1L), ("W_out", mlp.W_out, -1L), ("b_out", mlp.b_out, -1L), // writing
            })
                Assert.True(MaxAbsMean(t, axis) <= tol, $"{what} has zero mean over d_model");
            Assert.True(attn.b_V.eq(0).all().item<bool>(), "b_V is zero after folding");
        }
        Assert.True(MaxAbsMean(model.Unembed.W_U, 0) <= tol, "W_U centred over d_model (folded ln_final)");
        Assert.True(MaxAbsMean(model.Unembed.W_U, -1) <= tol, "W_U centred over the vocabulary");
        Assert.True(MaxAbsMean(model.Unembed.b_U, -1) <= tol, "b_U centred");
    }

    [Fact]
    public void Sinusoidal_table_is_centred_too()
    {
        using var model = TestModels.Random(TestModels.AttnOnlySinusoidal);
        model.ProcessWeights(new WeightProcessingOptions { CenterWritingWeights = true });
        Assert.True(MaxAbsMean(model.PosEmbed!.W_pos, -1) <= 1e-6);
    }

    [Fact]
    public void RMSNorm_model_folds_gains_and_skips_writing_weight_centring()
    {
        using var original = ModelLoader.Load(TestModels.StoriesBin);
        using var processed = ModelLoader.Load(TestModels.StoriesBin, new ModelLoadOptions { Processing = WeightProcessingOptions.Default });
        var expected = WeightProcessingOptions.Default with { CenterWritingWeights = false };
        Assert.Equal(expected, processed.Model.Processing);
        Assert.Equal(WeightProcessingOptions.None, original.Model.Processing);

        using var scope = NewDisposeScope();
        var m = processed.Model;
        foreach (var norm in m.Blocks.SelectMany(b => new[] { b.Ln1!, b.Ln2! }).Append(m.LnFinal!))
            Assert.True(norm.W.eq(1).all().item<bool>(), "RMSNorm gains are one");
        Assert.Equal(0, TensorAssert.MaxAbsDiff(original.Model.Embed.W_E, m.Embed.W_E)); // the mean matters without LayerNorm
        Assert.Equal(0, TensorAssert.MaxAbsDiff(original.Model.Blocks[0].Attn.W_O, m.Blocks[0].Attn.W_O));
        Assert.True(MaxAbsMean(m.Unembed.W_U, -1) <= 1e-6, "W_U centred over the vocabulary");
        // The folded gain sits on W_Q's d_model rows: W_Q' = diag(ln1.w)·W_Q.
        var lnW = original.Model.Blocks[0].Ln1!.W;
        Same(original.Model.Blocks[0].Attn.W_Q * lnW.view(1, -1, 1), m.Blocks[0].Attn.W_Q, "W_Q = diag(w)·W_Q");
    }

    [Fact]
    public void Steps_are_idempotent_and_accumulate_in_the_record()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 9);
        Assert.Equal(new WeightProcessingOptions { FoldLn = true }, model.ProcessWeights(new() { FoldLn = true }));
        model.ProcessWeights(new() { CenterUnembed = true });
        Assert.Equal(new WeightProcessingOptions { FoldLn = true, CenterUnembed = true }, model.Processing);

        model.ProcessWeights(WeightProcessingOptions.Default);
        using var scope = NewDisposeScope();
        var once = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        model.ProcessWeights(WeightProcessingOptions.Default);
        Assert.Equal(WeightProcessingOptions.Default, model.Processing);
        foreach (var (name, value) in model.state_dict()) TensorAssert.Close(once[name], value, 1e-6, name);
    }

    [Fact]
    public void Loading_the_weights_again_resets_the_record()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        model.ProcessWeights(WeightProcessingOptions.Default);
        WeightLoader.Load(model, weights, "test");
        Assert.Equal(WeightProcessingOptions.None, model.Processing);
    }

    [Fact]
    public void Gated_mlp_with_a_LayerNorm_shift_is_refused_and_left_unchanged()
    {
        var cfg = TestModels.Gpt2Like with { Mlp = MlpKind.Gated, Act = Activation.Silu };
        using var model = TestModels.Random(cfg);
        using var scope = NewDisposeScope();
        var before = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var ex = Assert.Throws<InterpException>(() => model.ProcessWeights(WeightProcessingOptions.Default));
        Assert.Contains("Cannot fold blocks.0.ln2.b into a gated MLP: W_gate has no bias", ex.Message);
        Assert.Equal(WeightProcessingOptions.None, model.Processing);
        foreach (var (name, value) in model.state_dict()) Assert.Equal(0, TensorAssert.MaxAbsDiff(before[name], value));

        // Without shifts in the ln2s the fold is exact.
        var tokens = Tokens(model);
        using (no_grad()) foreach (var block in model.Blocks) block.Ln2!.B.zero_();
        var expected = model.forward(tokens);
        model.ProcessWeights(WeightProcessingOptions.Default);
        Same(expected.log_softmax(-1), model.forward(tokens).log_softmax(-1), "log_softmax after folding");
    }

    [Fact]
    public void LayerNorm_shift_without_model_biases_is_refused()
    {
        var cfg = TestModels.Gpt2Like with { UseBias = false };
        using var model = TestModels.Random(cfg); // LayerNorm shifts are parameters and get random values
        var ex = Assert.Throws<InterpException>(() => model.ProcessWeights(new() { FoldLn = true }));
        Assert.Contains("Cannot fold blocks.0.ln1.b: the model has no biases (UseBias = false)", ex.Message);
        Assert.Equal(WeightProcessingOptions.None, model.Processing);

        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        using (no_grad()) foreach (var (name, p) in model.named_parameters()) if (name.EndsWith(".b", StringComparison.Ordinal)) p.zero_();
        var expected = model.forward(tokens);
        model.ProcessWeights(WeightProcessingOptions.Default);
        Same(expected.log_softmax(-1), model.forward(tokens).log_softmax(-1), "log_softmax after folding");
    }

    [Fact]
    public void Describe_names_the_steps_in_order()
    {
        Assert.Equal("norms folded, writing weights centred, unembedding centred, value biases folded", WeightProcessingOptions.Default.Describe());
        Assert.Equal("none", WeightProcessingOptions.None.Describe());
        Assert.Equal("unembedding centred", new WeightProcessingOptions { CenterUnembed = true }.Describe());
    }
}

using Interp.Analysis;
using Interp.Circuits;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;
using TensorIndex = TorchSharp.torch.TensorIndex;

namespace Interp.Tests.Analysis;

/// <summary>
/// Every pass on every architecture kind (parallel blocks, post-norm encoders, Gemma 2's post-norms and soft caps, q/k
/// norms, grouped-query attention, sliding windows, a base encoder without an unembedding): where a pass applies, its
/// identities hold against an independent reference (a copy of the model with a weight edited, a hand-written hook, the
/// cached activations); where it does not, it refuses with a message that names the pass and the reason.
/// </summary>
public sealed class ArchitecturePassesTests
{
    /// <summary>Random models of each architecture kind, then real tiny-random checkpoints.</summary>
    private static readonly string[] All =
        ["gpt2-like", "llama-like", "attn-only", "neox-like", "gemma2-like", "bert-like", "bert-base-like",
         "gpt_neox-tiny-random", "gemma2-tiny-random", "qwen3-tiny-random", "mistral-tiny-random", "bert-tiny-random"];

    /// <summary>The models with logits.</summary>
    private static readonly string[] WithLogits = All.Where(n => n != "bert-base-like").ToArray();

    /// <summary>The models whose logits are linear in the stream's components: every decoder.</summary>
    private static readonly string[] Decoders = WithLogits.Where(n => !n.StartsWith("bert", StringComparison.Ordinal)).ToArray();

    public static TheoryData<string> AllModels() => new(All);
    public static TheoryData<string> ModelsWithLogits() => new(WithLogits);
    public static TheoryData<string> DecoderModels() => new(Decoders);

    public static TheoryData<string, bool> DecodersRawAndProcessed()
    {
        var data = new TheoryData<string, bool>();
        foreach (var name in Decoders)
            foreach (var processed in new[] { false, true }) data.Add(name, processed);
        return data;
    }

    /// <summary>The named model (the caller disposes it).</summary>
    internal static HookedTransformer Build(string name) => name switch
    {
        "gpt2-like" => TestModels.Random(TestModels.Gpt2Like, seed: 5),
        "llama-like" => TestModels.Random(TestModels.LlamaLike, seed: 5),
        "attn-only" => TestModels.Random(TestModels.AttnOnlySinusoidal, seed: 5),
        "neox-like" => TestModels.Random(TestModels.NeoXLike, seed: 5),
        "gemma2-like" => TestModels.Random(TestModels.Gemma2Like, seed: 5),
        "bert-like" => TestModels.Random(TestModels.BertLike, seed: 5),
        "bert-base-like" => TestModels.Random(TestModels.BertLike with { Name = "bert-base-like", Head = HeadKind.None }, seed: 5),
        _ => ModelLoader.Load(SharedData.Model(name)).Model,
    };

    /// <summary>Random tokens [2, 20]: long enough for Gemma 2's sliding windows (4 in gemma2-like, 16 in the checkpoint).</summary>
    private static Tensor Tokens(HookedTransformer model, int batch = 2, int pos = 20, long seed = 7) =>
        TestModels.RandomTokens(model.Config.DVocab, batch, Math.Min(pos, model.Config.NCtx), seed);

    /// <summary>A copy of <paramref name="model"/> with the same weights, built from <paramref name="config"/> (default: the model's).</summary>
    private static HookedTransformer Copy(HookedTransformer model, ModelConfig? config = null)
    {
        var copy = new HookedTransformer(config ?? model.Config);
        using var _ = no_grad();
        var source = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in copy.named_parameters()) p.copy_(source[name]);
        return copy;
    }

    private static void Close(Tensor expected, Tensor actual, double relative, string what)
    {
        double scale = Math.Max(1.0, expected.abs().max().to(ScalarType.Float64).item<double>());
        TensorAssert.Close(expected, actual, relative * scale, what);
    }

    // ---- Gradients -----------------------------------------------------------------------------------------------

    [Theory, MemberData(nameof(AllModels))]
    public void Gradients_match_central_differences_and_attribution_patching_runs(string name)
    {
        using var single = Build(name);
        using var model = single.ToDtype(ScalarType.Float64);
        using var scope = NewDisposeScope();
        var tokens = Tokens(model, batch: 2, pos: 12);
        Func<Tensor, Tensor> metric = logits => (logits[.., -1, 1] - logits[.., 3, 2]).sum() + logits.log_softmax(-1)[.., 5, 4].sum();
        int last = model.Config.NLayers - 1;
        var names = new List<string> { HookNames.ResidPre(last), HookNames.Pattern(0), HookNames.Z(0), HookNames.AttnOut(0) };
        if (model.Config.Mlp != MlpKind.None) names.Add(HookNames.MlpOut(0));
        using var run = model.RunWithCacheAndGradients(tokens, metric, names.Contains);
        var generator = new Generator(5);
        foreach (var hook in names)
        {
            var d = randn(run.Activations[hook].shape, ScalarType.Float64, generator: generator);
            double Perturb(double eps)
            {
                using var inner = NewDisposeScope();
                using var noGrad = no_grad();
                return metric(model.RunWithHooks(tokens, (hook, (a, _) => a + d * eps))).item<double>();
            }
            double fd = (Perturb(1e-5) - Perturb(-1e-5)) / 2e-5;
            double analytic = (run.Gradients[hook] * d).sum().item<double>();
            Assert.True(Math.Abs(fd - analytic) <= 1e-3 * Math.Max(Math.Abs(fd), Math.Abs(analytic)) + 1e-8, $"{name} {hook}: finite differences {fd:G8}, gradient {analytic:G8}");
        }
        if (!single.Config.HasUnembed) return;   // a base encoder: gradients of its hidden state only (attribution patching refuses it)
        using var attribution = new AttributionPatching(single, tokens, tokens.flip(1), Metrics.LogitDiff(1, 2, position: 5));
        var sites = ActivationPatching.Sites(single.Config, (int)tokens.shape[1], PatchKind.HeadOut, perPosition: true);
        var results = attribution.Sweep(sites);
        if (single.Config.Causal)   // nothing after the metric's position can change it
            Assert.All(results.Where(r => r.Site.Position > 5), r => Assert.Equal(0, r.Attribution, 12));
    }

    // ---- Direct logit attribution ------------------------------------------------------------------------------

    [Theory, MemberData(nameof(DecodersRawAndProcessed))]
    public void Dla_components_sum_to_the_logit_before_any_soft_cap(string name, bool processed)
    {
        using var model = Build(name);
        if (processed) model.ProcessWeights(model.Applicable(WeightProcessingOptions.Default));
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var dla = HeadAttribution.Run(model, tokens);

        // The reference: the same weights without the logit soft cap give the logits the components must sum to.
        using var uncapped = Copy(model, cfg with { OutputLogitsSoftCap = 0 });
        var next = tokens[.., 1..].unsqueeze(-1);
        var expected = uncapped.forward(tokens)[.., ..^1].gather(-1, next).squeeze(-1).to(ScalarType.Float64);
        Close(expected, dla.Logit, 1e-5, $"{name}: Logit is the pre-cap logit");
        Close(expected, dla.Total(), 1e-4, $"{name}: the components sum to the logit");
        if (cfg.OutputLogitsSoftCap > 0)
        {
            // And the model's own output is that logit capped.
            using var c = cfg.OutputLogitsSoftCap.ToScalar();
            var capped = model.forward(tokens)[.., ..^1].gather(-1, next).squeeze(-1).to(ScalarType.Float64);
            Close(capped, dla.Logit.div(c).tanh().mul(c), 1e-5, $"{name}: c·tanh(Logit / c) is the model's logit");
        }

        // Heads where a head writes on its own; whole attention layers where ln1_post normalises attention's output.
        bool normed = cfg.NormAfterSublayers;
        Assert.Equal(normed ? 0 : cfg.NLayers * cfg.NHeads, dla.Components.Count(k => k.Kind == ComponentKind.Head));
        Assert.Equal(normed ? cfg.NLayers : 0, dla.Components.Count(k => k.Kind == ComponentKind.AttnOut));
    }

    [Theory, MemberData(nameof(DecoderModels))]
    public void Direct_components_and_decompositions_sum_to_the_stream(string name)
    {
        using var model = Build(name);
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, n => HeadAttribution.CacheFilter(n) || HookNames.Is(n, HookNames.ResidPre)
            || HookNames.Is(n, HookNames.ResidMid) || n.EndsWith(".hook_scale", StringComparison.Ordinal) || n.EndsWith(".hook_normalized", StringComparison.Ordinal));
        using (cache)
        {
            var final = cache[HookNames.ResidPost(cfg.NLayers - 1)];
            Close(final, cache.DirectComponents(model).Values.sum([0]), 1e-5, $"{name}: direct components");
            for (int l = 0; l <= cfg.NLayers; l++)
            {
                var stream = l == cfg.NLayers ? final : cache[HookNames.ResidPre(l)];
                Close(stream, cache.DecomposeResid(model, l).Values.sum([0]), 1e-5, $"{name}: decompose_resid({l})");
                if (l == cfg.NLayers || cfg.AttentionOnly) continue;
                // The MLP's input: resid_mid, or resid_pre in a parallel block (whose MLP reads it, as attention does).
                var mlpInput = cfg.HasResidMid ? cache[HookNames.ResidMid(l)] : stream;
                Close(mlpInput, cache.DecomposeResid(model, l, mlpInput: true).Values.sum([0]), 1e-5, $"{name}: decompose_resid({l}, mlpInput)");
                // ln2 with its cached scale applied to every component: the components sum to ln2's normalised input.
                var ln2 = model.Blocks[l].Ln2!;
                var normalised = cache.DecomposeResid(model, l, mlpInput: true, applyLn: true).Values.sum([0]);
                var output = cfg.Norm == NormKind.LayerNorm ? (normalised * ln2.W).add(ln2.B, Scalars.One) : normalised;   // LayerNorm's hook_normalized follows w and b
                Close(cache[HookNames.Normalized(l, "ln2")], output, 1e-4, $"{name}: apply_ln_to_stack({l}, ln2)");
            }
        }
    }

    // ---- Ablation ----------------------------------------------------------------------------------------------

    [Theory, MemberData(nameof(AllModels))]
    public void Zero_ablating_a_head_equals_dropping_its_W_O_rows(string name)
    {
        using var model = Build(name);
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = Tokens(model);
        foreach (var (layer, head) in new[] { (0, 1), (cfg.NLayers - 1, cfg.NHeads - 1) })
        {
            var ablated = model.RunWithHooks(tokens, Ablation.Hooks(model, AblationKind.Zero, null, AblationTarget.OfHead(layer, head)));
            using var copy = Copy(model);
            copy.Blocks[layer].Attn.W_O[head].zero_();
            Close(copy.forward(tokens), ablated, 1e-5, $"{name}: head {layer}.{head} zero-ablated vs W_O[{head}] = 0");
        }
    }

    /// <summary>A next-token loss for causal models, a logit difference at a middle position for an encoder.</summary>
    private static Metric MetricFor(HookedTransformer model) => model.Config.Causal ? Metrics.Loss() : Metrics.LogitDiff(5, 7, position: 3);

    /// <summary>The naive ablation: a full forward pass with a hook that writes zeros or the reference mean into a clone.</summary>
    private static double Naive(HookedTransformer model, Tensor tokens, AblationTarget target, AblationKind kind, Metric metric, Tensor referenceTokens)
    {
        using var scope = NewDisposeScope();
        Tensor? mean = null;
        if (kind == AblationKind.Mean)
        {
            var (_, cache) = model.RunWithCache(referenceTokens, n => n == target.HookName);
            using (cache) mean = cache[target.HookName].mean([0], keepdim: true).clone();
        }
        Tensor? Hook(Tensor x, HookPoint _)
        {
            var c = x.clone();
            var at = target.Component == AblationComponent.Head
                ? new[] { TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Single(target.Head) }
                : new[] { TensorIndex.Colon, TensorIndex.Colon };
            c[at] = mean is null ? zeros_like(c[at]) : mean[at].expand_as(c[at]);
            return c;
        }
        return Metrics.Evaluate(metric, model.RunWithHooks(tokens, (target.HookName, Hook)), tokens);
    }

    [Theory, MemberData(nameof(ModelsWithLogits))]
    public void Ablation_sweep_equals_one_hooked_forward_per_ablation(string name)
    {
        using var model = Build(name);
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = Tokens(model, batch: 3, pos: 12);
        var referenceTokens = Tokens(model, batch: 4, pos: 12, seed: 8);
        using var reference = new AblationReference(model, referenceTokens);
        var targets = AblationTarget.AllHeads(cfg).Concat(AblationTarget.AllLayers(cfg)).ToArray();
        var metric = MetricFor(model);
        foreach (var kind in new[] { AblationKind.Zero, AblationKind.Mean })
        {
            var rows = AblationSweep.Run(model, tokens, targets, kind, metric, reference, new AblationSweepOptions { AblationsPerForward = 3 });
            for (int i = 0; i < targets.Length; i++)
            {
                double expected = Naive(model, tokens, targets[i], kind, metric, referenceTokens);
                Assert.True(Math.Abs(expected - rows[i].MetricAblated) <= 1e-4 * Math.Max(1, Math.Abs(expected)),
                    $"{name} {kind} {targets[i]}: one hooked forward {expected}, sweep {rows[i].MetricAblated}");
            }
        }
    }

    // ---- Logit lens, residual writes, head detection -----------------------------------------------------------

    [Theory, MemberData(nameof(ModelsWithLogits))]
    public void Logit_lens_ends_at_the_models_own_logits(string name)
    {
        using var model = Build(name);
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var (logits, cache) = model.RunWithCache(tokens, LogitLens.CacheFilter);
        using (cache)
        {
            var (lens, layers) = LogitLens.Logits(model, cache);
            Assert.Equal(ComponentKind.FinalPost, layers[^1].Kind);
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(logits, lens[lens.shape[0] - 1]));          // soft cap, masked-LM head and all
            var targets = tokens[.., 1..];
            var result = LogitLens.Target(model, cache, targets);
            var expected = logits[.., ..^1].gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(ScalarType.Float64);
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(expected, result.Logit[result.Logit.shape[0] - 1]));
        }
    }

    [Theory]
    [InlineData("neox-like")]
    [InlineData("bert-like")]
    [InlineData("bert-base-like")]
    [InlineData("gpt_neox-tiny-random")]
    [InlineData("bert-tiny-random")]
    public void Residual_writes_take_the_mlp_cosine_with_the_stream_the_mlp_joins(string name)
    {
        using var model = Build(name);
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, ResidualWrites.CacheFilter);
        using (cache)
        {
            var writes = ResidualWrites.Measure(model, cache);
            for (int l = 0; l < cfg.NLayers; l++)
            {
                // parallel: resid_post = resid_pre + attn_out + mlp_out; post-norm: resid_post = ln1(resid_mid) + mlp_out.
                var stream = (cfg.Block == BlockKind.Parallel ? cache[HookNames.ResidPre(l)] : cache[HookNames.NormalizedResidMid(l)]).to(ScalarType.Float64);
                var write = cache[HookNames.MlpOut(l)].to(ScalarType.Float64);
                var expected = (write * stream).sum(-1) / (write.norm(-1) * stream.norm(-1));
                var mlp = writes.Single(w => w.Component == new ResidualComponent(ComponentKind.MlpOut, l));
                Close(expected, mlp.Cosine!, 1e-9, $"{name}: cosine of {l}_mlp_out");
            }
        }
    }

    [Fact]
    public void Detection_patterns_may_look_ahead_in_a_bidirectional_encoder()
    {
        using var model = Build("bert-like");
        using var scope = NewDisposeScope();
        var tokens = Tokens(model, batch: 2, pos: 10);
        var next = DetectionPatterns.PreviousToken(10).mT.contiguous();                  // 1 at [q, q + 1]
        var scores = HeadDetection.Detect(model, tokens, next);
        var (_, cache) = model.RunWithCache(tokens, n => HookNames.Is(n, HookNames.Pattern));
        using (cache)
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                var expected = cache[HookNames.Pattern(l)].diagonal(offset: 1, dim1: 2, dim2: 3).to(ScalarType.Float64).mean([0, 2]);   // [head]
                for (int h = 0; h < model.Config.NHeads; h++)
                    Assert.Equal(expected[h].item<double>(), scores[l, h], 1e-6);   // the pattern's rows sum to 1 in float32
            }
        using var decoder = Build("gpt2-like");
        var causal = Assert.Throws<InterpException>(() => HeadDetection.Detect(decoder, tokens, next));
        Assert.Contains("causal attention never looks ahead", causal.Message);
    }

    // ---- Circuits ----------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("gemma2-like")]
    [InlineData("gemma2-tiny-random")]
    public void Message_circuit_after_ln1_post_is_each_heads_share_of_attn_out(string name)
    {
        using var model = Build(name);
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, n => HookNames.Is(n, HookNames.Z) || HookNames.Is(n, HookNames.AttnOut) || n.EndsWith("ln1_post.hook_scale", StringComparison.Ordinal));
        using (cache)
        using (var ov = HeadCircuits.Message(model))
            for (int l = 0; l < cfg.NLayers; l++)
            {
                // attn_out = ln1_post(Σ_h z_h·W_O[h]) = Σ_h z_h·(W_O[h]·diag(w)) / rms: the circuit's writing factor, shared scale.
                var shares = einsum("bphe,hed->bpd", cache[HookNames.Z(l)], ov.B[l]) / cache[HookNames.Scale(l, "ln1_post")];
                Close(cache[HookNames.AttnOut(l)], shares, 1e-5, $"{name}: layer {l}");
            }
    }

    [Theory]
    [InlineData("neox-like")]          // partial rotary, LayerNorm
    [InlineData("gemma2-tiny-random")] // attention scale √query_pre_attn_scalar, soft cap, sliding windows
    [InlineData("llama-tiny-random")]  // Llama 3 rotary frequency rescaling
    public void Pattern_circuit_at_an_offset_gives_the_attention_scores(string name)
    {
        // Without biases, so that the circuit (which leaves b_Q and b_K out) is the whole score.
        using var m = name == "neox-like" ? TestModels.Random(TestModels.NeoXLike with { UseBias = false }, seed: 5) : Build(name);
        var c = m.Config;
        using var scope = NewDisposeScope();
        var tokens = Tokens(m, batch: 1, pos: 14);
        var (_, cache) = m.RunWithCache(tokens, n => HookNames.Is(n, HookNames.AttnScores) || n.EndsWith("ln1.hook_normalized", StringComparison.Ordinal));
        using (cache)
            foreach (var (i, j) in new[] { (5, 5), (7, 2), (9, 0), (13, 12), (13, 1) })
            {
                using var qk = HeadCircuits.PatternAtOffset(m, i - j);
                for (int l = 0; l < c.NLayers; l++)
                {
                    // The attention's input: LayerNorm's hook_normalized follows w and b; RMSNorm's precedes w.
                    var normalized = cache[HookNames.Normalized(l, "ln1")][0];
                    var x = c.Norm == NormKind.LayerNorm ? normalized : normalized * m.Blocks[l].Ln1!.W.detach();
                    var scores = cache[HookNames.AttnScores(l)][0];                   // [head, q, k]
                    bool masked = m.Blocks[l].Attn.Window is > 0 and var w && i - j >= w;
                    for (int h = 0; h < c.NHeads; h++)
                    {
                        double actual = scores[h, i, j].item<float>();
                        if (masked) { Assert.True(double.IsNegativeInfinity(actual)); continue; }
                        double s = x[i].matmul(qk.A[l, h]).matmul(qk.B[l, h]).dot(x[j]).item<float>() / c.AttnScaleOrDefault;
                        if (c.AttnScoresSoftCap > 0) s = c.AttnScoresSoftCap * Math.Tanh(s / c.AttnScoresSoftCap);
                        Assert.True(Math.Abs(s - actual) <= 1e-4 * Math.Max(1, Math.Abs(actual)), $"{name} layer {l} head {h} [{i}, {j}]: circuit {s}, model {actual}");
                    }
                }
            }
    }

    // ---- Weight processing -------------------------------------------------------------------------------------

    /// <summary>
    /// What each step does on each model: "" = applies, "skip" = skipped (centring the writing weights of RMSNorm
    /// models), otherwise the phrase its refusal must contain (the step's name is checked too).
    /// </summary>
    private static string Expected(string model, string step) => (model, step) switch
    {
        ("bert-like" or "bert-tiny-random" or "bert-base-like", "FoldLn" or "CenterWritingWeights") => "its blocks are post-norm",
        ("bert-base-like", "CenterUnembed") => "it has none",
        ("gemma2-like" or "gemma2-tiny-random", "CenterUnembed") => "logits are soft-capped",
        ("qwen2-tiny-random", "FoldValueBiases") => "no output bias",
        ("llama-like" or "gemma2-like" or "gemma2-tiny-random" or "qwen3-tiny-random" or "mistral-tiny-random" or "qwen2-tiny-random", "CenterWritingWeights") => "skip",
        _ => "",
    };

    private static readonly string[] Steps = ["FoldLn", "CenterWritingWeights", "CenterUnembed", "FoldValueBiases"];

    private static WeightProcessingOptions Step(string step) => step switch
    {
        "FoldLn" => new() { FoldLn = true },
        "CenterWritingWeights" => new() { CenterWritingWeights = true },
        "CenterUnembed" => new() { CenterUnembed = true },
        _ => new() { FoldValueBiases = true },
    };

    public static TheoryData<string, string> ModelsAndSteps()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in All.Append("qwen2-tiny-random"))
            foreach (var step in Steps) data.Add(model, step);
        return data;
    }

    [Theory, MemberData(nameof(ModelsAndSteps))]
    public void Weight_processing_keeps_the_output_or_refuses_naming_the_step(string name, string step)
    {
        using var model = Build(name);
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var before = model.forward(tokens);
        var options = Step(step);
        string expected = Expected(name, step);
        if (expected is not ("" or "skip"))
        {
            var ex = Assert.Throws<InterpException>(() => model.ProcessWeights(options));
            Assert.Contains($"({step})", ex.Message);
            Assert.Contains(expected, ex.Message);
            Assert.Contains(model.Config.Name, ex.Message);
            Assert.Equal(WeightProcessingOptions.None, model.Processing);
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(before, model.forward(tokens)));   // nothing changed
            Assert.Equal(WeightProcessingOptions.None, model.Applicable(options));
            Assert.Throws<InterpException>(() => model.ProcessWeights(WeightProcessingOptions.Default));
            return;
        }
        var applied = model.ProcessWeights(options);
        Assert.Equal(expected == "skip" ? WeightProcessingOptions.None : options, applied);
        Assert.Equal(applied, model.Applicable(options));
        var after = model.forward(tokens);
        if (applied.CenterUnembed)
        {
            // A constant shift per position: the output distribution is the same.
            var shift = after - before;
            Close(zeros_like(shift), shift - shift.mean([-1], keepdim: true), 1e-4, $"{name} {step}: shift constant along the vocabulary");
            Close(before.log_softmax(-1), after.log_softmax(-1), 1e-4, $"{name} {step}: log_softmax");
        }
        else Close(before, after, 1e-4, $"{name} {step}: output");
    }

    [Theory, MemberData(nameof(AllModels))]
    public void The_applicable_default_steps_keep_the_output_distribution(string name)
    {
        using var model = Build(name);
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var before = model.forward(tokens);
        var applicable = model.Applicable(WeightProcessingOptions.Default);
        foreach (var step in Steps)
        {
            bool on = step switch
            {
                "FoldLn" => applicable.FoldLn,
                "CenterWritingWeights" => applicable.CenterWritingWeights,
                "CenterUnembed" => applicable.CenterUnembed,
                _ => applicable.FoldValueBiases,
            };
            Assert.Equal(Expected(name, step) == "", on);
        }
        Assert.Equal(applicable, model.ProcessWeights(applicable));
        var after = model.forward(tokens);
        if (model.Config.HasUnembed) Close(before.log_softmax(-1), after.log_softmax(-1), 1e-4, $"{name}: log_softmax");
        else Close(before, after, 1e-4, $"{name}: hidden state");
    }

    [Fact]
    public void Centring_the_writing_weights_of_layer_norm_blocks_with_post_sublayer_norms_is_refused()
    {
        // A LayerNorm model whose sublayers' outputs are normalised: the stream is written by ln1_post and ln2_post.
        using var model = TestModels.Random(TestModels.Gemma2Like with { Name = "post-ln", Norm = NormKind.LayerNorm, OutputLogitsSoftCap = 0 }, seed: 5);
        var ex = Assert.Throws<InterpException>(() => model.ProcessWeights(new() { CenterWritingWeights = true }));
        Assert.Contains("(CenterWritingWeights) of post-ln", ex.Message);
        Assert.Contains("ln1_post and ln2_post normalise attention's and the MLP's outputs", ex.Message);
    }

    // ---- Refusals ----------------------------------------------------------------------------------------------

    /// <summary>Each refusal: the model, what is run, and the phrases its message must contain (the pass and the reason).</summary>
    private static readonly Dictionary<string, (string Model, Action<HookedTransformer, Tensor> Run, string[] Phrases)> Refusals = new()
    {
        // BERT (bidirectional, post-norm, masked-LM head)
        ["bert next-token attribution"] = ("bert-like", (m, t) => HeadAttribution.Run(m, t), ["next-token logit attribution (HeadAttribution.Run)", "bidirectional encoder"]),
        ["bert attribution"] = ("bert-tiny-random", (m, t) => WithCache(m, t, HeadAttribution.CacheFilter, (c, l) => HeadAttribution.Attribute(m, c, l, 3)),
            ["direct logit attribution (HeadAttribution)", "post-norm blocks", "ln2"]),
        ["bert attribution at last tokens"] = ("bert-like", (m, t) => HeadAttribution.AtLastTokens(m, t, null, [1, 2]), ["HeadAttribution.AtLastTokens", "post-norm blocks"]),
        ["bert next-token lens"] = ("bert-like", (m, t) => WithCache(m, t, LogitLens.CacheFilter, (c, _) => LogitLens.NextToken(m, c, t)), ["next-token logit lens", "bidirectional encoder"]),
        ["bert head scores"] = ("bert-tiny-random", (m, t) => HeadDetection.Score(m, t, 10), ["HeadDetection.Score", "bidirectional encoder"]),
        ["bert loss by position"] = ("bert-like", (m, t) => LossByPosition.Mean(m, t), ["loss by position", "bidirectional encoder"]),
        ["bert sweep with loss"] = ("bert-like", (m, t) => AblationSweep.Heads(m, t, AblationKind.Zero, Metrics.Loss()), ["ablation sweep (AblationSweep.Run)", "next-token loss metric (Metrics.Loss)", "bidirectional encoder"]),
        ["bert ablation with loss"] = ("bert-like", (m, t) => Ablation.Run(m, t, AblationTarget.OfHead(0, 0), AblationKind.Zero, Metrics.Loss()), ["ablation (Ablation.Run)", "Metrics.Loss", "bidirectional encoder"]),
        ["bert patching with loss"] = ("bert-tiny-random", (m, t) => new ActivationPatching(m, t, t.flip(1), Metrics.Loss()).Dispose(), ["activation patching", "Metrics.Loss", "bidirectional encoder"]),
        ["bert decompose"] = ("bert-like", (m, t) => WithCache(m, t, null, (c, _) => c.DecomposeResid(m)), ["decompose_resid", "post-norm blocks", "normalised stream"]),
        ["bert apply ln"] = ("bert-like", (m, t) => WithCache(m, t, null, (c, _) => c.AccumulatedResid(m, layer: 1, applyLn: true)), ["apply_ln_to_stack", "post-norm blocks", "no final norm"]),
        ["bert unembed directions"] = ("bert-like", (m, t) => ResidualWrites.UnembedDirections(m, t), ["ResidualWrites.UnembedDirections", "masked-LM head"]),
        ["bert full message"] = ("bert-tiny-random", (m, _) => FullCircuits.Message(m).Dispose(), ["FullCircuits.Message", "masked-LM head"]),
        ["bert copying"] = ("bert-like", (m, _) => CircuitScores.Copying(m), ["CircuitScores.Copying", "masked-LM head"]),
        ["bert circuit summary"] = ("bert-like", (m, _) => HeadCircuitSummary.Compute(m), ["HeadCircuitSummary.Compute", "masked-LM head"]),
        // A base encoder: no logits at all
        ["base lens"] = ("bert-base-like", (m, t) => WithCache(m, t, LogitLens.CacheFilter, (c, _) => LogitLens.Target(m, c, t)), ["the logit lens", "has none: its output is its last hidden state"]),
        ["base attribution"] = ("bert-base-like", (m, t) => WithCache(m, t, HeadAttribution.CacheFilter, (c, l) => HeadAttribution.Attribute(m, c, l, 3)), ["direct logit attribution", "has none"]),
        ["base ablation"] = ("bert-base-like", (m, t) => Ablation.Run(m, t, AblationTarget.OfMlp(0), AblationKind.Zero, Metrics.LogitDiff(1, 2)), ["ablation (Ablation.Run) (its metric reads logits)", "has none"]),
        ["base sweep"] = ("bert-base-like", (m, t) => AblationSweep.Heads(m, t, AblationKind.Zero, Metrics.LogitDiff(1, 2)), ["ablation sweep", "has none"]),
        ["base patching"] = ("bert-base-like", (m, t) => new ActivationPatching(m, t, t.flip(1), Metrics.LogitDiff(1, 2)).Dispose(), ["activation patching", "has none"]),
        ["bert attribution patching with loss"] = ("bert-tiny-random", (m, t) => new AttributionPatching(m, t, t.flip(1), Metrics.Loss()).Dispose(), ["attribution patching", "Metrics.Loss", "bidirectional encoder"]),
        ["base attribution patching"] = ("bert-base-like", (m, t) => new AttributionPatching(m, t, t.flip(1), Metrics.LogitDiff(1, 2)).Dispose(), ["attribution patching", "has none"]),
        ["base loss by position"] = ("bert-base-like", (m, t) => LossByPosition.Mean(m, t), ["loss by position", "has none"]),
        ["base full message"] = ("bert-base-like", (m, _) => FullCircuits.Message(m).Dispose(), ["FullCircuits.Message", "has none"]),
        // Gemma 2: attention's output normalised (ln1_post), q/k norms in gemma2-like
        ["gemma stack heads"] = ("gemma2-tiny-random", (m, t) => WithCache(m, t, HeadAttribution.CacheFilter, (c, _) => c.StackHeadResults(m)), ["stack_head_results", "ln1_post", "no head writes on its own"]),
        ["gemma residual writes"] = ("gemma2-like", (m, t) => WithCache(m, t, ResidualWrites.CacheFilter, (c, _) => ResidualWrites.Measure(m, c)), ["residual writes (ResidualWrites.Measure)", "ln1_post"]),
        ["gemma head map"] = ("gemma2-tiny-random", (m, t) => HeadAttribution.Run(m, t).HeadMap(m.Config, [0, 1]), ["head map", "ln1_post", "whole layers"]),
        ["gemma pattern circuit"] = ("gemma2-like", (m, _) => HeadCircuits.Pattern(m).Dispose(), ["HeadCircuits.Pattern", "q_norm, k_norm"]),
        ["gemma circuit summary"] = ("gemma2-like", (m, _) => HeadCircuitSummary.Compute(m), ["HeadCircuitSummary.Compute", "q_norm, k_norm"]),
        // Qwen 3: q/k norms
        ["qwen3 pattern circuit"] = ("qwen3-tiny-random", (m, _) => HeadCircuits.PatternAtOffset(m, 1).Dispose(), ["HeadCircuits.PatternAtOffset", "q_norm, k_norm", "nonlinear"]),
        ["qwen3 K-composition"] = ("qwen3-tiny-random", (m, _) => Composition.Scores(m, CompositionKind.K), ["K-composition scores", "q_norm, k_norm"]),
        ["qwen3 same-token"] = ("qwen3-tiny-random", (m, _) => CircuitScores.SameToken(m), ["CircuitScores.SameToken", "q_norm, k_norm"]),
        ["qwen3 full pattern"] = ("qwen3-tiny-random", (m, _) => FullCircuits.Pattern(m).Dispose(), ["FullCircuits.Pattern", "q_norm, k_norm"]),
    };

    private static void WithCache(HookedTransformer model, Tensor tokens, Func<string, bool>? filter, Action<ActivationCache, Tensor> use)
    {
        var (logits, cache) = model.RunWithCache(tokens, filter);
        using (cache) use(cache, logits);
    }

    public static TheoryData<string> RefusalCases() => new(Refusals.Keys);

    [Theory, MemberData(nameof(RefusalCases))]
    public void Each_refusing_pass_names_itself_and_the_reason(string refusal)
    {
        var (name, run, phrases) = Refusals[refusal];
        using var model = Build(name);
        using var scope = NewDisposeScope();
        var tokens = Tokens(model, batch: 2, pos: 20);
        var ex = Assert.ThrowsAny<InterpException>(() => run(model, tokens));
        foreach (var phrase in phrases) Assert.Contains(phrase, ex.Message);
        Assert.Contains(model.Config.Name, ex.Message);
    }

    [Theory]
    [InlineData("gemma2-tiny-random")]
    [InlineData("qwen3-tiny-random")]
    [InlineData("neox-like")]
    public void Message_circuits_and_V_composition_work_where_pattern_circuits_may_not(string name)
    {
        using var model = Build(name);
        using var scope = NewDisposeScope();
        var v = Composition.Scores(model, CompositionKind.V);
        Assert.True(v[0, 0, 1, 0].item<double>() > 0);
        var copying = CircuitScores.Copying(model);
        Assert.True(Math.Abs(copying[0, 0]) <= 1 + 1e-9);
    }
}

using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Tests.Hooks;

/// <summary>
/// Backward hooks and <see cref="HookedTransformer.RunWithCacheAndGradients"/>: gradients at every hook point against
/// central finite differences in float64, backward hooks that replace a gradient against the chain rule, gradients off
/// everywhere else, and the errors.
/// </summary>
public sealed class GradientTests
{
    public static TheoryData<string> Configs => ["gpt2", "llama", "attn-only"];

    private static ModelConfig Config(string name) => name switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        "neox" => TestModels.NeoXLike,
        "gemma2" => TestModels.Gemma2Like,
        _ => TestModels.AttnOnlySinusoidal,
    };

    /// <summary>A random model of <paramref name="config"/> converted to float64.</summary>
    internal static HookedTransformer Float64Model(string config, long seed = 5)
    {
        using var single = TestModels.Random(Config(config), seed);
        var model = single.ToDtype(ScalarType.Float64);
        Assert.Equal(ScalarType.Float64, model.DType);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float64, p.dtype));
        Assert.Equal(ScalarType.Float64, model.Blocks[0].Attn.W_Q.dtype);   // the components' own references moved too
        return model;
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void ToDtype_float64_computes_the_same_function(string config)
    {
        using var single = TestModels.Random(Config(config), 5);
        using var model = Float64Model(config);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        var reference = single.forward(tokens).to(ScalarType.Float64);
        var logits = model.forward(tokens);
        Assert.Equal(ScalarType.Float64, logits.dtype);
        Assert.True(logits.allclose(reference, rtol: 1e-4, atol: 1e-4));
        Assert.Throws<InterpException>(() => single.ToDtype(ScalarType.Int64));
    }

    /// <summary>A nonlinear scalar of the logits: mean next-token loss plus a logit difference at one position.</summary>
    private static Func<Tensor, Tensor> Metric(Tensor tokens) => logits =>
        Metrics.PerTokenLoss(logits, tokens).mean() + 0.5 * (logits[.., 4, 3] - logits[.., 4, 7]).mean();

    /// <summary>The metric of a no-grad run with <paramref name="delta"/> added to the activation at <paramref name="hook"/>.</summary>
    private static double Perturbed(HookedTransformer model, Tensor tokens, string hook, Tensor delta)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = model.RunWithHooks(tokens, (hook, (a, _) => a + delta));
        return Metric(tokens)(logits).item<double>();
    }

    private static void Close(double expected, double actual, string what, double rel = 1e-3, double abs = 1e-8) =>
        Assert.True(Math.Abs(expected - actual) <= rel * Math.Max(Math.Abs(expected), Math.Abs(actual)) + abs,
            $"{what}: finite differences {expected:G10}, gradient {actual:G10}");

    [Theory]
    [MemberData(nameof(Configs))]
    public void Gradient_at_every_hook_point_matches_central_differences_in_float64(string config)
    {
        using var model = Float64Model(config);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        using var run = model.RunWithCacheAndGradients(tokens, Metric(tokens), _ => true);   // hook_result too
        Assert.Equal(model.HookPoints.Select(h => h.Name), run.Gradients.Names);
        Assert.Equal(run.Activations.Names, run.Gradients.Names);
        Assert.Equal(Metric(tokens)(model.forward(tokens)).item<double>(), run.Metric, 1e-12);

        var generator = new Generator(17);
        const double eps = 1e-5;
        var kinds = new HashSet<string>();
        foreach (var name in run.Gradients.Names)
        {
            var act = run.Activations[name];
            var grad = run.Gradients[name];
            Assert.Equal(act.shape, grad.shape);
            Assert.Equal(ScalarType.Float64, grad.dtype);
            Assert.False(grad.requires_grad);
            var finite = act.isfinite().to(ScalarType.Float64);   // masked attention scores are −∞: leave them be

            // A random direction over the whole activation.
            var d = randn(act.shape, ScalarType.Float64, generator: generator) * finite;
            double fd = (Perturbed(model, tokens, name, d * eps) - Perturbed(model, tokens, name, d * -eps)) / (2 * eps);
            Close(fd, (grad * d).sum().item<double>(), $"{name} along a random direction");

            // Two random coordinates.
            var flatFinite = finite.reshape(-1);
            for (int i = 0; i < 2; i++)
            {
                long k;
                do k = randint(0, act.NumberOfElements, [1], generator: generator).item<long>(); while (flatFinite[k].item<double>() == 0);
                var e = zeros(act.NumberOfElements, ScalarType.Float64);
                e[k] = 1.0;
                e = e.reshape(act.shape);
                double fdk = (Perturbed(model, tokens, name, e * eps) - Perturbed(model, tokens, name, e * -eps)) / (2 * eps);
                Close(fdk, grad.reshape(-1)[k].item<double>(), $"{name} at flat index {k}");
            }
            kinds.Add(name[(name.LastIndexOf('.') + 1)..]);
        }
        string[] expected = ["hook_embed", "hook_resid_pre", "hook_scale", "hook_normalized", "hook_q", "hook_k", "hook_v", "hook_attn_scores",
            "hook_pattern", "hook_z", "hook_result", "hook_attn_out", "hook_resid_post"];
        Assert.Empty(expected.Except(kinds));
        if (model.Config.Mlp != MlpKind.None) Assert.Empty(new[] { "hook_mlp_out", "hook_pre", "hook_post", "hook_resid_mid" }.Except(kinds));
        if (model.Config.Mlp == MlpKind.Gated) Assert.Contains("hook_pre_linear", kinds);
        if (model.Config.Positional == PositionalKind.Rotary) Assert.Empty(new[] { "hook_rot_q", "hook_rot_k" }.Except(kinds));
        else Assert.Contains("hook_pos_embed", kinds);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("neox")]
    [InlineData("gemma2")]
    [InlineData("attn-only")]
    public void Split_input_gradients_match_central_differences_in_float64(string config)
    {
        // The split inputs' gradients come from a hand-written backward (each head's gradient through the norm's
        // Jacobian at the shared stream); the finite differences perturb each head's copy through a replacing hook,
        // which normalises and projects the copies themselves: an independent path.
        using var model = Float64Model(config);
        using var scope = NewDisposeScope();
        model.UseSplitInputs = true;
        try
        {
            var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 4);
            var names = model.HookPoints.Select(h => h.Name).Where(n => HookNames.Is(n, HookNames.QInput) || HookNames.Is(n, HookNames.KInput)
                || HookNames.Is(n, HookNames.VInput) || HookNames.Is(n, HookNames.MlpIn)).ToHashSet();
            Assert.Equal(model.Config.NLayers * (model.Config.AttentionOnly ? 3 : 4), names.Count);
            using var run = model.RunWithCacheAndGradients(tokens, Metric(tokens), names.Contains);
            var generator = new Generator(19);
            const double eps = 1e-5;
            foreach (var name in names)
            {
                var act = run.Activations[name];
                var grad = run.Gradients[name];
                Assert.Equal(act.shape, grad.shape);
                // Each head's copy alone along a random direction: the per-head split is what is under test.
                for (long head = 0; head < (act.dim() == 4 ? act.shape[2] : 1); head++)
                {
                    var d = randn(act.shape, ScalarType.Float64, generator: generator);
                    if (act.dim() == 4) d = d * torch.nn.functional.one_hot(tensor(head), act.shape[2]).to(ScalarType.Float64).view(1, 1, -1, 1);
                    double fd = (Perturbed(model, tokens, name, d * eps) - Perturbed(model, tokens, name, d * -eps)) / (2 * eps);
                    Close(fd, (grad * d).sum().item<double>(), $"{name}, head {head}, along a random direction");
                }
            }
        }
        finally { model.UseSplitInputs = false; }
    }

    [Fact]
    public void Doubling_the_gradient_at_a_hook_doubles_exactly_every_gradient_upstream_of_it_and_nothing_downstream()
    {
        using var model = Float64Model("gpt2");
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        string at = HookNames.ResidPre(1);
        using var plain = model.RunWithCacheAndGradients(tokens, Metric(tokens));
        GradientCache doubled;
        using (model.BackwardHooks((at, (g, _) => g * 2)))
            doubled = model.RunWithCacheAndGradients(tokens, Metric(tokens));
        using var _ = doubled;
        Assert.Equal(plain.Metric, doubled.Metric);
        int index = plain.Gradients.Names.ToList().IndexOf(at);
        Assert.True(index > 0);
        // In a pre-norm stack every hook before resid_pre(1) (resid_post(0) included: the same tensor) reaches the metric only through it.
        for (int i = 0; i < plain.Gradients.Names.Count; i++)
        {
            string name = plain.Gradients.Names[i];
            double factor = i <= index ? 2 : 1;
            var expected = plain.Gradients[name] * factor;
            Assert.True(expected.allclose(doubled.Gradients[name], rtol: 1e-12, atol: 1e-15), $"{name}: expected {factor}× the gradient");
        }
    }

    [Fact]
    public void A_replaced_gradient_flows_upstream_by_the_chain_rule()
    {
        // Replace ∂metric/∂resid_pre(1) by G: the gradient at resid_pre(0) must become Jᵀ·G, J the Jacobian of
        // resid_pre(0) ↦ resid_pre(1); checked along a random direction d by differencing ⟨G, resid_pre(1)(resid_pre(0) + εd)⟩.
        using var model = Float64Model("llama");
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        var generator = new Generator(23);
        var shape = new long[] { 2, 8, model.Config.DModel };
        var replacement = randn(shape, ScalarType.Float64, generator: generator);
        string from = HookNames.ResidPre(0), to = HookNames.ResidPre(1);
        int calls = 0;
        GradientCache run;
        using (model.BackwardHooks((to, (g, _) => { calls++; return replacement; })))
            run = model.RunWithCacheAndGradients(tokens, Metric(tokens), n => n == from || n == to);
        using var _ = run;
        Assert.Equal(1, calls);
        Assert.True(run.Gradients[to].allclose(replacement, 0, 0));

        var d = randn(shape, ScalarType.Float64, generator: generator);
        double Inner(double eps)
        {
            using var inner = NewDisposeScope();
            using var noGrad = no_grad();
            Tensor? seen = null;
            model.RunWithHooks(tokens, (from, (a, _) => a + d * eps), (to, (a, _) => { seen = a.clone().DetachFromDisposeScope(); return null; }));
            using var kept = seen!;
            return (kept * replacement).sum().item<double>();
        }
        const double step = 1e-5;
        double fd = (Inner(step) - Inner(-step)) / (2 * step);
        Close(fd, (run.Gradients[from] * d).sum().item<double>(), "Jᵀ·G along d");
    }

    [Fact]
    public void A_hook_point_adds_nothing_without_backward_hooks_and_an_identity_node_with_them()
    {
        using var scope = NewDisposeScope();
        var point = new HookPoint("blocks.0.hook_resid_pre", "batch", "pos", "d_model");
        var x = randn(2, 3, 4, requires_grad: true);
        Assert.Same(x, point.Run(x));                         // no backward hooks: the activation itself, no node
        Assert.False(point.IsActive);

        Tensor? seen = null;
        using (point.AddBackward((g, _) => { seen = g.clone(); return g * 0 + 1; }))
        {
            Assert.True(point.IsActive);
            Assert.True(point.HasBackwardHooks);
            var y = point.Run(x);
            Assert.NotSame(x, y);
            Assert.True(y.allclose(x, 0, 0));
            (y * 3).sum().backward();
        }
        Assert.False(point.HasBackwardHooks);
        Assert.True(seen!.allclose(full([2, 3, 4], 3.0f), 0, 0));          // the true gradient
        Assert.True(x.grad!.allclose(ones(2, 3, 4), 0, 0));                // the replacement, passed on

        using (point.AddBackward((g, _) => throw new InvalidOperationException("never")))
        using (no_grad())
            Assert.Same(x, point.Run(x));                     // gradients off: nothing recorded, the hook cannot run
    }

    [Fact]
    public void Gradients_stay_off_everywhere_else()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        var before = model.parameters().Select(p => p.requires_grad).ToArray();
        using (var run = model.RunWithCacheAndGradients(tokens, Metric(tokens)))
        {
            Assert.All(run.Activations.Names, n => Assert.False(run.Activations[n].requires_grad));
            Assert.All(run.Gradients.Names, n => Assert.False(run.Gradients[n].requires_grad));
            Assert.False(run.Logits.requires_grad);
        }
        Assert.Equal(before, model.parameters().Select(p => p.requires_grad).ToArray());
        Assert.All(model.parameters(), p => Assert.Null(p.grad));   // nothing accumulated into the weights
        using (no_grad())
        {
            var logits = model.forward(tokens);
            Assert.False(logits.requires_grad);
        }
        Assert.All(model.HookPoints, h => Assert.False(h.IsActive));
    }

    [Fact]
    public void Backward_hooks_see_a_whole_model_pass_with_padding_and_soft_caps()
    {
        // Gemma-2-like: soft caps and a sliding window (in-place steps would break the backward pass), left padding (keyless rows).
        using var single = TestModels.Random(TestModels.Gemma2Like);
        using var model = single.ToDtype(ScalarType.Float64);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        var mask = ones(2, 8, ScalarType.Int64);
        mask[1, ..2] = 0;
        Func<Tensor, Tensor> metric = logits => logits[.., -1, 3].sum();
        string name = HookNames.Pattern(0);
        using var run = model.RunWithCacheAndGradients(tokens, metric, n => n == name, mask);
        var d = randn(run.Activations[name].shape, ScalarType.Float64, generator: new Generator(3));
        double Perturb(double eps)
        {
            using var inner = NewDisposeScope();
            using var noGrad = no_grad();
            return metric(model.RunWithHooks(tokens, mask, (name, (a, _) => a + d * eps))).item<double>();
        }
        double fd = (Perturb(1e-5) - Perturb(-1e-5)) / 2e-5;
        Close(fd, (run.Gradients[name] * d).sum().item<double>(), "gemma2-like pattern with left padding");
    }

    [Fact]
    public void Bad_filters_metrics_and_backward_hooks_are_clear_errors()
    {
        using var model = TestModels.Random(TestModels.AttnOnlySinusoidal);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 8, seed: 3);
        Func<Tensor, Tensor> good = logits => logits[.., -1, 3].mean();

        var none = Assert.Throws<InterpException>(() => model.RunWithCacheAndGradients(tokens, good, n => n == "blocks.0.hook_nothing"));
        Assert.Contains("accepts none", none.Message);
        var perSequence = Assert.Throws<InterpException>(() => model.RunWithCacheAndGradients(tokens, logits => logits[.., -1, 3]));
        Assert.Contains("one floating-point value", perSequence.Message);
        var detached = Assert.Throws<InterpException>(() => model.RunWithCacheAndGradients(tokens, logits => logits.detach()[.., -1, 3].mean()));
        Assert.Contains("does not depend", detached.Message);
        Assert.Throws<UnknownHookException>(() => model.BackwardHooks(("blocks.0.hook_resid_prex", (g, _) => null)));

        string at = HookNames.AttnOut(0);
        using (model.BackwardHooks((at, (g, _) => zeros(3))))
        {
            var shape = Assert.Throws<HookException>(() => model.RunWithCacheAndGradients(tokens, good));
            Assert.Equal(at, shape.HookName);
            Assert.Contains("shape", shape.Message);
        }
        using (model.BackwardHooks((at, (g, _) => throw new InvalidOperationException("boom"))))
        {
            var failed = Assert.Throws<HookException>(() => model.RunWithCacheAndGradients(tokens, good));
            Assert.Equal(at, failed.HookName);
            Assert.IsType<InvalidOperationException>(failed.InnerException);
        }
        // The model is usable afterwards: weights trainable again, no hooks left, gradients correct.
        Assert.All(model.parameters(), p => Assert.True(p.requires_grad));
        Assert.All(model.HookPoints, h => Assert.False(h.IsActive));
        using var run = model.RunWithCacheAndGradients(tokens, good);
        Assert.Equal(run.Activations.Count, run.Gradients.Count);
    }
}

using Interp.Analysis;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>
/// Split inputs and edge attribution patching: exact identities (split inputs leave the forward bit-identical; EAP
/// equals single-edge patching where the metric is linear in the edge; one IG step is EAP; scores do not depend on
/// how the batch is split; the full circuit recovers everything and the empty one nothing) and the built-in model's
/// induction circuit.
/// </summary>
public sealed class EdgeAttributionTests(ITestOutputHelper output)
{
    private const int Batch = 4, Pos = 9;

    public static TheoryData<string> SplitArchitectures => new() { "gpt2", "llama", "neox", "attn-only" };

    private static ModelConfig Config(string arch) => arch switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        "neox" => TestModels.NeoXLike,
        _ => TestModels.AttnOnlySinusoidal,
    };

    private static string[] SplitHooks(HookedTransformer model) => model.HookPoints.Select(h => h.Name)
        .Where(n => HookNames.Is(n, HookNames.QInput) || HookNames.Is(n, HookNames.KInput) || HookNames.Is(n, HookNames.VInput) || HookNames.Is(n, HookNames.MlpIn)).ToArray();

    [Theory]
    [MemberData(nameof(SplitArchitectures))]
    public void Split_inputs_leave_the_forward_bit_identical_and_split_the_gradient(string arch)
    {
        using var model = TestModels.Random(Config(arch), seed: 3);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 7, seed: 5);
        Tensor plain;
        using (no_grad()) plain = model.forward(tokens);
        model.UseSplitInputs = true;
        var names = SplitHooks(model);
        Assert.Equal(model.Config.NLayers * (model.Config.AttentionOnly ? 3 : 4), names.Length);
        var seen = new Dictionary<string, long[]>();
        var noOps = names.Select(n => (n, (HookFunction)((a, h) => { seen[h.Name] = a.shape; return null; }))).ToArray();
        using (no_grad())
        {
            var hooked = model.RunWithHooks(tokens, noOps);
            Assert.True(plain.eq(hooked).all().item<bool>(), $"{arch}: no-op hooks on the split inputs changed the logits");
        }
        Assert.Equal([2, 7, model.Config.NHeads, model.Config.DModel], seen[HookNames.QInput(0)]);
        Assert.Equal([2, 7, model.Config.KvHeads, model.Config.DModel], seen[HookNames.KInput(0)]);

        // While gradients are recorded (the straight-through path) the values are the same bits too, and the split
        // gradients add up to resid_pre's gradient minus the residual path's (the gradient at the next resid_pre/mid).
        using var run = model.RunWithCacheAndGradients(tokens, l => l.select(1, -1).select(1, 3).sum(),
            n => names.Contains(n) || HookNames.Is(n, HookNames.ResidPre) || HookNames.Is(n, HookNames.ResidMid) || HookNames.Is(n, HookNames.ResidPost));
        Assert.True(plain.eq(run.Logits).all().item<bool>(), $"{arch}: recording gradients through the split inputs changed the logits");
        var g = run.Gradients;
        var attention = g[HookNames.QInput(0)].sum(2) + g[HookNames.KInput(0)].sum(2) + g[HookNames.VInput(0)].sum(2);
        var next = model.Config.HasResidMid ? g[HookNames.ResidMid(0)] : g[HookNames.ResidPost(0)];
        var expected = g[HookNames.ResidPre(0)] - next - (model.Config.Block == BlockKind.Parallel ? g[HookNames.MlpIn(0)] : zeros_like(next));
        Assert.True(attention.allclose(expected, rtol: 1e-4, atol: 1e-6), $"{arch}: the q, k and v inputs' gradients do not add up to the attention path's");
        model.UseSplitInputs = false;
    }

    /// <summary>Attention-only, no norms, a logit difference: the metric is linear in every edge into the logits and into the last layer's value inputs.</summary>
    private static ModelConfig Linear => TestModels.AttnOnlySinusoidal with { Name = "attn-only-no-norm", Norm = NormKind.None, Positional = PositionalKind.Learned, NLayers = 2 };

    [Fact]
    public void EAP_equals_patching_the_edge_alone_where_the_metric_is_linear_in_it()
    {
        using var model = TestModels.Random(Linear, seed: 9);
        using var scope = NewDisposeScope();
        var clean = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 11);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 12);
        var metric = Metrics.LogitDiff(3, 5, position: 6);
        using var eap = new EdgeAttribution(model, clean, corrupted, metric);
        var scores = eap.Scores(EdgeMethod.Eap);
        Assert.Equal(eap.Graph.Edges.Count, scores.Count);
        int last = model.Config.NLayers - 1, checkedEdges = 0;
        double worst = 0;
        foreach (var s in scores.Where(s => s.Edge.Downstream.Input == EdgeInput.Logits || (s.Edge.Downstream.Input == EdgeInput.V && s.Edge.Downstream.Layer == last)))
        {
            double patched = ReferenceEdgePatch(model, clean, corrupted, metric, s.Edge) - eap.CorruptedMetric;
            worst = Math.Max(worst, Math.Abs(patched - s.Score));
            Assert.Equal(patched, eap.EdgePatchedMetric(s.Edge) - eap.CorruptedMetric, 1e-4);
            checkedEdges++;
        }
        output.WriteLine($"{checkedEdges} linear edges: max |EAP − edge patching| = {worst:G3}");
        Assert.True(checkedEdges >= 2 + 2 * model.Config.NHeads, $"only {checkedEdges} edges checked");
        Assert.True(worst <= 1e-4, $"EAP differs from edge patching by up to {worst:G3} on linear edges");
        // The corrupted metric is the corrupted run's.
        using (no_grad()) Assert.Equal(Metrics.Evaluate(metric, model.forward(corrupted), corrupted), eap.CorruptedMetric, 1e-5);
        using (no_grad()) Assert.Equal(Metrics.Evaluate(metric, model.forward(clean), clean), eap.CleanMetric, 1e-5);
    }

    /// <summary>
    /// An independent single-edge patch: the corrupted run, with the downstream input (resid_pre copy of one head's v,
    /// or the final residual stream) increased by the upstream node's clean − corrupted output, both from RunWithCache.
    /// </summary>
    private static double ReferenceEdgePatch(HookedTransformer model, Tensor clean, Tensor corrupted, Metric metric, Edge edge)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        string hook = edge.Upstream.Kind switch
        {
            UpstreamKind.Embed => HookNames.Embed,
            UpstreamKind.PosEmbed => HookNames.PosEmbed,
            UpstreamKind.Head => HookNames.Result(edge.Upstream.Layer),
            _ => HookNames.MlpOut(edge.Upstream.Layer),
        };
        var (_, cleanCache) = model.RunWithCache(clean, n => n == hook);
        var (_, corruptCache) = model.RunWithCache(corrupted, n => n == hook);
        var diff = cleanCache[hook] - corruptCache[hook];
        if (edge.Upstream.Kind == UpstreamKind.Head) diff = diff.select(2, edge.Upstream.Head);
        cleanCache.Dispose();
        corruptCache.Dispose();
        Tensor logits;
        if (edge.Downstream.Input == EdgeInput.Logits)
            logits = model.RunWithHooks(corrupted, (HookNames.ResidPost(model.Config.NLayers - 1), (a, _) => a + diff));
        else
        {
            model.UseSplitInputs = true;
            try
            {
                logits = model.RunWithHooks(corrupted, (HookNames.VInput(edge.Downstream.Layer), (a, _) =>
                {
                    var p = a.clone();
                    p.select(2, edge.Downstream.Head).add_(diff);
                    return p;
                }));
            }
            finally { model.UseSplitInputs = false; }
        }
        return Metrics.Evaluate(metric, logits, corrupted);
    }

    [Fact]
    public void One_IG_step_is_EAP_and_scores_do_not_depend_on_how_the_batch_is_split()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 4);
        using var scope = NewDisposeScope();
        var clean = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 21);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 22);
        var loss = Metrics.Loss();
        Metric metric = (l, t) => -loss(l, t);
        using var whole = new EdgeAttribution(model, clean, corrupted, metric);
        using var split = new EdgeAttribution(model, clean, corrupted, metric, sequencesPerPass: 1);
        using var pairs = new EdgeAttribution(model, clean, corrupted, metric, sequencesPerPass: 3);
        Assert.Equal(whole.Scores(EdgeMethod.Eap).Select(s => s.Score), whole.Scores(EdgeMethod.EapIg, steps: 1).Select(s => s.Score));
        Assert.Equal(whole.CleanMetric, split.CleanMetric, 1e-5);
        Assert.Equal(whole.CorruptedMetric, pairs.CorruptedMetric, 1e-5);
        foreach (var (method, steps) in new[] { (EdgeMethod.Eap, 1), (EdgeMethod.EapIg, 3) })
        {
            var a = whole.Scores(method, steps);
            double scale = a.Max(s => Math.Abs(s.Score));
            Assert.True(scale > 0);
            foreach (var other in new[] { split, pairs })
            {
                var b = other.Scores(method, steps);
                double worst = a.Zip(b).Max(p => Math.Abs(p.First.Score - p.Second.Score));
                output.WriteLine($"{method} ({steps} steps), {other.SequencesPerPass} per pass: max |Δ| = {worst:G3} of max |score| {scale:G3}");
                Assert.True(worst <= 1e-4 * scale, $"{method}: splitting the batch into passes of {other.SequencesPerPass} changed a score by {worst:G3}");
            }
        }
        // IG differs from EAP where the metric is not linear.
        Assert.NotEqual(whole.Scores(EdgeMethod.Eap)[0].Score, whole.Scores(EdgeMethod.EapIg, 3)[0].Score);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("neox")]
    public void The_full_circuit_recovers_everything_and_the_empty_circuit_nothing(string arch)
    {
        using var model = TestModels.Random(Config(arch), seed: 6);
        using var scope = NewDisposeScope();
        var clean = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 31);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, Batch, Pos, seed: 32);
        using var eap = new EdgeAttribution(model, clean, corrupted, Metrics.LogitDiff(1, 2));
        Assert.Equal(1.0, eap.Faithfulness(eap.Graph.Edges));
        Assert.Equal(eap.CleanMetric, eap.CircuitMetric(eap.Graph.Edges));
        Assert.Equal(0.0, eap.Faithfulness([]), 1e-4);
        Assert.Equal(eap.CorruptedMetric, eap.CircuitMetric([]), 1e-5);   // a tolerance, not rounding to 5 places: float noise may straddle a rounding boundary
        // Circuits by count and by threshold: the same edges, best first; threshold 0 keeps every edge.
        var scores = eap.Scores(EdgeMethod.Eap);
        var top = EdgeCircuit.Top(scores, 7, EdgeMethod.Eap);
        Assert.Equal(7, top.Edges.Count);
        Assert.True(top.Edges.Zip(top.Edges.Skip(1)).All(p => Math.Abs(p.First.Score) >= Math.Abs(p.Second.Score)));
        Assert.Equal(top.EdgeSet, EdgeCircuit.Threshold(scores, Math.Abs(top.Edges[^1].Score), EdgeMethod.Eap).EdgeSet.Take(7));
        Assert.Equal(1.0, eap.Faithfulness(EdgeCircuit.Threshold(scores, 0, EdgeMethod.Eap).EdgeSet));
        var curve = eap.FaithfulnessCurve(EdgeMethod.Eap, [0, 7, 100000]);
        Assert.Equal([0, 7, eap.Graph.Edges.Count], curve.Select(c => c.Edges));
        Assert.Equal(eap.Faithfulness(top.EdgeSet), curve[1].Faithfulness);
        Assert.Equal(1.0, curve[2].Faithfulness);
        // Parallel blocks: a head does not feed its own layer's MLP.
        if (model.Config.Block == BlockKind.Parallel)
            Assert.DoesNotContain(eap.Graph.Edges, e => e.Downstream.Input == EdgeInput.Mlp && e.Upstream.Kind == UpstreamKind.Head && e.Upstream.Layer == e.Downstream.Layer);
        else
            Assert.Contains(eap.Graph.Edges, e => e.Downstream.Input == EdgeInput.Mlp && e.Upstream.Kind == UpstreamKind.Head && e.Upstream.Layer == e.Downstream.Layer);
        var bad = Assert.Throws<InterpException>(() => eap.CircuitMetric([new Edge(new UpstreamNode(UpstreamKind.Head, 1, 0), new DownstreamNode(EdgeInput.Q, 0, 0))]));
        Assert.Contains("L1H0", bad.Message);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Mean_ablated_circuits_keep_everything_or_carry_the_batch_mean(string arch)
    {
        using var model = TestModels.Random(Config(arch), seed: 9);
        using var scope = NewDisposeScope();
        var metric = Metrics.LogitDiff(1, 2);
        // A batch of one sequence repeated: each node's mean output is its own output, so mean-ablating every edge
        // changes nothing, while patching them from the corrupted run gives the corrupted metric.
        var one = TestModels.RandomTokens(model.Config.DVocab, 1, Pos, seed: 33);
        var same = one.repeat(3, 1);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, 3, Pos, seed: 34);
        using (var eap = new EdgeAttribution(model, same, corrupted, metric, sequencesPerPass: 2))
        {
            Assert.Equal(eap.CleanMetric, eap.CircuitMetric(eap.Graph.Edges, CircuitAblation.Mean));
            Assert.Equal(eap.CleanMetric, eap.MeanAblatedMetric(), 1e-5);
            Assert.Equal(eap.CorruptedMetric, eap.CircuitMetric([]), 1e-5);   // a tolerance, not rounding to 5 places: float noise may straddle a rounding boundary
        }
        // Different sequences: the mean is over the whole batch, not over each pass's share of it.
        var clean = TestModels.RandomTokens(model.Config.DVocab, 4, Pos, seed: 35);
        var other = TestModels.RandomTokens(model.Config.DVocab, 4, Pos, seed: 36);
        using var whole = new EdgeAttribution(model, clean, other, metric);
        using var split = new EdgeAttribution(model, clean, other, metric, sequencesPerPass: 1);
        var top = EdgeCircuit.Top(whole.Scores(EdgeMethod.Eap), 6, EdgeMethod.Eap).EdgeSet.ToArray();
        Assert.Equal(whole.MeanAblatedMetric(), split.MeanAblatedMetric(), 1e-5);
        Assert.Equal(whole.CircuitMetric(top, CircuitAblation.Mean), split.CircuitMetric(top, CircuitAblation.Mean), 1e-5);
        Assert.NotEqual(whole.CleanMetric, whole.MeanAblatedMetric(), 3);
        Assert.Equal(0.0, whole.Faithfulness([], CircuitAblation.Mean), 1e-6);
        Assert.Equal(1.0, whole.Faithfulness(whole.Graph.Edges, CircuitAblation.Mean));
        var curve = whole.FaithfulnessCurve(EdgeMethod.Eap, [0, 6], ablation: CircuitAblation.Mean);
        Assert.All(curve, c => Assert.Equal(CircuitAblation.Mean, c.Ablation));
        Assert.Equal(whole.Faithfulness(top, CircuitAblation.Mean), curve[1].Faithfulness);
    }

    [Fact]
    public void Mean_ablation_averages_real_tokens_only()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 10);
        using var scope = NewDisposeScope();
        // Row 0 is row 1's first five tokens then padding: at positions 0–4 both rows have the same outputs (causal),
        // at 5–7 only row 1 is real. A mean over real tokens is then each row's own output wherever it is real, so
        // mean-ablating every edge leaves the metric (read at each row's last real token) clean; a mean that counted
        // the padding would not.
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 1, Pos, seed: 37).repeat(2, 1);
        tokens[0, TensorIndex.Slice(5)] = tensor(0L);
        var mask = ones([2, Pos], ScalarType.Int64);
        mask[0, TensorIndex.Slice(5)] = tensor(0L);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, 2, Pos, seed: 38);
        var metric = Metrics.LogitDiff([1, 1], [2, 2], [4, Pos - 1]);
        using var eap = new EdgeAttribution(model, tokens, corrupted, metric, mask);
        Assert.Equal(eap.CleanMetric, eap.MeanAblatedMetric(), 1e-5);
    }

    [Fact]
    public void Input_attribution_is_complete_up_to_an_error_that_shrinks_with_steps()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 8);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, 8, seed: 41);
        var metric = Metrics.LogitDiff(2, 7, position: 6);
        var coarse = InputAttribution.IntegratedGradients(model, tokens, metric, steps: 2);
        var fine = InputAttribution.IntegratedGradients(model, tokens, metric, steps: 32);
        using (no_grad())
        {
            var direct = metric(model.forward(tokens), tokens).to(ScalarType.Float64).data<double>().ToArray();
            Assert.Equal(direct, fine.Metric, (a, b) => Math.Abs(a - b) < 1e-5);
        }
        for (int b = 0; b < 3; b++)
        {
            double span = Math.Abs(fine.Metric[b] - fine.BaselineMetric[b]);
            output.WriteLine($"sequence {b}: Δmetric {span:G4}, gap with 2 steps {coarse.CompletenessGap(b):G3}, with 32 steps {fine.CompletenessGap(b):G3}");
            Assert.True(Math.Abs(fine.CompletenessGap(b)) <= 5e-3 * span, $"sequence {b}: 32 steps miss completeness by {fine.CompletenessGap(b):G3}");
            Assert.True(Math.Abs(fine.CompletenessGap(b)) <= Math.Abs(coarse.CompletenessGap(b)) / 50, $"sequence {b}: the gap shrank only from {coarse.CompletenessGap(b):G3} to {fine.CompletenessGap(b):G3}");
            // Causality: tokens after the metric's position get nothing.
            Assert.Equal(0.0, fine.Attributions[b][7], 1e-12);
        }
        Assert.Throws<InterpException>(() => InputAttribution.IntegratedGradients(model, tokens, metric, steps: 0));
    }

    [Fact]
    public void Edge_attribution_refuses_post_norm_models()
    {
        using var model = new HookedTransformer(TestModels.BertLike);
        using var scope = NewDisposeScope();
        var t = TestModels.RandomTokens(model.Config.DVocab, 1, 4);
        var e = Assert.Throws<InterpException>(() => new EdgeAttribution(model, t, t, Metrics.LogitDiff(1, 2)));
        Assert.Contains("post-norm", e.Message);
    }

    [Fact]
    public void BuiltIn_induction_circuit_top_edges_and_faithfulness()
    {
        using var loaded = BuiltInModel.Load();
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var input = HeadDetection.RepeatedRandomTokens(loaded, 16, 24, seed: 0, InductionRecipe.FirstTokenFor(model.Config));
        var clean = input.Tokens;
        var corrupted = input.CorruptFirstCopy(1);
        var loss = Metrics.Loss(input.Prefix + input.Half + 1);
        Metric logProb = (logits, tokens) => -loss(logits, tokens);
        using var eap = new EdgeAttribution(model, clean, corrupted, logProb);
        var ig = eap.Scores(EdgeMethod.EapIg).OrderByDescending(s => Math.Abs(s.Score)).ToArray();
        output.WriteLine($"m_clean {eap.CleanMetric:0.000}, m_corrupted {eap.CorruptedMetric:0.000}; top EAP-IG edges: " +
                         string.Join(", ", ig.Take(8).Select(s => $"{s.Edge} {s.Score:0.000}")));
        var top = ig.Take(5).Select(s => s.Edge).ToArray();
        Assert.Contains(top, e => e.Upstream.Kind == UpstreamKind.Head && e.Upstream.Layer == 0 && e.Downstream == new DownstreamNode(EdgeInput.K, 1, 0));
        Assert.Contains(top, e => e.Upstream == new UpstreamNode(UpstreamKind.Head, 1, 0) && e.Downstream.Input == EdgeInput.Logits);
        var curve = new[] { 1, 2, 5, 10, 20 }.Select(n => (n, eap.Faithfulness(ig.Take(n).Select(s => s.Edge)))).ToArray();
        output.WriteLine("faithfulness: " + string.Join(", ", curve.Select(c => $"{c.n}: {c.Item2:0.000}")));
        Assert.True(curve.Single(c => c.n == 10).Item2 >= 0.9, $"10 edges recover {curve.Single(c => c.n == 10).Item2:0.000}");
    }

}

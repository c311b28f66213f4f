using Interp.Analysis;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Prompts;
using Interp.Tests.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>
/// Every pass on a right-padded batch of prompts of different lengths gives the mean over prompts of the same pass run
/// on each prompt alone (the existing, unpadded code path, with the single-position metric at its last token).
/// </summary>
public class PaddedPassesTests
{
    public static TheoryData<string> Architectures => PaddingTests.Architectures;

    /// <summary>Direct logit attribution refuses post-norm BERT (ArchitecturePassesTests checks the refusal).</summary>
    public static TheoryData<string> LinearReadouts => new(((IEnumerable<object[]>)PaddingTests.Architectures).Select(a => (string)a[0]).Where(a => a != "bert"));

    /// <summary>Residual writes refuse Gemma 2, whose heads do not write on their own (ln1_post; ArchitecturePassesTests checks the refusal).</summary>
    public static TheoryData<string> HeadsWrite => new(((IEnumerable<object[]>)PaddingTests.Architectures).Select(a => (string)a[0]).Where(a => a != "gemma2"));

    private static readonly int[] Lengths = [5, 12, 8];
    private static readonly int[] Answers = [3, 17, 41];
    private static readonly int[] Wrongs = [9, 2, 30];
    private const double Tolerance = 1e-5;

    private static int[] Last => Lengths.Select(n => n - 1).ToArray();
    private static Metric Batched => Metrics.LogitDiff(Answers, Wrongs, Last);
    private static Metric Alone(int i) => Metrics.LogitDiff(Answers[i], Wrongs[i]);      // the single-prompt metric, at the last position

    private static void Close(double expected, double actual, string what) =>
        Assert.True(Math.Abs(expected - actual) <= Tolerance, $"{what}: padded {actual:R}, mean of the prompts alone {expected:R}, |Δ| = {Math.Abs(expected - actual):g3}");

    private static IReadOnlyList<AblationTarget> Targets(ModelConfig cfg) =>
        [AblationTarget.OfHead(0, 1), AblationTarget.OfHead(1, 3), cfg.AttentionOnly ? AblationTarget.OfAttention(1) : AblationTarget.OfMlp(0)];

    [Theory]
    [MemberData(nameof(Architectures))]
    public void LogitDiff_OnAPaddedBatch_AndTiledCopies_IsEachPromptsOwn(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var logits = model.forward(padded, mask);
        var values = Metrics.PerSequence(Batched, logits, padded).data<float>().ToArray();
        for (int i = 0; i < alone.Length; i++)
            Close(Metrics.Evaluate(Alone(i), model.forward(alone[i]), alone[i]), values[i], $"{arch} prompt {i}");
        // k copies of the batch, as a sweep runs them: copy j's row b is prompt b.
        var tiled = Metrics.PerSequence(Batched, logits.repeat(3, 1, 1), padded.repeat(3, 1)).data<float>().ToArray();
        Assert.Equal(values.Concat(values).Concat(values).ToArray(), tiled);
        Assert.Throws<InterpException>(() => Batched(logits.narrow(0, 0, 2), padded.narrow(0, 0, 2)));
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void ZeroAndMeanAblation_OnAPaddedBatch_IsTheMeanOverPromptsAlone(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var targets = Targets(model.Config);
        using var reference = new AblationReference(model, padded, attentionMask: mask);
        foreach (var kind in new[] { AblationKind.Zero, AblationKind.Mean })
        {
            var batch = Ablation.Run(model, padded, targets, kind, Batched, reference, mask);
            var each = alone.Select((t, i) => Ablation.Run(model, t, targets, kind, Alone(i), reference)).ToArray();
            Close(each.Average(r => r.MetricClean), batch.MetricClean, $"{arch} {kind} clean");
            Close(each.Average(r => r.MetricAblated), batch.MetricAblated, $"{arch} {kind} ablated");
            Assert.True(Math.Abs(batch.Delta) > 1e-4, $"{arch} {kind}: the ablation should change the metric");
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void ZeroAndMeanSweeps_OnAPaddedBatch_AreTheMeanOverPromptsAlone(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var targets = AblationTarget.AllHeads(model.Config).Concat(AblationTarget.AllLayers(model.Config)).ToArray();
        var options = new AblationSweepOptions { AblationsPerForward = 3 };     // several ablations per pass: the metric sees tiled copies
        using var reference = new AblationReference(model, padded, attentionMask: mask);
        foreach (var kind in new[] { AblationKind.Zero, AblationKind.Mean })
        {
            var batch = AblationSweep.Run(model, padded, targets, kind, Batched, reference, options, attentionMask: mask);
            var each = alone.Select((t, i) => AblationSweep.Run(model, t, targets, kind, Alone(i), reference, options)).ToArray();
            for (int r = 0; r < targets.Length; r++)
            {
                Close(each.Average(e => e[r].MetricClean), batch[r].MetricClean, $"{arch} {kind} {targets[r]} clean");
                Close(each.Average(e => e[r].MetricAblated), batch[r].MetricAblated, $"{arch} {kind} {targets[r]} ablated");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void MeanReference_OfAPaddedBatch_AveragesRealPositionsOnly(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        string hook = HookNames.Z(1);
        using var reference = new AblationReference(model, padded, attentionMask: mask);
        var mean = reference.Mean(hook, padded.shape[1])[0];                               // [pos, head, d_head]
        var activations = alone.Select(t => { var (_, c) = model.RunWithCache(t, n => n == hook); using (c) return c[hook][0].clone(); }).ToArray();
        for (int p = 0; p < padded.shape[1]; p++)
        {
            var real = Enumerable.Range(0, alone.Length).Where(i => Lengths[i] > p).Select(i => activations[i][p]).ToArray();
            TensorAssert.Close(stack(real).mean([0]), mean[p], Tolerance, $"{arch} mean at position {p} over {real.Length} prompts");
        }
        // Resampling never hands out padding: a shorter source sequence gives the mean where it has no token.
        var resampled = reference.Resample(hook, 3, padded.shape[1]);
        var sources = reference.ResampleIndices(3);
        for (int b = 0; b < 3; b++)
            for (int p = 0; p < padded.shape[1]; p++)
                TensorAssert.Close(p < Lengths[sources[b]] ? activations[sources[b]][p] : mean[p], resampled[b, p], Tolerance, $"{arch} resampled row {b} position {p}");
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void ActivationPatching_OnPaddedBatches_IsTheMeanOverPromptsAlone(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var (corruptedAlone, _, _) = PaddingTests.Prompts(model.Config.DVocab, Lengths, seed: 99);
        var corrupted = padded.clone();
        for (int i = 0; i < alone.Length; i++) corrupted[i].narrow(0, 0, Lengths[i]).copy_(corruptedAlone[i][0]);
        var sites = new List<PatchSite> { PatchSite.ResidPre(1, 2), PatchSite.HeadOut(0, 1, 3), PatchSite.HeadPattern(1, 2), PatchSite.AttnOut(0, 4), PatchSite.HeadOut(1, 0) };
        sites.AddRange(ActivationPatching.Sites(model.Config, Lengths.Min(), PatchKind.ResidPre, perPosition: false));
        using var batch = new ActivationPatching(model, padded, corrupted, Batched, mask);
        var patched = batch.PatchedMetrics(sites);
        var each = alone.Select((t, i) => new ActivationPatching(model, t, corruptedAlone[i], Alone(i))).ToArray();
        try
        {
            Close(each.Average(e => e.CleanMetric), batch.CleanMetric, $"{arch} clean");
            Close(each.Average(e => e.CorruptedMetric), batch.CorruptedMetric, $"{arch} corrupted");
            var eachPatched = each.Select(e => e.PatchedMetrics(sites)).ToArray();
            for (int s = 0; s < sites.Count; s++)
                Close(eachPatched.Average(v => v[s]), patched[s], $"{arch} {sites[s]}");
            PatchSite[] together = [PatchSite.HeadOut(0, 2), model.Config.AttentionOnly ? PatchSite.AttnOut(1, 1) : PatchSite.MlpOut(0, 1)];
            Close(each.Average(e => e.PatchedMetric(together)), batch.PatchedMetric(together), $"{arch} two sites at once");
        }
        finally
        {
            foreach (var e in each) e.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(LinearReadouts))]
    public void HeadAttribution_AtLastRealTokens_IsEachPromptsOwn(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var batch = HeadAttribution.AtLastTokens(model, padded, mask, Answers, Wrongs);
        Assert.Equal([batch.Components.Count, 3L, 1L], batch.Values.shape);
        TensorAssert.Close(batch.Logit, batch.Total(), 1e-4, $"{arch}: components sum to the logit difference");
        for (int i = 0; i < alone.Length; i++)
        {
            var (logits, cache) = model.RunWithCache(alone[i], HeadAttribution.CacheFilter);
            using (cache)
            {
                var own = HeadAttribution.Attribute(model, cache, logits, Answers[i], Wrongs[i]);
                Assert.Equal(own.Components, batch.Components);
                TensorAssert.Close(own.Values.select(1, 0).select(1, Lengths[i] - 1), batch.Values.select(1, i).select(1, 0), Tolerance, $"{arch} prompt {i}");
                TensorAssert.Close(own.Logit[0, Lengths[i] - 1], batch.Logit[i, 0], Tolerance, $"{arch} prompt {i} logit difference");
            }
        }
    }

    [Theory]
    [MemberData(nameof(HeadsWrite))]
    public void ResidualWrites_AreNaNAtPadding_AndEachPromptsOwnElsewhere(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var direction = model.Unembed.W_U.detach()[.., 5];
        var (_, cache) = model.RunWithCache(padded, mask, ResidualWrites.CacheFilter);
        using (cache)
        {
            var writes = ResidualWrites.Measure(model, cache, direction, mask);
            for (int i = 0; i < alone.Length; i++)
            {
                var (_, own) = model.RunWithCache(alone[i], ResidualWrites.CacheFilter);
                using (own)
                {
                    var ownWrites = ResidualWrites.Measure(model, own, direction);
                    for (int w = 0; w < writes.Count; w++)
                    {
                        var row = writes[w].Norm[i];
                        // Norms grow with the stream: 1e-5 relative to values above 1.
                        double scale = Math.Max(1, ownWrites[w].Norm.abs().max().item<double>());
                        TensorAssert.Close(ownWrites[w].Norm[0], row.narrow(0, 0, Lengths[i]), Tolerance * scale, $"{arch} {writes[w].Component.Label} prompt {i}");
                        TensorAssert.Close(ownWrites[w].Projection![0], writes[w].Projection![i].narrow(0, 0, Lengths[i]), Tolerance * scale, $"{arch} projection prompt {i}");
                        if (Lengths[i] < padded.shape[1]) Assert.True(row.narrow(0, Lengths[i], padded.shape[1] - Lengths[i]).isnan().all().item<bool>());
                    }
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void HeadDetection_OnAPaddedBatch_ScoresRealQueriesOnly(string arch)
    {
        using var scope = NewDisposeScope();
        using var model = PaddingTests.Build(arch);
        var (alone, padded, mask) = PaddingTests.Prompts(model.Config.DVocab, Lengths);
        var options = new DetectionOptions { TargetRowsOnly = false };
        var batch = HeadDetection.Detect(model, padded, DetectionPatterns.PreviousToken((int)padded.shape[1]), mask, options);
        var each = alone.Select(t => HeadDetection.Detect(model, t, DetectionPatterns.PreviousToken((int)t.shape[1]), options)).ToArray();
        for (int l = 0; l < model.Config.NLayers; l++)
            for (int h = 0; h < model.Config.NHeads; h++)
                Close(each.Average(e => e[l, h]), batch[l, h], $"{arch} head {l}.{h}");
    }

    [Fact]
    public void Stories_ZeroAblationSweep_CleanMetricIsTheMeanLogitDiffOfEachPromptAlone()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var model = loaded.Model;
        using var set = PromptSet.Load(RepoFiles.Path("experiments/prompts/stories_names.jsonl"), model);
        var targets = AblationTarget.AllHeads(model.Config).Take(10).Concat(AblationTarget.AllLayers(model.Config)).ToArray();
        var rows = AblationSweep.Run(model, set.Clean.Tokens, targets, AblationKind.Zero, set.LogitDiff(), attentionMask: set.Clean.AttentionMask);

        // Independently: each prompt alone through a plain forward pass, logit(answer) − logit(wrong) read at its last token.
        var diffs = new double[set.Count];
        for (int i = 0; i < set.Count; i++)
        {
            var tokens = model.ToTokens(set.Prompts[i]);
            var last = model.forward(tokens)[0, -1];
            diffs[i] = last[set.AnswerIds[i]].item<float>() - last[set.WrongIds[i]].item<float>();
        }
        foreach (var row in rows) Close(diffs.Average(), row.MetricClean, "stories260K metric_clean");
        // And one ablated row against the prompts ablated alone.
        var head = targets[3];
        double alone = Enumerable.Range(0, set.Count).Average(i =>
            Ablation.Run(model, model.ToTokens(set.Prompts[i]), head, AblationKind.Zero, Metrics.LogitDiff(set.AnswerIds[i], set.WrongIds[i])).MetricAblated);
        Close(alone, rows[3].MetricAblated, $"stories260K {head}");
    }
}

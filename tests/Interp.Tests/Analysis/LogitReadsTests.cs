using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>
/// Metrics that declare what they read: the sweep unembeds only those logits, and its results equal the full
/// computation's (the same metric wrapped so that it declares nothing).
/// </summary>
public sealed class LogitReadsTests
{
    public static TheoryData<string> Architectures => ["gpt2", "llama", "gemma2"];

    private static ModelConfig Config(string arch) => arch switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        _ => TestModels.Gemma2Like,
    };

    /// <summary>The same function with nothing declared: every pass computes all the logits for it.</summary>
    private static Metric Undeclared(Metric metric) => (logits, tokens) => metric(logits, tokens);

    private static void SameRows(IReadOnlyList<AblationRow> full, IReadOnlyList<AblationRow> read)
    {
        Assert.Equal(full.Count, read.Count);
        for (int i = 0; i < full.Count; i++)
        {
            Assert.Equal((full[i].Layer, full[i].Head, full[i].Component), (read[i].Layer, read[i].Head, read[i].Component));
            Assert.Equal(full[i].MetricClean, read[i].MetricClean, 1e-12);
            double scale = Math.Max(1, Math.Abs(full[i].MetricAblated));
            Assert.True(Math.Abs(full[i].MetricAblated - read[i].MetricAblated) <= 1e-5 * scale,
                $"{full[i].Component} {full[i].Layer}.{full[i].Head}: full {full[i].MetricAblated:G9}, read {read[i].MetricAblated:G9}");
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void A_last_token_logit_difference_sweeps_the_same_from_two_columns(string arch)
    {
        using var model = TestModels.Random(Config(arch), seed: 4);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, 9, seed: 2);
        var metric = Metrics.LogitDiff(3, 7);
        var reads = Metrics.ReadsOf(metric);
        Assert.NotNull(reads);
        Assert.Equal([3, 7], reads.Columns);
        Assert.Null(Metrics.ReadsOf(Undeclared(metric)));
        Assert.True(model.CanRead(reads, out var why), why);
        var targets = AblationTarget.AllHeads(model.Config).Concat(AblationTarget.AllLayers(model.Config)).ToArray();
        var full = AblationSweep.Run(model, tokens, targets, AblationKind.Mean, Undeclared(metric));
        var read = AblationSweep.Run(model, tokens, targets, AblationKind.Mean, metric);
        SameRows(full, read);

        // ForwardFrom with the reads gives exactly those logits of the full pass.
        using (no_grad())
        {
            var (_, cache) = model.RunWithCache(tokens, n => n == HookNames.ResidPre(1));
            using (cache)
            {
                var all = model.ForwardFrom(1, cache[HookNames.ResidPre(1)]);
                var some = model.ForwardFrom(1, cache[HookNames.ResidPre(1)], null, reads);
                Assert.Equal([3, 2], some.shape);
                TensorAssert.Close(all.select(1, -1).index_select(1, tensor(new long[] { 3, 7 })), some, 1e-5);
            }
        }
    }

    [Fact]
    public void A_prompt_set_with_padding_reads_each_prompt_at_its_last_token()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 5);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, 8, seed: 3);
        var mask = ones([3, 8], ScalarType.Int64);
        mask[1, TensorIndex.Slice(5)] = tensor(0L);
        mask[2, TensorIndex.Slice(6)] = tensor(0L);
        var metric = Metrics.LogitDiff([1, 2, 1], [4, 4, 5], [7, 4, 5]);
        Assert.Equal([1, 2, 4, 5], Metrics.ReadsOf(metric)!.Columns);     // the answers and wrong tokens, each once
        var targets = AblationTarget.AllHeads(model.Config).Concat(AblationTarget.AllLayers(model.Config)).ToArray();
        var full = AblationSweep.Run(model, tokens, targets, AblationKind.Zero, Undeclared(metric), attentionMask: mask);
        var read = AblationSweep.Run(model, tokens, targets, AblationKind.Zero, metric, attentionMask: mask);
        SameRows(full, read);
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void Activation_patching_with_a_declared_metric_equals_the_full_computation(string arch)
    {
        using var model = TestModels.Random(Config(arch), seed: 7);
        using var scope = NewDisposeScope();
        var clean = TestModels.RandomTokens(model.Config.DVocab, 3, 8, seed: 5);
        var corrupted = TestModels.RandomTokens(model.Config.DVocab, 3, 8, seed: 6);
        var metric = Metrics.LogitDiff([1, 2, 3], [4, 5, 6], [7, 7, 7]);
        var sites = Enum.GetValues<PatchKind>().Where(k => k != PatchKind.SaeFeature)
            .SelectMany(k => ActivationPatching.Sites(model.Config, 8, k, perPosition: true)).ToArray();
        using var full = new ActivationPatching(model, clean, corrupted, Undeclared(metric)) { SequencesPerPass = 12 };
        using var read = new ActivationPatching(model, clean, corrupted, metric) { SequencesPerPass = 12 };
        var a = full.Sweep(sites);
        var b = read.Sweep(sites);
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
            Assert.True(Math.Abs(a[i].Raw - b[i].Raw) <= 1e-5 * Math.Max(1, Math.Abs(a[i].Raw)), $"{a[i].Site}: full {a[i].Raw:G9}, read {b[i].Raw:G9}");
    }

    [Fact]
    public void Reads_that_cannot_be_taken_fall_back_or_fail_clearly()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like, seed: 6);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 6, seed: 4);
        var metric = Metrics.LogitDiff(1, 2);
        var reads = Metrics.ReadsOf(metric)!;
        // A hook on the final norm would see one position per sequence: the sweep computes every logit instead.
        var seen = new List<long>();
        using (model.Hooks((HookNames.NormalizedOf("ln_final"), (a, _) => { seen.Add(a.shape[1]); return null; })))
        {
            Assert.False(model.CanRead(reads, out var why));
            Assert.Contains("final norm", why);
            var rows = AblationSweep.Heads(model, tokens, AblationKind.Zero, metric);
            Assert.All(seen, p => Assert.Equal(6, p));
            Assert.NotEmpty(rows);
        }
        using var resid = zeros(3, 6, model.Config.DModel);
        var prompts = Metrics.ReadsOf(Metrics.LogitDiff([1, 2], [3, 4], [5, 5]))!;
        var e = Assert.Throws<InterpException>(() => model.ForwardFrom(0, resid, null, prompts));
        Assert.Contains("not the prompts tiled", e.Message);
        var far = new LogitReads([9], [1], r => r.select(1, 0));
        Assert.Contains("position 9", Assert.Throws<InterpException>(() => model.ForwardFrom(0, resid, null, far)).Message);
    }
}

using Interp.Loading;
using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;
using TensorIndex = TorchSharp.torch.TensorIndex;

namespace Interp.Tests.Analysis;

/// <summary>
/// Ablation against exact identities: nothing ablated changes nothing; the batched, prefix-reusing sweep equals a full
/// forward pass per ablation with a hand-written hook; zero-ablating a head equals zeroing its W_O; mean ablation over
/// one sequence equals patching that sequence in; ablating late positions leaves earlier logits alone.
/// </summary>
public sealed class AblationTests
{
    public static TheoryData<string, AblationKind> ModelsAndKinds()
    {
        var data = new TheoryData<string, AblationKind>();
        foreach (var model in new[] { "built-in", "gpt2", "llama" })
            foreach (var kind in Enum.GetValues<AblationKind>()) data.Add(model, kind);
        return data;
    }

    /// <summary>Same shape and bit-for-bit the same values.</summary>
    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static HookedTransformer Model(string name, out IDisposable owner)
    {
        if (name == "built-in")
        {
            var loaded = BuiltInModel.Load();
            owner = loaded;
            return loaded.Model;
        }
        var model = TestModels.Random(name == "gpt2" ? TestModels.Gpt2Like : TestModels.LlamaLike);
        owner = model;
        return model;
    }

    /// <summary>
    /// The naive ablation: a full forward pass with a hook that writes the replacement into a clone, with plain indexing.
    /// Mean: the reference's activations averaged over its batch at each position; resample: row b from reference row indices[b].
    /// </summary>
    private static double Naive(HookedTransformer model, Tensor tokens, AblationTarget target, AblationKind kind, Metric metric, Tensor referenceTokens, long[] indices)
    {
        using var scope = NewDisposeScope();
        long pos = tokens.shape[1];
        Tensor? source = null;
        if (kind != AblationKind.Zero)
        {
            var (_, cache) = model.RunWithCache(referenceTokens, n => n == target.HookName);
            using (cache)
            {
                var acts = cache[target.HookName].narrow(1, 0, pos);
                source = kind == AblationKind.Mean
                    ? acts.mean([0], keepdim: true)                                      // [1, pos, …], broadcast over the batch
                    : acts.index_select(0, tensor(indices)).clone();
            }
        }
        var positions = target.Positions ?? Enumerable.Range(0, (int)pos).ToArray();
        Tensor? Hook(Tensor x, HookPoint _)
        {
            var c = x.clone();
            foreach (int p in positions)
            {
                var at = target.Component == AblationComponent.Head
                    ? new[] { TensorIndex.Colon, TensorIndex.Single(p), TensorIndex.Single(target.Head) }
                    : new[] { TensorIndex.Colon, TensorIndex.Single(p) };
                if (source is null) c[at] = zeros_like(c[at]);
                else c[at] = source[at];
            }
            return c;
        }
        var logits = model.RunWithHooks(tokens, (target.HookName, Hook));
        return Metrics.Evaluate(metric, logits, tokens);
    }

    [Theory]
    [MemberData(nameof(ModelsAndKinds))]
    public void Batched_sweep_from_cached_prefixes_equals_a_full_forward_per_ablation(string name, AblationKind kind)
    {
        var model = Model(name, out var owner);
        using var _owner = owner;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var cfg = model.Config;
        int vocab = cfg.DVocab;
        var tokens = TestModels.RandomTokens(vocab, 4, 12, seed: 3);
        var referenceTokens = TestModels.RandomTokens(vocab, 5, 14, seed: 4);
        using var reference = new AblationReference(model, referenceTokens, seed: 9);
        var targets = AblationTarget.AllHeads(cfg).Concat(AblationTarget.AllLayers(cfg))
            .Append(AblationTarget.OfHead(1, 1, [3, 7, 8])).Append(AblationTarget.OfAttention(0, [0, 11])).ToArray();
        var metric = Metrics.Loss(2);
        var indices = reference.ResampleIndices(4);

        var expected = targets.Select(t => Naive(model, tokens, t, kind, metric, referenceTokens, indices)).ToArray();
        double clean = Metrics.Evaluate(metric, model.forward(tokens), tokens);
        foreach (int? perForward in new int?[] { null, 1, 3 })
        {
            var rows = AblationSweep.Run(model, tokens, targets, kind, metric, reference, new AblationSweepOptions { AblationsPerForward = perForward });
            Assert.Equal(targets.Length, rows.Count);
            for (int i = 0; i < targets.Length; i++)
            {
                Assert.Equal((targets[i].Layer, targets[i].Head, targets[i].ComponentName, kind, targets[i].PositionsName),
                    (rows[i].Layer, rows[i].Head, rows[i].Component, rows[i].Kind, rows[i].Positions));
                Assert.True(Math.Abs(expected[i] - rows[i].MetricAblated) <= 1e-5, $"{name} {kind} {targets[i]} per forward {perForward}: naive {expected[i]}, sweep {rows[i].MetricAblated}");
                Assert.Equal(clean, rows[i].MetricClean, 1e-12);
                Assert.Equal(rows[i].MetricAblated - rows[i].MetricClean, rows[i].Delta, 1e-12);
            }
        }
        // The one-off run agrees too.
        var run = Ablation.Run(model, tokens, targets[1], kind, metric, reference);
        Assert.True(Math.Abs(expected[1] - run.MetricAblated) <= 1e-5, $"Run: {run.MetricAblated} vs {expected[1]}");
        Assert.Equal(clean, run.MetricClean, 1e-12);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("built-in")]
    public void Hooks_in_an_ablated_layer_see_the_ablated_values(string name)
    {
        // The sweep normally resumes after the ablated component from clean residual − removed part; a hook inside the
        // layer (here: doubling attn_out of layer 1) must act on the ablated attn_out, so that layer is re-run instead.
        var model = Model(name, out var owner);
        using var _owner = owner;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, 10, seed: 5);
        var targets = AblationTarget.AllHeads(model.Config).Concat(AblationTarget.AllLayers(model.Config)).ToArray();
        var metric = Metrics.Loss();
        (string, HookFunction) doubling = (HookNames.AttnOut(1), (x, _) => x * 2);
        double[] expected;
        using (model.Hooks(doubling))
            expected = targets.Select(t => Naive(model, tokens, t, AblationKind.Zero, metric, tokens, [])).ToArray();
        IReadOnlyList<AblationRow> rows;
        using (model.Hooks(doubling)) rows = AblationSweep.Run(model, tokens, targets, AblationKind.Zero, metric);
        for (int i = 0; i < targets.Length; i++)
            Assert.True(Math.Abs(expected[i] - rows[i].MetricAblated) <= 1e-5, $"{name} {targets[i]}: naive {expected[i]}, sweep {rows[i].MetricAblated}");
        // The hook matters: without it, the heads of layer 1 give other numbers.
        var unhooked = AblationSweep.Run(model, tokens, targets, AblationKind.Zero, metric);
        Assert.Contains(Enumerable.Range(0, targets.Length), i => targets[i].Layer == 1 && Math.Abs(unhooked[i].MetricAblated - rows[i].MetricAblated) > 1e-3);
    }

    [Theory]
    [InlineData(AblationKind.Zero)]
    [InlineData(AblationKind.Mean)]
    [InlineData(AblationKind.Resample)]
    public void Ablating_nothing_changes_nothing(AblationKind kind)
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 3, 10);
        using var reference = new AblationReference(model, TestModels.RandomTokens(50, 4, 10, seed: 8));
        var nothing = new[] { AblationTarget.OfHead(0, 1, []), AblationTarget.OfAttention(1, []), AblationTarget.OfMlp(0, []) };

        var run = Ablation.Run(model, tokens, nothing, kind, Metrics.Loss(), reference);
        Assert.Equal(run.MetricClean, run.MetricAblated);                                  // bit for bit
        var clean = model.forward(tokens);
        Assert.True(Same(clean, model.RunWithHooks(tokens, Ablation.Hooks(model, kind, reference, nothing))));

        foreach (var row in AblationSweep.Run(model, tokens, nothing, kind, Metrics.Loss(), reference))
            Assert.True(Math.Abs(row.Delta) <= 1e-7, $"{row}: delta {row.Delta}");
    }

    [Fact]
    public void Zero_ablating_a_head_equals_zeroing_its_output_weights()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 3, 16);
        foreach (var (layer, head) in new[] { (0, 2), (1, 0) })
        {
            var ablated = model.RunWithHooks(tokens, Ablation.Hooks(model, AblationKind.Zero, null, AblationTarget.OfHead(layer, head)));
            var wO = model.Blocks[layer].Attn.W_O;
            var saved = wO[head].clone();
            wO[head].zero_();
            try
            {
                var withoutWeights = model.forward(tokens);
                TensorAssert.Close(withoutWeights, ablated, 1e-6, $"head {layer}.{head}");
                var run = Ablation.Run(model, tokens, AblationTarget.OfHead(layer, head), AblationKind.Zero, Metrics.Loss());
                Assert.Equal(run.MetricClean, run.MetricAblated, 1e-6);   // W_O[h] = 0 already: the ablation removes nothing more
            }
            finally
            {
                wO[head].copy_(saved);
            }
        }
    }

    [Fact]
    public void Mean_ablation_over_one_sequence_is_patching_that_sequence_in()
    {
        using var model = TestModels.Random(TestModels.LlamaLike);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 3, 11);
        var donor = TestModels.RandomTokens(50, 1, 11, seed: 21);
        using var reference = new AblationReference(model, donor);
        foreach (var target in new[] { AblationTarget.OfHead(1, 3), AblationTarget.OfMlp(0), AblationTarget.OfAttention(1, [4, 5]) })
        {
            var (_, cache) = model.RunWithCache(donor, n => n == target.HookName);
            using (cache)
            {
                var patch = cache[target.HookName];                                               // [1, pos, …]
                var patched = model.RunWithHooks(tokens, (target.HookName, (x, _) =>
                {
                    var c = x.clone();
                    foreach (int p in target.Positions ?? Enumerable.Range(0, 11).ToArray())
                        if (target.Component == AblationComponent.Head) c[.., p, target.Head] = patch[0, p, target.Head];
                        else c[.., p] = patch[0, p];
                    return c;
                }));
                var mean = model.RunWithHooks(tokens, Ablation.Hooks(model, AblationKind.Mean, reference, target));
                Assert.True(Same(patched, mean), $"{target}: mean over one sequence ≠ patching it");
                // Resampling from a single-sequence reference patches the same sequence into every row.
                var resampled = model.RunWithHooks(tokens, Ablation.Hooks(model, AblationKind.Resample, reference, target));
                Assert.True(Same(patched, resampled), $"{target}: resample from one sequence ≠ patching it");
            }
        }
    }

    [Theory]
    [InlineData(AblationKind.Zero)]
    [InlineData(AblationKind.Mean)]
    [InlineData(AblationKind.Resample)]
    public void Ablating_chosen_positions_leaves_earlier_positions_unchanged(AblationKind kind)
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = TestModels.RandomTokens(50, 3, 12);
        using var reference = new AblationReference(model, TestModels.RandomTokens(50, 4, 12, seed: 5), seed: 2);
        var clean = model.forward(tokens);
        foreach (var target in new[] { AblationTarget.OfHead(0, 1, [6, 9]), AblationTarget.OfAttention(0, [6]), AblationTarget.OfMlp(1, [6, 7, 8]) })
        {
            var ablated = model.RunWithHooks(tokens, Ablation.Hooks(model, kind, reference, target));
            Assert.True(Same(clean[.., ..6], ablated[.., ..6]), $"{target}: positions before 6 changed");
            Assert.True(TensorAssert.MaxAbsDiff(clean[.., 6..], ablated[.., 6..]) > 1e-4, $"{target}: the ablation changed nothing");
        }
    }

    [Fact]
    public void Resampling_takes_another_sequence_deterministically()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        using var reference = new AblationReference(model, TestModels.RandomTokens(50, 6, 8), seed: 3);
        var indices = reference.ResampleIndices(6);
        Assert.All(indices.Select((r, b) => (r, b)), x => Assert.NotEqual(x.b, x.r));   // never itself when the reference is the input batch
        Assert.All(indices, r => Assert.InRange(r, 0, 5));
        Assert.Equal(indices, reference.ResampleIndices(6));
        Assert.Equal(13, reference.ResampleIndices(13).Length);
        using var other = new AblationReference(model, reference.Tokens, seed: 4);
        Assert.NotEqual(indices, other.ResampleIndices(6));
        using var single = new AblationReference(model, TestModels.RandomTokens(50, 1, 8));
        Assert.Equal(new long[4], single.ResampleIndices(4));

        // Row b of the resampled activations is reference row indices[b].
        var resampled = reference.Resample(HookNames.Z(1), 6, 5);
        for (int b = 0; b < 6; b++)
            Assert.True(Same(resampled[b], reference.Activation(HookNames.Z(1))[indices[b], ..5]));
    }

    [Fact]
    public void Bad_requests_are_clear_errors()
    {
        using var attnOnly = TestModels.Random(TestModels.AttnOnlySinusoidal);
        using var model = TestModels.Random(TestModels.Gpt2Like);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(50, 2, 10);

        var ex = Assert.Throws<InterpException>(() => Ablation.Hooks(attnOnly, AblationKind.Zero, null, AblationTarget.OfMlp(1)));
        Assert.Contains("attention-only", ex.Message);
        Assert.Contains("blocks.1.hook_mlp_out", ex.Message);
        ex = Assert.Throws<InterpException>(() => AblationSweep.Run(model, tokens, [AblationTarget.OfHead(1, 4)], AblationKind.Zero, Metrics.Loss()));
        Assert.Contains("head 4 is outside layer 1's heads 0…3", ex.Message);
        ex = Assert.Throws<InterpException>(() => Ablation.Run(model, tokens, AblationTarget.OfAttention(2), AblationKind.Zero, Metrics.Loss()));
        Assert.Contains("layer 2 is outside the model's layers 0…1", ex.Message);
        ex = Assert.Throws<InterpException>(() => Ablation.Run(model, tokens, AblationTarget.OfHead(0, 0, [3, 10]), AblationKind.Zero, Metrics.Loss()));
        Assert.Contains("position 10 is outside a sequence of 10 tokens", ex.Message);
        ex = Assert.Throws<InterpException>(() => Ablation.Hooks(model, AblationKind.Mean, null, AblationTarget.OfHead(0, 0)));
        Assert.Contains("mean ablation needs a reference batch", ex.Message);
        using var shortReference = new AblationReference(model, TestModels.RandomTokens(50, 2, 6));
        ex = Assert.Throws<InterpException>(() => Ablation.Run(model, tokens, AblationTarget.OfHead(0, 0), AblationKind.Resample, Metrics.Loss(), shortReference));
        Assert.Contains("blocks.0.attn.hook_z: the reference batch has 6 positions but the input has 10", ex.Message);
        using var foreign = new AblationReference(attnOnly, tokens);
        ex = Assert.Throws<InterpException>(() => Ablation.Run(model, tokens, AblationTarget.OfHead(0, 0), AblationKind.Mean, Metrics.Loss(), foreign));
        Assert.Contains("computed with another model (attn-only-sinusoidal)", ex.Message);
        ex = Assert.Throws<InterpException>(() => AblationSweep.Run(model, tokens, [AblationTarget.OfHead(0, 0)], AblationKind.Zero, (logits, _) => logits.mean()));
        Assert.Contains("one value per sequence", ex.Message);
        ex = Assert.Throws<InterpException>(() => AblationSweep.Run(model, tokens, [AblationTarget.OfHead(0, 0)], AblationKind.Zero, Metrics.Loss(), options: new AblationSweepOptions { AblationsPerForward = 0 }));
        Assert.Contains("at least 1, got 0", ex.Message);
        Assert.Throws<InterpException>(() => Ablation.ParseKind("gaussian"));
    }

    [Fact]
    public async Task Head_deltas_and_table_have_the_documented_layout()
    {
        AblationRow[] rows;
        using (var model = TestModels.Random(TestModels.Gpt2Like))
        using (NewDisposeScope())
        {
            var tokens = TestModels.RandomTokens(50, 2, 10);
            rows = AblationSweep.Heads(model, tokens, AblationKind.Zero, Metrics.Loss())
                .Concat(AblationSweep.Run(model, tokens, AblationTarget.AllLayers(model.Config, [2, 3, 4, 7]), AblationKind.Zero, Metrics.Loss())).ToArray();
            var deltas = AblationSweep.HeadDeltas(rows, model.Config);
            Assert.Equal(rows.Single(r => r.Component == "head" && r.Layer == 1 && r.Head == 2).Delta, deltas[1, 2]);
        }
        Assert.Equal(["attn", "attn", "mlp", "mlp"], rows.Where(r => r.Head == -1).Select(r => r.Component));
        Assert.All(rows.Where(r => r.Head == -1), r => Assert.Equal("2-4,7", r.Positions));
        Assert.All(rows.Where(r => r.Head >= 0), r => Assert.Equal("all", r.Positions));

        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "t.parquet");
        await AblationSweep.ToTable(rows, "loss").WriteAsync(path);
        var t = ParquetRead.Columns(path);
        Assert.Equal(["layer", "head", "component", "sae", "feature", "ablation", "positions", "metric", "metric_clean", "metric_ablated", "delta"], t.Keys);
        Assert.Equal(rows.Length, t["layer"].Length);
        Assert.Equal(rows.Select(r => r.Delta), t["delta"].Cast<double>());
        Assert.Equal(rows.Select(r => r.Head), t["head"].Cast<int>());
        Assert.All(t["ablation"], a => Assert.Equal("zero", a));
        Assert.All(t["metric"], a => Assert.Equal("loss", a));
    }
}

using Interp.Hooks;
using Interp.Models;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>One ablation of a sweep: where, how, and the metric clean and ablated.</summary>
/// <param name="Layer">The layer.</param>
/// <param name="Head">The head, −1 for a whole layer.</param>
/// <param name="Component"><c>head</c>, <c>attn</c> or <c>mlp</c>.</param>
/// <param name="Kind">Zero, mean or resample.</param>
/// <param name="Positions"><c>all</c>, or the positions ablated (<see cref="AblationTarget.PositionsName"/>).</param>
/// <param name="MetricClean">The metric of the clean run (mean over the batch).</param>
/// <param name="MetricAblated">The metric with this site ablated.</param>
public sealed record AblationRow(int Layer, int Head, string Component, AblationKind Kind, string Positions, double MetricClean, double MetricAblated)
{
    /// <summary>For an SAE feature: its index (the SAE is named by <see cref="Sae"/>); −1 otherwise.</summary>
    public int Feature { get; init; } = -1;
    /// <summary>For an SAE feature: the hook point the SAE is spliced at; "" otherwise.</summary>
    public string Sae { get; init; } = "";

    /// <summary>MetricAblated − MetricClean.</summary>
    public double Delta => MetricAblated - MetricClean;
}

/// <summary>How a sweep batches its forward passes.</summary>
public sealed record AblationSweepOptions
{
    /// <summary>Ablations run together in one forward pass (the batch replicated that many times); null: as many as <see cref="MemoryBudgetBytes"/> allows.</summary>
    public int? AblationsPerForward { get; init; }
    /// <summary>Rough bound on the activations of one batched forward pass, used when <see cref="AblationsPerForward"/> is null (default 256 MiB).</summary>
    public long MemoryBudgetBytes { get; init; } = 256L << 20;
}

/// <summary>
/// Ablates many sites one at a time (every head, every layer, …) and measures a metric for each, without recomputing
/// what an ablation cannot change. One clean run caches, for each ablated component, its activation and the residual
/// stream right after it; since a component adds its output to the residual stream linearly, an ablated pass starts
/// there from the clean residual minus what the ablation removes, and runs only the rest of the model
/// (<see cref="HookedTransformer.ForwardFromMid(int, Tensor, Tensor?)"/>, <see cref="HookedTransformer.ForwardFrom(int, Tensor, Tensor?)"/>). Where hooks are
/// attached in the ablated layer, the pass re-runs that whole layer from its cached <c>hook_resid_pre</c> with the
/// ablation as a hook instead, so the hooks see ablated values. Several ablations share one forward pass: the batch is
/// replicated k times, copy i carries ablation i, and the per-sequence metric is split back into k means. The result
/// equals a full forward pass per ablation with <see cref="Ablation.Hooks"/> up to float noise.
/// </summary>
public static class AblationSweep
{
    /// <summary>
    /// Ablates each of <paramref name="targets"/> alone (kind <paramref name="kind"/>) on <paramref name="tokens"/> and
    /// returns one row per target, in order. Without a reference, mean and resample ablation use <paramref name="tokens"/>
    /// as the reference batch (seed 0). Hooks the caller has attached stay active; one that replaces
    /// <c>blocks.{l}.hook_resid_pre</c> of an ablated layer l acts twice (in the clean run whose resid_pre is cached, and
    /// again when the sweep resumes from it), so attach such interventions through the metric's run instead.
    /// </summary>
    /// <remarks>
    /// A right-padded batch runs with its <paramref name="attentionMask"/> [batch, pos] (1 at real tokens), in the clean
    /// run and in every resumed pass; its own reference, when none is given, uses real positions only. The k ablations
    /// of one pass call the metric once on the batch tiled k times (<c>tokens.repeat(k, 1)</c>: sequence r is sequence
    /// r mod batch), which metrics that read per-sequence positions must allow, as
    /// <see cref="Metrics.LogitDiff(IReadOnlyList{int}, IReadOnlyList{int}, IReadOnlyList{int})"/> does.
    /// </remarks>
    /// <exception cref="InterpException">A target does not exist in the model, the reference does not fit, the mask is invalid, or the metric is not
    /// per sequence; the model has no logits for the metric (a base encoder), or a next-token metric meets a bidirectional encoder.</exception>
    public static IReadOnlyList<AblationRow> Run(HookedTransformer model, Tensor tokens, IReadOnlyList<AblationTarget> targets, AblationKind kind, Metric metric,
        AblationReference? reference = null, AblationSweepOptions? options = null, CancellationToken cancellationToken = default, Tensor? attentionMask = null)
    {
        options ??= new AblationSweepOptions();
        if (options.AblationsPerForward is < 1)
            throw new InterpException($"ablations per forward pass must be at least 1, got {options.AblationsPerForward}");
        var cfg = model.Config;
        foreach (var t in targets) t.Validate(model);
        Metrics.EnsureApplies(metric, model, "the ablation sweep (AblationSweep.Run)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        tokens = model.ValidateTokens(tokens);
        long batch = tokens.shape[0], pos = tokens.shape[1];
        var mask = model.PaddingMask(attentionMask, batch, pos)?.logical_not();     // null without padding: the unpadded passes exactly
        using var own = reference is null && kind != AblationKind.Zero ? new AblationReference(model, tokens, attentionMask: mask) : null;
        reference ??= own;
        Ablation.PrepareReference(model, kind, reference, targets);

        var resumes = targets.Select(t => ResumeAfter(model, t)).ToArray();
        var cached = targets.Zip(resumes, (t, r) => r is null ? [HookNames.ResidPre(t.Layer)] : new[] { t.HookName, r }).SelectMany(n => n).ToHashSet();
        var (logits, cache) = model.RunWithCache(tokens, mask, cached.Contains);
        using (cache)
        {
            double clean = Metrics.Evaluate(metric, logits, tokens);
            logits.Dispose();
            int perForward = options.AblationsPerForward ?? Math.Max(1, (int)Math.Min(int.MaxValue, options.MemoryBudgetBytes / BytesPerCopy(cfg, batch, pos)));
            var ablated = new double[targets.Count];
            foreach (var group in targets.Select((t, i) => (t, i)).GroupBy(x => (x.t.Layer, Resume: resumes[x.i], Hook: resumes[x.i] is null ? null : x.t.HookName)))
                foreach (var chunk in group.Chunk(perForward))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var chunkTargets = chunk.Select(x => x.t).ToArray();
                    var values = group.Key.Resume is { } resume
                        ? RunChunkAfter(model, cache, resume, tokens, mask, chunkTargets, kind, metric, reference)
                        : RunChunk(model, cache[HookNames.ResidPre(group.Key.Layer)], tokens, mask, chunkTargets, kind, metric, reference);
                    for (int j = 0; j < chunk.Length; j++) ablated[chunk[j].i] = values[j];
                }
            return targets.Select((t, i) => new AblationRow(t.Layer, t.Head, t.ComponentName, kind, t.PositionsName, clean, ablated[i]) { Feature = t.Feature, Sae = t.SaeHookName ?? "" }).ToArray();
        }
    }

    /// <summary>
    /// The residual hook right after <paramref name="target"/>'s component, where its ablated passes can resume because
    /// the component's write reaches it linearly: resid_mid after attention (where the MLP reads it), resid_post after
    /// the MLP, and after attention in an attention-only block or a parallel one (whose MLP reads resid_pre, not
    /// attention's output). Null — the passes re-run the whole block from resid_pre with the ablation as a hook — when
    /// hooks are attached anywhere in the target's block (they must see the ablated values), for a head whose
    /// attention output is normalised before it joins the stream (Gemma 2's ln1_post: a head's write is not linear in
    /// hook_attn_out), and for a post-norm block's MLP (its sum is normalised by ln2 before the next block reads it).
    /// </summary>
    private static string? ResumeAfter(HookedTransformer model, AblationTarget target)
    {
        if (target.Component == AblationComponent.SaeFeature) return null;   // inside a spliced SAE: re-run the layer
        string block = HookNames.Block(target.Layer);
        if (model.HookPoints.Any(h => h.IsActive && h.Name.StartsWith(block, StringComparison.Ordinal))) return null;
        var cfg = model.Config;
        if (target.Component == AblationComponent.Head && PassChecks.NormalisesAttentionOutput(cfg)) return null;
        if (target.Component == AblationComponent.Mlp && cfg.Block == BlockKind.PostNorm) return null;
        return target.Component == AblationComponent.Mlp || !cfg.HasResidMid ? HookNames.ResidPost(target.Layer) : HookNames.ResidMid(target.Layer);
    }

    /// <summary>
    /// k ablations of one component without re-running it: the component writes into the residual stream linearly
    /// (attn_out = z·W_O + b_O, mlp_out), so copy i's residual after it is the clean one minus what ablation i removes,
    /// (activation − replacement)·mask_i (through W_O for heads); the rest of the model then runs on the k copies.
    /// </summary>
    private static double[] RunChunkAfter(HookedTransformer model, ActivationCache cache, string resume, Tensor tokens, Tensor? mask, AblationTarget[] targets, AblationKind kind, Metric metric, AblationReference? reference)
    {
        using var scope = NewDisposeScope();
        int k = targets.Length, layer = targets[0].Layer;
        string hook = targets[0].HookName;
        long batch = tokens.shape[0], pos = tokens.shape[1];
        var cfg = model.Config;
        var activation = cache[hook];                                                                           // [B, pos, …]
        var masks = stack(targets.Select(t => Ablation.MaskTensor(t, model, pos, activation.device)).ToArray());   // [k, pos, …]
        var change = activation - Ablation.Source(kind, reference, hook, batch, activation);
        var removed = where(masks.unsqueeze(1), change.unsqueeze(0), zeros(1, dtype: change.dtype, device: change.device));   // [k, B, pos, …]
        var delta = targets[0].Component == AblationComponent.Head
            ? Gemm.MatMul(removed.reshape(k * batch, pos, cfg.NHeads * cfg.HeadDim), model.Blocks[layer].Attn.W_O.reshape(-1, cfg.DModel))
            : removed.reshape(k * batch, pos, cfg.DModel);
        var residual = cache[resume].repeat(k, 1, 1) - delta;
        var copiesMask = mask?.repeat(k, 1);
        var reads = Reads(model, metric);
        var logits = resume == HookNames.ResidMid(layer) ? model.ForwardFromMid(layer, residual, copiesMask, reads)
            : reads is null ? model.ForwardFrom(layer + 1, residual, copiesMask) : model.ForwardFrom(layer + 1, residual, copiesMask, reads);
        return SplitMeans(metric, reads, logits, tokens, k);
    }

    /// <summary>Every head of the model ablated alone (at <paramref name="positions"/>; null: all).</summary>
    public static IReadOnlyList<AblationRow> Heads(HookedTransformer model, Tensor tokens, AblationKind kind, Metric metric,
        AblationReference? reference = null, IReadOnlyList<int>? positions = null, AblationSweepOptions? options = null, CancellationToken cancellationToken = default,
        Tensor? attentionMask = null) =>
        Run(model, tokens, AblationTarget.AllHeads(model.Config, positions), kind, metric, reference, options, cancellationToken, attentionMask);

    /// <summary>
    /// k ablations of one layer in one pass: resid_pre [B, pos, d_model] replicated k times, copy i ablated at
    /// <paramref name="targets"/>[i], blocks layer… run, the metric's per-sequence values averaged per copy.
    /// </summary>
    private static double[] RunChunk(HookedTransformer model, Tensor residPre, Tensor tokens, Tensor? mask, AblationTarget[] targets, AblationKind kind, Metric metric, AblationReference? reference)
    {
        using var scope = NewDisposeScope();
        int k = targets.Length, layer = targets[0].Layer;
        long batch = tokens.shape[0], pos = tokens.shape[1];
        var cfg = model.Config;
        var hooks = targets.Select(t => t.HookName).Distinct().Select(name =>
        {
            // Copy i's mask: its own target's where it ablates at this hook, all false where it ablates elsewhere.
            var here = targets.First(t => t.HookName == name);
            var none = zeros_like(Ablation.MaskTensor(here, model, pos, residPre.device));
            var masks = stack(targets.Select(t => t.HookName == name ? Ablation.MaskTensor(t, model, pos, residPre.device) : none).ToArray());
            return (name, (HookFunction)((activation, _) =>
            {
                using var inner = NewDisposeScope();
                var source = Ablation.Source(kind, reference, name, batch, activation);   // broadcastable to one copy, [B, pos, …]
                return Ablation.Replace(activation, masks, source).MoveToOuterDisposeScope();
            }));
        }).ToArray();
        Tensor logits;
        var reads = Reads(model, metric);
        using (model.Hooks(hooks))
            logits = reads is null ? model.ForwardFrom(layer, residPre.repeat(k, 1, 1), mask?.repeat(k, 1))    // [k·B, pos, d_vocab]
                : model.ForwardFrom(layer, residPre.repeat(k, 1, 1), mask?.repeat(k, 1), reads);              // [k·B, columns]
        return SplitMeans(metric, reads, logits, tokens, k);
    }

    private static LogitReads? Reads(HookedTransformer model, Metric metric) => Metrics.ReadsFor(metric, model);

    /// <summary>
    /// The metric of k copies of the batch run together: per-sequence values [k·B] → k means; from the read logits
    /// [k·B, columns] when <paramref name="reads"/> is given.
    /// </summary>
    private static double[] SplitMeans(Metric metric, LogitReads? reads, Tensor logits, Tensor tokens, int k)
    {
        var perSequence = reads is null ? Metrics.PerSequence(metric, logits, tokens.repeat(k, 1)) : Metrics.PerSequence(reads, logits);  // [k·B]
        var means = perSequence.to(ScalarType.Float64).view(k, tokens.shape[0]).mean([1]);
        return means.cpu().data<double>().ToArray();
    }

    /// <summary>
    /// A rough size of one copy's activations in a forward pass (bytes): the residual stream and its norms, q/k/v/z,
    /// scores and pattern, the MLP's hidden activations and the logits, float32.
    /// </summary>
    private static long BytesPerCopy(ModelConfig cfg, long batch, long pos) =>
        4L * batch * pos * (8L * cfg.DModel + 4L * cfg.NHeads * cfg.HeadDim + 3L * cfg.NHeads * pos + 3L * (cfg.AttentionOnly ? 0 : cfg.DMlp) + 2L * cfg.DVocab);

    /// <summary>The deltas of the head rows as a layer × head matrix (NaN where no row is given).</summary>
    public static double[,] HeadDeltas(IEnumerable<AblationRow> rows, ModelConfig config)
    {
        var values = new double[config.NLayers, config.NHeads];
        for (int l = 0; l < config.NLayers; l++)
            for (int h = 0; h < config.NHeads; h++) values[l, h] = double.NaN;
        foreach (var r in rows.Where(r => r.Component == "head")) values[r.Layer, r.Head] = r.Delta;
        return values;
    }

    /// <summary>
    /// The rows as a long table: layer int32, head int32 (−1 for a whole layer), component (head | attn | mlp | sae_feature),
    /// sae string (the SAE's hook point, "" unless a feature), feature int32 (−1 unless a feature),
    /// ablation (zero | mean | resample), positions (all | …), metric (<paramref name="metricName"/>) strings,
    /// metric_clean, metric_ablated, delta doubles.
    /// </summary>
    public static ParquetTable ToTable(IEnumerable<AblationRow> rows, string metricName)
    {
        var columns = new ParquetColumns();
        foreach (var r in rows)
            columns.Row((Columns.Layer, r.Layer), (Columns.Head, r.Head), (Columns.Component, r.Component), ("sae", r.Sae), ("feature", r.Feature), ("ablation", Ablation.Name(r.Kind)),
                ("positions", r.Positions), ("metric", metricName), ("metric_clean", r.MetricClean), ("metric_ablated", r.MetricAblated), ("delta", r.Delta));
        if (columns.RowCount == 0)
            throw new InterpException("an ablation table needs at least one row");
        return columns.ToTable();
    }
}

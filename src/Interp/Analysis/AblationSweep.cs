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
/// what an ablation cannot change: one clean run caches <c>blocks.{l}.hook_resid_pre</c> of every layer, and the
/// ablations of layer l run only blocks l… (<see cref="HookedTransformer.ForwardFrom"/>). Several ablations share one
/// forward pass: the batch is replicated k times, copy i carries ablation i, and the per-sequence metric is split back
/// into k means. The result equals a full forward pass per ablation with <see cref="Ablation.Hooks"/> up to float noise.
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
    /// <exception cref="InterpException">A target does not exist in the model, the reference does not fit, or the metric is not per sequence.</exception>
    public static IReadOnlyList<AblationRow> Run(HookedTransformer model, Tensor tokens, IReadOnlyList<AblationTarget> targets, AblationKind kind, Metric metric,
        AblationReference? reference = null, AblationSweepOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new AblationSweepOptions();
        if (options.AblationsPerForward is < 1)
            throw new InterpException($"ablations per forward pass must be at least 1, got {options.AblationsPerForward}");
        var cfg = model.Config;
        foreach (var t in targets) t.Validate(cfg);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        tokens = model.ValidateTokens(tokens);
        long batch = tokens.shape[0], pos = tokens.shape[1];
        using var own = reference is null && kind != AblationKind.Zero ? new AblationReference(model, tokens) : null;
        reference ??= own;
        Ablation.PrepareReference(model, kind, reference, targets);

        var layers = targets.Select(t => t.Layer).Distinct().ToHashSet();
        var (logits, cache) = model.RunWithCache(tokens, name => layers.Any(l => name == HookNames.ResidPre(l)));
        using (cache)
        {
            double clean = Metrics.Evaluate(metric, logits, tokens);
            logits.Dispose();
            int perForward = options.AblationsPerForward ?? Math.Max(1, (int)Math.Min(int.MaxValue, options.MemoryBudgetBytes / BytesPerCopy(cfg, batch, pos)));
            var ablated = new double[targets.Count];
            foreach (var layer in targets.Select((t, i) => (t, i)).GroupBy(x => x.t.Layer))
                foreach (var chunk in layer.Chunk(perForward))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var values = RunChunk(model, cache[HookNames.ResidPre(layer.Key)], tokens, chunk.Select(x => x.t).ToArray(), kind, metric, reference);
                    for (int j = 0; j < chunk.Length; j++) ablated[chunk[j].i] = values[j];
                }
            return targets.Select((t, i) => new AblationRow(t.Layer, t.Head, t.ComponentName, kind, t.PositionsName, clean, ablated[i])).ToArray();
        }
    }

    /// <summary>Every head of the model ablated alone (at <paramref name="positions"/>; null: all).</summary>
    public static IReadOnlyList<AblationRow> Heads(HookedTransformer model, Tensor tokens, AblationKind kind, Metric metric,
        AblationReference? reference = null, IReadOnlyList<int>? positions = null, AblationSweepOptions? options = null, CancellationToken cancellationToken = default) =>
        Run(model, tokens, AblationTarget.AllHeads(model.Config, positions), kind, metric, reference, options, cancellationToken);

    /// <summary>
    /// k ablations of one layer in one pass: resid_pre [B, pos, d_model] replicated k times, copy i ablated at
    /// <paramref name="targets"/>[i], blocks layer… run, the metric's per-sequence values averaged per copy.
    /// </summary>
    private static double[] RunChunk(HookedTransformer model, Tensor residPre, Tensor tokens, AblationTarget[] targets, AblationKind kind, Metric metric, AblationReference? reference)
    {
        using var scope = NewDisposeScope();
        int k = targets.Length, layer = targets[0].Layer;
        long batch = tokens.shape[0], pos = tokens.shape[1];
        var cfg = model.Config;
        var hooks = targets.Select(t => t.HookName).Distinct().Select(name =>
        {
            // Copy i's mask: its own target's where it ablates at this hook, all false where it ablates elsewhere.
            var here = targets.First(t => t.HookName == name);
            var none = zeros_like(Ablation.MaskTensor(here, cfg, pos, residPre.device));
            var masks = stack(targets.Select(t => t.HookName == name ? Ablation.MaskTensor(t, cfg, pos, residPre.device) : none).ToArray());
            return (name, (HookFunction)((activation, _) =>
            {
                using var inner = NewDisposeScope();
                var source = Ablation.Source(kind, reference, name, batch, activation);   // broadcastable to one copy, [B, pos, …]
                return Ablation.Replace(activation, masks, source).MoveToOuterDisposeScope();
            }));
        }).ToArray();
        Tensor logits;
        using (model.Hooks(hooks)) logits = model.ForwardFrom(layer, residPre.repeat(k, 1, 1));      // [k·B, pos, d_vocab]
        var perSequence = Metrics.PerSequence(metric, logits, tokens.repeat(k, 1));                    // [k·B]
        var means = perSequence.to(ScalarType.Float64).view(k, batch).mean([1]);
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
    /// The rows as a long table: layer int32, head int32 (−1 for a whole layer), component (head | attn | mlp),
    /// ablation (zero | mean | resample), positions (all | …), metric (<paramref name="metricName"/>) strings,
    /// metric_clean, metric_ablated, delta doubles.
    /// </summary>
    public static ParquetTable ToTable(IEnumerable<AblationRow> rows, string metricName)
    {
        var columns = new ParquetColumns();
        foreach (var r in rows)
            columns.Row(("layer", r.Layer), ("head", r.Head), ("component", r.Component), ("ablation", Ablation.Name(r.Kind)),
                ("positions", r.Positions), ("metric", metricName), ("metric_clean", r.MetricClean), ("metric_ablated", r.MetricAblated), ("delta", r.Delta));
        if (columns.RowCount == 0)
            throw new InterpException("an ablation table needs at least one row");
        return columns.ToTable();
    }
}

using Interp.Hooks;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// One site's attribution-patching estimate: <paramref name="Attribution"/> = Σ over the site's slice of
/// (clean − corrupted) · ∂metric/∂activation at the corrupted run; <paramref name="Raw"/> = m_corrupted +
/// attribution, the estimated metric with the site patched; <paramref name="Value"/> normalised as activation patching
/// normalises (0 = corrupted, 1 = clean).
/// </summary>
public sealed record AttributionResult(PatchSite Site, double Attribution, double Raw, double Value);

/// <summary>One site measured both ways: activation patching's and attribution patching's normalised values.</summary>
public readonly record struct PatchingComparisonRow(PatchSite Site, double Activation, double Attribution);

/// <summary>
/// Activation and attribution patching over the same sites: the rows and the Pearson correlation of the two normalised
/// values (NaN for fewer than two sites or when either column is constant).
/// </summary>
public sealed record PatchingComparison(IReadOnlyList<PatchingComparisonRow> Rows, double Correlation)
{
    /// <summary>The largest |activation − attribution| over the rows (0 for none).</summary>
    public double MaxAbsDifference => Rows.Count == 0 ? 0 : Rows.Max(r => Math.Abs(r.Activation - r.Attribution));
}

/// <summary>
/// Attribution patching (Nanda 2023; Syed et al. 2023): the first-order estimate of activation patching. One clean
/// forward pass caches the activations, one corrupted forward and backward pass caches the activations and the
/// gradient of the metric with respect to them (<see cref="HookedTransformer.RunWithCacheAndGradients"/>); a site's
/// patching effect is then estimated as (clean − corrupted) · ∂metric/∂activation summed over the site's slice, for
/// every site at once. The sites and the normalisation are those of <see cref="ActivationPatching"/>
/// (<see cref="PatchSite"/>; head outputs are slices of <c>hook_z</c>, head patterns of <c>hook_pattern</c>).
/// </summary>
/// <remarks>
/// Where the metric is linear in the site (the last layer's head outputs of a model without a final norm or MLP after
/// them, for a logit difference) the estimate equals activation patching exactly; elsewhere it is a linearisation
/// around the corrupted run. The metric is the mean over the batch of the per-sequence metric, as in activation
/// patching. The caches stay until disposal.
/// </remarks>
public sealed class AttributionPatching : IDisposable
{
    private readonly ActivationCache _clean;
    private readonly GradientCache _corrupted;
    private readonly Dictionary<string, Tensor> _products = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>The model.</summary>
    public HookedTransformer Model { get; }
    /// <summary>The metric.</summary>
    public Metric Metric { get; }
    /// <summary>The metric on the clean run (mean over the batch).</summary>
    public double CleanMetric { get; }
    /// <summary>The metric on the corrupted run.</summary>
    public double CorruptedMetric { get; }
    /// <summary>The sequence length of the runs.</summary>
    public int Positions { get; }

    /// <summary>Runs the clean input (caching its activations) and the corrupted input (caching activations and gradients).</summary>
    /// <param name="model">The model.</param>
    /// <param name="clean">The clean tokens [batch, pos].</param>
    /// <param name="corrupted">The corrupted tokens, of the same shape.</param>
    /// <param name="metric">The per-sequence metric; the mean over the batch is differentiated.</param>
    /// <param name="attentionMask">For right-padded batches, their shared attention mask [batch, pos] (as for <see cref="ActivationPatching"/>); null: no padding.</param>
    /// <param name="cancellationToken">Checked between the passes.</param>
    /// <exception cref="InterpException">The inputs differ in shape or are invalid, the model has no logits, or a next-token metric meets an encoder.</exception>
    public AttributionPatching(HookedTransformer model, Tensor clean, Tensor corrupted, Metric metric, Tensor? attentionMask = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(metric);
        if (!clean.shape.SequenceEqual(corrupted.shape))
            throw new InterpException($"attribution patching needs clean and corrupted tokens of the same shape [batch, pos]: clean tokens have shape [{string.Join(", ", clean.shape)}], corrupted tokens [{string.Join(", ", corrupted.shape)}]");
        Metrics.EnsureApplies(metric, model, "attribution patching");
        Model = model;
        Metric = metric;
        using var scope = NewDisposeScope();
        var c = model.ValidateTokens(clean);
        var k = model.ValidateTokens(corrupted);
        Positions = (int)c.shape[1];
        var mask = model.PaddingMask(attentionMask, c.shape[0], c.shape[1])?.logical_not();
        ActivationCache cleanCache;
        using (no_grad())
        {
            var (logits, cache) = model.RunWithCache(c, mask, ActivationPatching.IsPatchable);
            cleanCache = cache;
            try { CleanMetric = Metrics.Evaluate(metric, logits, c); }
            catch { cleanCache.Dispose(); throw; }
        }
        _clean = cleanCache;
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            _corrupted = model.RunWithCacheAndGradients(k, logits => Metrics.PerSequence(metric, logits, k).mean(),
                ActivationPatching.IsPatchable, mask, cancellationToken);
            CorruptedMetric = _corrupted.Metric;
        }
        catch
        {
            _clean.Dispose();
            throw;
        }
    }

    /// <summary>ActivationPatching's normalisation: (raw − m_corrupted) / (m_clean − m_corrupted).</summary>
    /// <exception cref="InterpException">The metric is the same on both runs.</exception>
    public double Normalise(double raw) => ActivationPatching.Normalise(raw, CleanMetric, CorruptedMetric);

    /// <summary>
    /// The estimated change of the metric when every site of <paramref name="sites"/> is patched (their attributions
    /// added; overlapping sites count twice).
    /// </summary>
    public double Attribution(params PatchSite[] sites) => sites.Sum(Score);

    /// <summary>Every site's estimate: attribution, estimated patched metric and normalised value.</summary>
    /// <exception cref="InterpException">A site names a layer, head or position the model or the runs lack, or there is nothing to recover.</exception>
    public IReadOnlyList<AttributionResult> Sweep(IEnumerable<PatchSite> sites, CancellationToken cancellationToken = default)
    {
        var list = sites.ToArray();
        var results = new AttributionResult[list.Length];
        for (int i = 0; i < list.Length; i++)
        {
            if ((i & 255) == 0) cancellationToken.ThrowIfCancellationRequested();
            double a = Score(list[i]);
            double raw = CorruptedMetric + a;
            results[i] = new AttributionResult(list[i], a, raw, Normalise(raw));
        }
        return results;
    }

    /// <summary>
    /// Pairs activation-patching results with attribution-patching results of the same sites (sites in
    /// <paramref name="activation"/>'s order; those missing from <paramref name="attribution"/> are left out) and their
    /// Pearson correlation.
    /// </summary>
    public static PatchingComparison Compare(IEnumerable<PatchResult> activation, IEnumerable<AttributionResult> attribution)
    {
        ArgumentNullException.ThrowIfNull(activation);
        ArgumentNullException.ThrowIfNull(attribution);
        var estimates = new Dictionary<PatchSite, double>();
        foreach (var r in attribution) estimates[r.Site] = r.Value;
        var rows = activation.Where(r => estimates.ContainsKey(r.Site))
            .Select(r => new PatchingComparisonRow(r.Site, r.Value, estimates[r.Site])).ToArray();
        return new PatchingComparison(rows, Pearson(rows.Select(r => r.Activation).ToArray(), rows.Select(r => r.Attribution).ToArray()));
    }

    /// <summary>The Pearson correlation of two equally long series (NaN when shorter than 2 or either is constant).</summary>
    public static double Pearson(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        if (x.Count != y.Count) throw new InterpException($"a correlation needs two series of one length, got {x.Count} and {y.Count}");
        int n = x.Count;
        if (n < 2) return double.NaN;
        double mx = x.Average(), my = y.Average(), sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n; i++)
        {
            double dx = x[i] - mx, dy = y[i] - my;
            sxy += dx * dy;
            sxx += dx * dx;
            syy += dy * dy;
        }
        return sxx == 0 || syy == 0 ? double.NaN : sxy / Math.Sqrt(sxx * syy);
    }

    /// <summary>Σ over the site's slice of (clean − corrupted) · gradient.</summary>
    private double Score(PatchSite site)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        site.Validate(Model, Positions);
        using var scope = NewDisposeScope();
        var product = Product(site.HookName);
        return product[site.Slice(0, product.shape[0])].sum().item<double>();
    }

    /// <summary>(clean − corrupted) · gradient at one hook, in float64, computed once per hook.</summary>
    private Tensor Product(string hook)
    {
        if (_products.TryGetValue(hook, out var p)) return p;
        if (!_clean.Contains(hook) || !_corrupted.Gradients.Contains(hook))
            throw new InterpException($"attribution patching at {hook}: the runs did not pass it (splice an SAE in before constructing the attribution patching)");
        using var scope = NewDisposeScope();
        var diff = _clean[hook].to(ScalarType.Float64) - _corrupted.Activations[hook].to(ScalarType.Float64);
        p = (diff * _corrupted.Gradients[hook].to(ScalarType.Float64)).DetachFromDisposeScope();
        _products[hook] = p;
        return p;
    }

    /// <summary>Frees the caches.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _clean.Dispose();
        _corrupted.Dispose();
        foreach (var p in _products.Values) p.Dispose();
        _products.Clear();
    }
}

using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// Integrated-gradients attribution of a metric to each input token (Sundararajan et al. 2017): for every sequence
/// and position, attribution = Σ over d_model of (e − e₀) ⊙ the mean gradient of the metric along the straight path
/// from the baseline e₀ to the token embeddings e (<c>hook_embed</c>; position embeddings stay as they are).
/// </summary>
/// <param name="Attributions">Per sequence and position, [batch][pos].</param>
/// <param name="Metric">Each sequence's metric on its input.</param>
/// <param name="BaselineMetric">Each sequence's metric with its token embeddings at the baseline.</param>
/// <param name="Steps">The interpolations.</param>
public sealed record InputAttributionResult(double[][] Attributions, double[] Metric, double[] BaselineMetric, int Steps)
{
    /// <summary>How far sequence <paramref name="row"/>'s attributions miss completeness: Σ attributions − (metric − baseline metric).</summary>
    public double CompletenessGap(int row) => Attributions[row].Sum() - (Metric[row] - BaselineMetric[row]);
}

/// <summary>Integrated gradients on the token embeddings (<see cref="InputAttributionResult"/>).</summary>
/// <remarks>
/// The zero baseline suits models whose residual stream starts as token + position embedding (GPT-2). Where it starts as
/// the token embedding alone and the first norm is scale-invariant (LLaMA, Mistral, Qwen: RMSNorm, no additive position
/// embedding), the model's output hardly changes along the path until α·e is within the norm's ε of zero, so the whole
/// change happens at the very start of the path and no Riemann sum of a few dozen steps sees it: the completeness gap
/// (<see cref="InputAttributionResult.CompletenessGap"/>) is then of the order of the attributions. Use another
/// sequence's embeddings there (<see cref="Embeddings"/> of a corrupted prompt, or of a padding token repeated).
/// </remarks>
public static class InputAttribution
{
    /// <summary>The token embeddings (<c>hook_embed</c>) of <paramref name="tokens"/> [batch, pos]: [batch, pos, d_model], a baseline for <see cref="IntegratedGradients"/>.</summary>
    /// <exception cref="InterpException">The tokens or the mask are invalid.</exception>
    public static Tensor Embeddings(HookedTransformer model, Tensor tokens, Tensor? attentionMask = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        Tensor? seen = null;
        model.RunWithHooks(model.ValidateTokens(tokens), attentionMask, (HookNames.Embed, (a, _) => { seen = a.detach().clone().DetachFromDisposeScope(); return null; }));
        return seen!.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Attributes each sequence's <paramref name="metric"/> (e.g. a logit difference) to its input tokens. The gradient
    /// is averaged over <paramref name="steps"/> points at α = (k + ½) / steps (the midpoint rule, whose completeness
    /// error shrinks as 1/steps² for a smooth metric). Sequences are independent: each one's attributions are of its own metric.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="tokens">Token ids [batch, pos].</param>
    /// <param name="metric">The per-sequence metric.</param>
    /// <param name="steps">The interpolations (30 by default).</param>
    /// <param name="baseline">The baseline token embeddings [batch, pos, d_model] (null: zero embeddings).</param>
    /// <param name="attentionMask">The attention mask of a padded batch (null: no padding).</param>
    /// <param name="cancellationToken">Checked between the passes.</param>
    /// <exception cref="InterpException">steps is below 1, the baseline has the wrong shape, or the metric does not apply.</exception>
    public static InputAttributionResult IntegratedGradients(HookedTransformer model, Tensor tokens, Metric metric, int steps = 30,
        Tensor? baseline = null, Tensor? attentionMask = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(metric);
        if (steps < 1) throw new InterpException($"integrated gradients: steps must be at least 1, got {steps}");
        Metrics.EnsureApplies(metric, model, "input attribution");
        using var scope = NewDisposeScope();
        var t = model.ValidateTokens(tokens);
        long batch = t.shape[0], pos = t.shape[1];
        double[] atInput;
        Tensor? seen = null;
        using (no_grad())
        {
            // Kept past the pass's own dispose scope, freed when this one ends.
            var logits = model.RunWithHooks(t, attentionMask, (HookNames.Embed, (a, _) => { seen = a.detach().clone().DetachFromDisposeScope(); return null; }));
            atInput = Metrics.PerSequence(metric, logits, t).to(ScalarType.Float64).cpu().data<double>().ToArray();
        }
        var embedded = seen!.alias();
        seen.Dispose();
        var start = baseline?.to(embedded.dtype, embedded.device) ?? zeros_like(embedded);
        if (!start.shape.SequenceEqual(embedded.shape))
            throw new InterpException($"integrated gradients: the baseline must be [batch, pos, d_model] = [{string.Join(", ", embedded.shape)}], got [{string.Join(", ", start.shape)}]");
        var path = embedded - start;
        double[] atBaseline;
        using (no_grad())
        {
            var logits = model.RunWithHooks(t, attentionMask, (HookNames.Embed, (_, _) => start));
            atBaseline = Metrics.PerSequence(metric, logits, t).to(ScalarType.Float64).cpu().data<double>().ToArray();
        }

        var total = zeros(embedded.shape, ScalarType.Float64, embedded.device);
        var frozen = model.parameters().Where(p => p.requires_grad).ToArray();
        try
        {
            foreach (var p in frozen) p.requires_grad_(false);
            for (int k = 0; k < steps; k++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var step = NewDisposeScope();
                using var gradients = enable_grad();
                using var alpha = ((k + 0.5) / steps).ToScalar();
                var x = start.add(path, alpha).detach().requires_grad_(true);   // [batch, pos, d_model]
                var logits = model.RunWithHooks(t, attentionMask, (HookNames.Embed, (_, _) => x));
                // The sum over sequences: each sequence's gradient is that of its own metric.
                model.Backward(Metrics.PerSequence(metric, logits, t).sum());
                total.add_(x.grad!.to(ScalarType.Float64), Scalars.One);
            }
        }
        finally
        {
            foreach (var p in frozen) p.requires_grad_(true);
        }
        using var count = ((double)steps).ToScalar();
        var attributions = (path.to(ScalarType.Float64) * total.div(count)).sum(-1).cpu();      // [batch, pos]
        var flat = attributions.data<double>().ToArray();
        var rows = Enumerable.Range(0, (int)batch).Select(b => flat.Skip((int)(b * pos)).Take((int)pos).ToArray()).ToArray();
        return new InputAttributionResult(rows, atInput, atBaseline, steps);
    }
}

using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// LayerNorm or RMSNorm with TransformerLens's hooks: <c>hook_scale</c> [batch, pos, one] and
/// <c>hook_normalized</c> [batch, pos, d_model]. As in TransformerLens, LayerNorm's hook_normalized is taken after
/// w and b; RMSNorm's before w.
/// </summary>
public sealed class Norm : Component
{
    private readonly NormKind _kind;
    private readonly Scalar _eps;   // owned: see Scalars
    private readonly HookPoint _scale, _normalized;

    /// <summary>Gain w [d_model].</summary>
    public Tensor W { get; }
    /// <summary>Shift b [d_model] (zero, fixed, for RMSNorm).</summary>
    public Tensor B { get; }

    /// <summary>Creates the norm over d_model; <paramref name="prefix"/> is e.g. <c>blocks.0.ln1.</c>.</summary>
    public Norm(ModelConfig cfg, string prefix) : this(cfg, prefix, cfg.DModel, null) { }

    /// <summary>
    /// Creates a norm over the last axis of width <paramref name="width"/>; with <paramref name="headAxis"/> (e.g.
    /// <c>head_index</c>) it normalises each head of a [batch, pos, head, d_head] input (Qwen 3's q_norm, k_norm).
    /// </summary>
    public Norm(ModelConfig cfg, string prefix, int width, string? headAxis) : base("norm", prefix)
    {
        if (cfg.Norm == NormKind.None) throw new ArgumentException("NormKind.None has no norm module", nameof(cfg));
        _kind = cfg.Norm;
        _eps = cfg.NormEps.ToScalar();
        W = Weight("w", width);
        using (no_grad()) W.fill_(Scalars.One);
        B = Bias("b", _kind == NormKind.LayerNorm, width);
        string[] lead = headAxis is null ? ["batch", "pos"] : ["batch", "pos", headAxis];
        _scale = Declare(HookNames.ScaleOf(prefix.TrimEnd('.')), [.. lead, "one"]);
        _normalized = Declare(HookNames.NormalizedOf(prefix.TrimEnd('.')), [.. lead, headAxis is null ? "d_model" : "d_head"]);
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        if (_kind == NormKind.LayerNorm)
        {
            x = x - x.mean([-1], keepdim: true);
            var scale = _scale.Run(RootMeanSquare(x));
            return _normalized.Run((x / scale * W).add(B, Scalars.One));
        }
        var rms = _scale.Run(RootMeanSquare(x));
        return _normalized.Run(x / rms) * W;
    }

    /// <summary>√(mean(x²) + ε) over the last axis: [batch, pos, d_model] → [batch, pos, 1].</summary>
    /// <summary>
    /// The vector–Jacobian product of <see cref="forward"/> at <paramref name="x"/> [batch, pos, d_model]:
    /// <paramref name="gradient"/> [batch, pos, copies, d_model] (the gradient of several outputs at the same input)
    /// → the gradient of each copy's input, [batch, pos, copies, d_model]. With x̂ the normalised input and s the scale,
    /// RMSNorm: (g̃ − x̂ · mean(g̃ ⊙ x̂)) / s; LayerNorm: (g̃ − mean(g̃) − x̂ · mean(g̃ ⊙ x̂)) / s, where g̃ = g ⊙ w.
    /// Hooks do not run.
    /// </summary>
    internal Tensor InputGradient(Tensor x, Tensor gradient)
    {
        using var scope = NewDisposeScope();
        if (_kind == NormKind.LayerNorm) x = x - x.mean([-1], keepdim: true);
        var scale = RootMeanSquare(x).unsqueeze(2);                        // [batch, pos, 1, 1]
        var normalised = x.unsqueeze(2) / scale;                           // [batch, pos, 1, d_model]
        var g = gradient * W;                                              // [batch, pos, copies, d_model]
        var centred = g - normalised * (g * normalised).mean([-1], keepdim: true);
        if (_kind == NormKind.LayerNorm) centred = centred - g.mean([-1], keepdim: true);
        return (centred / scale).MoveToOuterDisposeScope();
    }

    private Tensor RootMeanSquare(Tensor x) => x.pow(Scalars.Two).mean([-1], keepdim: true).add(_eps, Scalars.One).sqrt();

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing) _eps.Dispose();
        base.Dispose(disposing);
    }
}

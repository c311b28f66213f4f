using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Interp.Training;

/// <summary>
/// AdamW (decoupled weight decay, Loshchilov &amp; Hutter) with every scalar owned. TorchSharp's own <c>AdamW.step</c>
/// passes its coefficients as implicitly converted scalars that the garbage collector may free mid-call (see
/// <see cref="Scalars"/>); this runs the same operations in the same order — so the same floats come out (tested bit for
/// bit against TorchSharp's) — with scalars that live until each call returns.
/// Per parameter θ with gradient g, at step t: θ ← θ·(1 − lr·λ); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
/// θ ← θ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε).
/// </summary>
public sealed class AdamWOptimizer : IDisposable
{
    private readonly Parameter[] _parameters;
    private readonly Tensor[] _mean, _variance;
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private long _step;

    /// <summary>Optimises <paramref name="parameters"/> with the given coefficients (TorchSharp's argument order and meaning).</summary>
    public AdamWOptimizer(IEnumerable<Parameter> parameters, double lr, double beta1, double beta2, double eps = 1e-8, double weightDecay = 0)
    {
        if (!(lr >= 0)) throw new ArgumentException($"AdamW: learning rate {lr} must be ≥ 0");
        if (!(beta1 is >= 0 and < 1) || !(beta2 is >= 0 and < 1)) throw new ArgumentException($"AdamW: betas ({beta1}, {beta2}) must lie in [0, 1)");
        if (!(eps >= 0) || !(weightDecay >= 0)) throw new ArgumentException($"AdamW: eps {eps} and weight decay {weightDecay} must be ≥ 0");
        _parameters = parameters.ToArray();
        (LearningRate, _beta1, _beta2, _eps, _weightDecay) = (lr, beta1, beta2, eps, weightDecay);
        _mean = _parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray();
        _variance = _parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToArray();
    }

    /// <summary>The learning rate of the next step (a schedule sets it before each).</summary>
    public double LearningRate { get; set; }

    /// <summary>Sets every parameter's gradient to zero (in place, as TorchSharp's <c>zero_grad</c> does).</summary>
    public void ZeroGrad()
    {
        foreach (var p in _parameters)
        {
            using var grad = p.grad;
            grad?.zero_();
        }
    }

    /// <summary>One update of every parameter that has a gradient.</summary>
    public void Step()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        _step++;
        double lr = LearningRate;
        double correction1 = 1 - Math.Pow(_beta1, _step), correction2 = 1 - Math.Pow(_beta2, _step);
        using Scalar decay = (1 - lr * _weightDecay).ToScalar(), beta1 = _beta1.ToScalar(), beta2 = _beta2.ToScalar(),
            gradWeight = (1 - _beta1).ToScalar(), squareWeight = (1 - _beta2).ToScalar(), sqrtCorrection2 = Math.Sqrt(correction2).ToScalar(),
            eps = _eps.ToScalar(), stepSize = (-(lr / correction1)).ToScalar();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var param = _parameters[i];
            var grad = param.grad;
            if (grad is null) continue;
            param.mul_(decay);
            _mean[i].mul_(beta1).add_(grad, gradWeight);
            _variance[i].mul_(beta2).addcmul_(grad, grad, squareWeight);
            var denominator = _variance[i].sqrt().div(sqrtCorrection2).add_(eps, Scalars.One);
            param.addcdiv_(_mean[i], denominator, stepSize);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in _mean.Concat(_variance)) t.Dispose();
    }
}

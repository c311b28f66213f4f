using static TorchSharp.torch;

namespace Interp.Hooks;

/// <summary>
/// What <c>RunWithCacheAndGradients</c> returns: the metric's value, the logits, and for every hook point the names
/// filter accepted, the activation and the gradient of the metric with respect to it (same names, same shapes). It owns
/// its tensors, all detached: dispose it to free them.
/// </summary>
public sealed class GradientCache : IDisposable
{
    internal GradientCache(double metric, Tensor logits, ActivationCache activations, ActivationCache gradients)
    {
        Metric = metric;
        Logits = logits;
        Activations = activations;
        Gradients = gradients;
    }

    /// <summary>The metric's value on this run.</summary>
    public double Metric { get; }

    /// <summary>The run's logits [batch, pos, d_vocab], detached.</summary>
    public Tensor Logits { get; }

    /// <summary>The activations, by hook name, in forward order (as <c>RunWithCache</c> records them).</summary>
    public ActivationCache Activations { get; }

    /// <summary>
    /// ∂metric/∂activation at each cached hook point, by hook name, in forward order: the gradient with respect to the
    /// activation as it flows out of the hook point (after its forward hooks), as it flows on upstream (after that hook
    /// point's own backward hooks). Zero where the metric does not depend on the activation.
    /// </summary>
    public ActivationCache Gradients { get; }

    /// <summary>Frees the logits, activations and gradients.</summary>
    public void Dispose()
    {
        Logits.Dispose();
        Activations.Dispose();
        Gradients.Dispose();
    }
}

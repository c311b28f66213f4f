using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Hooks;

/// <summary>
/// A hook function sees an activation as it flows past a <see cref="HookPoint"/>. Return null to leave it as it is,
/// or a tensor of the same shape to replace it. To keep the tensor after the forward pass, keep
/// <c>activation.detach()</c> and call <c>DetachFromDisposeScope()</c> on it: the pass disposes its intermediates.
/// </summary>
public delegate Tensor? HookFunction(Tensor activation, HookPoint hook);

/// <summary>
/// A backward hook function sees the gradient of whatever is being differentiated with respect to the activation that
/// flows out of a <see cref="HookPoint"/> (after its forward hooks), as the backward pass reaches it. Return null to
/// leave it as it is, or a tensor of the same shape to replace it: the replacement is what flows on to everything
/// upstream (the chain rule then uses it in place of the true gradient). It runs during the backward pass, possibly on
/// an autograd thread: keep a gradient with <c>gradient.detach().clone()</c> and <c>DetachFromDisposeScope()</c>.
/// </summary>
public delegate Tensor? BackwardHookFunction(Tensor gradient, HookPoint hook);

/// <summary>
/// A named place in the forward pass where an activation can be read or replaced (TransformerLens's HookPoint).
/// Its <see cref="Name"/> is its module path, e.g. <c>blocks.0.attn.hook_pattern</c>; its <see cref="Axes"/> name
/// the activation's dimensions, e.g. <c>batch pos head_index d_head</c>.
/// </summary>
public sealed class HookPoint
{
    private readonly List<HookFunction> _hooks = new();
    private readonly List<BackwardHookFunction> _backward = new();
    private Exception? _backwardError;

    /// <summary>Creates a hook point.</summary>
    public HookPoint(string name, params string[] axes)
    {
        Name = name;
        Axes = axes;
    }

    /// <summary>The full hook name, e.g. <c>blocks.0.hook_resid_pre</c>.</summary>
    public string Name { get; }

    /// <summary>The activation's axis names, in order (see <see cref="HookNames"/> for their meaning).</summary>
    public IReadOnlyList<string> Axes { get; }

    /// <summary>True while at least one hook function (forward or backward) is attached, or something (an SAE) is spliced in here.</summary>
    public bool IsActive => _hooks.Count > 0 || _backward.Count > 0 || Splice is not null;

    /// <summary>True while at least one backward hook function is attached.</summary>
    public bool HasBackwardHooks => _backward.Count > 0;

    /// <summary>
    /// What replaces the activation after every hook function has run (an SAE spliced in by <c>WithSaes</c>); its output
    /// must keep the activation's shape.
    /// </summary>
    internal Func<Tensor, Tensor>? Splice { get; set; }

    /// <summary>Sizes of axes that are not the model's own (an SAE's <c>d_sae</c>), for <c>HookShape</c>.</summary>
    internal IReadOnlyDictionary<string, long>? AxisSizes { get; init; }

    /// <summary>Attaches a hook function; disposing the returned handle detaches it.</summary>
    public IDisposable Add(HookFunction hook)
    {
        _hooks.Add(hook);
        return new Handle(this, hook);
    }

    /// <summary>
    /// Attaches a backward hook function; disposing the returned handle detaches it. It applies to the graphs of forward
    /// passes run while it is attached (a pass records the backward hooks of each hook point as it passes it), and only
    /// where gradients are recorded: with gradients off (<c>no_grad</c>), or when nothing upstream of the activation
    /// requires a gradient, the pass adds nothing here and the hook never runs. Backward hooks run in the order they
    /// were added, each seeing the previous one's replacement.
    /// </summary>
    public IDisposable AddBackward(BackwardHookFunction hook)
    {
        ArgumentNullException.ThrowIfNull(hook);
        _backward.Add(hook);
        return new BackwardHandle(this, hook);
    }

    /// <summary>Detaches every hook function, forward and backward.</summary>
    public void Clear()
    {
        _hooks.Clear();
        _backward.Clear();
    }

    /// <summary>The first failure of a backward hook function here since the last call (null if none), cleared.</summary>
    internal Exception? TakeBackwardError() => Interlocked.Exchange(ref _backwardError, null);

    /// <summary>
    /// Runs <paramref name="hooks"/> (those attached when the forward pass passed here) on <paramref name="gradient"/>.
    /// Called by the autograd engine, from native code: nothing may throw out of it, so a failure is recorded (see
    /// <see cref="TakeBackwardError"/>) and the gradient passes on unchanged from there.
    /// </summary>
    internal Tensor RunBackward(Tensor gradient, BackwardHookFunction[] hooks)
    {
        var original = gradient;
        try
        {
            foreach (var hook in hooks)
            {
                var replaced = hook(gradient, this);
                if (replaced is null || ReferenceEquals(replaced, gradient)) continue;
                if (!replaced.shape.SequenceEqual(gradient.shape))
                    throw new HookException(Name,
                        $"a backward hook returned a gradient of shape [{string.Join(", ", replaced.shape)}] but the activation has shape [{string.Join(", ", gradient.shape)}] ({string.Join(" ", Axes)})");
                gradient = replaced.dtype == gradient.dtype && replaced.device == gradient.device
                    ? replaced
                    : replaced.to(gradient.dtype, gradient.device);
            }
            return gradient;
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _backwardError,
                e is InterpException or OperationCanceledException ? e : new HookException(Name, $"a backward hook failed: {e.Message}", e), null);
            return original;
        }
    }

    /// <summary>Passes the activation through the attached hook functions, in the order they were added.</summary>
    public Tensor Run(Tensor activation) => Run(activation, out _);

    /// <summary>
    /// <see cref="Run(Tensor)"/>, telling whether a hook function or a splice replaced the activation (a backward tap
    /// alone does not count: it is the identity).
    /// </summary>
    internal Tensor Run(Tensor activation, out bool replaced)
    {
        replaced = false;
        // Snapshot: a hook may add or remove hooks while it runs.
        foreach (var hook in _hooks.Count == 0 ? Array.Empty<HookFunction>() : _hooks.ToArray())
        {
            var replacement = hook(activation, this);
            if (replacement is null || ReferenceEquals(replacement, activation)) continue;
            if (!replacement.shape.SequenceEqual(activation.shape))
                throw new HookException(Name,
                    $"a hook returned shape [{string.Join(", ", replacement.shape)}] but the activation has shape [{string.Join(", ", activation.shape)}] ({string.Join(" ", Axes)})");
            activation = replacement.dtype == activation.dtype && replacement.device == activation.device
                ? replacement
                : replacement.to(activation.dtype, activation.device);
            replaced = true;
        }
        if (Splice is { } splice)
        {
            var spliced = splice(activation);
            if (!spliced.shape.SequenceEqual(activation.shape))
                throw new HookException(Name, $"the spliced module returned shape [{string.Join(", ", spliced.shape)}] but the activation has shape [{string.Join(", ", activation.shape)}]");
            activation = spliced.dtype == activation.dtype ? spliced : spliced.to(activation.dtype);
            replaced = true;
        }
        // Backward hooks cost nothing unless attached and the pass records gradients through this activation.
        if (_backward.Count > 0 && activation.requires_grad && is_grad_enabled())
            activation = GradientTap.apply(activation, this, _backward.ToArray());
        return activation;
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name} [{string.Join(", ", Axes)}]";

    private sealed class BackwardHandle(HookPoint point, BackwardHookFunction hook) : IDisposable
    {
        private bool _disposed;
        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            point._backward.Remove(hook);
        }
    }

    private sealed class Handle(HookPoint point, HookFunction hook) : IDisposable
    {
        private bool _disposed;
        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            point._hooks.Remove(hook);
        }
    }
}

/// <summary>
/// The identity, as an autograd function whose backward runs a hook point's backward hooks on the gradient: how a
/// <see cref="HookPoint"/> sees and replaces gradients (TorchSharp has no tensor hooks).
/// </summary>
internal sealed class GradientTap : torch.autograd.SingleTensorFunction<GradientTap>
{
    private const string PointKey = "point", HooksKey = "hooks";

    /// <inheritdoc />
    public override string Name => "HookPointBackward";

    /// <summary>vars: the activation, its <see cref="HookPoint"/>, the backward hooks → a view of the activation.</summary>
    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var activation = (Tensor)vars[0];
        ctx.save_data(PointKey, vars[1]);
        ctx.save_data(HooksKey, vars[2]);
        return activation.view(activation.shape);
    }

    /// <inheritdoc />
    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        var point = (HookPoint)ctx.get_data(PointKey);
        var hooks = (BackwardHookFunction[])ctx.get_data(HooksKey);
        return [point.RunBackward(grad_output, hooks), null!, null!];
    }
}

/// <summary>A hook was misused: unknown name, wrong replacement shape, or a failure inside a hook function.</summary>
public class HookException : InterpException
{
    /// <summary>The hook at fault.</summary>
    public string HookName { get; }

    /// <summary>Creates the exception; the message starts with the hook name.</summary>
    public HookException(string hookName, string problem, Exception? inner = null) : base($"hook '{hookName}': {problem}", inner)
        => HookName = hookName;
}

/// <summary>A hook name that the model does not have; the message lists the closest valid names.</summary>
public sealed class UnknownHookException : HookException
{
    /// <summary>The closest valid names, best first.</summary>
    public IReadOnlyList<string> Suggestions { get; }

    /// <summary>Creates the exception.</summary>
    public UnknownHookException(string hookName, IReadOnlyList<string> suggestions)
        : base(hookName, $"no such hook point. Did you mean: {string.Join(", ", suggestions)}?")
        => Suggestions = suggestions;
}

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
/// A named place in the forward pass where an activation can be read or replaced (TransformerLens's HookPoint).
/// Its <see cref="Name"/> is its module path, e.g. <c>blocks.0.attn.hook_pattern</c>; its <see cref="Axes"/> name
/// the activation's dimensions, e.g. <c>batch pos head_index d_head</c>.
/// </summary>
public sealed class HookPoint
{
    private readonly List<HookFunction> _hooks = new();

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

    /// <summary>True while at least one hook function is attached, or something (an SAE) is spliced in here.</summary>
    public bool IsActive => _hooks.Count > 0 || Splice is not null;

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

    /// <summary>Detaches every hook function.</summary>
    public void Clear() => _hooks.Clear();

    /// <summary>Passes the activation through the attached hook functions, in the order they were added.</summary>
    public Tensor Run(Tensor activation)
    {
        // Snapshot: a hook may add or remove hooks while it runs.
        foreach (var hook in _hooks.Count == 0 ? Array.Empty<HookFunction>() : _hooks.ToArray())
        {
            var replaced = hook(activation, this);
            if (replaced is null || ReferenceEquals(replaced, activation)) continue;
            if (!replaced.shape.SequenceEqual(activation.shape))
                throw new HookException(Name,
                    $"a hook returned shape [{string.Join(", ", replaced.shape)}] but the activation has shape [{string.Join(", ", activation.shape)}] ({string.Join(" ", Axes)})");
            activation = replaced.dtype == activation.dtype && replaced.device == activation.device
                ? replaced
                : replaced.to(activation.dtype, activation.device);
        }
        if (Splice is { } splice)
        {
            var spliced = splice(activation);
            if (!spliced.shape.SequenceEqual(activation.shape))
                throw new HookException(Name, $"the spliced module returned shape [{string.Join(", ", spliced.shape)}] but the activation has shape [{string.Join(", ", activation.shape)}]");
            activation = spliced.dtype == activation.dtype ? spliced : spliced.to(activation.dtype);
        }
        return activation;
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name} [{string.Join(", ", Axes)}]";

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

using Interp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Base of every model part: a TorchSharp module whose weights are registered under TransformerLens's names
/// (so <c>state_dict</c> keys read <c>blocks.0.attn.W_Q</c>) and which declares its hook points.
/// </summary>
public abstract class Component : nn.Module<Tensor, Tensor>
{
    private readonly List<HookPoint> _hooks = new();

    /// <summary>Creates a component whose hook names start with <paramref name="prefix"/> (e.g. <c>blocks.0.attn.</c>).</summary>
    protected Component(string name, string prefix) : base(name) => Prefix = prefix;

    /// <summary>
    /// Components register every weight explicitly under its TransformerLens name; TorchSharp's reflection-based
    /// registration (which <c>register_module</c> triggers) would add backing fields a second time.
    /// </summary>
    protected override void RegisterComponents() { }

    /// <summary>The hook-name prefix of this component.</summary>
    protected string Prefix { get; }

    /// <summary>The hook points this component and its children declare.</summary>
    public virtual IEnumerable<HookPoint> HookPoints => _hooks;

    /// <summary>Declares a hook point named <c>Prefix + name</c> with the given axes.</summary>
    protected HookPoint Hook(string name, params string[] axes) => Declare(Prefix + name, axes);

    /// <summary>
    /// Declares a hook point with its full name, as <see cref="HookNames"/> spells it (the toolkit's components take
    /// every hook name from there), and the given axes.
    /// </summary>
    protected HookPoint Declare(string fullName, params string[] axes)
    {
        var hook = new HookPoint(fullName, axes);
        _hooks.Add(hook);
        return hook;
    }

    /// <summary>
    /// While set (on this thread), components record the elements of each weight and buffer instead of allocating them:
    /// how <c>LoadBudget</c> learns a config's memory from the model's own declarations before anything is allocated.
    /// </summary>
    [ThreadStatic] internal static ShapePlan? Planning;

    /// <summary>
    /// While set (on this thread), components create their weights, biases and floating-point constants in this dtype
    /// instead of float32: how <see cref="HookedTransformer.ToDtype"/> builds a converted copy.
    /// </summary>
    [ThreadStatic] internal static ScalarType? BuildDtype;

    /// <summary>
    /// While set (on this thread), components create their weights, biases and constants on this device: how
    /// <see cref="HookedTransformer.ToDevice"/> builds a moved copy.
    /// </summary>
    [ThreadStatic] internal static Device? BuildDevice;

    /// <summary>
    /// The model's compute dtype where it differs from the weights' (<see cref="HookedTransformer.ComputeDType"/>), for
    /// the components that start the stream (the embeddings); null when the pass computes in the weights' dtype.
    /// </summary>
    internal ScalarType? Compute { get; set; }

    /// <summary><paramref name="t"/>, read from a weight, in the stream's dtype (<see cref="Compute"/>).</summary>
    protected Tensor ToStream(Tensor t) => Compute is { } dtype && t.dtype != dtype ? t.to(dtype) : t;

    private static Tensor Zeros(long[] shape) => zeros(shape, BuildDtype ?? ScalarType.Float32, BuildDevice);

    /// <summary>Elements a model would allocate, recorded while <see cref="Planning"/> is set.</summary>
    internal sealed class ShapePlan
    {
        /// <summary>Elements of the trainable parameters.</summary>
        public Int128 Parameters { get; set; }
        /// <summary>Elements of the buffers derived from the config (fixed zero biases, constant tables).</summary>
        public Int128 Buffers { get; set; }

        /// <summary>The element count of <paramref name="shape"/>, without overflow.</summary>
        public static Int128 Elements(long[] shape) => shape.Aggregate((Int128)1, (n, d) => n * d);
    }

    /// <summary>Registers a trainable weight of the given shape (zeros until loaded or initialised).</summary>
    protected Parameter Weight(string name, params long[] shape)
    {
        if (Planning is { } plan) plan.Parameters += ShapePlan.Elements(shape);
        var p = new Parameter(Planning is null ? Zeros(shape) : empty(0), requires_grad: true);
        p.DetachFromDisposeScope(); // a model built inside a caller's dispose scope must outlive it
        register_parameter(name, p);
        return p;
    }

    /// <summary>
    /// Registers a trainable weight of <paramref name="shape"/> that is <paramref name="view"/>, a view of a larger tensor
    /// the component keeps: the two share memory, so that writes to either (loading, weight processing, an optimiser,
    /// a researcher's in-place edit) are seen by both.
    /// </summary>
    protected Parameter WeightView(string name, Func<Tensor> view, params long[] shape)
    {
        if (Planning is { } plan) plan.Parameters += ShapePlan.Elements(shape);
        var p = new Parameter(Planning is null ? view() : empty(0), requires_grad: true);
        p.DetachFromDisposeScope();
        register_parameter(name, p);
        return p;
    }

    /// <summary>A zero tensor of <paramref name="shape"/> for <see cref="WeightView"/> to view (empty while planning, counted by the views).</summary>
    protected static Tensor Storage(params long[] shape) => (Planning is null ? Zeros(shape) : empty(0)).DetachFromDisposeScope();

    /// <summary>Registers a bias: trainable when <paramref name="trainable"/>, else a fixed zero buffer kept for uniform maths.</summary>
    protected Tensor Bias(string name, bool trainable, params long[] shape)
    {
        if (trainable) return Weight(name, shape);
        if (Planning is { } plan) plan.Buffers += ShapePlan.Elements(shape);
        var b = (Planning is null ? Zeros(shape) : empty(0)).DetachFromDisposeScope();
        register_buffer(name, b, persistent: false);
        return b;
    }

    /// <summary>Registers a constant table of <paramref name="shape"/> that is derived (by <paramref name="make"/>), never saved.</summary>
    protected Tensor Constant(string name, long[] shape, Func<Tensor> make)
    {
        if (Planning is { } plan) plan.Buffers += ShapePlan.Elements(shape);
        var value = Planning is null ? make() : empty(0);
        if (BuildDtype is { } dtype && value.is_floating_point() && value.dtype != dtype) value = value.to(dtype);
        if (BuildDevice is { } device && value.device != device) value = value.to(device);
        value.DetachFromDisposeScope();
        register_buffer(name, value, persistent: false);
        return value;
    }
}

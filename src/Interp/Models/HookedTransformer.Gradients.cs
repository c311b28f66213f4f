using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

public sealed partial class HookedTransformer
{
    /// <summary>The dtype of the weights (float32 unless converted with <see cref="ToDtype"/>).</summary>
    public ScalarType DType => Embed.W_E.dtype;

    private ScalarType? _compute;

    /// <summary>
    /// The dtype the forward pass computes in, which every activation, cache, key/value cache and gradient of the
    /// stream has: <see cref="DType"/> unless set. Weights held in bfloat16 (the file's size in memory) can be computed
    /// in float32: each weight is widened where the pass uses it, one product at a time, and the widened copy is freed
    /// with the pass's other temporaries, so that the forward equals, bit for bit, that of the model converted to
    /// float32 with <see cref="ToDtype"/>. Weight-space analyses (circuits, <c>FactoredMatrix</c>) read the weights in
    /// <see cref="DType"/>. Setting it is not safe while another pass runs.
    /// </summary>
    /// <exception cref="InterpException">Set to a dtype that is not floating point.</exception>
    public ScalarType ComputeDType
    {
        get => _compute ?? DType;
        set
        {
            if (value is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16))
                throw new InterpException($"ComputeDType: {value} is not a floating-point dtype (float32, float64, float16 or bfloat16)");
            _compute = value == DType ? null : value;
            Embed.Compute = _compute;
            if (PosEmbed is not null) PosEmbed.Compute = _compute;
            if (TokenTypeEmbed is not null) TokenTypeEmbed.Compute = _compute;
        }
    }

    /// <summary>
    /// A copy of this model whose weights, biases and constant tables are in <paramref name="dtype"/> (e.g. float64 for
    /// finite-difference checks), with the same values (rounded when narrowing), weight processing, tokenizer and device;
    /// the forward pass then runs in that dtype (<see cref="ComputeDType"/> is <paramref name="dtype"/>). The caller disposes the copy. (TorchSharp's <c>Module.to(dtype)</c>
    /// cannot re-point the components' read-only weight properties, so it is not supported on this model.)
    /// </summary>
    /// <exception cref="InterpException"><paramref name="dtype"/> is not a floating-point type.</exception>
    public HookedTransformer ToDtype(ScalarType dtype)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new InterpException($"ToDtype: {dtype} is not a floating-point dtype (float32, float64, float16 or bfloat16)");
        return Rebuild(dtype, Device);
    }

    /// <summary>
    /// A copy of this model with every weight, bias and constant table on <paramref name="device"/> (e.g. <c>cuda:0</c>),
    /// the same values, weight processing and tokenizer; the caller disposes the copy. (TorchSharp's
    /// <c>Module.to(device)</c> cannot re-point the components' weight properties, so it is not supported on this model.)
    /// </summary>
    /// <exception cref="InterpException">The device does not exist in this build of libtorch.</exception>
    public HookedTransformer ToDevice(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var copy = Rebuild(DType, device);
        copy.ComputeDType = ComputeDType;
        return copy;
    }

    private HookedTransformer Rebuild(ScalarType dtype, Device device)
    {
        var (previousDtype, previousDevice) = (Component.BuildDtype, Component.BuildDevice);
        Component.BuildDtype = dtype;
        Component.BuildDevice = device;
        HookedTransformer copy;
        try { copy = new HookedTransformer(Config); }
        catch (Exception ex) when (ex is ExternalException or ArgumentException or InvalidOperationException)
        {
            throw new InterpException($"cannot place {Config.Name} on {device}: {ex.Message.Split('\n')[0]}", ex);
        }
        finally { (Component.BuildDtype, Component.BuildDevice) = (previousDtype, previousDevice); }
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var parameters = named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
            foreach (var (name, p) in copy.named_parameters()) p.copy_(parameters[name]);
            var buffers = named_buffers().ToDictionary(b => b.name, b => b.buffer, StringComparer.Ordinal);
            foreach (var (name, b) in copy.named_buffers()) b.copy_(buffers[name]);
            copy.Processing = Processing;
            copy.Tokenizer = Tokenizer;
            return copy;
        }
        catch
        {
            copy.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Attaches backward hook functions (<see cref="HookPoint.AddBackward"/>) until the returned scope is disposed. They
    /// apply to the forward passes run inside the scope that record gradients; the backward pass itself may run later.
    /// Unknown names fail before anything is attached.
    /// </summary>
    public HookScope BackwardHooks(params (string Name, BackwardHookFunction Hook)[] hooks)
    {
        ArgumentNullException.ThrowIfNull(hooks);
        var points = hooks.Select(h => GetHookPoint(h.Name)).ToArray();
        var scope = new HookScope();
        for (int i = 0; i < hooks.Length; i++) scope.Add(points[i].AddBackward(hooks[i].Hook));
        return scope;
    }

    /// <summary>
    /// Backpropagates <paramref name="output"/> (a one-element tensor computed from a forward pass of this model that
    /// recorded gradients) and then throws the first failure of a backward hook function, if any: a failure inside the
    /// backward pass cannot propagate through the autograd engine, so the hook point records it and lets the gradient
    /// pass on unchanged. Use it instead of <c>output.backward()</c> when backward hooks are attached.
    /// </summary>
    /// <exception cref="HookException">A backward hook threw, or returned a gradient of the wrong shape.</exception>
    /// <exception cref="OperationCanceledException">A backward hook was cancelled.</exception>
    public void Backward(Tensor output)
    {
        ArgumentNullException.ThrowIfNull(output);
        TakeBackwardError(); // stale failures of an earlier backward pass that nobody collected
        output.backward();
        if (TakeBackwardError() is { } error) ExceptionDispatchInfo.Throw(error);
    }

    /// <summary>The first recorded backward-hook failure over every hook point, clearing them all.</summary>
    private Exception? TakeBackwardError()
    {
        Exception? first = null;
        foreach (var h in HookPoints)
            if (h.TakeBackwardError() is { } e) first ??= e;
        return first;
    }

    /// <summary>
    /// One forward and one backward pass: the activations at every hook point <paramref name="namesFilter"/> accepts and
    /// the gradient of <paramref name="metric"/> (logits → one value) with respect to each of them, all from a single
    /// backward pass. Gradients are recorded for this call only and only from the first accepted hook point on: the
    /// weights' <c>requires_grad</c> is turned off for the call (and restored), so no weight gradient is computed or
    /// accumulated and nothing upstream of the accepted hooks is recorded. Every other pass is unaffected.
    /// Forward and backward hooks already attached stay in force; the recorded gradient at a hook point is what flows
    /// upstream from it (after its own backward hooks). Toggling the weights' <c>requires_grad</c> makes the call unsafe
    /// to run concurrently with another pass on the same model that records gradients (training).
    /// </summary>
    /// <param name="tokens">Token ids [batch, pos] (or [pos]).</param>
    /// <param name="metric">
    /// Logits [batch, pos, d_vocab] → a one-element tensor computed from them (e.g. the mean of a per-sequence metric);
    /// it must not detach the logits.
    /// </param>
    /// <param name="namesFilter">The hook names to record (null: every hook point except the per-head <c>hook_result</c>, as for <c>RunWithCache</c>).</param>
    /// <param name="attentionMask">The attention mask [batch, pos] of a padded batch (null: no padding).</param>
    /// <param name="cancellationToken">Checked before the forward and before the backward pass.</param>
    /// <exception cref="InterpException">The filter accepts no hook point, or the metric does not return one value computed from the logits.</exception>
    /// <exception cref="HookException">A forward or backward hook failed.</exception>
    public GradientCache RunWithCacheAndGradients(Tensor tokens, Func<Tensor, Tensor> metric, Func<string, bool>? namesFilter = null,
        Tensor? attentionMask = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(metric);
        namesFilter ??= name => !HookNames.Is(name, HookNames.Result);
        var points = HookPoints.Where(h => namesFilter(h.Name)).ToArray();
        if (points.Length == 0)
            throw new InterpException($"RunWithCacheAndGradients: the names filter accepts none of the {HookPoints.Count} hook points of {Config.Name} (e.g. {string.Join(", ", HookPoints.Take(3).Select(h => h.Name))})");
        cancellationToken.ThrowIfCancellationRequested();

        var activations = new ActivationCache();
        var recorded = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var frozen = parameters().Where(p => p.requires_grad).ToArray();
        try
        {
            using var scope = NewDisposeScope();
            foreach (var p in frozen) p.requires_grad_(false);
            using var gradients = enable_grad();
            var forwardHooks = points.Select(h => (h.Name, (HookFunction)((activation, _) =>
            {
                activations.Add(h.Name, activation.detach().DetachFromDisposeScope());
                // The first accepted hook point (nothing upstream requires a gradient) starts the recorded graph.
                return activation.requires_grad || !activation.is_floating_point() ? null : activation.detach().requires_grad_(true);
            }))).ToArray();
            var backwardHooks = points.Select(h => (h.Name, (BackwardHookFunction)((gradient, _) =>
            {
                if (recorded.Remove(h.Name, out var old)) old.Dispose();
                recorded[h.Name] = gradient.detach().clone().DetachFromDisposeScope();
                return null;
            }))).ToArray();

            Tensor logits;
            using (Hooks(forwardHooks))
            using (BackwardHooks(backwardHooks))
                logits = forward(tokens, attentionMask);
            var value = metric(logits);
            if (value is null || value.NumberOfElements != 1 || !value.is_floating_point())
                throw new InterpException($"RunWithCacheAndGradients: the metric must return one floating-point value (e.g. the mean of per-sequence values), got {(value is null ? "null" : $"{value.dtype} [{string.Join(", ", value.shape)}]")}");
            if (!value.requires_grad)
                throw new InterpException("RunWithCacheAndGradients: the metric's value does not depend on the logits through any recorded hook point (was it computed from detached logits, under no_grad, or from a number?)");
            double metricValue = value.detach().to(ScalarType.Float64).item<double>();
            cancellationToken.ThrowIfCancellationRequested();
            Backward(value.reshape(Array.Empty<long>()));

            var grads = new ActivationCache();
            foreach (var name in activations.Names)
            {
                if (recorded.Remove(name, out var g)) grads.Add(name, g);
                else grads.Add(name, zeros_like(activations[name]).DetachFromDisposeScope()); // no path to the metric
            }
            return new GradientCache(metricValue, logits.detach().DetachFromDisposeScope(), activations, grads);
        }
        catch
        {
            activations.Dispose();
            throw;
        }
        finally
        {
            foreach (var g in recorded.Values) g.Dispose();
            foreach (var p in frozen) p.requires_grad_(true);
        }
    }
}

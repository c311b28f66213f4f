using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// The keys and values every attention layer has computed so far (TransformerLens's HookedTransformerKeyValueCache),
/// so that a pass over new tokens (<see cref="HookedTransformer.ForwardWithCache"/>) attends to the earlier ones
/// without recomputing them. Per layer it holds the keys after rotary (what <c>hook_rot_k</c> sees; <c>hook_k</c>
/// without rotary) and the values (<c>hook_v</c>), [batch, pos, kv_head_index, d_head], before grouped-query heads are
/// repeated; and, for all layers, which cached positions are padding and how many real tokens each row has, from which
/// the new tokens' positions continue. The buffers hold <see cref="Capacity"/> positions and double when full (at most
/// n_ctx), so a decode step copies only its own keys and values. Keys and values are stored without gradient history.
/// It owns its tensors: dispose it to free them.
/// </summary>
public sealed class KeyValueCache : IDisposable
{
    private enum RowState : byte { NoRealToken, Open, Closed }

    private readonly Tensor?[] _keys, _values; // [batch, capacity, kv_head, d_head]
    private Tensor? _padding;                    // bool [batch, capacity], true at padding; null while no position is padded
    private long[] _realTokens = [];
    private RowState[] _states = [];
    private Pending? _pending;
    private bool _disposed;

    /// <summary>A pass in progress: where its positions start, and each row's counts once it commits.</summary>
    private sealed record Pending(int Start, int Count, long[] RealTokens, RowState[] States);

    /// <summary>
    /// An empty cache for <paramref name="model"/>. <paramref name="capacity"/> positions are allocated at the first
    /// pass (when the batch size is known); more are added by doubling. Pass the final length when it is known
    /// (generation passes prompt + new tokens) to allocate once.
    /// </summary>
    /// <exception cref="InterpException">The model is a bidirectional encoder, or the capacity is negative.</exception>
    public KeyValueCache(HookedTransformer model, int capacity = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.EnsureCausal("a key/value cache");
        if (capacity < 0) throw new InterpException($"KeyValueCache: capacity must not be negative, got {capacity}");
        Model = model;
        Capacity = Math.Min(capacity, model.Config.NCtx);
        _keys = new Tensor?[model.Config.NLayers];
        _values = new Tensor?[model.Config.NLayers];
    }

    /// <summary>The model whose keys and values these are.</summary>
    public HookedTransformer Model { get; }

    /// <summary>Rows of the batch (0 until the first pass, which fixes it).</summary>
    public int Batch { get; private set; }

    /// <summary>Positions held, padding included: the key axis of the next pass starts here.</summary>
    public int Length { get; private set; }

    /// <summary>Positions the buffers hold before they grow.</summary>
    public int Capacity { get; private set; }

    /// <summary>Each row's number of real (unpadded) tokens so far: the position of its next real token.</summary>
    public IReadOnlyList<long> RealTokens => _realTokens;

    /// <summary>The keys of <paramref name="layer"/> so far, [batch, Length, kv_head_index, d_head] (a view of the buffer).</summary>
    /// <exception cref="InterpException">The layer is outside the model, or nothing is cached yet.</exception>
    public Tensor Keys(int layer) => View(_keys, layer, "keys");

    /// <summary>The values of <paramref name="layer"/> so far, [batch, Length, kv_head_index, d_head] (a view of the buffer).</summary>
    /// <exception cref="InterpException">The layer is outside the model, or nothing is cached yet.</exception>
    public Tensor Values(int layer) => View(_values, layer, "values");

    /// <summary>bool [batch, Length], true at padded positions; null when no cached position is padding.</summary>
    public Tensor? KeyPadding()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _padding is null || Length == 0 ? null : _padding.narrow(1, 0, Length);
    }

    private Tensor View(Tensor?[] buffers, int layer, string what)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (layer < 0 || layer >= buffers.Length)
            throw new InterpException($"KeyValueCache: layer {layer} is outside [0, {buffers.Length})");
        if (Length == 0 || buffers[layer] is not { } buffer)
            throw new InterpException($"KeyValueCache: no {what} cached yet (run a pass with HookedTransformer.ForwardWithCache first)");
        return buffer.narrow(1, 0, Length);
    }

    /// <summary>
    /// Starts a pass over <paramref name="count"/> new positions of <paramref name="batch"/> rows whose real tokens are
    /// <paramref name="real"/> (row-major [batch, count]; null: all real): checks that the rows continue the cached ones,
    /// grows the buffers and writes the new padding, and returns the pass's context (the new tokens' positions, the
    /// padding of every key). The cache changes only when <see cref="Commit"/> follows.
    /// </summary>
    internal AttentionContext Begin(bool[]? real, int batch, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_pending is not null) throw new InvalidOperationException("KeyValueCache: a pass is already in progress");
        if (Batch != 0 && batch != Batch)
            throw new InvalidTokensException($"the key/value cache holds a batch of {Batch} rows, but the tokens have {batch}");
        int nCtx = Model.Config.NCtx;
        if (Length + count > nCtx)
            throw new InvalidTokensException($"the key/value cache holds {Length} positions; {count} more would exceed the model's context n_ctx = {nCtx}");
        if (Batch == 0)
        {
            Batch = batch;
            _realTokens = new long[batch];
            _states = new RowState[batch];
        }

        // Each row's tokens over the cache and this pass: padding, then real tokens, then padding (left or right padding).
        var realTokens = (long[])_realTokens.Clone();
        var states = (RowState[])_states.Clone();
        var positions = new long[batch * count];
        bool padded = false;
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < count; i++)
            {
                bool isReal = real is null || real[b * count + i];
                if (isReal)
                {
                    if (states[b] == RowState.Closed)
                        throw new InvalidTokensException(
                            $"attention mask row {b}: position {i} of this pass (position {Length + i} of the cached sequence) is a real token after padding that follows real tokens; the real tokens must be contiguous (left or right padding)");
                    states[b] = RowState.Open;
                    realTokens[b]++;
                }
                else
                {
                    padded = true;
                    if (states[b] == RowState.Open) states[b] = RowState.Closed;
                }
                // A real token's position counts the real tokens before it; padding gets the last one's (meaningless).
                positions[b * count + i] = Math.Max(0, realTokens[b] - 1);
            }

        int start = Length;
        Reserve(start + count);
        if (padded && _padding is null)
            _padding = zeros(Batch, Capacity, ScalarType.Bool, Model.Device).DetachFromDisposeScope();
        if (_padding is not null)
        {
            var isPadding = new bool[batch * count];
            for (int j = 0; j < isPadding.Length; j++) isPadding[j] = real is not null && !real[j];
            _padding.narrow(1, start, count).copy_(tensor(isPadding, [batch, count]));
        }
        // Positions 0…count−1 while nothing is cached and nothing padded: the plain forward's null.
        Tensor? positionTensor = start == 0 && !padded ? null : tensor(positions, [batch, count]).to(Model.Device);
        _pending = new Pending(start, count, realTokens, states);
        return new AttentionContext(_padding?.narrow(1, 0, start + count), positionTensor, this);
    }

    /// <summary>
    /// Writes layer <paramref name="layer"/>'s keys and values of the pass in progress, k and v [batch, count, kv_head,
    /// d_head], and returns every key and value so far, [batch, Length + count, kv_head, d_head].
    /// </summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        var pending = _pending ?? throw new InvalidOperationException("KeyValueCache: no pass in progress (use HookedTransformer.ForwardWithCache)");
        if (k.shape[1] != pending.Count || k.shape[0] != Batch)
            throw new InvalidOperationException($"KeyValueCache: layer {layer} appends [{string.Join(", ", k.shape)}], the pass has {Batch} × {pending.Count} positions");
        var keys = _keys[layer]!;
        var values = _values[layer]!;
        keys.narrow(1, pending.Start, pending.Count).copy_(k.detach());
        values.narrow(1, pending.Start, pending.Count).copy_(v.detach());
        if (is_grad_enabled())
        {
            // The new keys keep their gradient history in this pass; the cached ones have none.
            return pending.Start == 0 ? (k, v)
                : (cat([keys.narrow(1, 0, pending.Start), k], 1), cat([values.narrow(1, 0, pending.Start), v], 1));
        }
        int end = pending.Start + pending.Count;
        return (keys.narrow(1, 0, end), values.narrow(1, 0, end));
    }

    /// <summary>Ends the pass in progress: its positions become part of the cache.</summary>
    internal void Commit()
    {
        var pending = _pending ?? throw new InvalidOperationException("KeyValueCache: no pass in progress");
        Length = pending.Start + pending.Count;
        _realTokens = pending.RealTokens;
        _states = pending.States;
        _pending = null;
    }

    /// <summary>Drops a pass that did not finish (a hook threw, or it was cancelled): the cache stays as it was.</summary>
    internal void Abandon() => _pending = null;

    /// <summary>Makes room for <paramref name="needed"/> positions: the first allocation, or doubling (at most n_ctx).</summary>
    private void Reserve(int needed)
    {
        if (_keys[0] is not null && needed <= Capacity) return;
        var cfg = Model.Config;
        int capacity = _keys[0] is null ? Math.Max(needed, Capacity) : Math.Max(needed, Math.Min(cfg.NCtx, 2 * Capacity));
        capacity = Math.Max(capacity, Math.Min(cfg.NCtx, 16));
        var dtype = Model.ComputeDType;
        var device = Model.Device;
        for (int l = 0; l < _keys.Length; l++)
        {
            _keys[l] = Grow(_keys[l]);
            _values[l] = Grow(_values[l]);
        }
        if (_padding is not null)
        {
            var padding = zeros(Batch, capacity, ScalarType.Bool, device).DetachFromDisposeScope();
            padding.narrow(1, 0, Length).copy_(_padding.narrow(1, 0, Length));
            _padding.Dispose();
            _padding = padding;
        }
        Capacity = capacity;

        Tensor Grow(Tensor? old)
        {
            var buffer = zeros([Batch, capacity, cfg.KvHeads, cfg.HeadDim], dtype, device).DetachFromDisposeScope();
            if (old is null) return buffer;
            if (Length > 0) buffer.narrow(1, 0, Length).copy_(old.narrow(1, 0, Length));
            old.Dispose();
            return buffer;
        }
    }

    /// <summary>Frees the buffers.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _keys.Concat(_values)) t?.Dispose();
        _padding?.Dispose();
    }
}

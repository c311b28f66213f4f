using System.Diagnostics;
using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Training.Saes;

/// <summary>
/// Streams a model's activations at one hook point over a corpus, as SAELens's <c>ActivationsStore</c> does: context
/// windows (<see cref="TokenWindows"/>) go through the model <c>StoreBatchSizePrompts</c> at a time under
/// <c>no_grad</c>, recording only the training hook; the activations [n_tokens, d_in] fill a buffer of
/// <c>BufferTokens</c> that is shuffled, and training batches come from its first half; when that is used up the second
/// half moves to the front, new activations fill the back and the whole buffer is shuffled again. Memory is bounded by
/// the buffer; the corpus is read lazily and started again when it ends. The forward pass runs to the end (the model
/// has no early exit at an arbitrary hook), so its cost is a full forward per window.
/// </summary>
public sealed class ActivationBuffer : IActivationSource, IDisposable
{
    private readonly HookedTransformer _model;
    private readonly ISaeTokenSource _source;
    private readonly int _contextSize, _storeBatch, _capacity;
    private readonly int? _bos;
    private readonly bool _prependBos;
    private readonly Generator _generator;
    private readonly CancellationToken _ct;
    private IEnumerator<int[]>? _windows;
    private bool _windowSeenThisPass;
    private Tensor? _buffer;   // [capacity, d_in] float32, shuffled
    private int _next;         // next unused row of the served half
    private readonly Stopwatch _forwardClock = new();

    /// <summary>A buffer over <paramref name="source"/> at <paramref name="hookName"/>.</summary>
    /// <exception cref="InterpException">The hook point is unknown or its activation is not [batch, pos, …].</exception>
    public ActivationBuffer(HookedTransformer model, string hookName, ISaeTokenSource source, int contextSize, int storeBatchSizePrompts,
        int bufferTokens, int? bos, bool prependBos, long seed, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentException.ThrowIfNullOrEmpty(hookName);
        var hook = model.GetHookPoint(hookName);
        if (hook.Axes.Count < 3 || hook.Axes[0] != "batch" || hook.Axes[1] != "pos" || hook.Axes.Skip(2).Any(a => a.Contains("pos", StringComparison.Ordinal)))
            throw new InterpException($"hook {hookName} has axes [{string.Join(", ", hook.Axes)}]: an SAE trains on an activation [batch, pos, …] with one vector per token");
        if (contextSize > model.Config.NCtx)
            throw new InterpException($"context_size {contextSize} is longer than {model.Config.Name}'s context n_ctx = {model.Config.NCtx}");
        if (prependBos && bos is null)
            throw new InterpException($"prepend_bos needs a BOS token, and {model.Config.Name} has none (its tokenizer defines no BOS): pass a BOS id or turn prepend_bos off");
        if (bufferTokens < 2) throw new ArgumentException($"the buffer must hold at least 2 activations, got {bufferTokens}", nameof(bufferTokens));
        _model = model;
        _source = source;
        HookName = hookName;
        var shape = model.HookShape(hook, 1, 1);
        DIn = (int)shape.Skip(2).Aggregate(1L, (a, b) => a * b);
        (_contextSize, _storeBatch, _capacity, _bos, _prependBos, _ct) = (contextSize, storeBatchSizePrompts, bufferTokens, bos, prependBos, cancellationToken);
        _generator = new Generator((ulong)seed);
    }

    /// <summary>The hook point read.</summary>
    public string HookName { get; }
    /// <summary>Width of one activation (the trailing axes flattened: n_heads × d_head for <c>hook_z</c>).</summary>
    public int DIn { get; }
    /// <summary>Tokens run through the model so far.</summary>
    public long TokensForwarded { get; private set; }
    /// <summary>Wall time spent in the model's forward passes so far.</summary>
    public TimeSpan ForwardTime => _forwardClock.Elapsed;
    /// <summary>Times the corpus has been started again after its end.</summary>
    public int Epochs { get; private set; }

    /// <summary>The next <paramref name="size"/> activations [size, d_in] float32 (a new tensor the caller owns).</summary>
    /// <exception cref="InterpException">The corpus holds no complete context window.</exception>
    public Tensor NextBatch(int size)
    {
        if (size <= 0 || size > _capacity / 2) throw new ArgumentException($"a batch of {size} must lie in [1, buffer / 2 = {_capacity / 2}]", nameof(size));
        using var scope = NewDisposeScope();
        if (_buffer is null)
        {
            _buffer = Activations(_capacity).DetachFromDisposeScope();
            Shuffle();
        }
        int half = _capacity / 2;
        if (_next + size > half)
        {
            // Keep the unserved rows, refill the rest, shuffle everything.
            using var kept = _buffer.narrow(0, _next, _capacity - _next).clone();
            var fresh = Activations(_next);
            var next = cat([kept, fresh], 0);
            _buffer.Dispose();
            _buffer = next.DetachFromDisposeScope();
            Shuffle();
        }
        var batch = _buffer.narrow(0, _next, size).clone();
        _next += size;
        return batch.MoveToOuterDisposeScope();
    }

    private void Shuffle()
    {
        using var scope = NewDisposeScope();
        var perm = randperm(_capacity, generator: _generator);
        var shuffled = _buffer!.index_select(0, perm).DetachFromDisposeScope();
        _buffer.Dispose();
        _buffer = shuffled;
        _next = 0;
    }

    /// <summary><paramref name="count"/> new activations [count, d_in] from the next windows of the corpus.</summary>
    private Tensor Activations(int count)
    {
        var parts = new List<Tensor>();   // owned here, outside every dispose scope
        try
        {
            int have = 0;
            while (have < count)
            {
                _ct.ThrowIfCancellationRequested();
                var acts = Forward(NextWindows(_storeBatch));
                parts.Add(acts);
                have += (int)acts.shape[0];
            }
            // A new tensor in the caller's dispose scope.
            return cat(parts, 0).narrow(0, 0, count);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>The activations [windows × context, d_in] of one forward pass, outside every dispose scope (the caller disposes them).</summary>
    private Tensor Forward(List<int[]> windows)
    {
        var ids = new long[windows.Count * _contextSize];
        for (int i = 0; i < windows.Count; i++)
            for (int j = 0; j < _contextSize; j++) ids[i * _contextSize + j] = windows[i][j];
        using var tokens = tensor(ids, [windows.Count, _contextSize]);
        Tensor? captured = null;
        _forwardClock.Start();
        try
        {
            using (no_grad())
            using (_model.Hooks((HookName, (act, _) =>
            {
                captured = act.detach().to(ScalarType.Float32, CPU).reshape(-1, DIn).clone();
                captured.DetachFromDisposeScope();
                return null;
            })))
            {
                _model.forward(tokens).Dispose();
            }
        }
        finally
        {
            _forwardClock.Stop();
        }
        TokensForwarded += ids.Length;
        return captured ?? throw new InterpException($"hook {HookName} did not fire during the forward pass");
    }

    private List<int[]> NextWindows(int n)
    {
        var list = new List<int[]>(n);
        while (list.Count < n)
        {
            _windows ??= TokenWindows.Pack(_source.Documents(_ct), _contextSize, _bos, _prependBos).GetEnumerator();
            if (_windows.MoveNext())
            {
                _windowSeenThisPass = true;
                list.Add(_windows.Current);
                continue;
            }
            _windows.Dispose();
            _windows = null;
            if (!_windowSeenThisPass)
                throw new InterpException($"corpus {_source.Description} holds no complete context window of {_contextSize} tokens");
            _windowSeenThisPass = false;
            Epochs++;
        }
        return list;
    }

    /// <summary>Frees the buffer.</summary>
    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
        _windows?.Dispose();
        _generator.Dispose();
    }
}

using static TorchSharp.torch;

namespace Interp.Hooks;

/// <summary>
/// The activations recorded by <c>RunWithCache</c>, by hook name (TransformerLens's ActivationCache).
/// It owns its tensors: dispose it to free them.
/// </summary>
public sealed class ActivationCache : IDisposable
{
    private readonly Dictionary<string, Tensor> _activations = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>The cached hook names, in the order the forward pass reached them.</summary>
    public IReadOnlyList<string> Names => _order;
    private readonly List<string> _order = new();

    /// <summary>Number of cached activations.</summary>
    public int Count => _order.Count;

    /// <summary>The activation recorded at hook <paramref name="name"/>.</summary>
    public Tensor this[string name]
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_activations.TryGetValue(name, out var t)) return t;
            throw new HookException(name,
                $"not in the cache ({Count} activations cached). Closest cached names: {string.Join(", ", NameSuggestions.Closest(name, _order))}");
        }
    }

    /// <summary>TransformerLens-style look-up: <c>cache["pattern", 0]</c> is <c>blocks.0.attn.hook_pattern</c>.</summary>
    public Tensor this[string shortName, int layer] => this[HookNames.ActName(shortName, layer)];

    /// <summary>True when <paramref name="name"/> was cached.</summary>
    public bool Contains(string name) => _activations.ContainsKey(name);

    /// <summary>Each cached activation's shape.</summary>
    public IReadOnlyDictionary<string, long[]> Shapes => _order.ToDictionary(n => n, n => _activations[n].shape);

    /// <summary>Total bytes held by the cached tensors.</summary>
    public long Bytes => _activations.Values.Sum(t => t.NumberOfElements * t.ElementSize);

    /// <summary>Records (or overwrites) an activation; the cache takes ownership of <paramref name="activation"/>.</summary>
    public void Add(string name, Tensor activation)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_activations.Remove(name, out var old)) old.Dispose();
        else _order.Add(name);
        _activations[name] = activation;
    }

    /// <summary>Frees every cached tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _activations.Values) t.Dispose();
        _activations.Clear();
    }
}

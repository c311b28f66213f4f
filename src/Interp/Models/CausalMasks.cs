using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// The causal (and sliding-window) masks of attention, bool [1, 1, query_pos, key_pos], true where a query may not
/// see a key: built once per (shape, offset, window, device) and shared by every layer and model of the process, so
/// that a forward pass does not rebuild the same mask in each layer (six tensors each). The most recent
/// <see cref="Capacity"/> masks of at most <see cref="MaxElements"/> entries are kept; larger ones are built per call.
/// Callers only read them; an evicted mask is left to the finalizer, as a pass on another thread may still hold it.
/// </summary>
internal static class CausalMasks
{
    /// <summary>Masks kept.</summary>
    public const int Capacity = 8;
    /// <summary>The largest mask kept (query_pos × key_pos): 16 MiB of bools, 4096².</summary>
    public const long MaxElements = 1L << 24;

    private static readonly LinkedList<(Key Key, Tensor Mask)> Recent = new();
    private static readonly Lock Gate = new();

    private readonly record struct Key(long Queries, long Keys, long Offset, int Window, DeviceType Type, int Index);

    /// <summary>
    /// Query i sits at index <paramref name="offset"/> + i of the key axis and sees keys k ≤ that index (and, with a
    /// window W &gt; 0, k &gt; index − W).
    /// </summary>
    public static Tensor Get(long queries, long keys, long offset, int window, Device device)
    {
        if (queries * keys > MaxElements) return Build(queries, keys, offset, window, device);
        var key = new Key(queries, keys, offset, window, device.type, device.index);
        lock (Gate)
        {
            for (var node = Recent.First; node is not null; node = node.Next)
                if (node.Value.Key == key)
                {
                    if (node != Recent.First)
                    {
                        Recent.Remove(node);
                        Recent.AddFirst(node);
                    }
                    return node.Value.Mask;
                }
            var mask = Build(queries, keys, offset, window, device).DetachFromDisposeScope();
            Recent.AddFirst((key, mask));
            // Dropped, not disposed: another thread's pass may still be using it; the finalizer frees it once unreachable.
            if (Recent.Count > Capacity) Recent.RemoveLast();
            return mask;
        }
    }

    private static Tensor Build(long queries, long keys, long offset, int window, Device device)
    {
        using var scope = NewDisposeScope();
        using var first = offset.ToScalar();
        using var end = (offset + queries).ToScalar();
        using var keyCount = keys.ToScalar();
        var qi = arange(first, end, Scalars.One, ScalarType.Int64, device).unsqueeze(1);        // [query_pos, 1]
        var ki = arange(Scalars.Zero, keyCount, Scalars.One, ScalarType.Int64, device).unsqueeze(0); // [1, key_pos]
        var blocked = ki.gt(qi);
        if (window > 0)
        {
            using var w = ((long)window).ToScalar();
            blocked = blocked.logical_or(qi.sub(ki).ge(w)); // sees keys q − W < k ≤ q: W keys, itself included
        }
        return blocked.view(1, 1, queries, keys).MoveToOuterDisposeScope();
    }
}

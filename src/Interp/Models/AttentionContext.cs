using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// What every attention layer of one forward pass needs besides the residual stream: where the padding is and the
/// position of each token, and the key/value cache the pass extends (if any). Built once per pass by
/// <see cref="HookedTransformer"/>; the tensors belong to the pass.
/// </summary>
public sealed class AttentionContext
{
    /// <summary>A pass with no padding and positions 0…pos−1.</summary>
    public static AttentionContext None { get; } = new(null, null);

    /// <summary>Creates a context.</summary>
    /// <param name="keyPadding">bool [batch, key_pos], true at padded keys; null when nothing is padded.</param>
    /// <param name="positions">int64 [batch, pos], each token's position; null for 0…pos−1 in every row.</param>
    public AttentionContext(Tensor? keyPadding, Tensor? positions) : this(keyPadding, positions, null) { }

    /// <summary>A context whose pass extends <paramref name="cache"/> (built by <see cref="KeyValueCache"/> itself).</summary>
    internal AttentionContext(Tensor? keyPadding, Tensor? positions, KeyValueCache? cache)
    {
        KeyPadding = keyPadding;
        Positions = positions;
        Cache = cache;
    }

    /// <summary>
    /// bool [batch, key_pos], true at padded keys; null when nothing is padded. With a <see cref="Cache"/> the key axis
    /// covers the cached positions and then the new ones.
    /// </summary>
    public Tensor? KeyPadding { get; }

    /// <summary>int64 [batch, pos]: each token's position (counted from its row's first real token); null for 0…pos−1.</summary>
    public Tensor? Positions { get; }

    /// <summary>
    /// The key/value cache this pass extends (null: none): each attention layer appends its new keys and values and
    /// attends to every cached one, its queries sitting after the cached positions on the key axis.
    /// </summary>
    public KeyValueCache? Cache { get; }
}

using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// What every attention layer of one forward pass needs besides the residual stream: where the padding is and the
/// position of each token. Built once per pass by <see cref="HookedTransformer"/>; the tensors belong to the pass.
/// </summary>
public sealed class AttentionContext
{
    /// <summary>A pass with no padding and positions 0…pos−1.</summary>
    public static AttentionContext None { get; } = new(null, null);

    /// <summary>Creates a context.</summary>
    /// <param name="keyPadding">bool [batch, key_pos], true at padded keys; null when nothing is padded.</param>
    /// <param name="positions">int64 [batch, pos], each token's position; null for 0…pos−1 in every row.</param>
    public AttentionContext(Tensor? keyPadding, Tensor? positions)
    {
        KeyPadding = keyPadding;
        Positions = positions;
    }

    /// <summary>bool [batch, key_pos], true at padded keys; null when nothing is padded.</summary>
    public Tensor? KeyPadding { get; }

    /// <summary>int64 [batch, pos]: each token's position (counted from its row's first real token); null for 0…pos−1.</summary>
    public Tensor? Positions { get; }
}

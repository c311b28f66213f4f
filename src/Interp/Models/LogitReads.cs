using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// What a metric reads of the logits [batch, pos, d_vocab]: one position per sequence and a few
/// vocabulary entries (a logit difference reads one position and two columns of W_U). A pass that knows it unembeds
/// only those (<see cref="HookedTransformer.ForwardFrom(int, Tensor, Tensor?, LogitReads)"/>): the final norm at
/// one position per sequence and a product with those columns, instead of all d_vocab logits at every position.
/// Declared with <c>Metrics.Declare</c>; the metrics of <c>Metrics.LogitDiff</c> (one prompt or a prompt set) declare theirs.
/// </summary>
/// <param name="Positions">The position read for each of n prompts (negative: from the end); a batch of k·n sequences is the prompts tiled k times, sequence r reading Positions[r mod n].</param>
/// <param name="Columns">The vocabulary ids read, in the order <paramref name="Evaluate"/> expects them.</param>
/// <param name="Evaluate">The read logits [batch, Columns.Count] (sequence r at its position) → the per-sequence metric [batch].</param>
public sealed record LogitReads(IReadOnlyList<int> Positions, IReadOnlyList<int> Columns, Func<Tensor, Tensor> Evaluate);

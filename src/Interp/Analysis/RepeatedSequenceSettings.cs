using Interp.Loading;

namespace Interp.Analysis;

/// <summary>
/// The input most analysis passes run on: <see cref="Batch"/> random sequences [first token] + r + r, r of
/// <see cref="Half"/> tokens drawn from [<see cref="Low"/>, <see cref="High"/>), and how to draw them for a model.
/// </summary>
public sealed record RepeatedSequenceSettings
{
    /// <summary>Sequences.</summary>
    public int Batch { get; init; } = 32;
    /// <summary>Length of the random sequence that is repeated (capped by the context).</summary>
    public int Half { get; init; } = 24;
    /// <summary>Token that starts every sequence (null: the tokenizer's BOS, if any).</summary>
    public int? FirstToken { get; init; }
    /// <summary>Lowest token id drawn (null: just above the special ids at the low end).</summary>
    public int? Low { get; init; }
    /// <summary>One past the highest token id drawn (null: the vocabulary size, below a special id at the high end).</summary>
    public int? High { get; init; }

    /// <summary>The sequences for <paramref name="loaded"/>, seeded (<see cref="HeadDetection.RepeatedRandomTokens(LoadedModel, int, int, long, int?, int?, int?)"/>).</summary>
    public RepeatedTokens Draw(LoadedModel loaded, long seed) =>
        HeadDetection.RepeatedRandomTokens(loaded, Batch, Half, seed, FirstToken, Low, High);
}

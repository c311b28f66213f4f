using Interp.Experiments;
using Interp.Loading;
using Interp.Training;

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

    /// <summary>
    /// The settings an experiment was run with: options <c>batch</c> (default <paramref name="batch"/>), <c>half</c>
    /// (24), <c>low</c> and <c>high</c>; the first token is the built-in model's BOS for the built-in model, otherwise
    /// the tokenizer's.
    /// </summary>
    public static RepeatedSequenceSettings FromOptions(ExperimentContext context, int batch = 32) => new()
    {
        Batch = context.IntOption("batch", batch),
        Half = context.IntOption("half", 24),
        Low = context.Options.ContainsKey("low") ? context.IntOption("low", 0) : null,
        High = context.Options.ContainsKey("high") ? context.IntOption("high", 0) : null,
        FirstToken = InductionRecipe.FirstTokenFor(context.Model.Model.Config),
    };
}

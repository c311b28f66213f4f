using System.ComponentModel;
using Interp.Analysis;
using Interp.Models;
using Interp.Training;

namespace Interp.Experiments;

/// <summary>
/// The settings of experiments that run on repeated random sequences [first token] + r + r (<c>batch</c>, <c>half</c>,
/// <c>low</c>, <c>high</c>); an experiment's settings record derives from it. The first token is the built-in model's
/// BOS for the built-in model, otherwise the tokenizer's.
/// </summary>
public record RepeatedInputSettings
{
    /// <summary>Sequences.</summary>
    [Description("sequences of repeated random tokens")]
    public int Batch { get; init; } = 32;
    /// <summary>Length of the random sequence that is repeated (capped by the context).</summary>
    [Description("length of the random sequence that is repeated (capped by the context)")]
    public int Half { get; init; } = 24;
    /// <summary>Lowest token id drawn (null: just above the special ids at the low end).</summary>
    [Description("lowest token id drawn (none: just above the special ids at the low end)")]
    public int? Low { get; init; }
    /// <summary>One past the highest token id drawn (null: the vocabulary size, below a special id at the high end).</summary>
    [Description("one past the highest token id drawn (none: the vocabulary size, below a special id at the high end)")]
    public int? High { get; init; }

    /// <summary>The input these settings draw for a model of <paramref name="config"/>.</summary>
    public RepeatedSequenceSettings Input(ModelConfig config) =>
        new() { Batch = Batch, Half = Half, Low = Low, High = High, FirstToken = InductionRecipe.FirstTokenFor(config) };
}

using Interp.Experiments;
using Interp.Models;

namespace Interp.Analysis;

/// <summary>The analysis passes' shared first step: process the weights as TransformerLens's <c>from_pretrained</c> does and say so in the report.</summary>
internal static class ProcessedWeights
{
    /// <summary>
    /// Applies <see cref="WeightProcessingOptions.Default"/> to <paramref name="model"/> and adds a report line naming the
    /// steps actually applied (centring the writing weights is skipped for RMSNorm models) and <paramref name="consequence"/>.
    /// </summary>
    public static void Apply(ExperimentContext context, HookedTransformer model, string consequence)
    {
        var applied = model.ProcessWeights(WeightProcessingOptions.Default);
        context.AddText($"Weights processed as TransformerLens's `from_pretrained` does ({applied.Describe()}): {consequence}");
    }
}

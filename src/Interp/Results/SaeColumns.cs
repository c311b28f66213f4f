namespace Interp.Results;

/// <summary>
/// The column names the SAE feature tables share (<c>sae_feature_acts</c>, <c>sae_feature_stats</c>,
/// <c>sae_feature_contexts</c>, <c>sae_logit_effects</c>, <c>sae_message_alignment</c>), beside the shared
/// <see cref="Columns"/> (<c>sequence</c>, <c>position</c>, <c>token_id</c>, <c>token</c>, <c>layer</c>, <c>head</c>, <c>value</c>), so that the tables join on them.
/// Each table's own columns are declared with the result it is written from (<c>SaeFeatureActivations.ToTable</c>, …).
/// </summary>
public static class SaeColumns
{
    /// <summary>SAE feature index, int32, in [0, d_sae).</summary>
    public const string Feature = "feature";
}

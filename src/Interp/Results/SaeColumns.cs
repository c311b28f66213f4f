namespace Interp.Results;

/// <summary>
/// The column names the SAE feature tables share (<c>sae_feature_acts</c>, <c>sae_feature_stats</c>,
/// <c>sae_feature_contexts</c>, <c>sae_logit_effects</c>, <c>sae_message_alignment</c>), beside the shared
/// <see cref="Columns"/> (<c>position</c>, <c>layer</c>, <c>head</c>, <c>value</c>), so that the tables join on them.
/// Each table's own columns are declared with the result it is written from (<c>SaeFeatureActivations.ToTable</c>, …).
/// </summary>
public static class SaeColumns
{
    /// <summary>SAE feature index, int32, in [0, d_sae).</summary>
    public const string Feature = "feature";
    /// <summary>Index of the sequence (the row of the token batch), int32.</summary>
    public const string Sequence = "sequence";
    /// <summary>1-based rank within a group (1 = the largest), int32.</summary>
    public const string Rank = "rank";
    /// <summary>Token id, int32.</summary>
    public const string TokenId = "token_id";
    /// <summary>The token's display string (string).</summary>
    public const string Token = "token";
}

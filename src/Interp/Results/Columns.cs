namespace Interp.Results;

/// <summary>
/// The long-format column names every table shares, so that tables from many runs concatenate and query together
/// (DuckDB, pandas, Spark): <c>layer</c> and <c>head</c> (int32; −1 where not applicable, e.g. a whole layer),
/// <c>position</c> (int32; −1 = every position), <c>component</c>, <c>metric</c> / <c>score</c> (what was measured),
/// <c>value</c> (the number) and <c>run_id</c> (joins to the run's manifest.json). Each table's own columns are declared
/// beside the record it is written from (<c>AblationSweep.ToTable</c>, <c>HeadScores.ToTable</c>, …).
/// </summary>
public static class Columns
{
    /// <summary>Layer index, int32 (−1: not a layer's).</summary>
    public const string Layer = "layer";
    /// <summary>Head index, int32 (−1: not a head).</summary>
    public const string Head = "head";
    /// <summary>Position in the sequence, int32 (−1: every position).</summary>
    public const string Position = "position";
    /// <summary>What wrote or was measured: <c>embed</c>, <c>pos_embed</c>, <c>head</c>, <c>attn</c>, <c>mlp</c>, <c>bias</c>, ….</summary>
    public const string Component = "component";
    /// <summary>Index of the sequence (the row of the token batch), int32.</summary>
    public const string Sequence = "sequence";
    /// <summary>Token id, int32.</summary>
    public const string TokenId = "token_id";
    /// <summary>The token's display string (string).</summary>
    public const string Token = "token";
    /// <summary>1-based rank within a group (1 = the largest), int32.</summary>
    public const string Rank = "rank";
    /// <summary>The name of the measured quantity.</summary>
    public const string Metric = "metric";
    /// <summary>The name of a head score.</summary>
    public const string Score = "score";
    /// <summary>The number.</summary>
    public const string Value = "value";
    /// <summary>The run a row belongs to (string), joining to <c>manifest.json</c>'s <c>run_id</c>.</summary>
    public const string RunId = "run_id";
}

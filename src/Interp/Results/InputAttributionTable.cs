using Interp.Analysis;

namespace Interp.Results;

/// <summary>
/// The <c>input_attribution</c> table of <see cref="InputAttribution.IntegratedGradients"/>: one row per sequence and
/// real (unpadded) position — <c>sequence</c>, <c>position</c>, <c>token_id</c> int32, <c>token</c> string,
/// <c>attribution</c> double (that token's share of metric − baseline metric), and per sequence the
/// <c>completeness_gap</c> double (Σ attributions − (metric − baseline metric), repeated on its rows).
/// </summary>
public static class InputAttributionTable
{
    /// <summary>Builds the table.</summary>
    /// <param name="result">The attributions.</param>
    /// <param name="tokens">Token ids per sequence, [batch][pos] (each row's real tokens; shorter rows skip the padding).</param>
    /// <param name="tokenText">Each token id's display string.</param>
    /// <exception cref="InterpException">The token rows do not match the attributions.</exception>
    public static ParquetTable Build(InputAttributionResult result, IReadOnlyList<IReadOnlyList<int>> tokens, Func<int, string> tokenText)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(tokenText);
        if (tokens.Count != result.Attributions.Length)
            throw new InterpException($"input_attribution: {tokens.Count} token rows for {result.Attributions.Length} attributed sequences");
        var rows = new ParquetColumns();
        for (int b = 0; b < tokens.Count; b++)
        {
            if (tokens[b].Count > result.Attributions[b].Length)
                throw new InterpException($"input_attribution: sequence {b} has {tokens[b].Count} tokens but {result.Attributions[b].Length} attributed positions");
            double gap = result.CompletenessGap(b);
            for (int p = 0; p < tokens[b].Count; p++)
                rows.Row((Columns.Sequence, b), (Columns.Position, p), (Columns.TokenId, tokens[b][p]), (Columns.Token, tokenText(tokens[b][p])),
                    ("attribution", result.Attributions[b][p]), ("completeness_gap", gap));
        }
        return rows.ToTable();
    }
}

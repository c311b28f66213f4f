using Interp.Analysis;

namespace Interp.Results;

/// <summary>
/// The patching tables: <c>activation_patching</c>'s columns (<c>patch</c>, <c>layer</c>, <c>head</c>, <c>position</c>,
/// <c>value</c>, <c>raw</c>) and, for <c>attribution_patching</c>, a <c>method</c> column saying which method measured
/// the row (<c>activation</c> or <c>attribution</c>) and <c>attribution</c>, the first-order estimate of the change of
/// the metric (NaN on activation rows).
/// </summary>
public static class PatchingTable
{
    /// <summary>The <c>method</c> column.</summary>
    public const string Method = "method";
    /// <summary>The <c>method</c> value of activation patching's rows.</summary>
    public const string ActivationMethod = "activation";
    /// <summary>The <c>method</c> value of attribution patching's rows.</summary>
    public const string AttributionMethod = "attribution";

    /// <summary>
    /// The <c>attribution_patching</c> table: one row per site and method, activation patching's rows first (either list may be empty).
    /// </summary>
    public static ParquetTable Build(IEnumerable<PatchResult> activation, IEnumerable<AttributionResult> attribution)
    {
        ArgumentNullException.ThrowIfNull(activation);
        ArgumentNullException.ThrowIfNull(attribution);
        var rows = new ParquetColumns();
        foreach (var r in activation) Row(rows, r.Site, ActivationMethod, r.Value, r.Raw, double.NaN);
        foreach (var r in attribution) Row(rows, r.Site, AttributionMethod, r.Value, r.Raw, r.Attribution);
        return rows.ToTable();
    }

    private static void Row(ParquetColumns rows, PatchSite site, string method, double value, double raw, double attribution) =>
        rows.Row(("patch", PatchSite.Name(site.Kind)), (Columns.Layer, site.Layer), (Columns.Head, site.Head), (Columns.Position, site.Position),
            (Columns.Value, value), ("raw", raw), (Method, method), ("attribution", attribution));
}

using Interp.Results;

namespace Interp.Experiments;

/// <summary>
/// An interactive view of a run's <c>report.html</c> (<see cref="ExperimentContext.AddViewAsync(ReportView, CancellationToken)"/>). A view names the tables
/// it shows: when the report is written, its data is read from those Parquet files in the run folder, so what the view
/// shows is what the table holds. It is an element <c>&lt;section data-interp-view="KIND"&gt;</c> (<see cref="Kind"/>) that
/// tests and users can find; data above <see cref="ReportViewLimits"/> is cut, and the view says what was left out.
/// </summary>
/// <param name="Title">The view's heading.</param>
/// <param name="Caption">One line under the view: what it shows.</param>
public abstract record ReportView(string Title, string Caption)
{
    /// <summary>The value of the element's <c>data-interp-view</c> attribute.</summary>
    public abstract string Kind { get; }

    /// <summary>The tables (file names in the run folder) the view reads.</summary>
    public abstract IReadOnlyList<string> Tables { get; }
}

/// <summary>
/// The attention explorer (<c>data-interp-view="attention"</c>): every head of the selected sequence as a layer × head grid
/// of thumbnails; the selected head's pattern with token labels on both axes; token strips where hovering a token shows
/// what it attends to and what attends to it. Reads an <see cref="AttentionTable"/> and a <see cref="TokenTable"/>.
/// </summary>
/// <param name="Title">The view's heading.</param>
/// <param name="Caption">One line under the view.</param>
/// <param name="PatternTable">The <see cref="AttentionTable"/> file.</param>
/// <param name="TokenTable">The <see cref="Interp.Results.TokenTable"/> file that labels its positions.</param>
/// <param name="Layer">The layer of the head selected when the page opens.</param>
/// <param name="Head">The head selected when the page opens.</param>
public sealed record AttentionView(string Title, string Caption, string PatternTable, string TokenTable, int Layer = 0, int Head = 0) : ReportView(Title, Caption)
{
    /// <inheritdoc/>
    public override string Kind => "attention";
    /// <inheritdoc/>
    public override IReadOnlyList<string> Tables => [PatternTable, TokenTable];
}

/// <summary>
/// Token-coloured text (<c>data-interp-view="tokens"</c>): each sequence's tokens coloured by a per-token quantity, a
/// tooltip with the value, and a selector for the quantity. Reads a table keyed by <c>sequence</c> and <c>position</c> —
/// a <see cref="TokenValuesTable"/> (long format: <c>quantity</c>, <c>value</c>), or any table with one value column
/// (<paramref name="Quantity"/> null) — and a <see cref="Interp.Results.TokenTable"/> (which may be the same table, when it
/// has <c>token</c> at every position).
/// </summary>
/// <param name="Title">The view's heading.</param>
/// <param name="Caption">One line under the view.</param>
/// <param name="ValueTable">The table of values.</param>
/// <param name="TokenTable">The <see cref="Interp.Results.TokenTable"/> file.</param>
/// <param name="Value">The numeric column shown.</param>
/// <param name="Quantity">The column naming each row's quantity, or null: one quantity, named after <paramref name="Value"/>.</param>
public sealed record TokenValuesView(string Title, string Caption, string ValueTable, string TokenTable, string Value = Columns.Value,
    string? Quantity = TokenValuesTable.Quantity) : ReportView(Title, Caption)
{
    /// <inheritdoc/>
    public override string Kind => "tokens";
    /// <inheritdoc/>
    public override IReadOnlyList<string> Tables => [ValueTable, TokenTable];
}

/// <summary>
/// A heatmap with hover values (<c>data-interp-view="heatmap"</c>): <paramref name="Value"/> of <paramref name="Table"/> by
/// <paramref name="Rows"/> × <paramref name="Columns"/> (layer × head, layer × position, (layer, head) × (layer, head): each
/// axis is one or more columns, labelled by their values joined with '.'), one matrix per value of <paramref name="Facet"/>
/// with a selector. Every (row, column, facet) must have at most one row in the table (<see cref="Where"/> keeps only the
/// rows whose columns hold the given values). The section carries the columns it reads as <c>data-interp-rows</c>,
/// <c>-cols</c>, <c>-value</c>, <c>-facet</c> and <c>-where</c> (JSON), so that a reader can check it against the table.
/// </summary>
/// <param name="Title">The view's heading.</param>
/// <param name="Caption">One line under the view.</param>
/// <param name="Table">The table file.</param>
/// <param name="Rows">The columns whose values are the matrix's rows.</param>
/// <param name="Columns">The columns whose values are the matrix's columns.</param>
/// <param name="Value">The numeric column shown.</param>
/// <param name="Facet">A column with one matrix per value (e.g. <c>score</c>, <c>metric</c>), or null.</param>
public sealed record HeatmapView(string Title, string Caption, string Table, IReadOnlyList<string> Rows, IReadOnlyList<string> Columns,
    string Value = Interp.Results.Columns.Value, string? Facet = null) : ReportView(Title, Caption)
{
    /// <inheritdoc/>
    public override string Kind => "heatmap";
    /// <inheritdoc/>
    public override IReadOnlyList<string> Tables => [Table];
    /// <summary>Only the rows whose named columns hold these values (as text, e.g. <c>["metric"] = "norm"</c>).</summary>
    public IReadOnlyDictionary<string, string> Where { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// The logit lens table (<c>data-interp-view="logit-lens"</c>): per layer and position the top-k tokens the stream predicts
/// when read through the final norm and unembedding, coloured by probability. Reads a <see cref="LogitLensTopTable"/>
/// and a <see cref="Interp.Results.TokenTable"/>.
/// </summary>
/// <param name="Title">The view's heading.</param>
/// <param name="Caption">One line under the view.</param>
/// <param name="LensTable">The <see cref="LogitLensTopTable"/> file.</param>
/// <param name="TokenTable">The <see cref="Interp.Results.TokenTable"/> file.</param>
public sealed record LogitLensView(string Title, string Caption, string LensTable, string TokenTable) : ReportView(Title, Caption)
{
    /// <inheritdoc/>
    public override string Kind => "logit-lens";
    /// <inheritdoc/>
    public override IReadOnlyList<string> Tables => [LensTable, TokenTable];
}

/// <summary>
/// SAE feature cards (<c>data-interp-view="feature"</c>): per feature its density and activation statistics, its
/// top-activating contexts with the activation on every token, and the tokens it promotes and suppresses. Reads
/// SAELens-style tables: <c>sae_feature_stats</c>, <c>sae_feature_contexts</c> and (optionally) <c>sae_logit_effects</c>.
/// </summary>
/// <param name="Title">The view's heading.</param>
/// <param name="Caption">One line under the view.</param>
/// <param name="StatsTable">The <c>sae_feature_stats</c> file.</param>
/// <param name="ContextTable">The <c>sae_feature_contexts</c> file (its features get cards).</param>
/// <param name="LogitEffectTable">The <c>sae_logit_effects</c> file, or null.</param>
public sealed record FeatureView(string Title, string Caption, string StatsTable, string ContextTable, string? LogitEffectTable) : ReportView(Title, Caption)
{
    /// <inheritdoc/>
    public override string Kind => "feature";
    /// <inheritdoc/>
    public override IReadOnlyList<string> Tables => LogitEffectTable is null ? [StatsTable, ContextTable] : [StatsTable, ContextTable, LogitEffectTable];
}

/// <summary>
/// How much data a view puts into <c>report.html</c>: above these bounds a view shows the first sequences, positions,
/// columns or features that fit and says what it left out (the tables keep everything). The defaults keep a view
/// under about 4.5 MB of HTML.
/// </summary>
public sealed record ReportViewLimits
{
    /// <summary>Attention weights per attention view (causal entries of every head of the shown sequences; 5.3 bytes each).</summary>
    public long AttentionWeights { get; init; } = 800_000;
    /// <summary>Token values per tokens view (tokens × quantities).</summary>
    public long TokenValues { get; init; } = 200_000;
    /// <summary>Cells per heatmap (rows × columns × facets).</summary>
    public long HeatmapCells { get; init; } = 100_000;
    /// <summary>Predictions per logit lens view (layers × positions × k).</summary>
    public long LensPredictions { get; init; } = 200_000;
    /// <summary>Feature cards per feature view.</summary>
    public int FeatureCards { get; init; } = 64;
}

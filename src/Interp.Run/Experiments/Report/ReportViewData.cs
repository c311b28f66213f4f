using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Interp.Results;

namespace Interp.Experiments;

/// <summary>
/// Builds a view's <c>&lt;section&gt;</c> of <c>report.html</c> from the Parquet tables it names: the data as JSON parts
/// (one per sequence or feature, parsed by <c>report.js</c> only when shown), cut to <see cref="ReportViewLimits"/> with
/// a note saying what was left out.
/// </summary>
internal static class ReportViewData
{
    // Explicit resolver: `dotnet run file.cs` apps default to trimming-safe JSON, which has none. Compact, and the default
    // encoder escapes <, > and & inside strings, so no "</script>" can end a part early.
    private static readonly JsonSerializerOptions Json = new() { TypeInfoResolver = new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver() };

    public static async Task<string> SectionAsync(string directory, ReportView view, int index, ReportViewLimits limits, CancellationToken ct)
    {
        var tables = new Dictionary<string, Table>();
        foreach (var name in view.Tables.Distinct())
            tables[name] = new Table(name, await ParquetTableReader.ReadColumnsAsync(Path.Combine(directory, name), ct));
        var parts = new List<(string Name, object Data)>();
        var notes = new List<string>();
        switch (view)
        {
            case AttentionView a: Attention(a, tables[a.PatternTable], tables[a.TokenTable], limits, parts, notes); break;
            case TokenValuesView t: TokenValues(t, tables[t.ValueTable], tables[t.TokenTable], limits, parts, notes); break;
            case HeatmapView h: Heatmap(h, tables[h.Table], limits, parts, notes); break;
            case LogitLensView l: LogitLens(tables[l.LensTable], tables[l.TokenTable], limits, parts, notes); break;
            case FeatureView f: Features(tables[f.StatsTable], tables[f.ContextTable], f.LogitEffectTable is null ? null : tables[f.LogitEffectTable], limits, parts, notes); break;
            default: throw new InterpException($"report view {view.GetType().Name} has no HTML form");
        }
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.Append($"<section class=\"interp-view\" id=\"view-{index}\" data-interp-view=\"{view.Kind}\" data-interp-tables=\"{E(string.Join(' ', view.Tables))}\"");
        if (view is HeatmapView hv)
            sb.Append($" data-interp-rows=\"{E(string.Join(' ', hv.Rows))}\" data-interp-cols=\"{E(string.Join(' ', hv.Columns))}\" data-interp-value=\"{E(hv.Value)}\"")
              .Append($" data-interp-facet=\"{E(hv.Facet ?? "")}\" data-interp-where=\"{E(JsonSerializer.Serialize(hv.Where, Json))}\"");
        if (view is TokenValuesView tv) sb.Append($" data-interp-value=\"{E(tv.Value)}\" data-interp-quantity=\"{E(tv.Quantity ?? "")}\"");
        if (notes.Count > 0) sb.Append($" data-interp-notes=\"{notes.Count}\"");   // data was left out: the notes say what
        sb.Append(">\n")
          .Append($"<h3>{E(view.Title)}</h3>\n");
        foreach (var note in notes) sb.Append($"<p class=\"interp-note\" data-interp-note>{E(note)}</p>\n");
        sb.Append("<div class=\"interp-body\"></div>\n").Append($"<figcaption>{E(view.Caption)}</figcaption>\n");
        foreach (var (name, data) in parts)
            sb.Append($"<script type=\"application/json\" data-interp-part=\"{name}\">").Append(JsonSerializer.Serialize(data, Json)).Append("</script>\n");
        return sb.Append("</section>").ToString();
    }

    // ---- attention ----
    private static void Attention(AttentionView view, Table t, Table tokenTable, ReportViewLimits limits, List<(string, object)> parts, List<string> notes)
    {
        var (seq, layer, head, query, key) = (t.Ints(Columns.Sequence), t.Ints(Columns.Layer), t.Ints(Columns.Head), t.Ints(AttentionTable.Query), t.Ints(AttentionTable.Key));
        var weight = t.Floats(AttentionTable.Weight);
        if (weight.Length == 0) throw new InterpException($"{t.Name} holds no attention weights");
        int layers = layer.Max() + 1, heads = head.Max() + 1;
        if (layer.Min() < 0 || head.Min() < 0) throw new InterpException($"{t.Name}: a negative layer or head index");
        if (view.Layer >= layers || view.Head >= heads || view.Layer < 0 || view.Head < 0)
            throw new InterpException($"attention view '{view.Title}': head {view.Layer}.{view.Head} is not in {t.Name} ({layers} layers × {heads} heads)");
        var tokens = Tokens(tokenTable);
        bool causal = !Enumerable.Range(0, key.Length).Any(i => key[i] > query[i]);   // a bidirectional encoder stores every entry
        long Entries(long n) => causal ? n * (n + 1) / 2 : n * n;
        var shown = Fit(t, tokenTable, seq, tokens, n => layers * heads * Entries(n), limits.AttentionWeights, "attention weights", notes);
        var index = shown.Select((s, i) => (s, i)).ToDictionary(x => x.s.Sequence, x => x.i);
        var data = shown.Select(s => Enumerable.Range(0, layers * heads).Select(_ => Enumerable.Repeat(float.NaN, (int)Entries(s.Length)).ToArray()).ToArray()).ToArray();
        for (int i = 0; i < weight.Length; i++)
        {
            if (!index.TryGetValue(seq[i], out int si)) continue;
            int n = shown[si].Length, fullLength = tokens[seq[i]].Length;
            if (query[i] >= fullLength || key[i] >= fullLength || key[i] < 0 || query[i] < 0)
                throw new InterpException($"{t.Name}, row {i}: query {query[i]}, key {key[i]} is not an entry of sequence {seq[i]}'s {fullLength} tokens");
            if (query[i] < n && key[i] < n) data[si][layer[i] * heads + head[i]][causal ? query[i] * (query[i] + 1) / 2 + key[i] : query[i] * n + key[i]] = weight[i];
        }
        for (int si = 0; si < shown.Count; si++)
            for (int lh = 0; lh < layers * heads; lh++)
                if (Array.FindIndex(data[si][lh], float.IsNaN) is int gap and >= 0)
                {
                    int n = shown[si].Length, q = causal ? (int)Math.Floor((Math.Sqrt(1 + 8.0 * gap) - 1) / 2) : gap / n, k = causal ? gap - q * (q + 1) / 2 : gap % n;
                    throw new InterpException($"{t.Name} lacks the weight of sequence {shown[si].Sequence}, head {lh / heads}.{lh % heads}, query {q}, key {k}");
                }
        parts.Add(("meta", new
        {
            layers, heads, causal, layer = view.Layer, head = view.Head,
            sequences = shown.Select((s, i) => new { index = s.Sequence, length = s.Length, part = $"s{i}" }),
        }));
        for (int si = 0; si < shown.Count; si++)
            parts.Add(($"s{si}", new { tokens = tokens[shown[si].Sequence][..shown[si].Length], w = data[si].Select(Float32Base64) }));
    }

    // The weights as the table holds them, float32 little-endian in base64: exact, and about half the size of decimals.
    private static string Float32Base64(float[] values)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++) System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
        return Convert.ToBase64String(bytes);
    }

    // ---- tokens ----
    private static void TokenValues(TokenValuesView view, Table t, Table tokenTable, ReportViewLimits limits, List<(string, object)> parts, List<string> notes)
    {
        var (seq, pos, value) = (t.Ints(Columns.Sequence), t.Ints(Columns.Position), t.Floats(view.Value));
        var quantity = view.Quantity is null ? Enumerable.Repeat(view.Value, value.Length).ToArray() : t.Strings(view.Quantity);
        if (value.Length == 0) throw new InterpException($"{t.Name} holds no per-token values");
        var tokens = Tokens(tokenTable);
        var quantities = quantity.Distinct().ToArray();
        var shown = Fit(t, tokenTable, seq, tokens, n => n * quantities.Length, limits.TokenValues, "token values", notes);
        var index = shown.Select((s, i) => (s, i)).ToDictionary(x => x.s.Sequence, x => x.i);
        var values = shown.Select(s => quantities.ToDictionary(q => q, _ => new float?[s.Length])).ToArray();
        for (int i = 0; i < value.Length; i++)
        {
            if (pos[i] < 0 || !tokens.TryGetValue(seq[i], out var tk) || pos[i] >= tk.Length)
                throw new InterpException($"{t.Name}, row {i}: sequence {seq[i]}, position {pos[i]} is not a token of {tokenTable.Name}");
            if (!index.TryGetValue(seq[i], out int si) || pos[i] >= shown[si].Length) continue;
            if (values[si][quantity[i]][pos[i]] is not null)
                throw new InterpException($"{t.Name} has two values of '{quantity[i]}' at sequence {seq[i]}, position {pos[i]}");
            values[si][quantity[i]][pos[i]] = value[i];
        }
        parts.Add(("meta", new
        {
            quantities = quantities.Select(q => new
            {
                name = q,
                min = values.SelectMany(v => v[q]).Where(v => v is not null).DefaultIfEmpty(0f).Min(),
                max = values.SelectMany(v => v[q]).Where(v => v is not null).DefaultIfEmpty(0f).Max(),
            }),
            sequences = shown.Select((s, i) => new { index = s.Sequence, length = s.Length, part = $"s{i}" }),
        }));
        for (int si = 0; si < shown.Count; si++)
            parts.Add(($"s{si}", new { tokens = tokens[shown[si].Sequence][..shown[si].Length], values = values[si] }));
    }

    // ---- heatmap ----
    private static void Heatmap(HeatmapView view, Table t, ReportViewLimits limits, List<(string, object)> parts, List<string> notes)
    {
        var keep = Enumerable.Range(0, t.Rows).Where(i => view.Where.All(w => t.Text(w.Key, i) == w.Value)).ToArray();
        if (keep.Length == 0)
            throw new InterpException($"heatmap '{view.Title}': {t.Name} has no rows" + (view.Where.Count == 0 ? "" : $" where {string.Join(", ", view.Where.Select(w => $"{w.Key} = {w.Value}"))}"));
        var value = t.Floats(view.Value);
        if (view.Rows.Count == 0 || view.Columns.Count == 0) throw new InterpException($"heatmap '{view.Title}' needs at least one row column and one column column");
        var rows = Axis(t, view.Rows, keep);
        var cols = Axis(t, view.Columns, keep);
        var facets = view.Facet is null ? [""] : keep.Select(i => t.Text(view.Facet, i)).Distinct().ToArray();
        int shownCols = cols.Length;
        if ((long)rows.Length * cols.Length * facets.Length > limits.HeatmapCells)
        {
            shownCols = (int)Math.Max(1, limits.HeatmapCells / ((long)rows.Length * facets.Length));
            notes.Add($"The first {shownCols} of {cols.Length} values of '{string.Join(".", view.Columns)}' are shown (bound: {limits.HeatmapCells:N0} cells per view); {t.Name} holds all of them.");
        }
        var (ri, ci, fi) = (rows.Select((r, i) => (r, i)).ToDictionary(x => x.r, x => x.i), cols.Select((c, i) => (c, i)).ToDictionary(x => x.c, x => x.i), facets.Select((f, i) => (f, i)).ToDictionary(x => x.f, x => x.i));
        var cells = facets.Select(_ => rows.Select(_ => new float?[shownCols]).ToArray()).ToArray();
        foreach (int i in keep)
        {
            string r = Label(t, view.Rows, i), c = Label(t, view.Columns, i), f = view.Facet is null ? "" : t.Text(view.Facet, i);
            if (ci[c] >= shownCols) continue;
            ref var cell = ref cells[fi[f]][ri[r]][ci[c]];
            if (cell is not null)
                throw new InterpException($"heatmap '{view.Title}': {t.Name} has several rows for {string.Join(".", view.Rows)} {r}, {string.Join(".", view.Columns)} {c}" + (view.Facet is null ? "" : $", {view.Facet} {f}") +
                                          ": name a Facet or a Where filter for the column that tells them apart");
            cell = value[i];
        }
        parts.Add(("data", new
        {
            rowTitle = string.Join(".", view.Rows), colTitle = string.Join(".", view.Columns), facetTitle = view.Facet ?? "", rows, cols = cols[..shownCols],
            facets = facets.Select((f, k) => new { name = view.Facet is null ? view.Value : f, values = cells[k] }),
        }));
    }

    // An axis label: the row's values of the axis columns, joined with '.' (layer.head). Numeric axes sort as numbers,
    // column by column; text axes keep the table's order.
    private static string Label(Table t, IReadOnlyList<string> columns, int row) => string.Join(".", columns.Select(c => t.Text(c, row)));

    private static string[] Axis(Table t, IReadOnlyList<string> columns, int[] rows)
    {
        var labels = rows.Select(i => (Label: Label(t, columns, i), Row: i)).DistinctBy(x => x.Label).ToArray();
        if (!columns.All(t.IsNumeric)) return labels.Select(x => x.Label).ToArray();
        return labels.OrderBy(x => x.Row, Comparer<int>.Create((a, b) =>
            columns.Select(c => double.Parse(t.Text(c, a), CultureInfo.InvariantCulture).CompareTo(double.Parse(t.Text(c, b), CultureInfo.InvariantCulture))).FirstOrDefault(x => x != 0)))
            .Select(x => x.Label).ToArray();
    }

    // ---- logit lens ----
    private static void LogitLens(Table t, Table tokenTable, ReportViewLimits limits, List<(string, object)> parts, List<string> notes)
    {
        var (seq, layer, pos, rank) = (t.Ints(Columns.Sequence), t.Ints(Columns.Layer), t.Ints(Columns.Position), t.Ints(Columns.Rank));
        var (token, probability) = (t.Strings(Columns.Token), t.Floats(LogitLensTopTable.Probability));
        if (probability.Length == 0) throw new InterpException($"{t.Name} holds no predictions");
        var tokens = Tokens(tokenTable);
        var layerIds = layer.Distinct().Order().ToArray();
        int k = rank.Max(), final = layerIds[^1];
        var shown = Fit(t, tokenTable, seq, tokens, n => n * layerIds.Length * k, limits.LensPredictions, "predictions", notes);
        var index = shown.Select((s, i) => (s, i)).ToDictionary(x => x.s.Sequence, x => x.i);
        var li = layerIds.Select((l, i) => (l, i)).ToDictionary(x => x.l, x => x.i);
        var top = shown.Select(s => layerIds.Select(_ => Enumerable.Range(0, s.Length).Select(_ => new object?[k][]).ToArray()).ToArray()).ToArray();
        for (int i = 0; i < probability.Length; i++)
        {
            if (!index.TryGetValue(seq[i], out int si) || pos[i] >= shown[si].Length) continue;
            if (pos[i] < 0 || rank[i] < 1) throw new InterpException($"{t.Name}, row {i}: position {pos[i]}, rank {rank[i]} out of range");
            top[si][li[layer[i]]][pos[i]][rank[i] - 1] = [token[i], probability[i]];
        }
        parts.Add(("meta", new { layerTitle = "stream entering layer", sequences = shown.Select((s, i) => new { index = s.Sequence, length = s.Length, part = $"s{i}" }) }));
        for (int si = 0; si < shown.Count; si++)
            parts.Add(($"s{si}", new
            {
                tokens = tokens[shown[si].Sequence][..shown[si].Length],
                layers = layerIds.Select(l => l == final ? $"{l} (final)" : l.ToString(CultureInfo.InvariantCulture)),
                top = top[si].Select(layerRows => layerRows.Select(preds => preds.Where(p => p is not null))),
            }));
    }

    // ---- feature cards ----
    private static void Features(Table stats, Table contexts, Table? effects, ReportViewLimits limits, List<(string, object)> parts, List<string> notes)
    {
        var statFeature = stats.Ints(SaeColumns.Feature);
        var (density, max, mean) = (stats.Floats("density"), stats.Floats("max"), stats.Floats("mean_active"));
        var statRow = statFeature.Select((f, i) => (f, i)).ToDictionary(x => x.f, x => x.i);
        var (cf, rank, seq, pos, offset) = (contexts.Ints(SaeColumns.Feature), contexts.Ints(Columns.Rank), contexts.Ints(Columns.Sequence), contexts.Ints(Columns.Position), contexts.Ints("offset"));
        var (token, act) = (contexts.Strings(Columns.Token), contexts.Floats(Columns.Value));
        var features = cf.Distinct().ToArray();
        if (features.Length == 0) throw new InterpException($"{contexts.Name} holds no feature contexts");
        if (features.Length > limits.FeatureCards)
        {
            notes.Add($"The first {limits.FeatureCards} of {features.Length} features of {contexts.Name} have cards (bound: {limits.FeatureCards} per view).");
            features = features[..limits.FeatureCards];
        }
        var byFeature = Enumerable.Range(0, cf.Length).GroupBy(i => cf[i]).ToDictionary(g => g.Key, g => g.ToArray());
        var (ef, er, ed, et, ev) = effects is null ? ([], [], [], [], [])
            : (effects.Ints(SaeColumns.Feature), effects.Ints(Columns.Rank), effects.Strings("direction"), effects.Strings(Columns.Token), effects.Floats(Columns.Value));
        var effectRows = Enumerable.Range(0, ef.Length).GroupBy(i => ef[i]).ToDictionary(g => g.Key, g => g.ToArray());
        parts.Add(("meta", new { features = features.Select((f, i) => new { feature = f, density = Stat(f, density), part = $"f{i}" }) }));
        for (int i = 0; i < features.Length; i++)
        {
            int f = features[i];
            var windows = byFeature[f].GroupBy(r => rank[r]).OrderBy(g => g.Key).Select(g =>
            {
                var rows = g.OrderBy(r => offset[r]).ToArray();
                return new
                {
                    sequence = seq[rows[0]], start = pos[rows[0]] + offset[rows[0]], at = Array.FindIndex(rows, r => offset[r] == 0),
                    tokens = rows.Select(r => token[r]), acts = rows.Select(r => act[r]),
                };
            }).ToArray();
            IEnumerable<object[]> Effects(string direction) => !effectRows.TryGetValue(f, out var rows) ? []
                : rows.Where(r => ed[r] == direction).OrderBy(r => er[r]).Select(r => new object[] { et[r], ev[r] });
            parts.Add(($"f{i}", new
            {
                feature = f, maxActivation = Stat(f, max),
                stats = new object[][] { ["density", Stat(f, density)], ["max", Stat(f, max)], ["mean when active", Stat(f, mean)] },
                contexts = windows, positive = Effects("promoted"), negative = Effects("suppressed"),
            }));
        }

        float Stat(int f, float[] column) => statRow.TryGetValue(f, out int r) ? column[r]
            : throw new InterpException($"{contexts.Name} has feature {f}, which {stats.Name} does not hold");
    }

    /// <summary>
    /// The sequences of <paramref name="seq"/> a view shows within <paramref name="budget"/> (<paramref name="cost"/> of n
    /// positions, in <paramref name="what"/>): whole sequences in order while they fit, or, when not even the first does,
    /// its first positions that do; a note says what was left out.
    /// </summary>
    private static List<(int Sequence, int Length)> Fit(Table t, Table tokenTable, int[] seq, Dictionary<int, string[]> tokens, Func<long, long> cost,
        long budget, string what, List<string> notes)
    {
        var order = seq.Distinct().Order().ToArray();
        var shown = new List<(int Sequence, int Length)>();
        long used = 0;
        foreach (int s in order)
        {
            int n = (tokens.TryGetValue(s, out var tk) ? tk : throw new InterpException($"{t.Name} has sequence {s}, which {tokenTable.Name} does not hold")).Length;
            if (used + cost(n) <= budget) { shown.Add((s, n)); used += cost(n); continue; }
            if (shown.Count == 0)
            {
                int m = n;
                while (m > 1 && cost(m) > budget) m--;
                shown.Add((s, m));
                notes.Add($"Sequence {s} is shown for its first {m} of {n} positions (bound: {budget:N0} {what} per view); {t.Name} holds all of them.");
            }
            break;
        }
        if (shown.Count < order.Length)
            notes.Add($"{shown.Count} of {order.Length} sequences are shown (bound: {budget:N0} {what} per view); {t.Name} holds all of them.");
        return shown;
    }

    /// <summary>Each sequence's tokens (the text of every position 0…n−1) from a <see cref="TokenTable"/>.</summary>
    private static Dictionary<int, string[]> Tokens(Table t)
    {
        var (seq, pos, text) = (t.Ints(Columns.Sequence), t.Ints(Columns.Position), t.Strings(Columns.Token));
        var result = new Dictionary<int, string[]>();
        foreach (var g in Enumerable.Range(0, seq.Length).GroupBy(i => seq[i]))
        {
            var rows = g.OrderBy(i => pos[i]).ToArray();
            for (int p = 0; p < rows.Length; p++)
                if (pos[rows[p]] != p) throw new InterpException($"{t.Name}: sequence {g.Key} has no token at position {p} (positions must run 0…n−1 once each)");
            result[g.Key] = rows.Select(i => text[i]).ToArray();
        }
        return result;
    }

    /// <summary>A table's columns, read back, with errors that name the table and column.</summary>
    private sealed class Table(string name, Dictionary<string, Array> columns)
    {
        public string Name { get; } = name;
        public int Rows { get; } = columns.Count == 0 ? 0 : columns.Values.First().Length;

        private Array Column(string column) => columns.TryGetValue(column, out var a) ? a
            : throw new InterpException($"{Name} has no column '{column}' (it has: {string.Join(", ", columns.Keys)})");

        public bool IsNumeric(string column) => Column(column) is int[] or long[] or float[] or double[];

        public int[] Ints(string column) => Column(column) switch
        {
            int[] a => a,
            long[] a => a.Select(v => checked((int)v)).ToArray(),
            var a => throw new InterpException($"{Name}: column '{column}' holds {a.GetType().GetElementType()!.Name} values, not integers"),
        };

        public float[] Floats(string column) => Column(column) switch
        {
            float[] a => a,
            double[] a => a.Select(v => (float)v).ToArray(),
            int[] a => a.Select(v => (float)v).ToArray(),
            long[] a => a.Select(v => (float)v).ToArray(),
            var a => throw new InterpException($"{Name}: column '{column}' holds {a.GetType().GetElementType()!.Name} values, not numbers"),
        };

        public string[] Strings(string column) => Column(column) as string[]
            ?? throw new InterpException($"{Name}: column '{column}' holds {Column(column).GetType().GetElementType()!.Name} values, not text");

        public string Text(string column, int row) => Convert.ToString(Column(column).GetValue(row), CultureInfo.InvariantCulture) ?? "";
    }
}

using System.Globalization;
using Interp.Tests.Support;
using static Interp.Tests.Support.Browser;

namespace Interp.Tests.Reports;

/// <summary>
/// Checks every view of a run's report.html in the browser against the tables it names (read by ParquetSharp): the page
/// loads with no console error and no request; each view's shown numbers equal its table's floats; each screenshot is
/// not blank. What a view shows is read from the section's <c>data-interp-*</c> attributes (its columns, its shown
/// facet, sequence, head or feature), so one check serves every experiment.
/// </summary>
internal static class ReportViewChecks
{
    /// <summary>Grey-level variance below which a screenshot counts as blank (a flat page is ~0; a drawn view is hundreds).</summary>
    public const double BlankVariance = 50;

    public sealed record Checked(string[] Kinds, int Values, string[] Screenshots, double[] Variances);

    public static async Task<Checked> AssertViewsMatchTablesAsync(string runDir, string name)
    {
        string page = Path.Combine(runDir, "report.html");
        var first = await ProbeAsync(page, Read("[data-interp-view]"));
        first.AssertNoErrors();
        var views = first.Elements(0);
        Assert.NotEmpty(views);

        var steps = new List<Step>();
        var reads = new List<(int View, int[] Steps)>();
        var shots = new List<string>();
        for (int i = 0; i < views.Length; i++)
        {
            string v = $"[data-interp-view] >> nth={i}", kind = views[i].Data["interpView"];
            if (kind == "attention")   // the last token shown (a long sequence may be cut)
                steps.Add(Hover($"{v} >> [data-interp-strip=attends-to] >> [data-pos] >> nth=-1"));
            string[] selectors = kind switch
            {
                "heatmap" => [$"{v} >> td[data-row]"],
                "tokens" => [$"{v} >> [data-interp-strip=values] >> [data-pos]"],
                "logit-lens" => [$"{v} >> td[data-layer]"],
                "attention" => [$"{v} >> [data-interp-strip=attends-to] >> [data-pos]"],
                "feature" => [$"{v} >> [data-interp-strip=context][data-rank='1'] >> [data-pos]", $"{v} >> li[data-direction]"],
                _ => throw new Xunit.Sdk.XunitException($"view {i}: unknown kind '{kind}'"),
            };
            // A card without logit effects has no list items: read them only where the view names the effects table.
            if (kind == "feature" && Tables(views[i]).Length < 3) selectors = selectors[..1];
            reads.Add((i, selectors.Select((sel, j) => steps.Count + j).ToArray()));
            steps.AddRange(selectors.Select(Read));
            string shot = Path.Combine(Artifacts, $"{name}-{i}-{kind}.png");
            shots.Add(shot);
            steps.Add(Screenshot(v, shot));
        }
        var result = await ProbeAsync(page, steps.ToArray());
        result.AssertNoErrors();
        int values = 0;
        foreach (var (i, read) in reads)
        {
            var elements = read.SelectMany(result.Elements).ToArray();
            values += views[i].Data["interpView"] switch
            {
                "heatmap" => Heatmap(runDir, views[i], elements),
                "tokens" => TokenValues(runDir, views[i], elements),
                "logit-lens" => LogitLens(runDir, views[i], elements),
                "attention" => Attention(runDir, views[i], elements),
                _ => Feature(runDir, views[i], elements),
            };
        }
        var variances = shots.Select(PixelVariance).ToArray();
        for (int i = 0; i < shots.Count; i++)
            Assert.True(variances[i] > BlankVariance, $"{shots[i]}: grey-level variance {variances[i]:F1}: a blank view");
        return new Checked(views.Select(v => v.Data["interpView"]).ToArray(), values, shots.ToArray(), variances);
    }

    private static string[] Tables(Element view) => view.Data["interpTables"].Split(' ');
    private static Dictionary<string, object[]> Table(string dir, string file) => ParquetRead.Columns(Path.Combine(dir, file));
    private static float Float(object o) => Convert.ToSingle(o, CultureInfo.InvariantCulture);
    private static int Int(object o) => Convert.ToInt32(o, CultureInfo.InvariantCulture);
    private static string Text(object o) => Convert.ToString(o, CultureInfo.InvariantCulture) ?? "";
    private static float Shown(Element e) => float.Parse(e.Data["value"], CultureInfo.InvariantCulture);

    private static string[] Tokens(string dir, Element view)
    {
        var t = Table(dir, Tables(view)[1]);
        int seq = int.Parse(view.Data["interpShownSequence"], CultureInfo.InvariantCulture);
        return Enumerable.Range(0, t["token"].Length).Where(i => Int(t["sequence"][i]) == seq).OrderBy(i => Int(t["position"][i])).Select(i => (string)t["token"][i]).ToArray();
    }

    // Every cell of the shown facet is the value of the one table row with its labels; no other row of the facet exists.
    private static int Heatmap(string dir, Element view, Element[] cells)
    {
        var t = Table(dir, Tables(view)[0]);
        string[] rows = view.Data["interpRows"].Split(' '), cols = view.Data["interpCols"].Split(' ');
        string value = view.Data["interpValue"], facet = view.Data["interpFacet"];
        var where = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, string>>(view.Data["interpWhere"])!;
        var expected = new Dictionary<(string, string), float>();
        for (int i = 0; i < t[value].Length; i++)
        {
            if (where.Any(w => Text(t[w.Key][i]) != w.Value)) continue;
            if (facet.Length > 0 && Text(t[facet][i]) != view.Data["interpShownFacet"]) continue;
            expected.Add((string.Join(".", rows.Select(c => Text(t[c][i]))), string.Join(".", cols.Select(c => Text(t[c][i])))), Float(t[value][i]));
        }
        var shown = cells.Where(c => c.Data.ContainsKey("value")).ToArray();
        foreach (var c in shown)
            Assert.Equal(expected[(c.Data["row"], c.Data["col"])], Shown(c));
        bool truncated = view.Data.ContainsKey("interpNotes");
        if (!truncated) Assert.Equal(expected.Count, shown.Length);
        Assert.NotEmpty(shown);
        return shown.Length;
    }

    private static int TokenValues(string dir, Element view, Element[] spans)
    {
        var t = Table(dir, Tables(view)[0]);
        int seq = int.Parse(view.Data["interpShownSequence"], CultureInfo.InvariantCulture);
        string value = view.Data["interpValue"], quantity = view.Data["interpQuantity"];
        var expected = Enumerable.Range(0, t[value].Length)
            .Where(i => Int(t["sequence"][i]) == seq && (quantity.Length == 0 ? value : (string)t[quantity][i]) == view.Data["interpShownQuantity"])
            .ToDictionary(i => Int(t["position"][i]), i => Float(t[value][i]));
        Assert.Equal(Tokens(dir, view).Length, spans.Length);
        foreach (var s in spans)
        {
            int p = int.Parse(s.Data["pos"], CultureInfo.InvariantCulture);
            if (expected.TryGetValue(p, out float v)) Assert.Equal(v, Shown(s));
            else Assert.False(s.Data.ContainsKey("value"), $"position {p} shows a value the table does not hold");
        }
        return expected.Count;
    }

    private static int LogitLens(string dir, Element view, Element[] cells)
    {
        var t = Table(dir, Tables(view)[0]);
        int seq = int.Parse(view.Data["interpShownSequence"], CultureInfo.InvariantCulture);
        var top = Enumerable.Range(0, t["probability"].Length).Where(i => Int(t["sequence"][i]) == seq && Int(t["rank"][i]) == 1)
            .ToDictionary(i => (Int(t["layer"][i]), Int(t["position"][i])), i => (Token: (string)t["token"][i], P: Float(t["probability"][i])));
        foreach (var c in cells)
        {
            var key = (int.Parse(c.Data["layer"].Split(' ')[0], CultureInfo.InvariantCulture), int.Parse(c.Data["pos"], CultureInfo.InvariantCulture));
            Assert.Equal(top[key].P, Shown(c));
            Assert.Equal(top[key].Token, c.Text);
        }
        Assert.Equal(top.Count, cells.Length);
        return cells.Length;
    }

    private static int Attention(string dir, Element view, Element[] strip)
    {
        var t = Table(dir, Tables(view)[0]);
        int seq = int.Parse(view.Data["interpShownSequence"], CultureInfo.InvariantCulture), q = strip.Length - 1;
        var head = view.Data["interpShownHead"].Split('.').Select(int.Parse).ToArray();
        var expected = Enumerable.Range(0, t["weight"].Length)
            .Where(i => Int(t["sequence"][i]) == seq && Int(t["layer"][i]) == head[0] && Int(t["head"][i]) == head[1] && Int(t["query"][i]) == q)
            .ToDictionary(i => Int(t["key"][i]), i => Float(t["weight"][i]));
        bool causal = expected.Count == q + 1;   // a bidirectional encoder's query attends to every key
        Assert.Equal(causal ? q + 1 : strip.Length, expected.Keys.Count(k => k < strip.Length));
        for (int k = 0; k < strip.Length; k++)
            if (expected.TryGetValue(k, out float v)) Assert.Equal(v, Shown(strip[k]));
            else Assert.True(causal && k > q, $"key {k} shows {strip[k].Data.GetValueOrDefault("value")}, but the table has no weight");
        return expected.Count;
    }

    private static int Feature(string dir, Element view, Element[] elements)
    {
        var tables = Tables(view);
        int feature = int.Parse(view.Data["interpShownFeature"], CultureInfo.InvariantCulture);
        var c = Table(dir, tables[1]);
        var context = Enumerable.Range(0, c["value"].Length).Where(i => Int(c["feature"][i]) == feature && Int(c["rank"][i]) == 1)
            .ToDictionary(i => Int(c["position"][i]) + Int(c["offset"][i]), i => Float(c["value"][i]));
        var spans = elements.Where(e => e.Data.ContainsKey("pos")).ToArray();
        Assert.Equal(context.Count, spans.Length);
        foreach (var s in spans) Assert.Equal(context[int.Parse(s.Data["pos"], CultureInfo.InvariantCulture)], Shown(s));
        var items = elements.Where(e => e.Data.ContainsKey("direction")).ToArray();
        if (tables.Length > 2)
        {
            var e = Table(dir, tables[2]);
            var effects = Enumerable.Range(0, e["value"].Length).Where(i => Int(e["feature"][i]) == feature)
                .ToDictionary(i => ((string)e["direction"][i], Int(e["rank"][i])), i => Float(e["value"][i]));
            Assert.Equal(effects.Count, items.Length);
            foreach (var li in items) Assert.Equal(effects[(li.Data["direction"], int.Parse(li.Data["rank"], CultureInfo.InvariantCulture))], Shown(li));
        }
        return spans.Length + items.Length;
    }
}

using System.Globalization;
using System.Net;
using System.Text;
using Interp.Loading;

namespace Interp.Experiments;

/// <summary>Writes a run's <c>report.md</c> and <c>report.html</c>: header, key numbers, then text and figures in order.</summary>
public static class RunReport
{
    /// <summary>Writes both reports into <paramref name="directory"/> (atomically).</summary>
    public static void Write(string directory, RunManifest manifest, IReadOnlyList<ReportItem> items)
    {
        AtomicFile.WriteAllText(Path.Combine(directory, "report.md"), Markdown(manifest, items));
        AtomicFile.WriteAllText(Path.Combine(directory, "report.html"), Html(manifest, items, directory));
    }

    private static string Value(KeyNumber k) => k.Value.ToString(k.Format, CultureInfo.InvariantCulture);

    private static string Header(RunManifest m) =>
        $"Run `{m.RunId}` — status **{m.Status.ToString().ToLowerInvariant()}**" +
        (m.Error is null ? "" : $" ({m.Error})") +
        (m.Model is null ? "" : $"; model {m.Model.Name} ({m.Model.Format}, {m.Model.Parameters:N0} parameters, sha256 {m.Model.Sha256[..Math.Min(12, m.Model.Sha256.Length)]})") +
        $"; seed {m.Seed}; started {m.Started:u}" + (m.Ended is null ? "" : $", took {(m.Ended.Value - m.Started).TotalSeconds:F1} s") + ".";

    /// <summary>The Markdown report.</summary>
    public static string Markdown(RunManifest m, IReadOnlyList<ReportItem> items)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {m.Experiment}").AppendLine().AppendLine(Header(m)).AppendLine();
        if (m.KeyNumbers.Count > 0)
        {
            sb.AppendLine("## Key numbers").AppendLine().AppendLine("| | value | meaning |").AppendLine("|---|---|---|");
            foreach (var k in m.KeyNumbers) sb.AppendLine($"| {k.Name} | {Value(k)} | {k.Description} |");
            sb.AppendLine();
        }
        foreach (var item in items)
        {
            switch (item)
            {
                case ReportItem.Text t: sb.AppendLine(t.Markdown).AppendLine(); break;
                case ReportItem.Figure f: sb.AppendLine($"![{f.Caption}]({f.File})").AppendLine().AppendLine($"*{f.Caption}*").AppendLine(); break;
                case ReportItem.View v: sb.AppendLine($"*Interactive in report.html — {v.Definition.Title}:* {v.Definition.Caption}").AppendLine(); break;
            }
        }
        var tables = m.Artifacts.Where(a => a.Kind == "table").ToArray();
        if (tables.Length > 0)
        {
            sb.AppendLine("## Tables").AppendLine();
            foreach (var t in tables) sb.AppendLine($"- `{t.File}` ({t.Rows:N0} rows): {t.Description}");
        }
        return sb.ToString();
    }

    private static string Resource(string name)
    {
        using var stream = typeof(RunReport).Assembly.GetManifestResourceStream($"Interp.Report.{name}")
            ?? throw new InvalidOperationException($"the report resource {name} is missing from {typeof(RunReport).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    // The PNG beside the report, inline: the page needs nothing but itself (a figure missing from the folder stays a link).
    private static string Image(string? directory, string file)
    {
        string path = directory is null ? "" : Path.Combine(directory, file);
        return File.Exists(path) ? "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(path)) : WebUtility.HtmlEncode(file);
    }

    private static readonly Lazy<string> Script = new(() => Resource("report.js")), Style = new(() => Resource("report.css"));

    /// <summary>
    /// The HTML report: one file that opens offline (style, script and the views' data inline; the PNG figures beside it
    /// are shown too). Interactive views are <c>section[data-interp-view]</c> elements (docs/report.md).
    /// </summary>
    /// <param name="m">The run's manifest.</param>
    /// <param name="items">The report's items in order.</param>
    /// <param name="directory">The run folder: its PNG figures are embedded (as data URIs); null links them instead.</param>
    public static string Html(RunManifest m, IReadOnlyList<ReportItem> items, string? directory = null)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.AppendLine("<!DOCTYPE html><html><head><meta charset=\"utf-8\">")
          .AppendLine($"<title>{E(m.Experiment)}</title>")
          .AppendLine("<style>").Append(Style.Value).AppendLine("</style>")
          .AppendLine("</head><body>")
          .AppendLine($"<h1>{E(m.Experiment)}</h1>")
          .AppendLine($"<p>{E(Header(m).Replace("**", "").Replace("`", ""))}</p>");
        if (m.KeyNumbers.Count > 0)
        {
            sb.AppendLine("<h2>Key numbers</h2><table><tr><th></th><th>value</th><th>meaning</th></tr>");
            foreach (var k in m.KeyNumbers) sb.AppendLine($"<tr><td>{E(k.Name)}</td><td>{E(Value(k))}</td><td>{E(k.Description)}</td></tr>");
            sb.AppendLine("</table>");
        }
        foreach (var item in items)
        {
            switch (item)
            {
                case ReportItem.Text t: sb.AppendLine($"<p>{E(t.Markdown)}</p>"); break;
                case ReportItem.Figure f: sb.AppendLine($"<figure><img src=\"{Image(directory, f.File)}\" alt=\"{E(f.Caption)}\"><figcaption>{E(f.Caption)}</figcaption></figure>"); break;
                case ReportItem.View v: sb.AppendLine(v.Html); break;
            }
        }
        var tables = m.Artifacts.Where(a => a.Kind == "table").ToArray();
        if (tables.Length > 0)
        {
            sb.AppendLine("<h2>Tables</h2><ul>");
            foreach (var t in tables) sb.AppendLine($"<li><code>{E(t.File)}</code> ({t.Rows:N0} rows): {E(t.Description)}</li>");
            sb.AppendLine("</ul>");
        }
        return sb.AppendLine("<script>").Append(Script.Value).AppendLine("</script>").AppendLine("</body></html>").ToString();
    }
}

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
        AtomicFile.WriteAllText(Path.Combine(directory, "report.html"), Html(manifest, items));
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

    /// <summary>The HTML report (self-contained but for the PNG files beside it).</summary>
    public static string Html(RunManifest m, IReadOnlyList<ReportItem> items)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.AppendLine("<!DOCTYPE html><html><head><meta charset=\"utf-8\">")
          .AppendLine($"<title>{E(m.Experiment)}</title>")
          .AppendLine("<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.45}img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}figcaption{font-style:italic;color:#444}</style>")
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
                case ReportItem.Figure f: sb.AppendLine($"<figure><img src=\"{E(f.File)}\" alt=\"{E(f.Caption)}\"><figcaption>{E(f.Caption)}</figcaption></figure>"); break;
            }
        }
        var tables = m.Artifacts.Where(a => a.Kind == "table").ToArray();
        if (tables.Length > 0)
        {
            sb.AppendLine("<h2>Tables</h2><ul>");
            foreach (var t in tables) sb.AppendLine($"<li><code>{E(t.File)}</code> ({t.Rows:N0} rows): {E(t.Description)}</li>");
            sb.AppendLine("</ul>");
        }
        return sb.AppendLine("</body></html>").ToString();
    }
}

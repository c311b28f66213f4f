// Rewrites the numbers the documentation quotes from fresh runs, so that none is copied by hand.
//   <!-- numbers: EXPERIMENT [interp run options] -->  …  <!-- /numbers -->
//       the key numbers (manifest.json) of `interp run EXPERIMENT --seed 0 [options]`, as a table
//   <!-- bench -->  …  <!-- /bench -->   (only with --bench: about 4 minutes)
//       bench.md of `interp bench`
// Run from the repository root: dotnet run docs/regenerate.cs [-- --bench] [--check]
// --check rewrites nothing and exits 1 naming every block whose numbers differ from the fresh run's.
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

bool bench = args.Contains("--bench"), check = args.Contains("--check");
string root = Directory.GetCurrentDirectory();
if (!File.Exists(Path.Combine(root, "Interp.sln")))
{
    Console.Error.WriteLine($"error: run from the repository root (no Interp.sln in {root})");
    return 1;
}
var pages = Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Append(Path.Combine(root, "README.md")).Order(StringComparer.Ordinal).ToArray();
var numbers = new Regex(@"(?<open><!-- numbers: (?<args>[^>]*?) -->\n)(?<body>.*?)(?<close><!-- /numbers -->)", RegexOptions.Singleline);
var benchBlock = new Regex(@"(?<open><!-- bench -->\n)(?<body>.*?)(?<close><!-- /bench -->)", RegexOptions.Singleline);
var runs = new Dictionary<string, string>(StringComparer.Ordinal);   // the same run quoted twice runs once
var stale = new List<string>();
string work = Path.Combine(Path.GetTempPath(), $"interp-docs-{Environment.ProcessId}");

foreach (var page in pages)
{
    string text = File.ReadAllText(page), updated = text;
    foreach (Match m in numbers.Matches(text))
    {
        string options = m.Groups["args"].Value.Trim();
        if (!runs.TryGetValue(options, out var table))
            runs[options] = table = KeyNumbers(options);
        updated = updated.Replace(m.Value, m.Groups["open"].Value + table + m.Groups["close"].Value);
        if (m.Groups["body"].Value != table) stale.Add($"{Path.GetRelativePath(root, page)}: numbers of `{options}`");
    }
    if (bench)
        foreach (Match m in benchBlock.Matches(text))
        {
            string table = Bench();
            updated = updated.Replace(m.Value, m.Groups["open"].Value + table + m.Groups["close"].Value);
            if (m.Groups["body"].Value != table) stale.Add($"{Path.GetRelativePath(root, page)}: benchmark table");
        }
    if (!check && updated != text) File.WriteAllText(page, updated);
}
if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
foreach (var s in stale) Console.WriteLine($"{(check ? "stale" : "rewrote")}: {s}");
Console.WriteLine($"{runs.Count} run(s) quoted, {stale.Count} block(s) {(check ? "out of date" : "rewritten")}");
return check && stale.Count > 0 ? 1 : 0;

// The key numbers of one run, as a Markdown table (the format the manifest gives each).
string KeyNumbers(string options)
{
    string dir = Path.Combine(work, $"run{runs.Count}");
    Interp(["run", .. Split(options), "--seed", "0", "--out", dir]);
    using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")));
    var table = new StringBuilder("| number | value | what it is |\n|---|---:|---|\n");
    foreach (var k in manifest.RootElement.GetProperty("key_numbers").EnumerateArray())
    {
        double value = k.GetProperty("value").GetDouble();
        string format = k.GetProperty("format").GetString() ?? "0.000";
        table.Append(CultureInfo.InvariantCulture, $"| `{k.GetProperty("name").GetString()}` | {value.ToString(format, CultureInfo.InvariantCulture)} | {k.GetProperty("description").GetString()!.Replace("|", "\\|")} |\n");
    }
    return table.ToString();
}

string Bench()
{
    string dir = Path.Combine(work, "bench");
    Interp(["bench", "--out", dir]);
    return File.ReadAllText(Path.Combine(dir, "bench.md")).TrimEnd() + "\n";
}

void Interp(string[] arguments)
{
    var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, WorkingDirectory = root, RedirectStandardOutput = true };
    foreach (var a in new[] { "run", "--project", "src/Interp.Cli", "-c", "Release", "--" }.Concat(arguments)) psi.ArgumentList.Add(a);
    using var p = Process.Start(psi)!;
    string output = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"interp {string.Join(' ', arguments)} exited {p.ExitCode}:\n{output}");
}

static string[] Split(string options) => options.Split(' ', StringSplitOptions.RemoveEmptyEntries);

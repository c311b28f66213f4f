using System.Xml.Linq;
using Interp.Models;
using Interp.Tests.Experiments;

namespace Interp.Tests.Build;

/// <summary>
/// The assemblies' layering: the core library (models, hooks, loading, tokenizers, circuits, analysis passes) knows
/// nothing of the run layer, figures, the runner host or training; project references form no cycle; and the
/// experiment scripts are compiled into nothing but themselves.
/// </summary>
public sealed class LayeringTests
{
    private static readonly string Root = ExperimentScriptTests.RepoRoot();

    private static Dictionary<string, (string[] Projects, string[] Packages)> Projects() =>
        Directory.GetFiles(Path.Combine(Root, "src"), "*.csproj", SearchOption.AllDirectories)
            .Concat(Directory.GetFiles(Path.Combine(Root, "tests"), "*.csproj", SearchOption.AllDirectories))
            .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .ToDictionary(p => Path.GetFileNameWithoutExtension(p), p =>
            {
                var xml = XDocument.Load(p);
                string[] Items(string kind) => xml.Descendants(kind).Select(e => (string?)e.Attribute("Include")).OfType<string>().ToArray();
                return (Items("ProjectReference").Select(r => Path.GetFileNameWithoutExtension(r.Replace('\\', '/'))).ToArray(), Items("PackageReference"));
            });

    [Fact]
    public void Project_references_form_no_cycle_and_the_core_references_no_project()
    {
        var projects = Projects();
        Assert.Contains("Interp", projects.Keys);
        Assert.Contains("Interp.Run", projects.Keys);
        Assert.Empty(projects["Interp"].Projects);
        Assert.Equal(["Interp"], projects["Interp.Run"].Projects);
        // Depth-first search: a project met again while still on the path closes a cycle.
        var state = new Dictionary<string, int>();
        void Visit(string p, List<string> path)
        {
            if (state.GetValueOrDefault(p) == 2 || !projects.ContainsKey(p)) return;
            Assert.False(state.GetValueOrDefault(p) == 1, $"project references form a cycle: {string.Join(" → ", path.Append(p))}");
            state[p] = 1;
            foreach (var r in projects[p].Projects) Visit(r, [.. path, p]);
            state[p] = 2;
        }
        foreach (var p in projects.Keys) Visit(p, []);
    }

    [Fact]
    public void The_core_references_no_figures_runner_host_or_command_line_and_holds_no_study()
    {
        string[] forbidden = ["ScottPlot", "Microsoft.Extensions.Hosting", "System.CommandLine", "Interp.Run", "Interp.Cli"];
        var packages = Projects()["Interp"].Packages;
        Assert.DoesNotContain(packages, p => forbidden.Contains(p));
        var core = typeof(HookedTransformer).Assembly;
        var referenced = core.GetReferencedAssemblies().Select(a => a.Name!).ToArray();
        Assert.DoesNotContain(referenced, a => forbidden.Any(f => a.StartsWith(f, StringComparison.Ordinal)));
        var types = core.GetTypes();
        Assert.DoesNotContain(types, t => t.Name.EndsWith("Study", StringComparison.Ordinal));
        Assert.DoesNotContain(types, t => t.Namespace is "Interp.Experiments" or "Interp.Plots" or "Interp.Training" or "Interp.Benchmarks");
        // And the sources say the same (a file could name these without the compiler keeping a reference).
        foreach (var file in Directory.GetFiles(Path.Combine(Root, "src", "Interp"), "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains("/obj/") && !f.Contains("/bin/")))
        {
            string text = File.ReadAllText(file);
            foreach (var ns in new[] { "using ScottPlot", "using Interp.Experiments", "using Interp.Plots", "using Interp.Training", "using Interp.Benchmarks" })
                Assert.False(text.Contains(ns, StringComparison.Ordinal), $"{Path.GetRelativePath(Root, file)}: {ns}");
        }
    }

    [Fact]
    public void Experiment_scripts_are_compiled_into_nothing_but_themselves()
    {
        foreach (var project in Directory.GetFiles(Root, "*.csproj", SearchOption.AllDirectories).Where(p => !p.Contains("/obj/")))
            Assert.DoesNotContain("experiments", File.ReadAllText(project), StringComparison.Ordinal);
        var scripts = Directory.GetFiles(Path.Combine(Root, "experiments"), "*.cs");
        Assert.True(scripts.Length >= 10);
        foreach (var script in scripts)
        {
            string text = File.ReadAllText(script);
            Assert.StartsWith("#:project ../src/Interp.Run/Interp.Run.csproj", text);
            Assert.Contains("Experiment.RunAsync<", text);
        }
    }
}

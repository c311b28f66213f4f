using System.Collections.Immutable;
using Interp.Analyzers;
using Interp.Tests.Experiments;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.Diagnostics;

namespace Interp.Tests.Analyzers;

/// <summary>
/// The analyzer that keeps unowned TorchSharp scalars out of <c>src/</c> and <c>experiments/</c>: what it flags, what it
/// lets through, that its list of TorchSharp members is what TorchSharp's IL says, and that the repository's own code
/// has no finding.
/// </summary>
public sealed class ScalarLifetimeAnalyzerTests
{
    private static readonly string ListPath = Path.Combine(ExperimentScriptTests.RepoRoot(), "src", "Interp.Analyzers", "UnownedScalarMembers.txt");

    [Theory]
    [InlineData("var y = t + 1.0;", "INTERP0002")]            // operator +(Tensor, double) converts inside TorchSharp
    [InlineData("var y = 2 * t;", "INTERP0002")]
    [InlineData("var y = t + u;", "INTERP0002")]              // operator +(Tensor, Tensor) is add(u) = add(u, alpha: 1)
    [InlineData("var y = t.add(u);", "INTERP0002")]
    [InlineData("t.add_(u);", "INTERP0002")]
    [InlineData("var y = t.square();", "INTERP0002")]
    [InlineData("var y = torch.arange(10);", "INTERP0001", "INTERP0002")]
    [InlineData("var y = t.mul(0.5);", "INTERP0001")]          // our own conversion of 0.5
    [InlineData("t.fill_(1);", "INTERP0001")]
    [InlineData("var y = t.masked_fill(t.gt(u), float.NegativeInfinity);", "INTERP0001")]
    [InlineData("var y = t.div_((Scalar)3.0);", "INTERP0001")]  // a cast is the same operator, owned by nobody
    [InlineData("Scalar s = 2; var y = t.mul(s);", "INTERP0001")]
    [InlineData("var y = torch.full(new long[] { 2 }, 0.0);", "INTERP0001")]
    public void Flags_unowned_scalars(string statement, params string[] expected)
    {
        var found = Analyze(statement);
        Assert.Equal(expected.Order(), found.Select(d => d.Id).Order());
    }

    [Theory]
    [InlineData("using var s = 0.5.ToScalar(); var y = t.mul(s);")]
    [InlineData("var y = t.add(u, One);")]
    [InlineData("var y = t - u; var z = t * u; var w = t / u;")]  // these tensor operators pass no scalar
    [InlineData("using var stop = 10.ToScalar(); var y = torch.arange(Zero, stop, One);")]
    [InlineData("using var nan = double.NaN.ToScalar(); var y = torch.full(new long[] { 2 }, nan);")]
    [InlineData("var y = t.softmax(-1).sum(1).pow(u);")]
    public void Lets_owned_scalars_through(string statement) => Assert.Empty(Analyze(statement));

    [Fact]
    public void Member_list_is_what_TorchSharps_IL_says()
    {
        string torchSharp = typeof(TorchSharp.torch).Assembly.Location;
        var scanned = TorchSharpIl.UnownedScalarMembers(torchSharp);
        string header = string.Join('\n',
            "# TorchSharp members that make a TorchSharp.Scalar and leave it to the garbage collector (analyzer rule INTERP0002).",
            $"# Generated from the IL of TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version} by ScalarLifetimeAnalyzerTests.Member_list_is_what_TorchSharps_IL_says;",
            "# after a TorchSharp upgrade, regenerate with INTERP_UPDATE_SCALAR_MEMBERS=1 dotnet test --filter Member_list_is_what_TorchSharps_IL_says");
        if (Environment.GetEnvironmentVariable("INTERP_UPDATE_SCALAR_MEMBERS") == "1")
            File.WriteAllText(ListPath, header + "\n" + string.Join('\n', scanned) + "\n");

        var listed = File.ReadAllLines(ListPath).Where(l => l.Length > 0 && !l.StartsWith('#')).ToArray();
        var missing = scanned.Except(listed).ToArray();
        var extra = listed.Except(scanned).ToArray();
        Assert.True(missing.Length == 0 && extra.Length == 0,
            $"{ListPath} is out of date for this TorchSharp: {missing.Length} members missing (e.g. {string.Join(", ", missing.Take(3))}), " +
            $"{extra.Length} no longer apply (e.g. {string.Join(", ", extra.Take(3))}). Regenerate it: INTERP_UPDATE_SCALAR_MEMBERS=1 dotnet test --filter Member_list_is_what_TorchSharps_IL_says");
        // The analyzer embeds the same list.
        Assert.Equal(listed.Order(StringComparer.Ordinal), ScalarLifetimeAnalyzer.UnownedMembers.Order(StringComparer.Ordinal));

        // Independent of the scan, from TorchSharp's source: add(Tensor) is `add(target, 1)` and operator + calls it;
        // add(Tensor, Scalar) and operator -(Tensor, Tensor) pass no scalar of their own.
        Assert.Contains("M:TorchSharp.torch.Tensor.add(TorchSharp.torch.Tensor)", listed);
        Assert.Contains("M:TorchSharp.torch.Tensor.op_Addition(TorchSharp.torch.Tensor,TorchSharp.torch.Tensor)", listed);
        Assert.Contains("M:TorchSharp.torch.Tensor.op_Multiply(TorchSharp.torch.Tensor,System.Double)", listed);
        Assert.DoesNotContain("M:TorchSharp.torch.Tensor.add(TorchSharp.torch.Tensor,TorchSharp.Scalar)", listed);
        Assert.DoesNotContain("M:TorchSharp.torch.Tensor.op_Subtraction(TorchSharp.torch.Tensor,TorchSharp.torch.Tensor)", listed);
    }

    [Fact]
    public void Source_of_src_and_experiments_has_no_unowned_scalar()
    {
        string root = ExperimentScriptTests.RepoRoot();
        var references = PlatformReferences().Concat(AppReferences(except: ["Interp.dll", "Interp.Run.dll", "Interp.Cli.dll", "Interp.Tests.dll"])).ToArray();
        // The projects' InternalsVisibleTo items, which MSBuild turns into assembly attributes.
        var core = Compile("Interp", OutputKind.DynamicallyLinkedLibrary, SourceFiles(Path.Combine(root, "src", "Interp")), references, [],
            InternalsVisibleTo(Path.Combine(root, "src", "Interp", "Interp.csproj")));
        var run = Compile("Interp.Run", OutputKind.DynamicallyLinkedLibrary, SourceFiles(Path.Combine(root, "src", "Interp.Run")), [.. references, core.ToMetadataReference()], [],
            InternalsVisibleTo(Path.Combine(root, "src", "Interp.Run", "Interp.Run.csproj")));
        var cli = Compile("Interp.Cli", OutputKind.ConsoleApplication, SourceFiles(Path.Combine(root, "src", "Interp.Cli")),
            [.. references, core.ToMetadataReference(), run.ToMetadataReference()], []);
        // Each script is its own program.
        var scripts = Directory.GetFiles(Path.Combine(root, "experiments"), "*.cs").Select(f => Compile(Path.GetFileNameWithoutExtension(f), OutputKind.ConsoleApplication, [f],
            [.. references, core.ToMetadataReference(), run.ToMetadataReference()], [])).ToArray();
        foreach (var compilation in new[] { core, run, cli }.Concat(scripts))
        {
            var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).Take(5).ToArray();
            Assert.True(errors.Length == 0, $"{compilation.AssemblyName} does not compile in the test: {string.Join("; ", errors.Select(e => e.ToString()))}");
            var findings = Run(compilation);
            Assert.True(findings.Length == 0, $"{compilation.AssemblyName}: {findings.Length} unowned scalars, e.g. {string.Join("; ", findings.Take(5).Select(d => d.ToString()))}");
        }
        Assert.True(scripts.Length >= 10 && run.SyntaxTrees.Count() > 20, "the script and run-layer folders were not found");
        Assert.True(core.SyntaxTrees.Count() > 50, "the source folders were not found");
    }

    private static ImmutableArray<Diagnostic> Analyze(string statement)
    {
        string source = $$"""
            using TorchSharp;
            using static TorchSharp.torch;
            static class Snippet
            {
                static readonly Scalar One = 1.ToScalar(), Zero = 0.ToScalar();
                static void Run(Tensor t, Tensor u)
                {
                    {{statement}}
                }
            }
            """;
        var compilation = CSharpCompilation.Create("snippet", [CSharpSyntaxTree.ParseText(source)],
            [.. PlatformReferences(), MetadataReference.CreateFromFile(typeof(TorchSharp.torch).Assembly.Location)],
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary));
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToArray();
        Assert.True(errors.Length == 0, string.Join("; ", errors.Select(e => e.ToString())));
        // The field initialisers own their scalars (static: alive for the process); only the statement is judged.
        return [.. Run(compilation).Where(d => d.Location.GetLineSpan().StartLinePosition.Line >= 6)];
    }

    private static ImmutableArray<Diagnostic> Run(Compilation compilation) =>
        compilation.WithAnalyzers([new ScalarLifetimeAnalyzer()]).GetAnalyzerDiagnosticsAsync().GetAwaiter().GetResult();

    private static string[] InternalsVisibleTo(string project) =>
        [.. System.Xml.Linq.XDocument.Load(project).Descendants("InternalsVisibleTo").Select(item => item.Attribute("Include")?.Value)
            .OfType<string>().Select(assembly => $"[assembly: System.Runtime.CompilerServices.InternalsVisibleTo(\"{assembly}\")]")];

    private static CSharpCompilation Compile(string name, OutputKind kind, IEnumerable<string> files, IEnumerable<MetadataReference> references, string[] symbols,
        params string[] extraSources)
    {
        var options = new CSharpParseOptions(LanguageVersion.Preview, preprocessorSymbols: symbols).WithFeatures([new("FileBasedProgram", "true")]);
        var trees = files.Select(f => CSharpSyntaxTree.ParseText(File.ReadAllText(f), options, f)).ToList();
        trees.AddRange(extraSources.Select((text, i) => CSharpSyntaxTree.ParseText(text, options, $"Extra{i}.cs")));
        trees.Add(CSharpSyntaxTree.ParseText(GlobalUsings, options, "GlobalUsings.cs"));
        return CSharpCompilation.Create(name, trees, references,
            new CSharpCompilationOptions(kind, nullableContextOptions: NullableContextOptions.Enable, allowUnsafe: true));
    }

    private const string GlobalUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;

    private static IEnumerable<string> SourceFiles(string dir) =>
        Directory.EnumerateFiles(dir, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"));

    private static IEnumerable<MetadataReference> PlatformReferences() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => Path.GetDirectoryName(p) == Path.GetDirectoryName(typeof(object).Assembly.Location))
            .Select(p => MetadataReference.CreateFromFile(p));

    private static IEnumerable<MetadataReference> AppReferences(string[] except) =>
        Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll")
            .Where(p => !except.Contains(Path.GetFileName(p)) && IsManaged(p))
            .Select(p => MetadataReference.CreateFromFile(p));

    private static bool IsManaged(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var pe = new System.Reflection.PortableExecutable.PEReader(stream);
            return pe.HasMetadata;
        }
        catch (BadImageFormatException) { return false; }
    }
}

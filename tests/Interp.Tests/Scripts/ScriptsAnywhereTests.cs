using Interp.Loading;
using System.Globalization;
using Interp.Models;
using Interp.Tests.Experiments;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Scripts;

/// <summary>
/// A program outside this repository that references Interp starts and runs a forward pass on this machine: the fix for
/// TorchSharp's native library travels with Interp (<see cref="NativeLoader"/>), not with this repository's build files.
/// </summary>
public sealed class ScriptsAnywhereTests
{
    [Fact]
    public async Task A_script_in_a_folder_outside_the_repository_runs_a_forward_pass_of_the_built_in_model()
    {
        using var tmp = new TempDir();
        string repo = ExperimentScriptTests.RepoRoot();
        Assert.False(tmp.Path.StartsWith(repo, StringComparison.Ordinal));
        File.WriteAllText(tmp.File("forward.cs"), $$"""
            #:project {{Path.Combine(repo, "src", "Interp", "Interp.csproj")}}
            using System.Globalization;
            using Interp.Loading;
            using var loaded = BuiltInModel.Load();
            using var tokens = TorchSharp.torch.tensor(new long[] { 1, 5, 9, 2 });
            using var logits = loaded.Model.forward(tokens);
            Console.WriteLine(string.Join(",", logits.shape));
            foreach (var v in logits.reshape(-1).data<float>().ToArray()[..8]) Console.WriteLine(v.ToString("R", CultureInfo.InvariantCulture));
            """);
        var run = await DotnetScripts.Run(tmp.File("forward.cs"), [], workingDirectory: tmp.Path);
        Assert.True(run.ExitCode == 0, run.ToString());
        var lines = run.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal("1,4,64", lines[0]);

        // The same forward pass in this process: the script computed the real logits, not something that merely started.
        using var loaded = Interp.Loading.BuiltInModel.Load();
        using var tokens = tensor(new long[] { 1, 5, 9, 2 });
        using var logits = loaded.Model.forward(tokens);
        var expected = logits.reshape(-1).data<float>().ToArray()[..8];
        for (int i = 0; i < 8; i++) Assert.Equal(expected[i], float.Parse(lines[1 + i], CultureInfo.InvariantCulture), 1e-5);
    }

    [Fact]
    public async Task A_console_project_outside_the_repository_that_references_Interp_runs_a_forward_pass()
    {
        using var tmp = new TempDir();
        string repo = ExperimentScriptTests.RepoRoot();
        File.WriteAllText(tmp.File("app.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings><Nullable>enable</Nullable></PropertyGroup>
              <ItemGroup><ProjectReference Include="{Path.Combine(repo, "src", "Interp", "Interp.csproj")}" /></ItemGroup>
            </Project>
            """);
        File.WriteAllText(tmp.File("Program.cs"), """
            using var loaded = Interp.Loading.BuiltInModel.Load();
            using var tokens = TorchSharp.torch.tensor(new long[] { 1, 5, 9 });
            using var logits = loaded.Model.forward(tokens);
            Console.WriteLine(string.Join(",", logits.shape));
            """);
        var run = await DotnetScripts.RunProject(tmp.Path);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("1,3,64", run.Output.Trim());
    }

    [Fact]
    public async Task The_quick_start_of_the_README_runs_as_written_in_a_folder_outside_the_repository()
    {
        string repo = ExperimentScriptTests.RepoRoot();
        var readme = File.ReadAllText(Path.Combine(repo, "README.md"));
        var code = System.Text.RegularExpressions.Regex.Match(readme, @"## Quick start.*?```csharp\n(.*?)```", System.Text.RegularExpressions.RegexOptions.Singleline).Groups[1].Value;
        Assert.Contains("#:project /path/to/interp/src/Interp/Interp.csproj", code);
        code = code.Replace("/path/to/interp/src/Interp/Interp.csproj", Path.Combine(repo, "src", "Interp", "Interp.csproj"))
            .Replace("../shared/models/stories260K/stories260K.bin", TestModels.StoriesBin);
        Assert.True(code.Split('\n').Count(l => l.Trim().Length > 0 && !l.TrimStart().StartsWith("//", StringComparison.Ordinal)) <= 32, "the quick start stays about 30 lines");
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("quick_start.cs"), code);
        var run = await DotnetScripts.Run(tmp.File("quick_start.cs"), [], workingDirectory: tmp.Path);
        Assert.True(run.ExitCode == 0, run.ToString());
        double Printed(string label) => double.Parse(System.Text.RegularExpressions.Regex.Match(run.Output, System.Text.RegularExpressions.Regex.Escape(label) + @"\s*(-?[0-9.]+)").Groups[1].Value, CultureInfo.InvariantCulture);

        // The same numbers computed here, without the toolkit's tokens helpers or attribution.
        using var loaded = Interp.Loading.ModelLoader.Load(TestModels.StoriesBin);
        var tok = loaded.Tokenizer!;
        var ids = tok.Encode("Lily and Tim went to the park. Tim gave the ball to", prependBos: true).Select(i => (long)i).ToArray();
        int lily = tok.Encode("Lily and Tim went to the park. Tim gave the ball to Lily", prependBos: true)[^1];
        int tim = tok.Encode("Lily and Tim went to the park. Tim gave the ball to Tim", prependBos: true)[^1];
        using var scope = NewDisposeScope();
        var logits = loaded.Model.forward(tensor(ids));
        double diff = logits[0, -1, lily].item<float>() - (double)logits[0, -1, tim].item<float>();
        Assert.Equal(diff, Printed("logit(Lily) − logit(Tim) ="), 1e-3);
        Assert.Equal(diff, Printed("the components sum to"), 1e-3);
        var ablated = loaded.Model.RunWithHooks(tensor(ids), (Interp.Hooks.HookNames.Z(2), (z, _) => { var c = z.clone(); c.select(2, 6).zero_(); return c; }));
        Assert.Equal(ablated[0, -1, lily].item<float>() - (double)ablated[0, -1, tim].item<float>(), Printed("without head 2.6:"), 1e-3);
    }

    [LinuxFact]
    public void The_native_library_is_patched_only_where_the_system_libstdcxx_lacks_the_version()
    {
        using var _ = zeros(1);   // TorchSharp has loaded its native library by now
        bool systemHasIt = SystemLibstdcxxHas(NativeLoader.WeakVersion);
        Assert.NotNull(NativeLoader.Outcome);
        Assert.StartsWith(systemHasIt ? "as shipped" : "patched copy", NativeLoader.Outcome);
    }

    /// <summary>Reads the system's libstdc++ (as ldconfig lists it) for the version string: independent of the loader.</summary>
    private static bool SystemLibstdcxxHas(string version)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("/sbin/ldconfig", "-p") { RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var libs = p.StandardOutput.ReadToEnd().Split('\n')
            .Where(l => l.TrimStart().StartsWith("libstdc++.so.6 ", StringComparison.Ordinal) && l.Contains("x86-64", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf("=>", StringComparison.Ordinal) + 2)..].Trim()).ToArray();
        p.WaitForExit();
        Assert.NotEmpty(libs);
        var needle = System.Text.Encoding.ASCII.GetBytes(version + "\0");
        return libs.Any(l => File.ReadAllBytes(l).AsSpan().IndexOf(needle) >= 0);
    }
}

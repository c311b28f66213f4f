using System.Diagnostics;

namespace Interp.Tests.Support;

/// <summary>
/// Builds and runs single-file C# programs (<c>dotnet run file.cs</c>) as their own processes, as a researcher does.
/// Builds are serialised: two builds of the same script, or of Interp's projects that every script references, must not
/// write the same obj/ folders at once. Runs after the build use <c>--no-build</c> and may overlap.
/// </summary>
internal static class DotnetScripts
{
    private static readonly SemaphoreSlim BuildGate = new(1, 1);
    private static readonly HashSet<string> Built = new(StringComparer.Ordinal);

    /// <summary>How a run ended.</summary>
    public sealed record Result(int ExitCode, string Output, string Error)
    {
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Output}\n--- stderr\n{Error}";
    }

    /// <summary>Builds <paramref name="script"/> (Release, once per test run) and runs it with <paramref name="args"/>.</summary>
    public static async Task<Result> Run(string script, IEnumerable<string> args, TimeSpan? timeout = null, string? workingDirectory = null)
    {
        script = Path.GetFullPath(script);
        await BuildGate.WaitAsync();
        try
        {
            if (!Built.Contains(script))
            {
                var build = await Dotnet(["build", script, "-c", "Release", "-nologo", "-v", "q"], TimeSpan.FromMinutes(10), workingDirectory);
                if (build.ExitCode != 0) return build;
                Built.Add(script);
            }
        }
        finally { BuildGate.Release(); }
        return await Dotnet(["run", "--no-build", "-c", "Release", script, "--", .. args], timeout ?? TimeSpan.FromMinutes(10), workingDirectory);
    }

    /// <summary>Builds and runs the console project in <paramref name="folder"/> (Release).</summary>
    public static async Task<Result> RunProject(string folder, TimeSpan? timeout = null)
    {
        await BuildGate.WaitAsync();
        try
        {
            var build = await Dotnet(["build", folder, "-c", "Release", "-nologo", "-v", "q"], TimeSpan.FromMinutes(10), folder);
            if (build.ExitCode != 0) return build;
        }
        finally { BuildGate.Release(); }
        return await Dotnet(["run", "--no-build", "-c", "Release", "--project", folder], timeout ?? TimeSpan.FromMinutes(10), folder);
    }

    private static async Task<Result> Dotnet(IEnumerable<string> args, TimeSpan timeout, string? workingDirectory)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // The test host's own MSBuild settings must not leak into the child's build.
        foreach (var name in new[] { "MSBuildExtensionsPath", "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "DOTNET_HOST_PATH" }) psi.Environment.Remove(name);
        using var process = Process.Start(psi)!;
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try { await process.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            return new Result(-1, await output, $"timed out after {timeout.TotalSeconds:F0} s\n{await error}");
        }
        return new Result(process.ExitCode, await output, await error);
    }
}

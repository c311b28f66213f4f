using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Runtime.InteropServices;

namespace Interp.Cli;

/// <summary>
/// Runs an experiment script as its own program: <c>dotnet build</c> (under a machine-wide lock, so that two runs never
/// build Interp's projects at once), then the built program itself with this program's console. A half-written script
/// breaks only itself. Ctrl+C (SIGINT) is passed on to the script, which records what it finished and exits 130; if
/// this process dies (SIGKILL), the script stops too (it watches its parent, <see cref="Interp.Experiments.Experiment"/>),
/// so a killed run is one killed run, as when everything ran in one process.
/// </summary>
internal static class ScriptLauncher
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif


    /// <summary>Runs <paramref name="script"/> with <paramref name="args"/>; returns its exit code.</summary>
    public static async Task<int> RunAsync(ExperimentScript script, IReadOnlyList<string> args, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        string? program = await BuildAsync(script, error, cancellationToken);
        if (program is null) return 1;
        cancellationToken.ThrowIfCancellationRequested();   // Ctrl+C during the build: nothing was started
        bool console = ReferenceEquals(output, Console.Out) && ReferenceEquals(error, Console.Error);
        using var run = Start([program, .. args], redirect: !console, launcher: true);
        Task copy = Task.CompletedTask;
        if (!console)
            copy = Task.WhenAll(CopyAsync(run.StandardOutput, output), CopyAsync(run.StandardError, error));
        using (cancellationToken.Register(() => Interrupt(run)))
            await run.WaitForExitAsync(CancellationToken.None);
        await copy;
        return run.ExitCode;
    }

    /// <summary>
    /// Builds the script unless it is up to date; returns the program's path, or null after writing the build's errors.
    /// Up to date: a stamp (under the temp folder) records the program built and the newest input it was built from —
    /// the script, and every source, project and MSBuild file of the project folders its <c>#:project</c> lines name
    /// (their parent folder, for the projects those reference) and the Directory.* files above them. MSBuild's own
    /// up-to-date check of a script with project references takes seconds; this takes milliseconds.
    /// </summary>
    internal static async Task<string?> BuildAsync(ExperimentScript script, TextWriter error, CancellationToken cancellationToken)
    {
        using var _ = await BuildLock.AcquireAsync(cancellationToken);
        string stamp = Path.Combine(Path.GetTempPath(), "interp-script-stamps", Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(script.Path)))[..16] + ".txt");
        long newest = Inputs(script.Path).Max(f => File.GetLastWriteTimeUtc(f).Ticks);
        if (File.Exists(stamp) && File.ReadAllLines(stamp) is [var program, var ticks, var configuration]
            && configuration == Configuration && long.TryParse(ticks, out long built) && built >= newest && File.Exists(program))
            return program;

        using var build = Start(["build", script.Path, "-c", Configuration, "-nologo", "-v", "m", "-clp:NoSummary"], redirect: true, launcher: false);
        var stdout = build.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = build.StandardError.ReadToEndAsync(CancellationToken.None);
        await build.WaitForExitAsync(CancellationToken.None);
        string text = await stdout;
        if (build.ExitCode != 0)
        {
            var errors = text.Split('\n').Where(l => l.Contains("error", StringComparison.Ordinal)).Select(l => l.Trim()).Distinct();
            await error.WriteLineAsync($"error: {script.Path} does not build:\n{string.Join('\n', errors)}\n{(await stderr).Trim()}".TrimEnd());
            return null;
        }
        // Minimal verbosity names every output: "  NAME.cs -> /…/bin/release/NAME.dll".
        string marker = $"{Path.GetFileName(script.Path)} -> ";
        string? output = text.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith(marker, StringComparison.Ordinal)).Select(l => l[marker.Length..]).LastOrDefault();
        if (output is null || !File.Exists(output))
        {
            await error.WriteLineAsync($"error: built {script.Path} but could not find the program it built in the build's output:\n{text.Trim()}");
            return null;
        }
        Directory.CreateDirectory(Path.GetDirectoryName(stamp)!);
        File.WriteAllLines(stamp, [output, newest.ToString(CultureInfo.InvariantCulture), Configuration]);
        return output;
    }

    /// <summary>The files a build of <paramref name="script"/> reads (see <see cref="BuildAsync"/>).</summary>
    private static IEnumerable<string> Inputs(string script)
    {
        var files = new HashSet<string>(StringComparer.Ordinal) { script };
        var folders = new List<string> { Path.GetDirectoryName(script)! };
        foreach (var line in File.ReadLines(script).TakeWhile(l => l.StartsWith("#", StringComparison.Ordinal) || l.Trim().Length == 0 || l.StartsWith("//", StringComparison.Ordinal)))
        {
            if (!line.StartsWith("#:project ", StringComparison.Ordinal)) continue;
            string project = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(script)!, line["#:project ".Length..].Trim()));
            string? folder = Directory.Exists(project) ? project : Path.GetDirectoryName(project);
            if (folder is null) continue;
            folders.Add(folder);
            string sources = Path.GetDirectoryName(folder) ?? folder;   // src/: the projects it references live beside it
            foreach (var f in Directory.EnumerateFiles(sources, "*", SearchOption.AllDirectories))
                if (!f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                    && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
                    files.Add(f);
        }
        foreach (var folder in folders)
            for (var d = new DirectoryInfo(folder); d is not null; d = d.Parent)
                foreach (var name in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props", "global.json", "NuGet.config" })
                    if (File.Exists(Path.Combine(d.FullName, name))) files.Add(Path.Combine(d.FullName, name));
        return files;
    }

    private static Process Start(IEnumerable<string> args, bool redirect, bool launcher)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            UseShellExecute = false,
            RedirectStandardOutput = redirect,
            RedirectStandardError = redirect,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Set when this program itself runs under `dotnet run`/`dotnet test`: they would point the child's build at the wrong MSBuild.
        foreach (var name in new[] { "MSBuildExtensionsPath", "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "MSBuildLoadMicrosoftTargetsReadOnly" }) psi.Environment.Remove(name);
        if (launcher) psi.Environment[Interp.Experiments.Experiment.LauncherVariable] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        try { return Process.Start(psi) ?? throw new InterpException("could not start dotnet"); }
        catch (System.ComponentModel.Win32Exception ex) { throw new InterpException($"could not start dotnet to run the script: {ex.Message}", ex); }
    }

    private static async Task CopyAsync(StreamReader from, TextWriter to)
    {
        var buffer = new char[4096];
        int n;
        while ((n = await from.ReadAsync(buffer)) > 0)
            lock (to) to.Write(buffer, 0, n);
    }

    /// <summary>SIGINT to the script: it cancels, writes its report and exits 130.</summary>
    private static void Interrupt(Process process)
    {
        try
        {
            if (OperatingSystem.IsWindows()) process.Kill(entireProcessTree: true);
            else _ = kill(process.Id, 2);
        }
        catch (InvalidOperationException) { }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}

/// <summary>A machine-wide lock (an exclusively opened file under the temp folder) around script builds.</summary>
internal sealed class BuildLock : IDisposable
{
    private readonly FileStream _file;
    private BuildLock(FileStream file) => _file = file;

    public static async Task<BuildLock> AcquireAsync(CancellationToken cancellationToken)
    {
        string path = Path.Combine(Path.GetTempPath(), "interp-script-build.lock");
        while (true)
        {
            try { return new BuildLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)); }
            catch (IOException) { await Task.Delay(200, cancellationToken); }
        }
    }

    public void Dispose() => _file.Dispose();
}

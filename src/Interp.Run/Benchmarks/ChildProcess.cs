using System.Diagnostics;

namespace Interp.Benchmarks;

/// <summary>
/// Runs a program to its end and returns its exit code and both output streams. Both streams are read at the same
/// time: a child that fills one pipe (64 KiB on Linux) while its parent waits for the end of the other would wait
/// forever, as apt-get's progress on stderr once did under the peer's installer.
/// </summary>
internal static class ChildProcess
{
    /// <summary>How a run ended.</summary>
    public sealed record Result(int ExitCode, string Output, string Error);

    /// <summary>Runs <paramref name="file"/> with <paramref name="arguments"/>, its standard input closed.</summary>
    /// <exception cref="InterpException">It could not be started, or ran past <paramref name="timeout"/> (it is then killed).</exception>
    public static Result Run(string file, IEnumerable<string> arguments, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var psi = new ProcessStartInfo(file)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        using var process = Start(psi);
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var error = process.StandardError.ReadToEndAsync(CancellationToken.None);
        bool exited;
        using (cancellationToken.Register(() => Kill(process)))
            exited = process.WaitForExit(timeout);
        if (!exited) Kill(process);
        process.WaitForExit();          // the streams reach their end once the process (and its children) closed them
        Task.WaitAll(output, error);
        cancellationToken.ThrowIfCancellationRequested();
        if (!exited) throw new InterpException($"{file} {string.Join(' ', arguments)} ran past {timeout.TotalSeconds:F0} s and was stopped");
        return new Result(process.ExitCode, output.Result, error.Result);
    }

    /// <summary>Starts <paramref name="psi"/>, with an error that names the program when it cannot.</summary>
    public static Process Start(ProcessStartInfo psi)
    {
        try
        {
            return Process.Start(psi) ?? throw new InterpException($"could not start {psi.FileName}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InterpException($"could not start {psi.FileName}: {ex.Message}", ex);
        }
    }

    private static void Kill(Process process)
    {
        try { process.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { }   // already exited
    }
}

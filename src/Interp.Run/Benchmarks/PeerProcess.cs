using System.Diagnostics;
using System.Globalization;
using Interp.Models;

namespace Interp.Benchmarks;

/// <summary>
/// The PyTorch-eager peer (<c>benchmarks/peer.py</c> under Debian's Python), kept running so that its repetitions can
/// be interleaved with ours: one command per line on stdin, one <c>ok …</c> line back. It times itself, so the pipe's
/// latency is not counted. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from its environment (OpenBLAS then
/// picks its kernel for the real CPU) and it uses as many threads as this process's torch.
/// </summary>
internal sealed class PeerProcess : IDisposable
{
    private readonly Process _process;

    private PeerProcess(Process process) => _process = process;

    /// <summary>Version, threads and BLAS, as the peer reports them.</summary>
    public string Info { get; private set; } = "";

    /// <summary>
    /// Starts the peer on the Hugging Face GPT-2 folder <paramref name="modelDir"/>. Without it installed, installs it
    /// first when <paramref name="install"/> is set (<c>interp bench --install-peer</c>), and otherwise says how to.
    /// </summary>
    /// <exception cref="InterpException">The peer is not installed (the message begins "peer not installed: run …"), its installation failed, or it did not start.</exception>
    public static PeerProcess Start(string python, string scriptsDir, string modelDir, int threads, bool install)
    {
        EnsureInstalled(python, scriptsDir, install);
        var psi = new ProcessStartInfo(python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(scriptsDir, "peer.py"));
        psi.ArgumentList.Add(modelDir);
        psi.ArgumentList.Add(threads.ToString(CultureInfo.InvariantCulture));
        psi.Environment.Remove("OPENBLAS_CORETYPE");
        psi.Environment.Remove("OPENBLAS_L2_SIZE");
        // The OpenMP settings this process runs with (NativeEnvironment sets them natively, so .NET's copy of the
        // environment, which a child inherits, lacks them). Without GOMP_SPINCOUNT the peer's OpenMP pool and OpenBLAS's
        // threads spin against each other: its tiny GPT-2 forward took 28–60 ms instead of 2–3 ms.
        foreach (string name in new[] { "GOMP_SPINCOUNT", "OMP_WAIT_POLICY" })
            if (NativeEnvironment.Get(name) is { } value) psi.Environment[name] = value;
        var process = ChildProcess.Start(psi);
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        var peer = new PeerProcess(process);
        string? ready = process.StandardOutput.ReadLine();
        if (ready != "ready")
        {
            peer.Dispose();
            throw new InterpException($"bench: the peer did not start (said '{ready ?? "nothing"}'); run {Path.Combine(scriptsDir, "setup-peer.sh")} as root");
        }
        peer.Info = peer.Ask("info");
        return peer;
    }

    /// <summary>What to run to install the peer (Debian's python3-torch on OpenBLAS), for messages.</summary>
    public static string InstallHint(string scriptsDir) =>
        $"run 'sudo sh {Path.Combine(scriptsDir, "setup-peer.sh")}' or 'interp bench --install-peer'";

    /// <summary>
    /// Checks that the peer's Python imports torch and numpy; if not, runs <c>setup-peer.sh</c> when
    /// <paramref name="install"/> is set and otherwise refuses with how to install it. Nothing is installed unasked.
    /// </summary>
    private static void EnsureInstalled(string python, string scriptsDir, bool install)
    {
        string setup = Path.Combine(scriptsDir, "setup-peer.sh");
        if (Imports(python)) return;
        if (!install) throw new InterpException($"peer not installed ({python} cannot import torch and numpy): {InstallHint(scriptsDir)}");
        if (!File.Exists(setup)) throw new InterpException($"bench: the peer's installer {setup} does not exist");
        var run = ChildProcess.Run("/bin/sh", [setup], TimeSpan.FromMinutes(30));
        if (run.ExitCode != 0)
            throw new InterpException($"bench: {setup} failed (exit {run.ExitCode}): {LastLine(run.Error)}; the peer needs python3-torch and libopenblas0-pthread");
        if (!Imports(python)) throw new InterpException($"bench: {setup} ran, but {python} still cannot import torch and numpy");
    }

    private static bool Imports(string python) =>
        File.Exists(python) && ChildProcess.Run(python, ["-c", "import torch, numpy"], TimeSpan.FromMinutes(2)).ExitCode == 0;

    private static string LastLine(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "no message";

    /// <summary>Sends one command and returns the text after <c>ok </c>.</summary>
    public string Ask(string command)
    {
        _process.StandardInput.WriteLine(command);
        _process.StandardInput.Flush();
        string? line = _process.StandardOutput.ReadLine();
        if (line is null || !line.StartsWith("ok", StringComparison.Ordinal))
            throw new InterpException($"bench: the peer failed on '{command}': {line ?? "it exited"}");
        return line.Length > 3 ? line[3..] : "";
    }

    /// <summary>Seconds the peer reports for <paramref name="command"/>.</summary>
    public double Seconds(string command) => double.Parse(Ask(command), CultureInfo.InvariantCulture);

    /// <summary>Stops the peer.</summary>
    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.StandardInput.WriteLine("quit");
                _process.StandardInput.Flush();
                if (!_process.WaitForExit(5000)) _process.Kill();
            }
        }
        catch (IOException) { }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}

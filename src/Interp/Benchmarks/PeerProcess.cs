using System.Diagnostics;
using System.Globalization;

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

    /// <summary>Starts the peer on the Hugging Face GPT-2 folder <paramref name="modelDir"/> (installing it first when needed).</summary>
    public static PeerProcess Start(string python, string scriptsDir, string modelDir, int threads)
    {
        EnsureInstalled(python, scriptsDir);
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
        var process = Process.Start(psi) ?? throw new InterpException($"bench: could not start the peer {python}");
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

    /// <summary>Runs <c>setup-peer.sh</c> when the peer's Python cannot import torch (it installs python3-torch on OpenBLAS).</summary>
    private static void EnsureInstalled(string python, string scriptsDir)
    {
        if (!File.Exists(python)) throw new InterpException($"bench: the peer's Python {python} does not exist");
        if (Exit(python, "-c", "import torch, numpy") == 0) return;
        int rc = Exit("/bin/sh", Path.Combine(scriptsDir, "setup-peer.sh"));
        if (rc != 0) throw new InterpException($"bench: setup-peer.sh failed (exit {rc}); the peer needs python3-torch and libopenblas0-pthread");
    }

    private static int Exit(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode;
    }

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

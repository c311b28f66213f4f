using Interp.Benchmarks;
using Interp.Tests.Support;

namespace Interp.Tests.Benchmarks;

/// <summary>The benchmark's child processes: never a deadlock on a chatty child, never an installation nobody asked for.</summary>
public sealed class PeerProcessTests
{
    // 1 MiB on each stream, stderr first: far more than a pipe holds (64 KiB), so a parent that reads stdout to its end
    // before it reads stderr waits for a child that waits for it.
    private const string Chatty = "head -c 1048576 /dev/zero | tr '\\0' e >&2; head -c 1048576 /dev/zero | tr '\\0' o; echo done >&2";

    [Fact]
    public void A_child_that_fills_both_pipes_runs_to_its_end()
    {
        var run = ChildProcess.Run("/bin/sh", ["-c", Chatty], TimeSpan.FromSeconds(60));
        Assert.Equal(0, run.ExitCode);
        Assert.Equal(1 << 20, run.Output.Length);
        Assert.Equal((1 << 20) + "done\n".Length, run.Error.Length);
        Assert.All(new[] { run.Output[0], run.Output[^1] }, c => Assert.Equal('o', c));
    }

    [Fact]
    public void A_child_past_its_time_is_stopped_with_a_clear_error()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var error = Assert.Throws<InterpException>(() => ChildProcess.Run("/bin/sh", ["-c", "sleep 30"], TimeSpan.FromSeconds(1)));
        Assert.Contains("ran past 1 s", error.Message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
    }

    [Fact]
    public void Without_the_peer_bench_says_how_to_install_it_and_installs_nothing()
    {
        using var tmp = new TempDir();
        string marker = WriteInstaller(tmp.Path, exitCode: 0);
        var error = Assert.Throws<InterpException>(() =>
            PeerProcess.Start(tmp.File("no-such-python"), tmp.Path, tmp.Path, threads: 1, install: false));
        Assert.StartsWith("peer not installed", error.Message);
        Assert.Contains("setup-peer.sh", error.Message);
        Assert.Contains("--install-peer", error.Message);
        Assert.False(File.Exists(marker), "the installer ran although nobody asked for it");
    }

    [Fact]
    public void Install_peer_runs_the_chatty_installer_to_its_end_and_reports_its_failure()
    {
        using var tmp = new TempDir();
        string marker = WriteInstaller(tmp.Path, exitCode: 3);
        var error = Assert.Throws<InterpException>(() =>
            PeerProcess.Start(tmp.File("no-such-python"), tmp.Path, tmp.Path, threads: 1, install: true));
        Assert.True(File.Exists(marker), "--install-peer did not run the installer");
        Assert.Contains("failed (exit 3)", error.Message);
        Assert.Contains("E: unable to locate package", error.Message);   // its last line on stderr
    }

    /// <summary>A fake setup-peer.sh that talks as much as apt-get does, leaves a marker, and exits with <paramref name="exitCode"/>.</summary>
    private static string WriteInstaller(string dir, int exitCode)
    {
        string marker = Path.Combine(dir, "installer-ran");
        File.WriteAllText(Path.Combine(dir, "setup-peer.sh"),
            $"touch '{marker}'\n{Chatty}\necho 'E: unable to locate package python3-torch' >&2\nexit {exitCode}\n");
        return marker;
    }
}

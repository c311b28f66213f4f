using System.Diagnostics;
using Interp.Experiments;
using Interp.Tests.Support;
using Xunit.Abstractions;

namespace Interp.Tests.Reliability;

/// <summary>
/// Runs <c>interp run induction_heads</c> as a child process and stops it with SIGINT or SIGKILL at seeded random
/// moments. Whatever it leaves behind must be complete and readable, and running again must produce the full set, with
/// the same values as an uninterrupted run.
/// </summary>
public sealed class InterruptedRunTests(ITestOutputHelper output)
{
    private const int Sigint = 2, Sigkill = 9;
    private const string Experiment = "induction_heads";

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill")]
    private static extern int SendSignal(int pid, int signal);

    /// <summary>Sends <paramref name="signal"/> to <paramref name="pid"/> with the <c>kill</c> command.</summary>
    private static void Kill(int pid, int signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { RedirectStandardError = true })!;
        kill.WaitForExit();
    }

    /// <summary>The CLI beside the test assembly (the test project references it, so the build copies it here).</summary>
    private static string CliDll => Path.Combine(AppContext.BaseDirectory, "Interp.Cli.dll");

    /// <summary>
    /// A child started from a shell without job control inherits SIGINT as ignored; <c>env --default-signal</c>
    /// (coreutils ≥ 8.31) restores the default, so that the CLI's own Ctrl+C handling is what the test exercises.
    /// </summary>
    private static readonly Lazy<bool> EnvResetsSignals = new(() =>
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("env", ["--default-signal=INT", "true"]) { RedirectStandardError = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    });

    /// <summary>A started run and the last lines it wrote (its own and the script's, which shares its console).</summary>
    private sealed class Run(Process process) : IDisposable
    {
        private readonly Queue<string> _lines = new();
        public Process Process { get; } = process;
        public void Add(string? line)
        {
            if (line is null) return;
            lock (_lines) { _lines.Enqueue(line); if (_lines.Count > 30) _lines.Dequeue(); }
        }
        /// <summary>The last lines, for a failure message: what the run was doing when it went wrong.</summary>
        public string Tail() { lock (_lines) return "\n--- its last output lines ---\n" + string.Join('\n', _lines); }
        public void Dispose() => Process.Dispose();
    }

    private static Run Start(string outDir, string workDir)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        string[] args = [CliDll, "run", Experiment, "--out", outDir, "--seed", "0"];
        var info = EnvResetsSignals.Value
            ? new ProcessStartInfo("env", ["--default-signal=INT", dotnet, .. args])
            : new ProcessStartInfo(dotnet, args);
        info.WorkingDirectory = workDir;
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        var run = new Run(Process.Start(info)!);
        run.Process.OutputDataReceived += (_, e) => run.Add(e.Data);
        run.Process.ErrorDataReceived += (_, e) => run.Add(e.Data);
        run.Process.BeginOutputReadLine();
        run.Process.BeginErrorReadLine();
        return run;
    }

    /// <summary>Whether the child's SIGINT disposition is "ignore" (bit 1 of SigIgn in /proc/PID/status).</summary>
    private static bool IgnoresSigint(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
            return line is not null && (Convert.ToUInt64(line[7..].Trim(), 16) & 2) != 0;
        }
        catch (IOException) { return false; }
    }

    private static (int ExitCode, TimeSpan Elapsed) RunToEnd(string outDir, string workDir)
    {
        var watch = Stopwatch.StartNew();
        using var run = Start(outDir, workDir);
        Assert.True(run.Process.WaitForExit(TimeSpan.FromSeconds(120)), "the run did not finish within 120 s" + run.Tail());
        run.Process.WaitForExit();   // the output readers' last lines
        Assert.True(run.Process.ExitCode == 0, $"exit code {run.Process.ExitCode}{run.Tail()}");
        return (run.Process.ExitCode, watch.Elapsed);
    }

    [LinuxFact]   // signals
    public void Sigint_right_after_the_run_starts_is_recorded_as_cancelled()
    {
        // The window the random moments of the test below hit once in many runs: the manifest says "running", and the
        // script is loading libtorch before its first await. A signal there must still be a cancellation, not a death.
        using var tmp = new TempDir();
        string work = tmp.Sub("work");
        for (int i = 0; i < 3; i++)
        {
            string dir = Path.Combine(tmp.Path, $"early{i}");
            using var started = new ManualResetEventSlim();
            using var run = Start(dir, work);
            int pid = run.Process.Id, delay = 5 * i;
            void Watch(object _, DataReceivedEventArgs e)
            {
                if (e.Data?.Contains($"Running {Experiment} into", StringComparison.Ordinal) != true || started.IsSet) return;
                // At once, from the reader's thread: a `kill` process would start too late for the window.
                if (delay > 0) Thread.Sleep(delay);
                _ = SendSignal(pid, Sigint);
                started.Set();
            }
            run.Process.ErrorDataReceived += Watch;
            run.Process.OutputDataReceived += Watch;
            Assert.True(started.Wait(TimeSpan.FromSeconds(120)), $"run {i} never started{run.Tail()}");
            Assert.True(run.Process.WaitForExit(TimeSpan.FromSeconds(60)), $"run {i} did not stop within 60 s of SIGINT{run.Tail()}");
            run.Process.WaitForExit();
            Assert.True(run.Process.ExitCode is 130 or 0, $"run {i}: exit code {run.Process.ExitCode}{run.Tail()}");
            var (_, manifest) = RunOutputs.AssertComplete(dir, out _);
            Assert.True(manifest?.Status is RunStatus.Cancelled or RunStatus.Completed, $"run {i}: status {manifest?.Status} after SIGINT at the start{run.Tail()}");
        }
    }

    [LinuxFact]   // signals and /proc
    public void Killed_runs_leave_only_complete_files_and_a_rerun_gives_the_full_set()
    {
        using var tmp = new TempDir();
        string work = tmp.Sub("work");

        // The reference: one uninterrupted run, and how long it takes on this machine now.
        string reference = Path.Combine(tmp.Path, "reference");
        var (code, duration) = RunToEnd(reference, work);
        Assert.Equal(0, code);
        var (referenceFiles, referenceManifest) = RunOutputs.AssertComplete(reference, out _);
        Assert.Equal(RunStatus.Completed, referenceManifest!.Status);

        const int runs = 10;
        var random = new Random(20_251_127);
        var points = new List<string>();
        int sigintRuns = 0, sigkillRuns = 0, cancelled = 0, leftovers = 0, reruns = 0;
        bool sigintIgnored = false;
        for (int i = 0; i < runs; i++)
        {
            int signal = i % 2 == 0 ? Sigint : Sigkill;
            // Spread over the whole run, from process start-up to the last files.
            var delay = TimeSpan.FromMilliseconds(random.NextDouble() * duration.TotalMilliseconds * 0.95);
            string dir = Path.Combine(tmp.Path, $"run{i:00}-{(signal == Sigint ? "int" : "kill")}");
            string tail = "";
            var stopping = Stopwatch.StartNew();
            using (var run = Start(dir, work))
            {
                var p = run.Process;
                Thread.Sleep(delay);
                if (signal == Sigint && !p.HasExited) sigintIgnored |= IgnoresSigint(p.Id);
                stopping.Restart();
                if (!p.HasExited) Kill(p.Id, signal);
                // SIGINT: the CLI records what it finished (status "cancelled") and exits 130, or it had already completed.
                Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), $"run {i} did not stop within 60 s of signal {signal}{run.Tail()}");
                p.WaitForExit();
                tail = $" (signal at {delay.TotalSeconds:F2} s, exit {p.ExitCode} {stopping.Elapsed.TotalSeconds:F2} s later){run.Tail()}";
                if (signal == Sigint)
                {
                    sigintRuns++;
                    Assert.True(p.ExitCode is 0 or 130, $"run {i}: SIGINT exit code {p.ExitCode}{tail}");
                }
                else sigkillRuns++;
            }

            var (files, manifest) = RunOutputs.AssertComplete(dir, out int left);
            leftovers += left;
            if (signal == Sigint && manifest is not null)
            {
                Assert.True(manifest.Status is RunStatus.Cancelled or RunStatus.Completed, $"run {i}: status {manifest.Status} after SIGINT{tail}");
                if (manifest.Status == RunStatus.Cancelled) cancelled++;
            }
            int artefacts = files.Count(f => f.EndsWith(".parquet", StringComparison.Ordinal) || f.EndsWith(".png", StringComparison.Ordinal));
            points.Add($"{(signal == Sigint ? "INT" : "KILL")}@{delay.TotalSeconds:F2}s→{(manifest is null ? "nothing yet" : $"{artefacts}/{referenceFiles.Length - 3} artefacts, {manifest.Status.ToString().ToLowerInvariant()}")}");

            // Running again (into the same --out, which the runner moves to a fresh sibling folder when it holds files)
            // produces the full set, with the reference's values.
            string rerun = Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() ? dir + "-2" : dir;
            var (rerunCode, _) = RunToEnd(dir, work);
            Assert.Equal(0, rerunCode);
            var (rerunFiles, rerunManifest) = RunOutputs.AssertComplete(rerun, out _);
            Assert.Equal(RunStatus.Completed, rerunManifest!.Status);
            Assert.Equal(referenceFiles, rerunFiles);
            RunOutputs.AssertSameTables(reference, rerun);
            reruns++;
        }

        Assert.False(sigintIgnored, "the child ignored SIGINT: the test could not exercise Ctrl+C");
        string line = $"kill test: {runs} interrupted runs of {Experiment} ({sigintRuns} SIGINT, {sigkillRuns} SIGKILL; {cancelled} recorded \"cancelled\") " +
                      $"at seeded delays over its {duration.TotalSeconds:F1} s; {reruns} re-runs gave the full set of {referenceFiles.Length} files with the reference's values; " +
                      $"{leftovers} hidden temporary file(s) left by SIGKILL, none under a final name. Interruption points: {string.Join(", ", points)}";
        output.WriteLine(line);
        Fuzz.Record("kill-test", line);
    }
}

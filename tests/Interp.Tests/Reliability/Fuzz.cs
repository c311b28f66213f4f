using System.Diagnostics;
using System.Globalization;
using CsCheck;
using Interp.Loading;
using Interp.Tests.Experiments;
using Interp.Tests.Support;
using Xunit.Abstractions;

namespace Interp.Tests.Reliability;

/// <summary>What one fuzz target did: counts, time, and the largest time and memory any case took.</summary>
internal sealed record FuzzSummary(string Target, ulong Seed, int Cases, int Loaded, int Rejected, int FiniteForwards, int NonFiniteForwards,
    TimeSpan Elapsed, double MaxCaseMs, long MaxManagedBytes, long PeakRssGrowth, IReadOnlyList<string> Failures)
{
    public string Line =>
        $"fuzz {Target}: {Cases:N0} cases (seed {Seed}), {Rejected:N0} rejected with ModelFileException, {Loaded:N0} loaded" +
        (FiniteForwards + NonFiniteForwards > 0 ? $" (forward pass: {FiniteForwards:N0} finite, {NonFiniteForwards:N0} stopped by the finite guard at a named hook)" : "") + ", " +
        $"{Failures.Count} failures; {Elapsed.TotalSeconds:F1} s, slowest case {MaxCaseMs:F0} ms, " +
        $"most managed allocation in a case {MaxManagedBytes / 1048576.0:F1} MiB, peak RSS growth {PeakRssGrowth / 1048576.0:F0} MiB";
}

/// <summary>
/// Runs a fuzz target: a fixed number of cases, each drawn by CsCheck from its own seed (derived from the target's
/// seed), so every case reproduces exactly: set <c>INTERP_FUZZ_REPLAY=target:caseSeed</c> to run one case again.
/// Each case must load or end in a <see cref="ModelFileException"/> that names a file of the model directory and the
/// problem, within <see cref="CaseTimeLimit"/>, allocating at most <see cref="ManagedBound"/> managed bytes, and the
/// process's peak resident memory may not grow by more than <see cref="RssGrowthLimit"/> over the whole target.
/// </summary>
internal static class Fuzz
{
    /// <summary>Cases per target (<c>INTERP_FUZZ_CASES</c> overrides it for quick local runs).</summary>
    public static int Cases => CasesOr(10_000);

    /// <summary><c>INTERP_FUZZ_CASES</c> when set (a quick local run, or a long exploration), else <paramref name="fallback"/>.</summary>
    public static int CasesOr(int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable("INTERP_FUZZ_CASES"), out int n) && n > 0 ? n : fallback;

    /// <summary>Wall-clock limit of one case.</summary>
    public static readonly TimeSpan CaseTimeLimit = TimeSpan.FromSeconds(2);

    /// <summary>Most peak-RSS growth tolerated over a target: a few MB of input must never cost hundreds of MB.</summary>
    public const long RssGrowthLimit = 384L << 20;

    /// <summary>
    /// Managed bytes one case may allocate: 32 MiB for the model's objects, the parsers and the derived tables the load
    /// budget allows (<see cref="LoadBudget.DerivedAllowance"/>), plus 64 × its input.
    /// </summary>
    public static long ManagedBound(long inputBytes) => (32L << 20) + 64 * inputBytes;

    private const uint Stream = 7919;

    [ThreadStatic] private static int _finite, _nonFinite;

    /// <summary>Counts a loaded case's forward pass: finite logits, or stopped by the finite guard (see <see cref="FuzzSummary"/>).</summary>
    public static void CountForward(bool finite)
    {
        if (finite) _finite++;
        else _nonFinite++;
    }

    /// <summary>A folder for the mutated files: in memory (/dev/shm) when there is one, so that 10,000 writes are cheap.</summary>
    public static TempDirIn ScratchDir(string target)
    {
        string parent = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        return new TempDirIn(Path.Combine(parent, $"interp-fuzz-{target}-{Guid.NewGuid().ToString("N")[..8]}"));
    }

    /// <summary>
    /// Runs <paramref name="run"/> on <paramref name="cases"/> (default <see cref="Cases"/>) values of <paramref name="gen"/>;
    /// <paramref name="run"/> writes the case's files under <paramref name="root"/>, loads them, and returns how many bytes it wrote.
    /// </summary>
    public static FuzzSummary Run<T>(string target, ulong seed, string root, Gen<T> gen, Func<T, string> describe, Func<T, long> run,
        ITestOutputHelper? output = null, int? cases = null)
    {
        int count = cases ?? Cases;
        string fullRoot = Path.GetFullPath(root);
        var failures = new List<string>();
        int loaded = 0, rejected = 0;
        _finite = _nonFinite = 0;
        double maxMs = 0;
        long maxManaged = 0;
        var seeds = CaseSeeds(target, seed, count);
        long rssStart = PeakRss.Reset(), peakGrowth = 0;
        var total = Stopwatch.StartNew();
        int index = 0;
        foreach (ulong caseSeed in seeds)
        {
            // Collect now and then, so that the resident size measures what a case allocates, not garbage's age.
            if (++index % 100 == 0) GC.Collect();
            var value = gen.Generate(new PCG(Stream, caseSeed), null!, out _);
            string Where() => $"{target} case seed {caseSeed} ({describe(value)})";
            long managedBefore = GC.GetAllocatedBytesForCurrentThread();
            var watch = Stopwatch.StartNew();
            long inputBytes = 0;
            try
            {
                inputBytes = run(value);
                loaded++;
            }
            catch (ModelFileException ex)
            {
                rejected++;
                string file = Path.GetFullPath(ex.FilePath);
                if (!file.StartsWith(fullRoot, StringComparison.Ordinal))
                    failures.Add($"{Where()}: the error names {ex.FilePath}, not a file of the model: {ex.Message}");
                else if (!ex.Message.Contains(ex.FilePath, StringComparison.Ordinal) || ex.Message.Length < ex.FilePath.Length + 10)
                    failures.Add($"{Where()}: the message does not name the file and the problem: {ex.Message}");
                inputBytes = DirectoryBytes(fullRoot);
            }
            catch (Exception ex)
            {
                failures.Add($"{Where()}: {ex.GetType().FullName}: {ex.Message}\n{ex.StackTrace}");
                inputBytes = DirectoryBytes(fullRoot);
            }
            watch.Stop();
            long managed = GC.GetAllocatedBytesForCurrentThread() - managedBefore;
            maxMs = Math.Max(maxMs, watch.Elapsed.TotalMilliseconds);
            maxManaged = Math.Max(maxManaged, managed);
            if (watch.Elapsed > CaseTimeLimit)
                failures.Add($"{Where()}: took {watch.Elapsed.TotalMilliseconds:F0} ms (limit {CaseTimeLimit.TotalMilliseconds} ms)");
            if (managed > ManagedBound(inputBytes))
                failures.Add($"{Where()}: allocated {managed:N0} managed bytes for {inputBytes:N0} bytes of input (limit {ManagedBound(inputBytes):N0})");
            long growth = PeakRss.Read() - rssStart;
            if (growth > peakGrowth)
            {
                peakGrowth = growth;
                if (growth > RssGrowthLimit)
                    failures.Add($"{Where()}: peak resident memory grew by {growth >> 20} MiB (limit {RssGrowthLimit >> 20} MiB)");
            }
            if (failures.Count >= 20) break;
        }
        var summary = new FuzzSummary(target, seed, loaded + rejected, loaded, rejected, _finite, _nonFinite, total.Elapsed, maxMs, maxManaged, peakGrowth, failures);
        output?.WriteLine(summary.Line);
        if (seeds.Count == count) Record($"fuzz-{target}", summary.Line);
        Assert.True(failures.Count == 0, $"{failures.Count} failing case(s):\n" + string.Join("\n", failures));
        return summary;
    }

    /// <summary>The case seeds of a target: <paramref name="count"/> seeds from <paramref name="seed"/>, or the one to replay.</summary>
    private static List<ulong> CaseSeeds(string target, ulong seed, int count)
    {
        string? replay = Environment.GetEnvironmentVariable("INTERP_FUZZ_REPLAY");
        if (replay is not null && replay.StartsWith(target + ":", StringComparison.Ordinal))
            return [ulong.Parse(replay[(target.Length + 1)..], CultureInfo.InvariantCulture)];
        var master = new PCG(Stream, seed);
        return Enumerable.Range(0, count).Select(_ => master.Next64()).ToList();
    }

    private static long DirectoryBytes(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

    /// <summary>
    /// Writes one line of the reliability summary that <c>.ci/run</c> prints at the end of the test run
    /// (<c>artifacts/reliability/NAME.txt</c>).
    /// </summary>
    public static void Record(string name, string line)
    {
        string dir = Path.Combine(ExperimentScriptTests.RepoRoot(), "artifacts", "reliability");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, name + ".txt"), line + Environment.NewLine);
    }
}

/// <summary>A temporary folder at a chosen path, deleted on dispose.</summary>
internal sealed class TempDirIn : IDisposable
{
    public TempDirIn(string path)
    {
        Path = path;
        Directory.CreateDirectory(path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
    }
}

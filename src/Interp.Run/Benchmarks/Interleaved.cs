using System.Diagnostics;

namespace Interp.Benchmarks;

/// <summary>
/// Times several variants side by side: every repetition runs each variant once, in an order rotated per repetition, so
/// that load from other processes and thermal drift hit all variants alike and their ratios stay meaningful.
/// </summary>
internal sealed class Interleaved
{
    private readonly List<(string Name, Func<double> Run)> _variants = new();

    /// <summary>The least warm-up time of <see cref="Medians"/> when it warms up at all (0: the warm-up rounds only).</summary>
    public double MinWarmupSeconds { get; init; }

    /// <summary>Adds a variant: <paramref name="run"/> returns the seconds one run took (it times itself).</summary>
    public Interleaved Add(string name, Func<double> run)
    {
        _variants.Add((name, run));
        return this;
    }

    /// <summary>Adds a variant timed from outside with a stopwatch.</summary>
    public Interleaved Add(string name, Action run) => Add(name, () =>
    {
        var sw = Stopwatch.StartNew();
        run();
        return sw.Elapsed.TotalSeconds;
    });

    /// <summary>
    /// Untimed warm-up rounds until <paramref name="warmup"/> rounds have run and (when any is asked) at least
    /// <see cref="MinWarmupSeconds"/> have passed, then <paramref name="repetitions"/> timed rounds → median seconds per variant.
    /// </summary>
    public Dictionary<string, double> Medians(int warmup, int repetitions, CancellationToken ct)
    {
        // .NET's tiered JIT recompiles hot methods for seconds after start: a fixed round count warms a slow variant
        // (a 1 s forward) fully but leaves a microsecond one (timed in a loop of 0.1 s) on its first tier.
        var warming = Stopwatch.StartNew();
        for (int w = 0; w < warmup || (warmup > 0 && warming.Elapsed.TotalSeconds < MinWarmupSeconds); w++)
            foreach (var v in _variants) { ct.ThrowIfCancellationRequested(); v.Run(); }
        var times = _variants.ToDictionary(v => v.Name, _ => new List<double>());
        // Each round runs the variants in a fresh (seeded) order: a rotation would keep every variant's predecessor
        // fixed, so that one variant always ran after, say, the peer's, and paid for whatever that left behind.
        var random = new Random(17);
        var order = Enumerable.Range(0, _variants.Count).ToArray();
        for (int r = 0; r < repetitions; r++)
        {
            random.Shuffle(order);
            foreach (int i in order)
            {
                ct.ThrowIfCancellationRequested();
                var v = _variants[i];
                times[v.Name].Add(v.Run());
            }
        }
        return times.ToDictionary(t => t.Key, t => Median(t.Value));
    }

    /// <summary>The median of <paramref name="values"/>.</summary>
    public static double Median(IReadOnlyCollection<double> values)
    {
        var sorted = values.OrderBy(x => x).ToArray();
        int n = sorted.Length;
        return n == 0 ? double.NaN : n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}

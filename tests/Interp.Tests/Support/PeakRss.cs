namespace Interp.Tests.Support;

/// <summary>
/// The process's peak resident memory (VmHWM), resettable: writing "5" to /proc/self/clear_refs sets the peak back to
/// the current resident size (Linux ≥ 4.0), so a test can measure the peak of one computation.
/// </summary>
public static class PeakRss
{
    /// <summary>Resets the peak and returns the current resident size in bytes.</summary>
    public static long Reset()
    {
        GC.Collect();
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Field("VmRSS");
    }

    /// <summary>The peak resident size since the last reset, in bytes.</summary>
    public static long Read() => Field("VmHWM");

    private static long Field(string name)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(name + ":", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;   // "VmHWM:  123456 kB"
    }
}

/// <summary>Tests that measure the process's memory: run alone, after the parallel tests, so nothing else allocates meanwhile.</summary>
[CollectionDefinition(nameof(MemoryMeasurementCollection), DisableParallelization = true)]
public sealed class MemoryMeasurementCollection;

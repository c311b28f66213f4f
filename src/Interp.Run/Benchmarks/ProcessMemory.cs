namespace Interp.Benchmarks;

/// <summary>
/// This process's resident memory from <c>/proc/self/status</c> (Linux): VmRSS now, and the peak VmHWM, which writing
/// "5" to <c>/proc/self/clear_refs</c> resets to the current size, so that the peak of one computation can be read.
/// </summary>
public static class ProcessMemory
{
    /// <summary>True where /proc/self/status can be read.</summary>
    public static bool Available => File.Exists("/proc/self/status");

    /// <summary>Collects garbage, resets the peak and returns the resident size in bytes.</summary>
    public static long ResetPeak()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return Resident();
    }

    /// <summary>Resident size now, bytes.</summary>
    public static long Resident() => Field("VmRSS");

    /// <summary>Peak resident size since the last <see cref="ResetPeak"/>, bytes.</summary>
    public static long Peak() => Field("VmHWM");

    private static long Field(string name) => Field(File.ReadAllText("/proc/self/status"), name);

    /// <summary>The field <paramref name="name"/> of a <c>/proc/PID/status</c> text, in bytes.</summary>
    internal static long Field(string status, string name)
    {
        var line = status.Split('\n').FirstOrDefault(l => l.StartsWith(name + ":", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"/proc/self/status has no {name} line");
        // "VmHWM:\t  123456 kB": a tab after the colon, then spaces that pad the number to 8 digits (none from 10 GB on).
        return long.Parse(line[(name.Length + 1)..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
    }
}

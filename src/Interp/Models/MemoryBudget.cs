namespace Interp.Models;

/// <summary>
/// How much memory this process can still take: the smaller of the kernel's <c>MemAvailable</c> and, inside a
/// control group with a limit (containers, CI runners, Slurm jobs), that limit minus the group's usage. Null where
/// neither can be read (not Linux).
/// </summary>
internal static class MemoryBudget
{
    private static readonly AsyncLocal<Func<long?>?> Override = new();

    /// <summary>For tests: replaces the measurement in this async flow only (null: measure).</summary>
    internal static Func<long?>? AvailableOverride
    {
        get => Override.Value;
        set => Override.Value = value;
    }

    private sealed record Reading(long At, long? Bytes);
    private static Reading? _last;

    /// <summary>
    /// Bytes this process can still allocate without swapping or being killed, or null when unknown: a reading at most
    /// 250 ms old unless <paramref name="fresh"/> (reading /proc and the cgroup files takes longer than a small model's
    /// whole forward pass, so a cache check per pass re-reads at most four times a second).
    /// </summary>
    public static long? AvailableBytes(bool fresh = false)
    {
        if (AvailableOverride is { } fake) return fake();
        long now = Environment.TickCount64;
        if (!fresh && _last is { } last && now - last.At < 250) return last.Bytes;
        long? available = MemAvailable();
        if (CgroupRoom() is { } room) available = available is null ? room : Math.Min(available.Value, room);
        _last = new Reading(now, available);
        return available;
    }

    /// <summary>Physical memory (<c>MemTotal</c>), or null when unknown.</summary>
    public static long? TotalBytes() => MemInfo("MemTotal:");

    private static long? MemAvailable() => MemInfo("MemAvailable:");

    private static long? MemInfo(string field)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith(field, StringComparison.Ordinal))
                {
                    var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    return long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
                }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return null;
    }

    /// <summary>cgroup v2: memory.max − memory.current of this process's group (null: no limit or not readable).</summary>
    private static long? CgroupRoom()
    {
        try
        {
            // "0::/path" names this process's group under /sys/fs/cgroup.
            var entry = File.ReadLines("/proc/self/cgroup").FirstOrDefault(l => l.StartsWith("0::", StringComparison.Ordinal));
            if (entry is null) return null;
            string dir = Path.Join("/sys/fs/cgroup", entry[3..]);
            string max = File.ReadAllText(Path.Join(dir, "memory.max")).Trim();
            if (max == "max") return null;
            long limit = long.Parse(max, System.Globalization.CultureInfo.InvariantCulture);
            long current = long.Parse(File.ReadAllText(Path.Join(dir, "memory.current")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            return Math.Max(0, limit - current);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or ArgumentException) { }
        return null;
    }

    /// <summary>"1.25 GiB" / "340 MiB".</summary>
    public static string Format(long bytes) => bytes >= 1L << 30
        ? $"{bytes / (double)(1L << 30):0.00} GiB"
        : $"{bytes / (double)(1L << 20):0.#} MiB";
}

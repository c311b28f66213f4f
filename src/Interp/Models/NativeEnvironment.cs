using System.Runtime.InteropServices;

namespace Interp.Models;

/// <summary>
/// Native settings that libtorch and its OpenMP runtime read from the process environment once, when they load or
/// first allocate. Nothing is set behind the program's back: a program opts in by calling <see cref="Apply"/> once at
/// start-up, before its first torch call and before it starts threads of its own (glibc's <c>setenv</c> is not safe
/// while other threads read the environment). The <c>interp</c> command, the experiment scripts and the tests do so
/// first thing. A value the user has set is never overridden. .NET's
/// <see cref="Environment.SetEnvironmentVariable(string, string?)"/> does not reach native code on Unix, so the
/// settings go through libc. Linux only; elsewhere <see cref="Apply"/> sets nothing.
/// <list type="bullet">
/// <item><c>THP_MEM_ALLOC_ENABLE=1</c>: libtorch asks the kernel for transparent huge pages
/// (<c>madvise(MADV_HUGEPAGE)</c>) for CPU allocations of 2 MiB and more. A transformer's large activations
/// (logits: batch·pos·d_vocab floats, 103 MB for GPT-2 at 4 × 128) are fresh <c>mmap</c>s on every forward pass; with
/// 4 KiB pages the kernel takes one page fault per 4 KiB on first touch (25,000 for those logits), with huge pages one
/// per 2 MiB. Measured on the ablation sweep of GPT-2 small (144 heads, 4 × 128): 114–143 s without, 74–84 s with
/// (8 runs).</item>
/// <item><c>GOMP_SPINCOUNT=10000</c>: libtorch's OpenMP workers spin ~300,000 iterations after each parallel region;
/// on a small machine they then hold the cores that OpenBLAS's threads need for the next product (<see cref="Gemm"/>;
/// perf: ~60 % of samples in libgomp's spin). Not set when <c>OMP_WAIT_POLICY</c> is.</item>
/// <item>glibc's allocator keeps what a pass frees (<c>mallopt</c>: <c>M_MMAP_MAX</c> 0, <c>M_TRIM_THRESHOLD</c>
/// <see cref="RetainedBound"/>), so that the next pass — the next <c>RunWithCache</c> of the same shapes above all —
/// reuses resident pages instead of faulting fresh ones in. libtorch allocates every activation itself and TorchSharp
/// offers no allocator hook, so a cache's tensors are the forward's own outputs: the allocator's free lists are the only
/// place a disposed cache's memory can serve the next one without a copy. By default glibc maps every block over
/// 32 MiB (a GPT-2 pattern at 1 × 1024 is 50 MB) with <c>mmap</c> and unmaps it on free, and returns the top of the
/// heap above 64 MiB, so a 1.8 GB cache is faulted in, zeroed and unmapped on every call. Measured, GPT-2 small at
/// 1 × 1024 on the main thread: RunWithCache 4.55 → 3.26 s, plain 3.14 → 2.85 s, page faults per call 25,800 → 690.
/// Bounded: free memory above <see cref="RetainedBound"/> at the top of the heap is returned; released on demand by
/// <see cref="ReleaseFreedMemory"/>, which <c>RunWithCache</c>'s memory check calls before it refuses a cache. Not set
/// when <c>GLIBC_TUNABLES</c> names a malloc setting or <c>MALLOC_MMAP_MAX_</c> / <c>MALLOC_TRIM_THRESHOLD_</c> is set.
/// Threads other than the main one allocate from glibc's secondary arenas, which still map blocks over 64 MiB and
/// return each 64 MiB heap whole once it is empty: there the reuse is partial.</item>
/// </list>
/// </summary>
public static class NativeEnvironment
{
    private static readonly Lock Gate = new();
    private static bool _applied;

    /// <summary>The settings <see cref="Apply"/> set, as name=value (empty before it ran, off Linux, or where the user had set them all).</summary>
    public static IReadOnlyList<string> Applied { get; private set; } = [];

    /// <summary>
    /// Sets the defaults above that the user has not set, once per process (later calls change nothing) and returns
    /// what was set. Call it at start-up, before the first torch call: libtorch reads them only when it loads.
    /// </summary>
    public static IReadOnlyList<string> Apply()
    {
        lock (Gate)
        {
            if (_applied) return Applied;
            _applied = true;
            if (!OperatingSystem.IsLinux()) return Applied;
            var applied = new List<string>();
            void Default(string name, string value, params string[] unlessSet)
            {
                if (Get(name) is not null || unlessSet.Any(other => Get(other) is not null)) return;
                if (setenv(name, value, 0) == 0) applied.Add($"{name}={value}");
            }
            Default("THP_MEM_ALLOC_ENABLE", "1");
            Default("GOMP_SPINCOUNT", "10000", "OMP_WAIT_POLICY");
            if (!(Get("GLIBC_TUNABLES")?.Contains("malloc", StringComparison.Ordinal) ?? false)
                && Get("MALLOC_MMAP_MAX_") is null && Get("MALLOC_TRIM_THRESHOLD_") is null)
            {
                long bound = RetainedBound;
                try
                {
                    if (mallopt(MmapMax, 0) == 1 && mallopt(TrimThreshold, (int)bound) == 1)
                    {
                        applied.Add($"malloc: mmap_max=0, trim_threshold={bound}");
                        _retaining = true;
                    }
                }
                catch (EntryPointNotFoundException) { }   // not glibc (musl): its allocator has no such settings
                catch (DllNotFoundException) { }
            }
            Applied = applied;
            return Applied;
        }
    }

    /// <summary>The native settings in effect, for manifests and benchmark reports: each variable's value or "unset".</summary>
    public static string Describe() =>
        string.Join(", ", new[] { "THP_MEM_ALLOC_ENABLE", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY" }.Select(v => $"{v}={Get(v) ?? "unset"}"));

    /// <summary>What the allocator does with freed memory, for manifests and benchmark reports.</summary>
    public static string DescribeAllocator() =>
        _retaining ? $"glibc keeps freed memory for reuse, up to {MemoryBudget.Format(RetainedBound)} at the top of the heap (mmap_max=0)"
        : OperatingSystem.IsLinux() ? $"allocator defaults{(Get("GLIBC_TUNABLES") is { } t ? $" (GLIBC_TUNABLES={t})" : "")}" : "allocator defaults";

    private static bool _retaining;

    /// <summary>True when <see cref="Apply"/> set the allocator to retain freed memory.</summary>
    public static bool RetainsFreedMemory => _retaining;

    /// <summary>How much free memory the allocator may keep at the top of its heap: a quarter of physical memory, at most 2 GiB (mallopt takes an int).</summary>
    public static long RetainedBound => Math.Min(int.MaxValue, (MemoryBudget.TotalBytes() ?? 8L << 30) / 4);

    /// <summary>
    /// Returns the memory the allocator retained (glibc's <c>malloc_trim(0)</c>: the top of each heap and every free
    /// page inside it) to the system; true when some was returned. Does nothing (false) off glibc.
    /// </summary>
    public static bool ReleaseFreedMemory()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return malloc_trim(0) == 1; }
        catch (EntryPointNotFoundException) { return false; }
        catch (DllNotFoundException) { return false; }
    }

    private const int TrimThreshold = -1, MmapMax = -4;   // glibc's M_TRIM_THRESHOLD, M_MMAP_MAX

    [DllImport("libc")]
    private static extern int mallopt(int param, int value);

    [DllImport("libc")]
    private static extern int malloc_trim(nuint pad);

    /// <summary>An environment variable as native code sees it (null when unset).</summary>
    public static string? Get(string name) => OperatingSystem.IsWindows() ? Environment.GetEnvironmentVariable(name) : Marshal.PtrToStringUTF8(getenv(name));

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern IntPtr getenv(string name);

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int setenv(string name, string value, int overwrite);
}

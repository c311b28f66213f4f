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
            Applied = applied;
            return Applied;
        }
    }

    /// <summary>The native settings in effect, for manifests and benchmark reports: each variable's value or "unset".</summary>
    public static string Describe() =>
        string.Join(", ", new[] { "THP_MEM_ALLOC_ENABLE", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY" }.Select(v => $"{v}={Get(v) ?? "unset"}"));

    /// <summary>An environment variable as native code sees it (null when unset).</summary>
    public static string? Get(string name) => OperatingSystem.IsWindows() ? Environment.GetEnvironmentVariable(name) : Marshal.PtrToStringUTF8(getenv(name));

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern IntPtr getenv(string name);

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int setenv(string name, string value, int overwrite);
}

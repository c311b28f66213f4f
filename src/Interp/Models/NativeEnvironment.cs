using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Interp.Models;

/// <summary>
/// Native settings libtorch and its OpenMP runtime read from the process environment once, when they load or first
/// allocate — so they are set when this assembly loads, before any torch call made through it. .NET's
/// <see cref="Environment.SetEnvironmentVariable(string, string?)"/> does not reach native code on Unix, so they go
/// through libc's <c>setenv</c>. A value the user has set is never overridden. Linux only.
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
    /// <summary>The settings applied at load, as name=value (empty where none was, e.g. not Linux or all set by the user).</summary>
    public static IReadOnlyList<string> Applied { get; private set; } = [];

    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "must run before libtorch loads and allocates, which any Interp call may cause")]
    internal static void Apply()
    {
        if (!OperatingSystem.IsLinux()) return;
        var applied = new List<string>();
        void Default(string name, string value, params string[] unlessSet)
        {
            if (Get(name) is not null || unlessSet.Any(other => Get(other) is not null)) return;
            if (setenv(name, value, 0) == 0) applied.Add($"{name}={value}");
        }
        Default("THP_MEM_ALLOC_ENABLE", "1");
        Default("GOMP_SPINCOUNT", "10000", "OMP_WAIT_POLICY");
        Applied = applied;
    }

    /// <summary>An environment variable as native code sees it (null when unset).</summary>
    public static string? Get(string name) => OperatingSystem.IsWindows() ? Environment.GetEnvironmentVariable(name) : Marshal.PtrToStringUTF8(getenv(name));

    /// <summary>Sets (or, with null, removes) a variable for native code too.</summary>
    internal static void Set(string name, string? value)
    {
        if (OperatingSystem.IsWindows()) Environment.SetEnvironmentVariable(name, value);
        else if (value is null) _ = unsetenv(name);
        else _ = setenv(name, value, 1);
    }

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern IntPtr getenv(string name);

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int unsetenv(string name);

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int setenv(string name, string value, int overwrite);
}

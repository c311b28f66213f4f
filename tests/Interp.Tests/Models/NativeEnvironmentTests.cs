using Interp.Models;

namespace Interp.Tests.Models;

/// <summary>The native settings Interp applies when it loads are what native code (libtorch, libgomp: getenv) sees, and take effect.</summary>
public sealed class NativeEnvironmentTests
{
    [Fact]
    public void Libtorch_backs_large_tensors_with_huge_pages()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/sys/kernel/mm/transparent_hugepage/enabled")) return;
        if (File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]", StringComparison.Ordinal)) return;   // THP off in this kernel
        if (!NativeEnvironment.Applied.Contains("THP_MEM_ALLOC_ENABLE=1") && NativeEnvironment.Get("THP_MEM_ALLOC_ENABLE") != "1") return;   // the user turned it off
        // In the kernel's usual "madvise" mode only ranges libtorch madvised get huge pages, and libtorch does that only
        // when it read THP_MEM_ALLOC_ENABLE=1 at its first allocation: had Interp set it too late, the count would stay put.
        using var scope = TorchSharp.torch.NewDisposeScope();
        long before = AnonHugePagesKiB();
        TorchSharp.torch.empty(64 << 20, dtype: TorchSharp.torch.ScalarType.Byte).fill_(1);
        long grown = AnonHugePagesKiB() - before;
        // At least one huge page (the kernel falls back to small pages where it finds no free 2 MiB: not all 32 need be huge).
        Assert.True(grown >= 2 << 10, $"touching a 64 MiB tensor added {grown} KiB of huge pages");
    }

    private static long AnonHugePagesKiB() => long.Parse(File.ReadLines("/proc/self/smaps_rollup").First(l => l.StartsWith("AnonHugePages:", StringComparison.Ordinal))
        .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void OpenMP_workers_spin_briefly_unless_the_user_chose()
    {
        if (!OperatingSystem.IsLinux()) return;
        if (NativeEnvironment.Applied.Contains("GOMP_SPINCOUNT=10000")) Assert.Equal("10000", NativeEnvironment.Get("GOMP_SPINCOUNT"));
        else Assert.True(NativeEnvironment.Get("GOMP_SPINCOUNT") is not null || NativeEnvironment.Get("OMP_WAIT_POLICY") is not null, "GOMP_SPINCOUNT was neither set by the user nor applied");
    }
}

using System.Diagnostics;
using System.Text.Json;
using Interp.Models;
using Interp.Tests.Support;

namespace Interp.Tests.Models;

/// <summary>
/// The native settings: applied by a program's start-up (the <c>interp</c> command here, run as a child with an
/// environment the test chooses), never over a value the user set, recorded in the run's manifest with the BLAS the
/// weight products used, and taking effect in libtorch.
/// </summary>
public sealed class NativeEnvironmentTests
{
    [TransparentHugePagesFact]
    public void Libtorch_backs_large_tensors_with_huge_pages()
    {
        // The test program applied the settings at start-up, or the user had set the same value.
        Assert.Equal("1", NativeEnvironment.Get("THP_MEM_ALLOC_ENABLE"));
        // In the kernel's usual "madvise" mode only ranges libtorch madvised get huge pages, and libtorch does that only
        // when it read THP_MEM_ALLOC_ENABLE=1 at its first allocation: had it been set too late, the count would stay put.
        using var scope = TorchSharp.torch.NewDisposeScope();
        long before = AnonHugePagesKiB();
        TorchSharp.torch.empty(64 << 20, dtype: TorchSharp.torch.ScalarType.Byte).fill_(Scalars.One);
        long grown = AnonHugePagesKiB() - before;
        // At least one huge page (the kernel falls back to small pages where it finds no free 2 MiB: not all 32 need be huge).
        Assert.True(grown >= 2 << 10, $"touching a 64 MiB tensor added {grown} KiB of huge pages");
    }

    private static long AnonHugePagesKiB() => long.Parse(File.ReadLines("/proc/self/smaps_rollup").First(l => l.StartsWith("AnonHugePages:", StringComparison.Ordinal))
        .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);

    [LinuxFact]
    public void The_command_sets_unset_defaults_at_start_up_and_records_them()
    {
        var native = RunAndReadNative(new() { ["THP_MEM_ALLOC_ENABLE"] = null, ["GOMP_SPINCOUNT"] = null, ["OMP_WAIT_POLICY"] = null });
        Assert.Equal("THP_MEM_ALLOC_ENABLE=1, GOMP_SPINCOUNT=10000, OMP_WAIT_POLICY=unset", native["settings"]);
        Assert.Matches("^(openblas \\(.+\\)|torch \\(.+\\))$", native["weight_products"]);
        Assert.Equal(Gemm.Describe(), native["weight_products"]);   // the same machine and environment as this process
        Assert.StartsWith("glibc keeps freed memory for reuse, up to ", native["allocator"]);
    }

    [LinuxFact]
    public void Malloc_tunables_of_the_user_leave_the_allocator_alone()
    {
        var native = RunAndReadNative(new() { ["GLIBC_TUNABLES"] = "glibc.malloc.trim_threshold=1048576" });
        Assert.Equal("allocator defaults (GLIBC_TUNABLES=glibc.malloc.trim_threshold=1048576)", native["allocator"]);
    }

    [LinuxFact]
    public void A_value_the_user_set_is_never_overridden()
    {
        var native = RunAndReadNative(new() { ["THP_MEM_ALLOC_ENABLE"] = "0", ["GOMP_SPINCOUNT"] = "123", ["OMP_WAIT_POLICY"] = null });
        Assert.Equal("THP_MEM_ALLOC_ENABLE=0, GOMP_SPINCOUNT=123, OMP_WAIT_POLICY=unset", native["settings"]);
        // A wait policy of the user's own leaves the spin count to OpenMP.
        native = RunAndReadNative(new() { ["THP_MEM_ALLOC_ENABLE"] = null, ["GOMP_SPINCOUNT"] = null, ["OMP_WAIT_POLICY"] = "PASSIVE" });
        Assert.Equal("THP_MEM_ALLOC_ENABLE=1, GOMP_SPINCOUNT=unset, OMP_WAIT_POLICY=PASSIVE", native["settings"]);
    }

    [LinuxFact]
    public void The_manifest_says_when_the_user_chose_libtorch_for_the_weight_products()
    {
        var native = RunAndReadNative(new() { ["INTERP_BLAS"] = "torch" });
        Assert.Equal("torch (INTERP_BLAS=torch)", native["weight_products"]);
    }

    [LinuxFact]
    public void An_OpenBlas_path_that_does_not_load_fails_the_run_naming_it()
    {
        using var tmp = new TempDir();
        var (code, _, error) = RunInterp(tmp.Path, new() { ["INTERP_OPENBLAS"] = "/no/such/libopenblas.so.0" });
        Assert.Equal(1, code);
        Assert.Contains("INTERP_OPENBLAS=/no/such/libopenblas.so.0: the library cannot be loaded", error);
    }

    [OpenBlasFact]
    public void OpenBlas_keeps_the_core_type_the_user_chose()
    {
        // Interp used to unset OPENBLAS_CORETYPE while OpenBLAS loaded; now OpenBLAS reports the kernel the user named.
        var native = RunAndReadNative(new() { ["OPENBLAS_CORETYPE"] = "Haswell" });
        Assert.Contains("core Haswell", native["weight_products"]);
    }

    /// <summary>Runs <see cref="RunInterp"/>, checks that it succeeded, and returns the manifest's "native" section.</summary>
    private static Dictionary<string, string> RunAndReadNative(Dictionary<string, string?> environment)
    {
        using var tmp = new TempDir();
        var (code, output, error) = RunInterp(tmp.Path, environment);
        Assert.True(code == 0, $"interp run exited {code}: {error}{output}");
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(tmp.Path, "manifest.json")));
        return manifest.RootElement.GetProperty("native").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
    }

    /// <summary>Runs <c>interp run positional_encoding</c> (no model, a second or two) into <paramref name="outDir"/> with the environment changed as given (null: removed).</summary>
    private static (int Code, string Output, string Error) RunInterp(string outDir, Dictionary<string, string?> environment)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var psi = new ProcessStartInfo(dotnet, [Path.Combine(AppContext.BaseDirectory, "Interp.Cli.dll"), "run", "positional_encoding",
            "--out", outDir, "--set", "positions=8", "--set", "d_model=8"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = outDir,
        };
        foreach (var (name, value) in environment)
            if (value is null) psi.Environment.Remove(name);
            else psi.Environment[name] = value;
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)), "interp run did not finish in 2 minutes");
        return (process.ExitCode, output.Result, error.Result);
    }
}

/// <summary>
/// The allocator's settings, and the release on demand. Retention itself is measured by the benchmark (page faults per
/// cached 1 × 1024 GPT-2 call 25,800 → 800, on the main thread): a test thread allocates from one of glibc's secondary
/// arenas, whose 64 MiB heaps are returned whole once empty, so resident memory read here cannot show it reliably.
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class AllocatorRetentionTests
{
    [LinuxFact]
    public void The_allocator_is_set_to_keep_freed_memory_and_gives_it_back_on_demand()
    {
        // This test process applied the settings at start-up (LoadInterpFirst), with no malloc tunables of the user's.
        Assert.True(NativeEnvironment.RetainsFreedMemory, NativeEnvironment.DescribeAllocator());
        Assert.Equal($"glibc keeps freed memory for reuse, up to {Interp.Models.MemoryBudget.Format(NativeEnvironment.RetainedBound)} at the top of the heap (mmap_max=0)",
            NativeEnvironment.DescribeAllocator());
        Assert.InRange(NativeEnvironment.RetainedBound, 1L << 20, int.MaxValue);
        // Freed blocks below a live one cannot be trimmed from the top: malloc_trim(0) returns their pages (true).
        var blocks = Enumerable.Range(0, 8).Select(_ => System.Runtime.InteropServices.Marshal.AllocHGlobal(1 << 20)).ToArray();
        var pin = System.Runtime.InteropServices.Marshal.AllocHGlobal(4096);
        var ones = Enumerable.Repeat((byte)1, 1 << 20).ToArray();
        foreach (var block in blocks) System.Runtime.InteropServices.Marshal.Copy(ones, 0, block, ones.Length);
        foreach (var block in blocks) System.Runtime.InteropServices.Marshal.FreeHGlobal(block);
        Assert.True(NativeEnvironment.ReleaseFreedMemory());
        System.Runtime.InteropServices.Marshal.FreeHGlobal(pin);
    }
}

using Interp.Models;

namespace Interp.Tests.Support;

/// <summary>
/// A fact that runs only where the OpenBLAS weight-product path exists, and is reported skipped, with the reason,
/// everywhere else (never passed without testing anything).
/// </summary>
public sealed class OpenBlasFactAttribute : FactAttribute
{
    public OpenBlasFactAttribute()
    {
        if (Gemm.Backend != "openblas") Skip = $"no OpenBLAS here, so the weight products run on libtorch: {Gemm.Describe()}";
    }
}

/// <summary>A fact that needs Linux with transparent huge pages available to madvise (not "[never]"); skipped with the reason elsewhere.</summary>
public sealed class TransparentHugePagesFactAttribute : FactAttribute
{
    public TransparentHugePagesFactAttribute()
    {
        const string setting = "/sys/kernel/mm/transparent_hugepage/enabled";
        if (!OperatingSystem.IsLinux()) Skip = "transparent huge pages are a Linux feature";
        else if (!File.Exists(setting)) Skip = $"this kernel has no {setting}";
        else if (File.ReadAllText(setting).Contains("[never]", StringComparison.Ordinal)) Skip = $"transparent huge pages are off in this kernel ({setting}: never)";
        else if (NativeEnvironment.Get("THP_MEM_ALLOC_ENABLE") is { } value && value != "1")
            Skip = $"the user set THP_MEM_ALLOC_ENABLE={value}, which Interp leaves as it is";
    }
}

/// <summary>A fact that runs only on Linux (libc's environment, /proc); skipped with the reason elsewhere.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "Linux only";
    }
}

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

/// <summary>
/// A fact that needs a Slurm cluster answering here (<c>sinfo</c> lists a node up; <c>.ci/run</c> starts the shared
/// one-node cluster); skipped with the reason elsewhere.
/// </summary>
public sealed class SlurmFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> Unavailable = new(() =>
    {
        try
        {
            var psi = new System.Diagnostics.ProcessStartInfo("sinfo", ["-h", "-o", "%T"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = System.Diagnostics.Process.Start(psi)!;
            string states = p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(10_000)) { p.Kill(); return "sinfo did not answer within 10 s"; }
            return p.ExitCode == 0 && states.Split('\n').Any(s => s.Trim() is "idle" or "mixed" or "allocated") ? null
                : $"no Slurm node is up (sinfo: exit {p.ExitCode}, states '{states.Trim()}'); .ci/run starts one with ../shared/tools/slurm-local/start-slurm.sh";
        }
        catch (System.ComponentModel.Win32Exception) { return "Slurm is not installed here (no sinfo); .ci/run installs and starts it with ../shared/tools/slurm-local/start-slurm.sh"; }
    });

    public SlurmFactAttribute()
    {
        if (Unavailable.Value is { } reason) Skip = reason;
    }
}

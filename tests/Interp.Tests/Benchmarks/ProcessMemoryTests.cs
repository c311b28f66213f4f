using Interp.Benchmarks;

namespace Interp.Tests.Benchmarks;

/// <summary>Reading /proc/self/status: the kB figures with and without the padding spaces the kernel drops from 10 GB on.</summary>
public sealed class ProcessMemoryTests
{
    [Fact]
    public void Status_fields_read_in_bytes_at_any_size()
    {
        const string status = "Name:\tInterp.Cli\nVmPeak:\t61399824 kB\nVmHWM:\t12702348 kB\nVmRSS:\t  773472 kB\nThreads:\t21\n";
        Assert.Equal(12702348L * 1024, ProcessMemory.Field(status, "VmHWM"));
        Assert.Equal(773472L * 1024, ProcessMemory.Field(status, "VmRSS"));
        Assert.Throws<InvalidOperationException>(() => ProcessMemory.Field(status, "VmSwap"));
        Assert.True(ProcessMemory.Resident() > 0);
    }
}

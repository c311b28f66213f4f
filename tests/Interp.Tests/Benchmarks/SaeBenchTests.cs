using Interp.Benchmarks;
using Interp.Tests.Support;

namespace Interp.Tests.Benchmarks;

/// <summary>The bench suite's SAE training section, quick: it measures both figures and the ratio is its parts' quotient.</summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class SaeBenchTests
{
    [Fact]
    public async Task Sae_section_reports_training_throughput_against_the_forward_rate()
    {
        using var tmp = new TempDir();
        var rows = await BenchSuite.RunAsync(new BenchOptions
        {
            Quick = true, Peer = false, Repetitions = 2, OutDir = tmp.File("out"), ModelsDir = tmp.File("models"),
            Only = new HashSet<string> { "sae" },
        });
        Assert.Equal(["sae_training_activations_per_s", "sae_training_vs_forward"], rows.Select(r => r.Benchmark));
        var rate = rows[0];
        Assert.Equal(rate.A / rate.B, rate.Value, 1e-12);
        var ratio = rows[1];
        Assert.True(double.IsFinite(ratio.Value) && ratio.Value > 0);
        Assert.Equal(ratio.A / ratio.B, ratio.Value, 1e-12);
        Assert.Equal(rate.Value, ratio.A);
        Assert.False(Directory.Exists(Path.Combine(tmp.File("out"), "tmp-sae")), "the run's SAE folder is removed");
    }
}

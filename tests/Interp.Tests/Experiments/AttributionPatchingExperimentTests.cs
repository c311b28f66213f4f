using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>
/// attribution_patching on the built-in model: both methods per site in one table, each row's normalised value following
/// from its raw metric and the run's clean and corrupted metrics, the estimate following from its attribution, and the
/// reported correlation the Pearson correlation of the table's two columns.
/// </summary>
public sealed class AttributionPatchingExperimentTests
{
    [Fact]
    public async Task Built_in_model_table_holds_both_methods_and_the_reported_correlation_follows_from_it()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "attribution_patching", "--set", "batch=8", "--set", "per_position=false");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        double clean = Number("metric_clean"), corrupted = Number("metric_corrupted");
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "attribution_patching.parquet"));
        int n = t["method"].Length;
        var activation = new List<double>();
        var attribution = new List<double>();
        for (int i = 0; i < n; i++)
        {
            double raw = (double)t["raw"][i], value = (double)t["value"][i];
            Assert.Equal((raw - corrupted) / (clean - corrupted), value, 1e-3);
            if ((string)t["method"][i] == "attribution")
            {
                Assert.Equal(corrupted + (double)t["attribution"][i], raw, 1e-3);
                attribution.Add(value);
            }
            else
            {
                Assert.Equal("activation", (string)t["method"][i]);
                Assert.True(double.IsNaN((double)t["attribution"][i]));
                activation.Add(value);
            }
        }
        Assert.Equal(activation.Count, attribution.Count);
        double r = Pearson(activation, attribution);
        Assert.Equal(r, Number("correlation_all_sites"), 1e-3);
    }

    private static double Pearson(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        double ma = a.Average(), mb = b.Average();
        double cov = a.Zip(b).Sum(p => (p.First - ma) * (p.Second - mb));
        return cov / Math.Sqrt(a.Sum(x => (x - ma) * (x - ma)) * b.Sum(y => (y - mb) * (y - mb)));
    }
}

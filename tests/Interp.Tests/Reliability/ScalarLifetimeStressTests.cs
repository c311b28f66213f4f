using Interp.Benchmarks;
using Interp.Tests.Support;
using Xunit.Abstractions;

namespace Interp.Tests.Reliability;

/// <summary>
/// Forward passes under garbage-collection pressure (<see cref="Soak"/>): the use-after-free of native scalars that the
/// collector finalised while libtorch read them failed ~3 in 1,000 such calls before every scalar in the library was owned.
/// Runs alone (no parallel test allocates meanwhile, and no other test's own implicit scalars share the pressure).
/// </summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class ScalarLifetimeStressTests(ITestOutputHelper output)
{
    /// <summary>Calls of the CI run; <c>INTERP_SOAK_CALLS</c> sets another count (the long soak is also <c>interp bench --only soak [--calls N]</c>, 200,000 by default).</summary>
    private static int Calls => int.TryParse(Environment.GetEnvironmentVariable("INTERP_SOAK_CALLS"), out int n) && n > 0 ? n : 20_000;

    [Fact]
    public void Twenty_thousand_mixed_calls_under_allocation_pressure_never_fail()
    {
        var result = Soak.Run(new SoakOptions { Calls = Calls });
        output.WriteLine(result.Summary);
        foreach (var f in result.Failures.Take(20)) output.WriteLine(f);
        Fuzz.Record("soak", "soak: " + result.Summary);
        Assert.Equal(Calls, result.TotalCalls);
        Assert.True(result.Collections > result.TotalCalls / 20, $"the pressure thread forced only {result.Collections} collections");
        Assert.True(result.Failures.Count == 0, $"{result.Failures.Count} of {result.TotalCalls} calls failed, first: {result.Failures.FirstOrDefault()}");
    }

    [Theory]
    [InlineData(0, 2, "calls must be at least 1, got 0")]
    [InlineData(10, 0, "workers must be at least 1, got 0")]
    public void A_soak_of_nothing_is_refused_by_name(int calls, int workers, string message) =>
        Assert.Contains(message, Assert.Throws<InterpException>(() => Soak.Run(new SoakOptions { Calls = calls, Workers = workers })).Message);
}

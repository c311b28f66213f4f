using Interp.Experiments;
using Interp.Tests.Experiments;
using Interp.Tests.Support;

namespace Interp.Tests.Reliability;

/// <summary>Same seed, same model, same inputs: the same tables, value for value (only run_id differs).</summary>
public sealed class DeterminismTests
{
    [Theory]
    [InlineData("induction_heads")]
    [InlineData("ablation")]
    public async Task Two_runs_with_the_same_seed_write_identical_tables(string experiment)
    {
        using var tmp = new TempDir();
        var (code1, _, err1, first) = await ExperimentScriptTests.Run(tmp.File("first"), "run", experiment, "--seed", "7");
        var (code2, _, err2, second) = await ExperimentScriptTests.Run(tmp.File("second"), "run", experiment, "--seed", "7");
        Assert.True(code1 == 0, err1);
        Assert.True(code2 == 0, err2);
        int values = RunOutputs.AssertSameTables(tmp.File("first"), tmp.File("second"));
        Assert.True(values > 100, $"only {values} values compared");
        Assert.Equal(first.KeyNumbers.Select(k => (k.Name, k.Value)), second.KeyNumbers.Select(k => (k.Name, k.Value)));
        Assert.Equal(RunStatus.Completed, second.Status);
    }
}

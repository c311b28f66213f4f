using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>The head_detection experiment end to end, its table read back by ParquetSharp.</summary>
public sealed class HeadDetectionExperimentTests
{
    [Fact]
    public async Task Built_in_model_attend_one_back_equals_the_previous_token_score()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "head_detection", "--set", "offsets=1,2", "--set", "batch=16");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "head_scores.parquet"));
        Assert.Equal(["layer", "head", "score", "value", "run_id"], t.Keys);
        Assert.Equal(5 * 2 * 2, t["value"].Length);
        Assert.Equal(["attend_1_back", "attend_2_back", "duplicate_token", "induction", "previous_token"], t["score"].Cast<string>().Distinct().Order());
        Assert.All(t["value"], v => Assert.InRange((float)v, 0f, 1f));
        float Value(string score, int l, int h) => Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["score"][i] == score && (int)t["layer"][i] == l && (int)t["head"][i] == h).Select(i => (float)t["value"][i]).Single();
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++)
                Assert.Equal(Value("previous_token", l, h), Value("attend_1_back", l, h), 6);
        foreach (var score in new[] { "previous_token", "duplicate_token", "induction", "attend_1_back", "attend_2_back" })
            Assert.Contains(manifest.Artifacts, a => a.File == $"head_scores_{score}.png");
    }

    [Fact]
    public async Task Bad_offsets_are_a_clear_error()
    {
        using var tmp = new TempDir();
        var (code, _, err) = await ExperimentScriptTests.RunRaw("run", "head_detection", "--out", tmp.Path, "--set", "offsets=2,two");
        Assert.Equal(1, code);
        Assert.Contains("head_detection: setting 'offsets' = '2,two': 'two' is not an integer", err);
        Assert.False(File.Exists(Path.Combine(tmp.Path, "manifest.json")), "a run whose settings do not bind never starts");
    }
}

using System.Text.Json;
using Interp.Hooks;
using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

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
                Assert.Equal(Value("previous_token", l, h), Value("attend_1_back", l, h), 1e-6);
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

    private static string StoriesNames => Path.Combine(ExperimentScriptTests.RepoRoot(), "experiments", "prompts", "stories_names.jsonl");

    [Fact]
    public async Task Prompts_padded_batch_scores_are_the_mean_over_prompts_of_each_prompt_alone()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "head_detection", "--prompts", StoriesNames, "--model", TestModels.StoriesBin,
            "--set", "offsets=1,2");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        Assert.Equal(StoriesNames, (string)manifest.Settings["prompts"]!);
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "head_scores.parquet"));
        Assert.Equal(["layer", "head", "score", "value", "run_id"], t.Keys);
        Assert.Equal(["attend_1_back", "attend_2_back", "duplicate_token", "induction", "previous_token"], t["score"].Cast<string>().Distinct().Order());
        Assert.Equal(5 * 5 * 8, t["value"].Length);
        float Value(string score, int l, int h) => Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["score"][i] == score && (int)t["layer"][i] == l && (int)t["head"][i] == h).Select(i => (float)t["value"][i]).Single();

        // Each prompt alone (BOS first, no padding): per head, the mean over queries q ≥ 1 of the attention on q − 1
        // (previous token), and the mean over the queries whose token occurred before of the attention on those earlier
        // occurrences (duplicate token). The script's score is the mean of these per-prompt scores over the prompts.
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var ids = File.ReadLines(StoriesNames).Where(l => l.Trim().Length > 0).Select(l =>
        {
            using var json = JsonDocument.Parse(l);
            return loaded.Tokenizer!.Encode(json.RootElement.GetProperty("prompt").GetString()!, prependBos: true).ToArray();
        }).ToArray();
        Assert.True(ids.Select(p => p.Length).Distinct().Count() > 1, "the prompts have different lengths, so the batch is padded");
        var previous = new double[ids.Length, 5, 8];
        var pooledPrevious = new double[5, 8];                                           // Σ over every real query of every prompt, for contrast
        var duplicate = new List<double>[5, 8];
        for (int l = 0; l < 5; l++) for (int h = 0; h < 8; h++) duplicate[l, h] = [];
        for (int b = 0; b < ids.Length; b++)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var (_, cache) = loaded.Model.RunWithCache(tensor(ids[b].Select(i => (long)i).ToArray()).unsqueeze(0), n => HookNames.Is(n, HookNames.Pattern));
            using (cache)
                for (int l = 0; l < 5; l++)
                {
                    var pattern = cache[HookNames.Pattern(l)][0].to(ScalarType.Float64).cpu();     // [head, q, k]
                    int n = ids[b].Length;
                    var w = pattern.data<double>().ToArray();
                    double At(int h, int q, int k) => w[(h * n + q) * n + k];
                    for (int h = 0; h < 8; h++)
                    {
                        double sum = Enumerable.Range(1, n - 1).Sum(q => At(h, q, q - 1));
                        previous[b, l, h] = sum / (n - 1);
                        pooledPrevious[l, h] += sum;
                        var rows = Enumerable.Range(1, n - 1).Where(q => Enumerable.Range(0, q).Any(k => ids[b][k] == ids[b][q])).ToArray();
                        if (rows.Length > 0)
                            duplicate[l, h].Add(rows.Average(q => Enumerable.Range(0, q).Where(k => ids[b][k] == ids[b][q]).Sum(k => At(h, q, k))));
                    }
                }
        }
        int queries = ids.Sum(p => p.Length - 1);
        double largestPoolingGap = 0;
        for (int l = 0; l < 5; l++)
            for (int h = 0; h < 8; h++)
            {
                double expected = Enumerable.Range(0, ids.Length).Average(b => previous[b, l, h]);
                Assert.True(Math.Abs(Value("previous_token", l, h) - expected) < 1e-5, $"head {l}.{h}: previous-token {Value("previous_token", l, h)} vs mean over prompts alone {expected}");
                Assert.True(Math.Abs(Value("attend_1_back", l, h) - expected) < 1e-5, $"head {l}.{h}: attend-1-back {Value("attend_1_back", l, h)} vs {expected}");
                double dup = duplicate[l, h].Average();
                Assert.True(Math.Abs(Value("duplicate_token", l, h) - dup) < 1e-5, $"head {l}.{h}: duplicate-token {Value("duplicate_token", l, h)} vs mean over prompts alone {dup}");
                largestPoolingGap = Math.Max(largestPoolingGap, Math.Abs(pooledPrevious[l, h] / queries - expected));
            }
        // The mean of per-prompt means is not the pooled mean over every real query: the test tells the two apart.
        Assert.True(largestPoolingGap > 1e-4, $"pooled and per-prompt means differ by at most {largestPoolingGap}");
    }
}

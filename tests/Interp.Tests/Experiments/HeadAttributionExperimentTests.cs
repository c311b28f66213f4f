using System.Text.Json;
using Interp.Experiments;
using Interp.Loading;
using Interp.Analysis;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// The head_attribution experiment end to end: the table read back by ParquetSharp with its schema, the sum identity
/// recomputed from the table, and the induction head (found here by behaviour) first on the repeated half.
/// </summary>
public sealed class HeadAttributionExperimentTests
{
    internal static readonly string[] Schema = ["position", "component", "layer", "head", "target", "value", "run_id"];

    /// <summary>Asserts the schema and that, per target and position, the components sum to the 'logit' row.</summary>
    internal static Dictionary<string, object[]> ReadAndCheck(string dir, int positions)
    {
        var t = ParquetRead.Columns(Path.Combine(dir, "head_attribution.parquet"));
        Assert.Equal(Schema, t.Keys);
        Assert.IsType<int>(t["position"][0]);
        Assert.IsType<string>(t["component"][0]);
        Assert.IsType<int>(t["layer"][0]);
        Assert.IsType<int>(t["head"][0]);
        Assert.IsType<string>(t["target"][0]);
        Assert.IsType<double>(t["value"][0]);
        Assert.Equal(["correct_token", "logit_diff"], t["target"].Cast<string>().Distinct().Order());
        var rows = Enumerable.Range(0, t["value"].Length);
        foreach (var group in rows.GroupBy(i => ((string)t["target"][i], (int)t["position"][i])))
        {
            double logit = group.Where(i => (string)t["component"][i] == "logit").Select(i => (double)t["value"][i]).Single();
            double sum = group.Where(i => (string)t["component"][i] != "logit").Sum(i => (double)t["value"][i]);
            Assert.True(Math.Abs(sum - logit) < 1e-4, $"{group.Key}: Σ components {sum} vs logit {logit}");
        }
        Assert.Equal(positions, rows.Select(i => (int)t["position"][i]).Distinct().Count());
        Assert.All(rows.Where(i => (string)t["component"][i] != "head"), i => Assert.Equal(-1, (int)t["head"][i]));
        return t;
    }

    /// <summary>Mean attribution to the correct token of each head over the repeated half, from the table.</summary>
    private static Dictionary<(int, int), double> RepeatedHalfHeads(Dictionary<string, object[]> t, int from) =>
        Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["component"][i] == "head" && (string)t["target"][i] == "correct_token" && (int)t["position"][i] >= from)
            .GroupBy(i => ((int)t["layer"][i], (int)t["head"][i]))
            .ToDictionary(g => g.Key, g => g.Average(i => (double)t["value"][i]));

    [Fact]
    public async Task Built_in_model_induction_head_carries_the_repeated_half()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "head_attribution", "--set", "batch=16");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        int prefix = 1, half = 24;
        var t = ReadAndCheck(tmp.Path, prefix + 2 * half - 1);

        // The induction head, found here by behaviour on sequences of our own.
        (int Layer, int Head) induction;
        using (var loaded = BuiltInModel.Load())
        using (NewDisposeScope())
        {
            var input = HeadDetection.RepeatedRandomTokens(loaded, 32, half, seed: 5, InductionRecipe.FirstTokenFor(loaded.Model.Config));
            var best = HeadDetection.Score(loaded.Model, input.Tokens, input.Half).Best(HeadScoreKind.Induction);
            induction = (best.Layer, best.Head);
        }
        var heads = RepeatedHalfHeads(t, prefix + half);
        Assert.Equal(4, heads.Count);
        Assert.Equal(induction, heads.MaxBy(kv => kv.Value).Key);
        Assert.True(heads[induction] > 3, $"induction head's mean attribution on the repeated half {heads[induction]}");
        // On the random first half no head can know the next token.
        var firstHalf = Enumerable.Range(0, t["value"].Length)
            .Where(i => (string)t["component"][i] == "logit" && (string)t["target"][i] == "correct_token" && (int)t["position"][i] < prefix + half - 1)
            .Average(i => (double)t["value"][i]);
        Assert.InRange(firstHalf, -1, 1);

        Assert.Equal(1, manifest.KeyNumbers.Single(k => k.Name == "induction_head_attribution_rank").Value);
        Assert.True(manifest.KeyNumbers.Single(k => k.Name == "max_sum_error").Value < 1e-4);
        foreach (var figure in new[] { "head_attribution_repeated.png", "head_attribution_logit_diff.png", "components_by_position.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);
    }

    [Fact]
    public async Task Stories260K_runs_with_grouped_query_attention_and_RMSNorm()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "head_attribution", "--model", TestModels.StoriesBin,
            "--set", "batch=4", "--set", "half=8");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var t = ReadAndCheck(tmp.Path, 1 + 2 * 8 - 1);                                    // BOS + r + r
        var components = Enumerable.Range(0, t["value"].Length).Select(i => (string)t["component"][i]).Distinct().Order().ToArray();
        Assert.Equal(["embed", "head", "logit", "mlp_out"], components);                   // no biases, no LN shift, no position embedding
        Assert.Equal(5 * 8, Enumerable.Range(0, t["value"].Length).Where(i => (string)t["component"][i] == "head")
            .Select(i => ((int)t["layer"][i], (int)t["head"][i])).Distinct().Count());
    }

    private static string StoriesNames => Path.Combine(ExperimentScriptTests.RepoRoot(), "experiments", "prompts", "stories_names.jsonl");

    [Fact]
    public async Task Prompts_components_sum_to_the_mean_logit_difference_of_plain_forwards()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Sub("processed"), "run", "head_attribution", "--prompts", StoriesNames, "--model", TestModels.StoriesBin);
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Sub("processed"), manifest);
        Assert.Equal(StoriesNames, (string)manifest.Settings["prompts"]!);
        Assert.Contains(manifest.Artifacts, a => a.File == "head_attribution_prompts.png");

        var t = ParquetRead.Columns(Path.Combine(tmp.Sub("processed"), "head_attribution.parquet"));
        Assert.Equal(["prompt", "position", "component", "layer", "head", "value", "run_id"], t.Keys);
        var rows = Enumerable.Range(0, t["value"].Length).ToArray();

        // Each prompt's position is its last real token: the prompt encoded alone with BOS, here.
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var prompts = File.ReadLines(StoriesNames).Where(l => l.Trim().Length > 0).Select(l =>
        {
            using var json = JsonDocument.Parse(l);
            return json.RootElement.GetProperty("prompt").GetString()!;
        }).ToArray();
        var lengths = prompts.Select(p => loaded.Tokenizer!.Encode(p, prependBos: true).Length).ToArray();
        Assert.True(lengths.Distinct().Count() > 1, "the prompts have different lengths, so the batch is padded");
        Assert.Equal(Enumerable.Range(0, prompts.Length), rows.Select(i => (int)t["prompt"][i]).Distinct().Order());

        // Per prompt: every head once, the components sum to the model's own logit difference ('logit').
        var sums = new double[prompts.Length];
        foreach (var group in rows.GroupBy(i => (int)t["prompt"][i]))
        {
            Assert.All(group, i => Assert.Equal(lengths[group.Key] - 1, (int)t["position"][i]));
            Assert.Equal(5 * 8, group.Count(i => (string)t["component"][i] == "head"));
            double logit = group.Where(i => (string)t["component"][i] == "logit").Select(i => (double)t["value"][i]).Single();
            sums[group.Key] = group.Where(i => (string)t["component"][i] != "logit").Sum(i => (double)t["value"][i]);
            Assert.True(Math.Abs(sums[group.Key] - logit) < 1e-4, $"prompt {group.Key}: Σ components {sums[group.Key]} vs logit difference {logit}");
        }

        // The mean over prompts of the components' sum is the mean logit difference of each prompt run alone through the
        // raw (unprocessed) model: centring the unembedding leaves a logit difference unchanged.
        double expected = PromptExperimentTests.MeanLogitDiffAlone(loaded, StoriesNames);
        Assert.True(Math.Abs(sums.Average() - expected) < 1e-4, $"mean Σ components {sums.Average()} vs plain forwards {expected}");
        double Key(RunManifest m, string name) => m.KeyNumbers.Single(k => k.Name == name).Value;
        Assert.True(Math.Abs(Key(manifest, "metric_clean") - expected) < 1e-4, $"metric_clean {Key(manifest, "metric_clean")} vs {expected}");
        Assert.True(Math.Abs(Key(manifest, "attribution_total") - expected) < 1e-4, $"attribution_total {Key(manifest, "attribution_total")} vs {expected}");

        // The head named top has the largest mean head attribution in the table.
        var heads = rows.Where(i => (string)t["component"][i] == "head").GroupBy(i => ((int)t["layer"][i], (int)t["head"][i]))
            .ToDictionary(g => g.Key, g => g.Average(i => (double)t["value"][i]));
        Assert.Equal(heads.MaxBy(kv => kv.Value).Key, ((int)Key(manifest, "top_head_layer"), (int)Key(manifest, "top_head")));

        // Raw weights: the same logit difference.
        var (rawCode, _, rawErr, raw) = await ExperimentScriptTests.Run(tmp.Sub("raw"), "run", "head_attribution", "--prompts", StoriesNames, "--model", TestModels.StoriesBin,
            "--set", "process_weights=false");
        Assert.True(rawCode == 0, rawErr);
        Assert.True(Math.Abs(Key(raw, "attribution_total") - expected) < 1e-4, $"raw weights: attribution_total {Key(raw, "attribution_total")} vs {expected}");
    }
}

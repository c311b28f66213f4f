using System.Text.Json;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Analysis;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// The residual_writes experiment end to end: both tables read back by ParquetSharp with their schemas; the logit lens
/// at the final stream equals the model's own probabilities, recomputed here from a forward pass on the same sequences.
/// </summary>
public sealed class ResidualWritesExperimentTests
{
    private static Dictionary<string, object[]> Writes(string dir, bool prompts = false)
    {
        var t = ParquetRead.Columns(Path.Combine(dir, "residual_writes.parquet"));
        string[] schema = ["layer", "component", "head", "position", "metric", "value", "run_id"];
        Assert.Equal(prompts ? ["prompt", .. schema] : schema, t.Keys);
        Assert.IsType<int>(t["layer"][0]);
        Assert.IsType<string>(t["component"][0]);
        Assert.IsType<int>(t["head"][0]);
        Assert.IsType<int>(t["position"][0]);
        Assert.IsType<string>(t["metric"][0]);
        Assert.IsType<double>(t["value"][0]);
        Assert.Equal(["cosine", "norm", "projection"], t["metric"].Cast<string>().Distinct().Order());
        var rows = Enumerable.Range(0, t["value"].Length);
        Assert.All(rows.Where(i => (string)t["metric"][i] == "norm"), i => Assert.True((double)t["value"][i] >= 0));
        Assert.All(rows.Where(i => (string)t["metric"][i] == "cosine"), i => Assert.InRange((double)t["value"][i], -1, 1));
        Assert.DoesNotContain(rows, i => (string)t["component"][i] == "embed" && (string)t["metric"][i] == "cosine");
        return t;
    }

    private static Dictionary<string, object[]> Lens(string dir, int layers)
    {
        var t = ParquetRead.Columns(Path.Combine(dir, "logit_lens.parquet"));
        Assert.Equal(["layer", "position", "metric", "value", "run_id"], t.Keys);
        Assert.IsType<int>(t["layer"][0]);
        Assert.IsType<int>(t["position"][0]);
        Assert.IsType<string>(t["metric"][0]);
        Assert.IsType<double>(t["value"][0]);
        Assert.Equal(Enumerable.Range(0, layers + 1), t["layer"].Cast<int>().Distinct().Order());
        var rows = Enumerable.Range(0, t["value"].Length);
        Assert.All(rows.Where(i => (string)t["metric"][i] == "probability"), i => Assert.InRange((double)t["value"][i], 0, 1));
        Assert.All(rows.Where(i => (string)t["metric"][i] == "rank"), i => Assert.True((double)t["value"][i] >= 1));
        return t;
    }

    private static double Value(Dictionary<string, object[]> t, int layer, int position, string metric) =>
        Enumerable.Range(0, t["value"].Length).Where(i => (int)t["layer"][i] == layer && (int)t["position"][i] == position && (string)t["metric"][i] == metric)
            .Select(i => (double)t["value"][i]).Single();

    [Fact]
    public async Task Built_in_model_lens_is_the_model_at_the_end_and_the_induction_layer_makes_the_prediction()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "residual_writes", "--set", "batch=16");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var writes = Writes(tmp.Path);
        var lens = Lens(tmp.Path, 2);
        int prefix = 1, half = 24, positions = prefix + 2 * half - 1;

        // The same sequences (seed 0) through the processed model: mean probability of the next token per position.
        using (var loaded = BuiltInModel.Load())
        using (NewDisposeScope())
        using (no_grad())
        {
            loaded.Model.ProcessWeights(WeightProcessingOptions.Default);
            var tokens = HeadDetection.RepeatedRandomTokens(loaded, 16, half, seed: 0, InductionRecipe.FirstTokenFor(loaded.Model.Config)).Tokens;
            var probability = loaded.Model.forward(tokens)[.., ..^1].softmax(-1).gather(-1, tokens[.., 1..].unsqueeze(-1)).squeeze(-1)
                .to(ScalarType.Float64).mean([0]).data<double>().ToArray();
            Assert.Equal(positions, probability.Length);
            // The run cached per-head results, which sums the heads in another order than a plain forward pass: equal up to
            // float32 rounding here (the exact identity, lens = the cached run's own logits, is the key number below).
            for (int p = 0; p < positions; p++) Assert.True(Math.Abs(probability[p] - Value(lens, 2, p, "probability")) < 1e-5, $"position {p}");
        }
        Assert.Equal(0.0, manifest.KeyNumbers.Single(k => k.Name == "lens_final_max_abs_difference").Value);

        // The repeated half is predicted only after layer 1 (the induction layer): rank ≈ 1 at the end, far from it before.
        var repeated = Enumerable.Range(prefix + half, half - 1).ToArray();
        Assert.True(repeated.Average(p => Value(lens, 2, p, "rank")) < 1.5);
        Assert.True(repeated.Average(p => Value(lens, 1, p, "rank")) > 10);
        Assert.True(repeated.Average(p => Value(lens, 2, p, "probability")) > 0.7);

        // Writes: one row per component, position and metric; the heads of both layers and the embeddings are there.
        var rows = Enumerable.Range(0, writes["value"].Length);
        // embed: norm, projection; pos_embed: 3 metrics; per layer 2 heads and attn_out, 3 metrics each.
        Assert.Equal(positions * (2 + 3 + 2 * 3 * 3), rows.Count());
        Assert.Equal(["attn_out", "embed", "head", "pos_embed"], rows.Select(i => (string)writes["component"][i]).Distinct().Order());
    }

    [Fact]
    public async Task Stories260K_runs_with_its_MLPs()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "residual_writes", "--model", TestModels.StoriesBin,
            "--set", "batch=4", "--set", "half=8");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        var writes = Writes(tmp.Path);
        Assert.Contains(writes["component"], c => (string)c == "mlp_out");
        Lens(tmp.Path, 5);
        Assert.Equal(0.0, manifest.KeyNumbers.Single(k => k.Name == "lens_final_max_abs_difference").Value);
        foreach (var figure in new[] { "write_norms.png", "logit_lens_probability.png", "logit_lens_rank.png", "logit_lens_heatmap.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);
    }

    private static string StoriesNames => Path.Combine(ExperimentScriptTests.RepoRoot(), "experiments", "prompts", "stories_names.jsonl");

    /// <summary>Each prompt's tokens (BOS first) and its answer and wrong ids: the one token that encoding prompt + answer adds.</summary>
    private static (int[] Ids, int Answer, int Wrong)[] Encode(LoadedModel loaded, string file) =>
        File.ReadLines(file).Where(l => l.Trim().Length > 0).Select(l =>
        {
            using var json = JsonDocument.Parse(l);
            string prompt = json.RootElement.GetProperty("prompt").GetString()!;
            var ids = loaded.Tokenizer!.Encode(prompt, prependBos: true).ToArray();
            int Continuation(string key) => loaded.Tokenizer!.Encode(prompt + json.RootElement.GetProperty(key).GetString()!, prependBos: true)[^1];
            return (ids, Continuation("answer"), Continuation("wrong"));
        }).ToArray();

    [Fact]
    public async Task Prompts_lens_ends_at_the_plain_forward_logit_difference_and_the_writes_add_up_to_the_final_stream()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "residual_writes", "--prompts", StoriesNames, "--model", TestModels.StoriesBin);
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        Assert.Equal(StoriesNames, (string)manifest.Settings["prompts"]!);
        foreach (var figure in new[] { "logit_lens_logit_diff.png", "write_projection_heads.png", "write_projection.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);

        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var prompts = Encode(loaded, StoriesNames);
        Assert.True(prompts.Select(p => p.Ids.Length).Distinct().Count() > 1, "the prompts have different lengths, so the batch is padded");

        // The lens at the final stream, averaged over the prompts, is the mean logit difference of plain forwards of each
        // prompt alone (raw weights: centring the unembedding leaves a difference unchanged).
        var lens = ParquetRead.Columns(Path.Combine(tmp.Path, "logit_lens.parquet"));
        Assert.Equal(["prompt", "layer", "position", "metric", "value", "run_id"], lens.Keys);
        Assert.Equal(["answer_probability", "answer_rank", "logit_diff"], lens["metric"].Cast<string>().Distinct().Order());
        Assert.Equal(Enumerable.Range(0, 6), lens["layer"].Cast<int>().Distinct().Order());
        var lensRows = Enumerable.Range(0, lens["value"].Length).ToArray();
        Assert.All(lensRows, i => Assert.Equal(prompts[(int)lens["prompt"][i]].Ids.Length - 1, (int)lens["position"][i]));
        var finalDiff = lensRows.Where(i => (int)lens["layer"][i] == 5 && (string)lens["metric"][i] == "logit_diff").ToArray();
        Assert.Equal(prompts.Length, finalDiff.Length);
        double expected = PromptExperimentTests.MeanLogitDiffAlone(loaded, StoriesNames);
        double lensMean = finalDiff.Average(i => (double)lens["value"][i]);
        Assert.True(Math.Abs(lensMean - expected) < 1e-4, $"lens at the final stream {lensMean} vs plain forwards {expected}");
        double metricClean = manifest.KeyNumbers.Single(k => k.Name == "metric_clean").Value;
        Assert.True(Math.Abs(metricClean - expected) < 1e-4, $"metric_clean {metricClean} vs plain forwards {expected}");
        Assert.Equal(0.0, manifest.KeyNumbers.Single(k => k.Name == "lens_final_max_abs_difference").Value);

        // Writes at the last token: the projections of the embedding and of every layer's attention and MLP output add up
        // to the projection of the final stream of each prompt run alone through the processed model; each layer's heads
        // add up to its attention output (stories260K has no b_O).
        var writes = Writes(tmp.Path, prompts: true);
        var projections = Enumerable.Range(0, writes["value"].Length).Where(i => (string)writes["metric"][i] == "projection").ToArray();
        loaded.Model.ProcessWeights(WeightProcessingOptions.Default);
        var wU = loaded.Model.Unembed.W_U.detach().to(ScalarType.Float64);
        for (int b = 0; b < prompts.Length; b++)
        {
            var mine = projections.Where(i => (int)writes["prompt"][i] == b).ToArray();
            Assert.All(mine, i => Assert.Equal(prompts[b].Ids.Length - 1, (int)writes["position"][i]));
            double Sum(Func<int, bool> which) => mine.Where(which).Sum(i => (double)writes["value"][i]);
            double parts = Sum(i => (string)writes["component"][i] is "embed" or "attn_out" or "mlp_out");
            double reference;
            using (NewDisposeScope())
            using (no_grad())
            {
                var (ids, answer, wrong) = prompts[b];
                var (_, cache) = loaded.Model.RunWithCache(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), n => n == HookNames.ResidPost(4));
                using (cache)
                {
                    var u = wU[.., answer].sub(wU[.., wrong]);
                    reference = cache[HookNames.ResidPost(4)][0, ^1].to(ScalarType.Float64).dot(u).item<double>() / u.norm().item<double>();
                }
            }
            Assert.True(Math.Abs(parts - reference) < 1e-4, $"prompt {b}: Σ projections {parts} vs the final stream's {reference}");
            for (int l = 0; l < 5; l++)
            {
                int layer = l;
                double heads = Sum(i => (string)writes["component"][i] == "head" && (int)writes["layer"][i] == layer);
                double attn = Sum(i => (string)writes["component"][i] == "attn_out" && (int)writes["layer"][i] == layer);
                Assert.True(Math.Abs(heads - attn) < 1e-4, $"prompt {b}, layer {l}: Σ heads {heads} vs attn_out {attn}");
            }
        }
    }
}

using System.Text.Json;
using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// The experiments on a researcher's own prompts, run as the README says (<c>dotnet run experiments/NAME.cs -- --prompts
/// FILE --model PATH</c>), checked against plain forward passes of each prompt alone.
/// </summary>
public sealed class PromptExperimentTests
{
    private static string Script(string name) => Path.Combine(ExperimentScriptTests.RepoRoot(), "experiments", name + ".cs");
    private static string StoriesNames => Path.Combine(ExperimentScriptTests.RepoRoot(), "experiments", "prompts", "stories_names.jsonl");

    /// <summary>
    /// logit(answer) − logit(wrong) at the last token of each prompt run alone, averaged: read from the JSON Lines with
    /// System.Text.Json, the prompt encoded with BOS, and the answer token found as the one token that encoding
    /// prompt + answer adds after the prompt's tokens (the continuation the model predicts).
    /// </summary>
    internal static double MeanLogitDiffAlone(LoadedModel loaded, string file)
    {
        var tokenizer = loaded.Tokenizer!;
        var diffs = new List<double>();
        foreach (var line in File.ReadLines(file).Where(l => l.Trim().Length > 0))
        {
            using var json = JsonDocument.Parse(line);
            string prompt = json.RootElement.GetProperty("prompt").GetString()!;
            int Continuation(string text)
            {
                var alone = tokenizer.Encode(prompt, prependBos: true);
                var joined = tokenizer.Encode(prompt + text, prependBos: true);
                Assert.Equal(alone, joined[..^1]);
                return joined[^1];
            }
            int answer = Continuation(json.RootElement.GetProperty("answer").GetString()!);
            int wrong = Continuation(json.RootElement.GetProperty("wrong").GetString()!);
            using var scope = NewDisposeScope();
            var ids = tokenizer.Encode(prompt, prependBos: true);
            var logits = loaded.Model.forward(tensor(ids.Select(i => (long)i).ToArray()));   // [1, pos, vocab]
            var last = logits[0, ^1].to(ScalarType.Float64);
            diffs.Add(last[answer].item<double>() - last[wrong].item<double>());
        }
        Assert.True(diffs.Count >= 8, "the shipped prompt set has prompts");
        return diffs.Average();
    }

    [Fact]
    public async Task Ablation_on_stories_prompts_reports_the_mean_logit_difference_of_plain_forwards_as_metric_clean()
    {
        using var tmp = new TempDir();
        var run = await DotnetScripts.Run(Script("ablation"), ["--prompts", StoriesNames, "--model", TestModels.StoriesBin, "--out", tmp.Path]);
        Assert.True(run.ExitCode == 0, run.ToString());
        var manifest = Interp.Experiments.RunManifest.Load(tmp.Path);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        Assert.Equal(StoriesNames, (string)manifest.Settings["prompts"]!);

        var table = ParquetRead.Columns(Path.Combine(tmp.Path, "ablation.parquet"));
        Assert.All(table["metric"], m => Assert.Equal("logit_diff", m));
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        double expected = MeanLogitDiffAlone(loaded, StoriesNames);
        Assert.All(table["metric_clean"], v => Assert.Equal(expected, (double)v, 4));
        Assert.Equal(expected, manifest.KeyNumbers.Single(k => k.Name == "metric_clean").Value, 4);
    }

    [Fact]
    public async Task Activation_patching_without_corrupted_prompts_says_it_needs_them()
    {
        using var tmp = new TempDir();
        string file = Path.Combine(tmp.Path, "clean_only.jsonl");
        File.WriteAllLines(file, File.ReadLines(StoriesNames).Take(4).Select(l =>
        {
            using var json = JsonDocument.Parse(l);
            var r = json.RootElement;
            return JsonSerializer.Serialize(new { prompt = r.GetProperty("prompt").GetString(), answer = r.GetProperty("answer").GetString(), wrong = r.GetProperty("wrong").GetString() });
        }));
        var (code, _, err) = await ExperimentScriptTests.RunRaw("run", "activation_patching", "--prompts", file, "--model", TestModels.StoriesBin, "--out", tmp.Sub("run"));
        Assert.Equal(1, code);
        Assert.Contains("needs a corrupted prompt", err);
        Assert.Contains("clean_only.jsonl", err);
    }
}

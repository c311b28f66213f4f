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
        Assert.Equal(expected, manifest.KeyNumbers.Single(k => k.Name == "metric_clean").Value, 1e-4);
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

    [Fact]
    public async Task The_shipped_stories_prompt_set_is_what_interp_prompts_ioi_writes()
    {
        using var tmp = new TempDir();
        var (code, output, err) = await ExperimentScriptTests.RunRaw("prompts", "ioi", "--model", TestModels.StoriesBin, "--templates", "stories",
            "--names", "Lily,Tim,Timmy,Tom,Ben,Max,Sue,Anna,Sam,Mia,Lucy,Jack", "--n", "24", "--seed", "0", "--out", tmp.File("names.jsonl"));
        Assert.True(code == 0, err);
        Assert.Equal(File.ReadAllText(StoriesNames), File.ReadAllText(tmp.File("names.jsonl")));
        Assert.Contains("names that are one token: Lily, Tim, Timmy", output);
    }

    [Fact]
    public async Task Ioi_prompts_for_gpt2_keep_single_token_names_and_equal_lengths()
    {
        using var tmp = new TempDir();
        // A small model with GPT-2's whole vocabulary and tokenizer (the shared random GPT-2 has a 1000-token vocabulary).
        string dir = tmp.Sub("gpt2-vocab");
        using (var model = TestModels.Random(TestModels.Gpt2Like with { DVocab = 50257, DModel = 8, NHeads = 2, DMlp = 16, NLayers = 1, NCtx = 64 }))
            InterpModelFormat.Save(model, dir, tokenizer: "gpt2");
        var (code, _, err) = await ExperimentScriptTests.RunRaw("prompts", "ioi", "--model", dir, "--n", "32", "--out", tmp.File("ioi.jsonl"));
        Assert.True(code == 0, err);
        var tokenizer = new Interp.Tokenizers.Gpt2Tokenizer();
        var lines = File.ReadAllLines(tmp.File("ioi.jsonl"));
        Assert.Equal(32, lines.Length);
        foreach (var line in lines)
        {
            using var json = JsonDocument.Parse(line);
            var r = json.RootElement;
            string prompt = r.GetProperty("prompt").GetString()!, corrupted = r.GetProperty("corrupted").GetString()!;
            string answer = r.GetProperty("answer").GetString()!, wrong = r.GetProperty("wrong").GetString()!;
            Assert.Single(tokenizer.Encode(answer));
            Assert.Single(tokenizer.Encode(wrong));
            Assert.NotEqual(answer, wrong);
            Assert.Contains(answer, prompt);
            Assert.Equal(tokenizer.Encode(prompt).Length, tokenizer.Encode(corrupted).Length);
            // The corrupted prompt differs from the clean one only in the subject's second mention.
            Assert.EndsWith(prompt[prompt.LastIndexOf(wrong.Trim(), StringComparison.Ordinal)..].Replace(wrong.Trim(), "", StringComparison.Ordinal), corrupted);
        }
    }
}

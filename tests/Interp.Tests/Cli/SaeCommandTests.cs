using Interp.Cli;
using Interp.Hooks;
using Interp.Saes;
using Interp.Tests.Support;

namespace Interp.Tests.Cli;

/// <summary><c>interp sae train</c> and <c>interp sae info</c>, run in-process.</summary>
public sealed class SaeCommandTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Train_writes_an_sae_that_loads_and_info_describes_it()
    {
        using var tmp = new TempDir();
        string corpus = tmp.File("corpus.jsonl");
        File.WriteAllLines(corpus, Enumerable.Range(0, 12).Select(i =>
            $"{{\"text\": \"Once upon a time, there was a little girl named Lily. She had {i} red balls and loved to play outside with her friend Tom.\"}}"));
        string outDir = tmp.File("sae");
        string hook = HookNames.ResidPre(2);
        // An options file, with one of its values overridden by a flag.
        string options = tmp.File("options.json");
        File.WriteAllText(options, "{\"architecture\": \"topk\", \"k\": 4, \"d_sae\": 128, \"train_batch_size_tokens\": 128}");
        var (code, output, err) = await Run("sae", "train", "--options", options, "--model", TestModels.StoriesBin, "--hook", hook, "--k", "8",
            "--corpus", corpus, "--out", outDir, "--training-tokens", "1024", "--context-size", "32", "--checkpoint-every", "4");
        Assert.True(code == 0, err);
        Assert.Contains("trained 8 steps (1,024 tokens)", output);
        using (var sae = Sae.Load(outDir))
        {
            Assert.Equal(SaeArchitecture.TopK, sae.Config.Architecture);
            Assert.Equal(8, sae.Config.K);
            Assert.Equal(128, sae.Config.DSae);
            Assert.Equal(hook, sae.Config.HookName);
        }
        Assert.True(Directory.Exists(Path.Combine(outDir, "checkpoints", "512")));

        (code, output, err) = await Run("sae", "info", outDir);
        Assert.True(code == 0, err);
        Assert.Matches(@"architecture:\s+topk \(k 8\)", output);
        Assert.Matches($@"hook:\s+{System.Text.RegularExpressions.Regex.Escape(hook)}", output);
        Assert.Matches(@"d_sae:\s+128", output);
        Assert.Matches(@"W_enc\s+\[64, 128\] float32", output);
        Assert.Matches(@"dead features:\s+\d+ ", output);
        Assert.Matches(@"dense features:\s+\d+ ", output);
    }

    [Fact]
    public async Task Help_works_and_bad_or_missing_options_are_clear_errors()
    {
        var (code, output, _) = await Run("sae", "train", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--hook", output);
        Assert.Contains("--architecture", output);

        using var tmp = new TempDir();
        (code, _, var err) = await Run("sae", "train", "--model", TestModels.StoriesBin, "--corpus", "x.txt", "--out", tmp.Path);
        Assert.NotEqual(0, code);
        Assert.Contains("--hook", err);

        (code, _, err) = await Run("sae", "train", "--model", TestModels.StoriesBin, "--hook", HookNames.ResidPre(2), "--corpus", "x.txt", "--out", tmp.Path, "--bogus", "1");
        Assert.NotEqual(0, code);
        Assert.Contains("--bogus", err);

        (code, _, err) = await Run("sae", "train", "--model", TestModels.StoriesBin, "--hook", HookNames.ResidPre(2), "--corpus", "x.txt", "--out", tmp.Path, "--architecture", "gated");
        Assert.NotEqual(0, code);
        Assert.Contains("gated", err);

        (code, _, err) = await Run("sae", "train", "--model", TestModels.StoriesBin, "--hook", HookNames.ResidPre(2), "--corpus", "x.txt", "--out", tmp.Path, "--lr", "-1");
        Assert.Equal(1, code);
        Assert.Contains("SAE training option lr:", err);

        (code, _, err) = await Run("sae", "train", "--model", TestModels.StoriesBin, "--hook", HookNames.ResidPre(2), "--corpus", tmp.File("missing.txt"), "--out", tmp.Path);
        Assert.Equal(1, code);
        Assert.Contains("missing.txt: no such file", err);

        (code, _, err) = await Run("sae", "info", tmp.File("nothing"));
        Assert.Equal(1, code);
        Assert.Contains("nothing", err);
    }
}

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using Interp.Training.Saes;
using static TorchSharp.torch;

namespace Interp.Tests.Training.Saes;

/// <summary>The trainer on stories260K and on synthetic data: what it saves, the scaling-factor fold, JumpReLU's gradient, errors, cancellation.</summary>
public sealed class SaeTrainingTests
{
    private const string Stories =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.\n\n" +
        "One day, Tom found a big red ball. He wanted to share it with his sister, so he ran home to show her.\n\n" +
        "The sun was shining and the birds were singing. Lily and Tom played all day until it was time to go home.";

    private static string WriteCorpus(TempDir tmp)
    {
        string path = tmp.File("corpus.txt");
        File.WriteAllText(path, string.Join("\n\n", Enumerable.Repeat(Stories, 4)));
        return path;
    }

    private static SaeTrainingOptions Quick(SaeArchitecture architecture) => new()
    {
        Architecture = architecture,
        DSae = 128,
        K = 8,
        ContextSize = 32,
        StoreBatchSizePrompts = 4,
        BatchSizeTokens = 128,
        BufferTokens = 512,
        TrainingTokens = 128 * 12,
        LearningRate = 1e-3,
        LogEverySteps = 4,
        CheckpointEverySteps = 5,
        Seed = 3,
    };

    [Theory]
    [InlineData(SaeArchitecture.TopK)]
    [InlineData(SaeArchitecture.JumpRelu)]
    [InlineData(SaeArchitecture.Standard)]
    public void What_the_trainer_saves_loads_back_to_the_identical_sae_in_SAELens_6_format(SaeArchitecture architecture)
    {
        using var tmp = new TempDir();
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var corpus = new TextFileTokenSource(WriteCorpus(tmp), loaded.RequireTokenizer());
        string hook = HookNames.ResidPre(2);
        string outDir = tmp.Sub("sae");
        var trainer = new SaeTrainer(Quick(architecture) with { NormalizeActivations = SaeNormalization.ExpectedAverageOnlyIn, NormEstimateBatches = 2 });
        var result = trainer.TrainOnModel(loaded.Model, hook, corpus, outDir);
        Assert.Equal(12, result.Steps);
        Assert.NotEqual(1.0, result.ScalingFactor);

        using var saved = Sae.Load(outDir);
        using var trained = trainer.Trained!.ToSae(saved.Config, trainer.ScalingFactor);
        Assert.Equal(trained.StateDict.Select(p => p.Key), saved.StateDict.Select(p => p.Key));
        foreach (var ((name, a), (_, b)) in trained.StateDict.Zip(saved.StateDict))
            Assert.True(BitIdentical(a, b), $"{name} differs after the round trip");
        using (var scope = NewDisposeScope())
        {
            var (_, cache) = loaded.Model.RunWithCache(loaded.Model.ToTokens("Once upon a time, Lily and Tom went to the park."), n => n == hook);
            using (cache)
            {
                var x = cache[hook];
                Assert.True(BitIdentical(trained.Reconstruct(x), saved.Reconstruct(x)), "the loaded SAE computes something else");
                Assert.True(BitIdentical(trained.Encode(x), saved.Encode(x)));
            }
        }

        // cfg.json: SAELens 6's keys, normalisation folded.
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, Sae.ConfigFile)))!.AsObject();
        Assert.Equal(64, (int)cfg["d_in"]!);
        Assert.Equal(128, (int)cfg["d_sae"]!);
        Assert.Equal("float32", (string)cfg["dtype"]!);
        Assert.Equal("cpu", (string)cfg["device"]!);
        Assert.True((bool)cfg["apply_b_dec_to_input"]!);
        Assert.Equal("none", (string)cfg["normalize_activations"]!);
        Assert.Equal("none", (string)cfg["reshape_activations"]!);
        Assert.Equal(architecture switch { SaeArchitecture.TopK => "topk", SaeArchitecture.JumpRelu => "jumprelu", _ => "standard" }, (string)cfg["architecture"]!);
        if (architecture == SaeArchitecture.TopK) Assert.Equal(8, (int)cfg["k"]!);
        else Assert.False(cfg.ContainsKey("k"));
        var meta = cfg["metadata"]!.AsObject();
        Assert.Equal(hook, (string)meta["hook_name"]!);
        Assert.Equal(SaeConfig.WrittenSaeLensVersion, (string)meta["sae_lens_version"]!);
        Assert.Equal(32, (int)meta["context_size"]!);
        Assert.True((bool)meta["prepend_bos"]!);
        Assert.Equal(loaded.Model.Config.Name, (string)meta["model_name"]!);

        // Every tensor F32, in SAELens's names; sparsity [d_sae] of log10 densities.
        var expected = architecture == SaeArchitecture.JumpRelu ? new[] { "W_dec", "W_enc", "b_dec", "b_enc", "threshold" } : ["W_dec", "W_enc", "b_dec", "b_enc"];
        Assert.Equal(expected, Dtypes(Path.Combine(outDir, Sae.WeightsFile)).Keys.Order(StringComparer.Ordinal));
        Assert.All(Dtypes(Path.Combine(outDir, Sae.WeightsFile)).Values, d => Assert.Equal("F32", d));
        Assert.Equal("F32", Dtypes(Path.Combine(outDir, Sae.SparsityFile))["sparsity"]);
        var (sparsity, _) = NaiveSafeTensors.Read(Path.Combine(outDir, Sae.SparsityFile));
        Assert.Equal([128L], sparsity[0].Tensor.Shape);
        Assert.All(sparsity[0].Tensor.Values, v => Assert.InRange(v, -10.0001f, 0f));

        // Checkpoints every 5 steps, each an SAE that loads.
        var checkpoints = Directory.GetDirectories(Path.Combine(outDir, SaeTrainer.CheckpointsFolder)).Select(d => Path.GetFileName(d)!).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(["1280", "640"], checkpoints);
        using var checkpoint = Sae.Load(Path.Combine(outDir, SaeTrainer.CheckpointsFolder, "640"));
        Assert.Equal(saved.Config.ToJson().ToJsonString(), checkpoint.Config.ToJson().ToJsonString());
    }

    private static bool BitIdentical(Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.contiguous().data<float>().ToArray().Select(BitConverter.SingleToInt32Bits)
            .SequenceEqual(b.contiguous().data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));

    private static Dictionary<string, string> Dtypes(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        using var header = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n));
        return header.RootElement.EnumerateObject().Where(p => p.Name != "__metadata__")
            .ToDictionary(p => p.Name, p => p.Value.GetProperty("dtype").GetString()!);
    }

    [Fact]
    public void The_folded_scaling_factor_makes_the_saved_sae_on_raw_inputs_the_trained_sae_on_scaled_inputs()
    {
        using var tmp = new TempDir();
        using var data = new ScaledSource(new PlantedDictionary(16, 32, 0.1, seed: 5), 37.5f);
        var trainer = new SaeTrainer(new SaeTrainingOptions
        {
            Architecture = SaeArchitecture.JumpRelu, DSae = 48, BatchSizeTokens = 256, BufferTokens = 1024, TrainingTokens = 256 * 30,
            NormalizeActivations = SaeNormalization.ExpectedAverageOnlyIn, NormEstimateBatches = 8, LearningRate = 1e-3, LogEverySteps = 10,
            JumpReluInitThreshold = 0.05,
        });
        trainer.Train(data, new SaeTrainingTarget("synthetic", null, 1, false, "planted"), tmp.Path);

        // The factor is √d_in / mean‖x‖, against an independent estimate on fresh samples.
        using var scope = NewDisposeScope();
        var x = data.NextBatch(4096);
        double meanNorm = (x * x).sum(dim: 1).to(ScalarType.Float64).sqrt().mean().item<double>();
        Assert.InRange(trainer.ScalingFactor / (4.0 / meanNorm), 0.97, 1.03);

        using var saved = Sae.Load(tmp.Path);
        Assert.Equal(SaeNormalization.None, saved.Config.Normalization);
        using var unfolded = trainer.Trained!.ToSae(saved.Config, 1.0);   // the trained SAE, in the scaled space
        var s = (float)trainer.ScalingFactor;
        var expected = unfolded.Reconstruct(x * s) / s;
        var actual = saved.Reconstruct(x);
        double scale = expected.abs().max().item<float>();
        Assert.True((actual - expected).abs().max().item<float>() <= 1e-5 * scale, "saved(x) ≠ trained(x·s)/s");
        Assert.True(saved.Encode(x).allclose(unfolded.Encode(x * s), rtol: 1e-4, atol: 1e-5), "the features differ");
        Assert.True(Sae.L0(saved.Encode(x)).sum().item<long>() > 0, "no feature fires: the comparison would be vacuous");
    }

    private sealed class ScaledSource(PlantedDictionary inner, float factor) : IActivationSource, IDisposable
    {
        public int DIn => inner.DIn;
        public Tensor NextBatch(int size)
        {
            using var scope = NewDisposeScope();
            return (inner.NextBatch(size) * factor).MoveToOuterDisposeScope();
        }
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void JumpRelu_threshold_gradient_is_the_straight_through_estimate()
    {
        // ε = 0.001; θ = [0.5, 0.1]. (pre − θ)/ε: row 0 [0.3, 200], row 1 [−0.2, 0.4]: rect = [[1, 0], [1, 1]].
        using var sae = new TrainingSae(2, 2, new SaeTrainingOptions { Architecture = SaeArchitecture.JumpRelu, JumpReluBandwidth = 0.001 }, 0);
        using var scope = NewDisposeScope();
        var pre = tensor(new[] { 0.5003, 0.3, 0.4998, 0.1004 }, [2, 2]).requires_grad_();
        var theta = tensor(new[] { 0.5, 0.1 }).requires_grad_();
        var w = tensor(new[] { 1.0, 2.0, 3.0, 4.0 }, [2, 2]);
        var (jump, step) = sae.JumpRelu(pre, theta);
        Assert.Equal(new[] { 0.5003, 0.3, 0.0, 0.1004 }, jump.detach().data<double>().ToArray());
        Assert.Equal(new[] { 1.0, 1.0, 0.0, 1.0 }, step.detach().data<double>().ToArray());

        (jump * w).sum().backward();
        // −(θ/ε) Σ_batch rect·w: feature 0: −500·(1 + 3) = −2000; feature 1: −100·4 = −400. pre: H(pre − θ)·w.
        AssertClose([-2000, -400], theta.grad!.data<double>().ToArray());
        Assert.Equal(new[] { 1.0, 2.0, 0.0, 4.0 }, pre.grad!.data<double>().ToArray());

        theta.grad!.zero_();
        pre.grad!.zero_();
        var (_, step2) = sae.JumpRelu(pre, theta);
        (step2 * w).sum().backward();
        // −(1/ε) Σ_batch rect·w: feature 0: −1000·4; feature 1: −1000·4. No gradient reaches pre through the step.
        AssertClose([-4000, -4000], theta.grad!.data<double>().ToArray());
        Assert.Equal(new[] { 0.0, 0.0, 0.0, 0.0 }, pre.grad!.data<double>().ToArray());
    }

    private static void AssertClose(double[] expected, double[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-9 * Math.Abs(expected[i]), $"[{i}]: {actual[i]} ≠ {expected[i]}");
    }

    [Fact]
    public void Standard_loss_is_mse_plus_l1_weighted_by_decoder_norms_against_a_naive_reference()
    {
        double[,] wEnc = { { 1, -1 }, { 0.5, 1 } }, wDec = { { 2, 0 }, { 1, 1 } };
        double[] bEnc = { 0.1, -0.2 }, bDec = { 0.5, -0.5 };
        double[][] xs = [[1, 2], [-3, 0]];
        const double lambda = 0.3;
        // Naive SAELens 6 standard loss: mean over the batch of Σ_d (x̂ − x)² + λ Σ_f |a_f| ‖W_dec,f‖.
        double expected = 0;
        foreach (var x in xs)
        {
            var acts = new double[2];
            for (int f = 0; f < 2; f++)
            {
                double pre = bEnc[f];
                for (int d = 0; d < 2; d++) pre += (x[d] - bDec[d]) * wEnc[d, f];
                acts[f] = Math.Max(0, pre);
            }
            for (int d = 0; d < 2; d++)
            {
                double r = bDec[d];
                for (int f = 0; f < 2; f++) r += acts[f] * wDec[f, d];
                expected += (r - x[d]) * (r - x[d]) / xs.Length;
            }
            for (int f = 0; f < 2; f++) expected += lambda * Math.Abs(acts[f]) * Math.Sqrt(wDec[f, 0] * wDec[f, 0] + wDec[f, 1] * wDec[f, 1]) / xs.Length;
        }
        using var sae = new TrainingSae(2, 2, new SaeTrainingOptions(), 0);
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            sae.WEnc.copy_(tensor(new float[] { 1, -1, 0.5f, 1 }, [2, 2]));
            sae.BEnc.copy_(tensor(new float[] { 0.1f, -0.2f }));
            sae.WDec.copy_(tensor(new float[] { 2, 0, 1, 1 }, [2, 2]));
            sae.BDec.copy_(tensor(new float[] { 0.5f, -0.5f }));
        }
        var losses = sae.Step(tensor(new float[] { 1, 2, -3, 0 }, [2, 2]), lambda, null);
        Assert.Equal(expected, losses.Loss.item<float>(), 1e-4);
        Assert.Equal(expected, losses.Mse + losses.Sparsity, 1e-4);
    }

    [Fact]
    public void A_hook_z_sae_trains_on_the_flattened_heads_and_splices_back_in()
    {
        using var tmp = new TempDir();
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var corpus = new TextFileTokenSource(WriteCorpus(tmp), loaded.RequireTokenizer());
        string hook = HookNames.Z(1);
        string outDir = tmp.Sub("z");
        new SaeTrainer(Quick(SaeArchitecture.TopK) with { TrainingTokens = 128 * 3, CheckpointEverySteps = 0 }).TrainOnModel(loaded.Model, hook, corpus, outDir);
        using var sae = Sae.Load(outDir);
        Assert.True(sae.Config.ReshapeHookZ);
        Assert.Equal(64, sae.Config.DIn);   // 8 heads × d_head 8
        Assert.Contains("\"reshape_activations\":\"hook_z\"", File.ReadAllText(Path.Combine(outDir, Sae.ConfigFile)));
        using var scope = NewDisposeScope();
        var tokens = loaded.Model.ToTokens("Once upon a time, Lily and Tom went to the park.");
        using (loaded.Model.WithSaes(sae))
        {
            var logits = loaded.Model.forward(tokens);
            Assert.True(logits.isfinite().all().item<bool>());
        }
    }

    [Fact]
    public void Windows_start_with_BOS_and_documents_are_separated_by_it()
    {
        var windows = TokenWindows.Pack([[5, 6, 7], [8, 9, 10, 11]], 4, bos: 1, prependBos: true).ToArray();
        // Stream 5 6 7 | 1 8 9 10 11: the separator at a window start is that window's BOS; 11 is a partial window.
        Assert.Equal([[1, 5, 6, 7], [1, 8, 9, 10]], windows);
        Assert.Equal([[5, 6, 7, 1], [8, 9, 10, 11]], TokenWindows.Pack([[5, 6, 7], [8, 9, 10, 11]], 4, bos: 1, prependBos: false).ToArray());
    }

    [Theory]
    [InlineData("K", "k")]
    [InlineData("LearningRate", "lr")]
    [InlineData("BufferTokens", "buffer_tokens")]
    [InlineData("TrainingTokens", "training_tokens")]
    [InlineData("JumpReluBandwidth", "jumprelu_bandwidth")]
    public void Bad_options_name_the_option(string property, string key)
    {
        var o = new SaeTrainingOptions();
        o = property switch
        {
            "K" => o with { K = 0 },
            "LearningRate" => o with { LearningRate = -1 },
            "BufferTokens" => o with { BufferTokens = o.BatchSizeTokens },
            "TrainingTokens" => o with { TrainingTokens = 10 },
            _ => o with { JumpReluBandwidth = 0 },
        };
        var e = Assert.Throws<ArgumentException>(() => new SaeTrainer(o));
        Assert.StartsWith($"SAE training option {key}:", e.Message);
    }

    [Fact]
    public void An_options_file_sets_what_it_names_and_rejects_unknown_keys_and_bad_values()
    {
        using var tmp = new TempDir();
        string path = tmp.File("options.json");
        File.WriteAllText(path, "{\"architecture\": \"jumprelu\", \"d_sae\": 256, \"lr\": 0.002, \"training_tokens\": 1000000, \"normalize_activations\": \"expected_average_only_in\", \"l1_warm_up_steps\": 7}");
        var o = SaeTrainingOptionsFile.Load(path);
        Assert.Equal(new SaeTrainingOptions
        {
            Architecture = SaeArchitecture.JumpRelu, DSae = 256, LearningRate = 0.002, TrainingTokens = 1_000_000,
            NormalizeActivations = SaeNormalization.ExpectedAverageOnlyIn, SparsityWarmUpSteps = 7,
        }, o);
        void Expect(string json, string message)
        {
            File.WriteAllText(path, json);
            var e = Assert.Throws<InterpException>(() => SaeTrainingOptionsFile.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(message, e.Message);
        }
        Expect("{\"learning_rate\": 0.1}", "unknown key \"learning_rate\"");
        Expect("{\"k\": \"8\"}", "key \"k\" must be an integer, not the string \"8\"");
        Expect("{\"architecture\": \"gated\"}", "key \"architecture\" is 'gated'");
        Expect("{\"lr\": -1}", "SAE training option lr: must be positive");
        Expect("[1]", "must be a JSON object");
    }

    [Fact]
    public void Corpus_errors_name_the_file_the_line_and_the_key()
    {
        using var tmp = new TempDir();
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var tok = loaded.RequireTokenizer();
        string path = tmp.File("corpus.jsonl");
        void Expect(string contents, string message)
        {
            File.WriteAllText(path, contents);
            var e = Assert.Throws<InterpException>(() => new JsonLinesTokenSource(path, tok).Documents().ToList());
            Assert.Contains(path, e.Message);
            Assert.Contains(message, e.Message);
        }
        Expect("{\"text\": \"Once upon a time\"}\n\n{\"story\": \"x\"}\n", "line 3: key \"text\" is missing");
        Expect("{\"text\": \"a\"}\n{\"text\": 5}\n", "line 2: key \"text\" must be a string, not number");
        Expect("{\"text\": \"a\"}\n{\"text\": \"b\"\n", "line 2: not valid JSON");
        Expect("[1, 2]\n", "line 1: must be a JSON object");
        Assert.Contains("no such file", Assert.Throws<InterpException>(() => new TextFileTokenSource(tmp.File("none.txt"), tok)).Message);

        // A corpus shorter than one window, and an unknown hook.
        File.WriteAllText(path, "{\"text\": \"Hi.\"}\n");
        var trainer = new SaeTrainer(Quick(SaeArchitecture.TopK));
        var short_ = Assert.Throws<InterpException>(() => trainer.TrainOnModel(loaded.Model, HookNames.ResidPre(1), new JsonLinesTokenSource(path, tok), tmp.Sub("a")));
        Assert.Contains("holds no complete context window of 32 tokens", short_.Message);
        var hook = Assert.ThrowsAny<HookException>(() => trainer.TrainOnModel(loaded.Model, "blocks.1.hook_resid_prex", new JsonLinesTokenSource(path, tok), tmp.Sub("b")));
        Assert.Contains("blocks.1.hook_resid_prex", hook.Message);
    }

    [Fact]
    public void Cancelling_saves_a_checkpoint_that_loads_then_throws()
    {
        using var tmp = new TempDir();
        using var data = new PlantedDictionary(16, 32, 0.1, seed: 5);
        using var cts = new CancellationTokenSource();
        var trainer = new SaeTrainer(new SaeTrainingOptions { DSae = 32, BatchSizeTokens = 64, BufferTokens = 256, TrainingTokens = 64 * 1000, LogEverySteps = 10 });
        var progress = new SyncProgress(p => { if (p.Step == 20) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => trainer.Train(data, new SaeTrainingTarget("synthetic", null, 1, false, "planted"), tmp.Path, progress, cts.Token));
        string dir = Path.Combine(tmp.Path, SaeTrainer.CheckpointsFolder, (20 * 64).ToString());
        using var sae = Sae.Load(dir);
        using var trained = trainer.Trained!.ToSae(sae.Config);
        foreach (var ((name, a), (_, b)) in trained.StateDict.Zip(sae.StateDict)) Assert.True(BitIdentical(a, b), name);
        Assert.True(File.Exists(Path.Combine(dir, Sae.SparsityFile)));
        Assert.False(File.Exists(Path.Combine(tmp.Path, Sae.ConfigFile)), "a cancelled run must not write the final SAE");
    }

    private sealed class SyncProgress(Action<SaeTrainingProgress> report) : IProgress<SaeTrainingProgress>
    {
        public void Report(SaeTrainingProgress value) => report(value);
    }
}

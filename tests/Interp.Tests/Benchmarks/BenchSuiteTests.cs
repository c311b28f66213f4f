using Interp.Benchmarks;
using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Benchmarks;

/// <summary>A smoke run of the benchmark suite with tiny sizes (no peer), and the random GPT-2 it writes.</summary>
[Collection(nameof(MemoryMeasurementCollection))]
public sealed class BenchSuiteTests
{
    [Fact]
    public async Task Quick_run_measures_every_figure_and_writes_parquet_and_markdown()
    {
        using var tmp = new TempDir();
        var options = new BenchOptions
        {
            Quick = true, Peer = false, Repetitions = 2, OutDir = tmp.File("out"), ModelsDir = tmp.File("models"),
            StoriesPath = TestModels.StoriesBin,
        };
        var rows = await BenchSuite.RunAsync(options);
        await BenchSuite.WriteAsync(rows, options.OutDir);

        string[] expected =
        [
            "matmul_gflops_torchsharp", "cache_overhead", "hooks_overhead", "plain_vs_pytorch", "cached_vs_pytorch", "forward_gflops",
            "forward_fraction_of_peak", "ablation_sweep_vs_forwards", "copying_scores_seconds", "copying_scores_peak_memory",
            "cache_peak_memory_ratio", "parquet_write_vs_disk", "cache_loop_rss_growth",
            "generation_vs_forward", "generation_cacheless_vs_forward", "generation_cache_speedup", "generation_step_vs_weight_products",
            "sae_training_activations_per_s", "sae_training_vs_forward", "lstm_training_vs_transformer", "eap_vs_forward", "eap_ig_vs_forward",
        ];
        foreach (var name in expected) Assert.Contains(rows, r => r.Benchmark == name);
        Assert.Equal(["gpt2-tiny-bench", "stories260K", "builtin"], rows.Where(r => r.Benchmark == "cache_overhead").Select(r => r.Model));
        // Without the peer its comparisons are recorded as not measured, never as met.
        Assert.All(rows.Where(r => r.Benchmark.EndsWith("_vs_pytorch", StringComparison.Ordinal)), r => Assert.False(r.Met));
        Assert.All(rows.Where(r => !r.Benchmark.EndsWith("_vs_pytorch", StringComparison.Ordinal) && r.Benchmark != "matmul_gflops_peer"),
            r => Assert.True(double.IsFinite(r.Value) && r.Value > 0 || r.Benchmark == "cache_loop_rss_growth", $"{r.Benchmark} {r.Model}: {r.Value}"));
        // Ratios are what their parts say.
        var cache = rows.First(r => r.Benchmark == "cache_overhead");
        Assert.Equal(cache.A / cache.B, cache.Value, 1e-12);
        var generation = rows.First(r => r.Benchmark == "generation_vs_forward");
        Assert.Equal(generation.A / generation.B, generation.Value, 1e-12);
        Assert.Equal("1+32 tokens", generation.Input);
        var eap = rows.First(r => r.Benchmark == "eap_vs_forward");
        Assert.Equal(eap.A / eap.B, eap.Value, 1e-12);
        Assert.Equal("1x16", eap.Input);
        var lstm = rows.Single(r => r.Benchmark == "lstm_training_vs_transformer");
        Assert.Equal(lstm.A / lstm.B, lstm.Value, 1e-12);
        Assert.Equal("20 steps", lstm.Input);

        var columns = ParquetRead.Columns(Path.Combine(options.OutDir, "bench.parquet"));
        foreach (var c in new[] { "benchmark", "model", "input", "value", "unit", "target", "comparison", "met", "a", "b", "detail", "machine" })
            Assert.True(columns.ContainsKey(c), c);
        Assert.Equal(rows.Count, columns["benchmark"].Length);
        for (int i = 0; i < rows.Count; i++)
        {
            double value = Convert.ToDouble(columns["value"][i]), target = Convert.ToDouble(columns["target"][i]);
            bool met = (bool)columns["met"][i];
            bool expectedMet = (string)columns["comparison"][i] switch
            {
                "report" => true,
                "<=" => value <= target,
                "<" => value < target,
                ">=" => value >= target,
                _ => false,
            };
            Assert.Equal(expectedMet, met);
        }
        string md = await File.ReadAllTextAsync(Path.Combine(options.OutDir, "bench.md"));
        Assert.Contains("| benchmark | model | input | value | unit | target | met | detail |", md);
        Assert.Contains("cores", md);
    }

    [Fact]
    public void Random_gpt2_is_written_in_the_hugging_face_layout_and_matches_its_tensors()
    {
        using var tmp = new TempDir();
        string dir = Gpt2Shape.Tiny.EnsureWritten(tmp.Path);
        using var loaded = ModelLoader.Load(dir);
        var cfg = loaded.Model.Config;
        Assert.Equal((2, 4, 64, 1000, 64, 256), (cfg.NLayers, cfg.NHeads, cfg.DModel, cfg.DVocab, cfg.NCtx, cfg.DMlp));
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        using var scope = NewDisposeScope();
        // c_attn is Conv1D [d_model, 3·d_model] = Q|K|V; W_Q[h] is columns h·d_head … of the Q block.
        var cAttn = file.ReadTensor("h.1.attn.c_attn.weight");
        var wq = loaded.Model.Blocks[1].Attn.W_Q.detach();
        Assert.Equal(0, TensorAssert.MaxAbsDiff(cAttn[.., 16..32], wq[1]));
        Assert.Equal(0, TensorAssert.MaxAbsDiff(file.ReadTensor("wte.weight").t(), loaded.Model.Unembed.W_U.detach())); // tied
        // Written once: a second call reuses the file.
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(dir, "model.safetensors"));
        Gpt2Shape.Tiny.EnsureWritten(tmp.Path);
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(Path.Combine(dir, "model.safetensors")));
    }
}

using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// Weights held in bfloat16 and computed in float32 (<see cref="HookedTransformer.ComputeDType"/>): widening a bfloat16
/// value is exact, so every activation must equal, bit for bit, that of the same weights converted to float32 with
/// <see cref="HookedTransformer.ToDtype"/>, while the weights stay bfloat16.
/// </summary>
public sealed class ComputeDTypeTests
{
    public static TheoryData<string> Folders => new()
    {
        "gpt2-tiny-random", "gpt_neox-tiny-random", "gemma2-tiny-random", "qwen2-tiny-random", "qwen3-tiny-random",
        "mistral-tiny-random", "llama-tiny-random", "bert-tiny-random",
    };

    [Theory]
    [MemberData(nameof(Folders))]
    public void Bfloat16_weights_computed_in_float32_give_the_float32_copys_activations_exactly(string folder)
    {
        using var mixed = ModelLoader.Load(SharedData.Model(folder), new ModelLoadOptions { DType = ScalarType.BFloat16, ComputeDType = ScalarType.Float32 });
        var model = mixed.Model;
        Assert.Equal(ScalarType.BFloat16, model.DType);
        Assert.Equal(ScalarType.Float32, model.ComputeDType);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        using var wide = model.ToDtype(ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, wide.ComputeDType);

        using var scope = NewDisposeScope();
        var tokens = tensor(new long[] { 1, 5, 9, 2, 7, 3, 4, 8 }, [2, 4]);
        var (logits, cache) = model.RunWithCache(tokens, _ => true);
        var (expected, expectedCache) = wide.RunWithCache(tokens, _ => true);
        using (cache)
        using (expectedCache)
        {
            Assert.Equal(ScalarType.Float32, logits.dtype);
            Assert.Equal(0, TensorAssert.MaxAbsDiff(expected, logits));
            Assert.Equal(expectedCache.Names, cache.Names);
            foreach (string name in expectedCache.Names)
            {
                Assert.Equal(ScalarType.Float32, cache[name].dtype);
                Assert.True(expectedCache[name].eq(cache[name]).all().item<bool>(), $"{folder} {name}: differs from the float32 copy");
            }
        }
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));   // nothing converted in place
    }

    [Fact]
    public void Large_products_decoding_and_logit_reads_in_float32_match_the_float32_copy()
    {
        // Large enough for the OpenBLAS path (≥ 2²⁵ multiply-adds) where it is installed.
        var cfg = TestModels.Gpt2Like with { DModel = 256, NHeads = 4, DMlp = 1024, DVocab = 2048, NCtx = 128, NLayers = 2 };
        using var source = TestModels.Random(cfg, seed: 5);
        using var model = source.ToDtype(ScalarType.BFloat16);
        model.ComputeDType = ScalarType.Float32;
        using var wide = model.ToDtype(ScalarType.Float32);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(cfg.DVocab, 2, 128);
        using (no_grad())
            Assert.Equal(0, TensorAssert.MaxAbsDiff(wide.forward(tokens), model.forward(tokens)));

        // Decoding with a key/value cache: the cache holds float32 keys, and a few rows take the per-head products.
        var options = new GenerationOptions { MaxNewTokens = 4, CacheActivations = true };
        using var generated = model.Generate([1, 2, 3, 4, 5], options);
        using var reference = wide.Generate([1, 2, 3, 4, 5], options);
        Assert.Equal(reference.Tokens[0], generated.Tokens[0]);
        foreach (string name in reference.Activations!.Names)
            Assert.True(reference.Activations[name].eq(generated.Activations![name]).all().item<bool>(), $"generation {name}");

        // Per-head results (hook_result) and logit reads, each a product with a bfloat16 weight.
        var (_, cache) = model.RunWithCache(tokens, n => n.EndsWith("hook_result", StringComparison.Ordinal));
        var (_, expectedCache) = wide.RunWithCache(tokens, n => n.EndsWith("hook_result", StringComparison.Ordinal));
        using (cache)
        using (expectedCache)
            foreach (string name in expectedCache.Names)
                Assert.Equal(0, TensorAssert.MaxAbsDiff(expectedCache[name], cache[name]));
        var (_, resid) = wide.RunWithCache(tokens, n => n == HookNames.ResidPre(1));
        using (resid)
        using (no_grad())
        {
            var reads = new LogitReads([127], [3, 17], l => l.select(1, 0) - l.select(1, 1));
            var read = model.ForwardFrom(1, resid[HookNames.ResidPre(1)], null, reads);
            Assert.Equal(ScalarType.Float32, read.dtype);
            Assert.Equal(0, TensorAssert.MaxAbsDiff(wide.ForwardFrom(1, resid[HookNames.ResidPre(1)], null, reads), read));
            // A column outside the vocabulary is named, not read out of bounds.
            var outside = Assert.Throws<InterpException>(() => model.ForwardFrom(1, resid[HookNames.ResidPre(1)], null, reads with { Columns = [3, cfg.DVocab] }));
            Assert.Contains($"column {cfg.DVocab} is outside the vocabulary", outside.Message);
        }
    }

    [Fact]
    public void Gradients_reach_the_bfloat16_weights_as_the_float32_copys_gradients_rounded()
    {
        using var loaded = ModelLoader.Load(SharedData.Model("llama-tiny-random"), new ModelLoadOptions { DType = ScalarType.BFloat16, ComputeDType = ScalarType.Float32 });
        var model = loaded.Model;
        using var wide = model.ToDtype(ScalarType.Float32);
        using var scope = NewDisposeScope();
        var tokens = tensor(new long[] { 1, 5, 9, 2, 7, 3 }, [1, 6]);
        model.forward(tokens).log_softmax(-1).mean().backward();
        wide.forward(tokens).log_softmax(-1).mean().backward();
        var expected = wide.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad);
        foreach (var (name, p) in model.named_parameters())
        {
            var grad = p.grad;
            Assert.NotNull(grad);
            Assert.Equal(ScalarType.BFloat16, grad.dtype);
            // Each use's gradient is rounded to bfloat16 as it reaches the weight: within bfloat16's precision (2⁻⁸) of float32's.
            var reference = expected[name]!;
            double scale = reference.abs().max().item<float>();
            Assert.True(TensorAssert.MaxAbsDiff(reference, grad.to(ScalarType.Float32)) <= 1e-2 * scale + 1e-12, $"{name}: gradient differs from the float32 copy's");
        }
    }

    [Fact]
    public void The_compute_dtype_survives_a_move_resets_with_a_conversion_and_must_be_a_float()
    {
        using var loaded = ModelLoader.Load(SharedData.Model("gpt2-tiny-random"), new ModelLoadOptions { DType = ScalarType.BFloat16, ComputeDType = ScalarType.Float32 });
        using (var moved = loaded.Model.ToDevice(CPU)) Assert.Equal(ScalarType.Float32, moved.ComputeDType);
        using (var f64 = loaded.Model.ToDtype(ScalarType.Float64)) Assert.Equal(ScalarType.Float64, f64.ComputeDType);
        var ex = Assert.Throws<InterpException>(() => loaded.Model.ComputeDType = ScalarType.Int32);
        Assert.Contains("Int32", ex.Message);
        var option = Assert.Throws<InterpException>(() => ModelLoader.Load(SharedData.Model("gpt2-tiny-random"), new ModelLoadOptions { ComputeDType = ScalarType.Int64 }));
        Assert.Contains("ModelLoadOptions.ComputeDType", option.Message);
        loaded.Model.ComputeDType = ScalarType.BFloat16;   // back to the weights' own dtype
        Assert.Equal(ScalarType.BFloat16, loaded.Model.ComputeDType);
        using var scope = NewDisposeScope();
        Assert.Equal(ScalarType.BFloat16, loaded.Model.forward(tensor(new long[] { 1, 2, 3 }, [1, 3])).dtype);
    }
}

using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// Generation against independent references: a plain loop that re-runs the whole sequence and takes the argmax,
/// each prompt run alone, the sampler's frequencies against softmax probabilities, and one RunWithCache over the final
/// sequence for the recorded activations.
/// </summary>
public sealed class GenerationTests
{
    private const double Tolerance = 1e-5;

    /// <summary>The reference: re-run the whole sequence each step (with <paramref name="hooks"/> attached) and append the argmax.</summary>
    internal static int[] ReferenceGreedy(HookedTransformer model, IReadOnlyList<int> prompt, int count, params (string Name, HookFunction Hook)[] hooks)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var attached = model.Hooks(hooks);
        var tokens = prompt.ToList();
        var generated = new List<int>();
        for (int i = 0; i < count; i++)
        {
            using var step = NewDisposeScope();
            var logits = model.forward(tensor(tokens.Select(t => (long)t).ToArray(), [1, tokens.Count]));
            int next = (int)logits[0, -1].argmax().item<long>();
            tokens.Add(next);
            generated.Add(next);
        }
        return generated.ToArray();
    }

    /// <summary>Zero-ablates head <paramref name="head"/> of <paramref name="layer"/> at hook_z.</summary>
    internal static (string Name, HookFunction Hook) ZeroHead(int layer, int head) => (HookNames.Z(layer), (z, _) =>
    {
        var ablated = z.clone();
        ablated.narrow(2, head, 1).zero_();
        return ablated;
    });

    private static int[] Prompt(int vocab, int length, long seed) =>
        TestModels.RandomTokens(vocab, 1, length, seed)[0].data<long>().Select(t => (int)t).ToArray();

    private static int[][] Prompts(int vocab, int[] lengths, long seed = 5) =>
        lengths.Select((n, i) => Prompt(vocab, n, seed + i)).ToArray();

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("attn-only")]
    [InlineData("neox")]
    [InlineData("gemma2")]
    public void Cached_greedy_generation_equals_the_loop_that_reruns_the_whole_sequence(string arch)
    {
        using var model = PaddingTests.Build(arch);
        var prompt = Prompt(model.Config.DVocab, 5, 3);
        var expected = ReferenceGreedy(model, prompt, 17); // 22 of n_ctx 24, well past Gemma-like's window of 4
        using var cached = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 17 });
        using var uncached = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 17, UseKeyValueCache = false });
        Assert.Equal(expected, cached.Tokens[0]);
        Assert.Equal(expected, uncached.Tokens[0]);
        Assert.False(cached.Stopped[0]);
        Assert.Null(cached.Seed);
    }

    [Fact]
    public void Mistral_generates_past_its_sliding_window_as_the_reference_loop()
    {
        using var loaded = ModelLoader.Load(SharedData.Model("mistral-tiny-random"));
        var model = loaded.Model;
        var prompt = HfArchitectureReferenceTests.Ints(Path.Combine(SharedData.Model("mistral-tiny-random"), "reference", "tokens.txt")).Take(10).Select(t => (int)t).ToArray();
        var expected = ReferenceGreedy(model, prompt, 30); // 40 positions, window 16
        using var result = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 30 });
        Assert.Equal(expected, result.Tokens[0]);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("neox")]
    [InlineData("gemma2")]
    public void A_left_padded_batch_generates_each_prompts_own_tokens(string arch)
    {
        using var model = PaddingTests.Build(arch);
        var prompts = Prompts(model.Config.DVocab, [3, 8, 5]);
        using var batch = model.Generate(prompts, new GenerationOptions { MaxNewTokens = 12 });
        Assert.Equal(8, batch.PromptLength);
        Assert.Equal([3L, 20], batch.Sequences.shape);
        for (int b = 0; b < prompts.Length; b++)
        {
            Assert.Equal(ReferenceGreedy(model, prompts[b], 12), batch.Tokens[b]);
            // The sequence: left padding, the prompt, the new tokens.
            var row = batch.Sequences[b].data<long>().ToArray();
            var mask = batch.AttentionMask[b].data<long>().ToArray();
            int pad = 8 - prompts[b].Length;
            Assert.All(mask.Take(pad), m => Assert.Equal(0, m));
            Assert.All(mask.Skip(pad), m => Assert.Equal(1, m));
            Assert.Equal(prompts[b].Concat(batch.Tokens[b]).Select(t => (long)t), row.Skip(pad));
        }
    }

    [Fact]
    public void The_same_seed_gives_the_same_tokens_and_another_seed_others()
    {
        using var model = PaddingTests.Build("gpt2");
        var prompts = Prompts(model.Config.DVocab, [4, 6]);
        GenerationOptions Sampled(int? seed) => new() { MaxNewTokens = 15, Temperature = 1.0, Seed = seed };
        using var a = model.Generate(prompts, Sampled(1));
        using var b = model.Generate(prompts, Sampled(1));
        using var c = model.Generate(prompts, Sampled(2));
        using var uncached = model.Generate(prompts, Sampled(1) with { UseKeyValueCache = false });
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(a.Tokens, uncached.Tokens);
        Assert.NotEqual(a.Tokens, c.Tokens);
        Assert.Equal(1, a.Seed);
        Assert.NotEqual(ReferenceGreedy(model, prompts[0], 15), a.Tokens[0]); // sampling is not greedy here

        // Without a seed a fresh one is drawn and reported: it reproduces the tokens.
        using var fresh = model.Generate(prompts, Sampled(null));
        Assert.NotNull(fresh.Seed);
        using var again = model.Generate(prompts, Sampled(fresh.Seed));
        Assert.Equal(fresh.Tokens, again.Tokens);
    }

    [Fact]
    public void Top_k_one_a_tiny_top_p_and_a_tiny_temperature_are_greedy_and_temperature_zero_is_exactly_greedy()
    {
        using var model = PaddingTests.Build("llama");
        var prompts = Prompts(model.Config.DVocab, [4, 7, 2]);
        using var greedy = model.Generate(prompts, new GenerationOptions { MaxNewTokens = 14 });
        foreach (var options in new[]
        {
            new GenerationOptions { MaxNewTokens = 14, Temperature = 1, TopK = 1, Seed = 3 },
            new GenerationOptions { MaxNewTokens = 14, Temperature = 2, TopP = 1e-9, Seed = 3 },
            new GenerationOptions { MaxNewTokens = 14, Temperature = 1e-6, Seed = 3 },
        })
        {
            using var sampled = model.Generate(prompts, options);
            Assert.Equal(greedy.Tokens, sampled.Tokens);
            Assert.Equal(3, sampled.Seed);
        }
        // Temperature 0 draws nothing: a seed changes nothing and none is reported.
        using var seeded = model.Generate(prompts, new GenerationOptions { MaxNewTokens = 14, Seed = 99 });
        Assert.Equal(greedy.Tokens, seeded.Tokens);
        Assert.Null(seeded.Seed);
    }

    [Fact]
    public void Sampled_tokens_lie_in_the_top_k_and_in_the_nucleus()
    {
        using var model = PaddingTests.Build("gpt2");
        var prompts = Prompts(model.Config.DVocab, [3, 5]);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (options, what) in new[]
        {
            (new GenerationOptions { MaxNewTokens = 18, Temperature = 1.5, TopK = 3, Seed = 4 }, "top-k 3"),
            (new GenerationOptions { MaxNewTokens = 18, Temperature = 1.0, TopP = 0.5, Seed = 4 }, "top-p 0.5"),
        })
        {
            using var result = model.Generate(prompts, options);
            // One plain forward over the final sequence gives the logits every step chose from.
            var logits = model.forward(result.Sequences, result.AttentionMask);
            for (int b = 0; b < prompts.Length; b++)
                for (int t = 0; t < result.Tokens[b].Length; t++)
                {
                    var step = logits[b, result.PromptLength - 1 + t].to(ScalarType.Float64);
                    int chosen = result.Tokens[b][t];
                    var higher = step.gt(step[chosen]);
                    if (options.TopK > 0) Assert.True(higher.sum().item<long>() < 3, $"{what}: row {b} step {t} chose a token outside the top 3");
                    else
                    {
                        // The probability of the tokens more likely than the chosen one is below p.
                        double before = step.softmax(-1).masked_select(higher).sum().item<double>();
                        Assert.True(before < 0.5, $"{what}: row {b} step {t}: {before:g3} of the mass lies before the chosen token");
                    }
                }
        }
    }

    [Fact]
    public void The_sampler_draws_tokens_with_their_softmax_probabilities()
    {
        // 40,000 rows of the same logits in one call: frequencies against the filtered, renormalised softmax (±0.01, ~4σ).
        using var scope = NewDisposeScope();
        double[] p = [0.05, 0.15, 0.3, 0.5];
        var logits = tensor(p.Select(x => Math.Log(x)).ToArray()).to(ScalarType.Float32).unsqueeze(0).expand(40_000, 4);
        void Check(GenerationOptions options, double[] expected)
        {
            var drawn = Generation.Choose(logits, options, new Random(0));
            for (int token = 0; token < 4; token++)
            {
                double frequency = drawn.Count(d => d == token) / (double)drawn.Length;
                Assert.True(Math.Abs(frequency - expected[token]) < 0.01, $"{options}: token {token} drawn {frequency:F4}, expected {expected[token]:F4}");
            }
        }
        Check(new GenerationOptions { Temperature = 1 }, p);
        double[] hot = p.Select(x => Math.Sqrt(x)).ToArray();
        Check(new GenerationOptions { Temperature = 2 }, hot.Select(x => x / hot.Sum()).ToArray());
        Check(new GenerationOptions { Temperature = 1, TopK = 2 }, [0, 0, 0.375, 0.625]);
        Check(new GenerationOptions { Temperature = 1, TopP = 0.6 }, [0, 0, 0.375, 0.625]);   // 0.5, then 0.3 reaches 0.6
        Check(new GenerationOptions { Temperature = 1, TopP = 0.5 }, [0, 0, 0, 1]);           // 0.5 alone reaches 0.5
        Check(new GenerationOptions { Temperature = 1, TopK = 3, TopP = 0.9 }, [0, 0.15 / 0.95, 0.3 / 0.95, 0.5 / 0.95]);
    }

    [Fact]
    public void A_hook_acts_at_every_step_as_in_the_loop_that_reruns_the_whole_sequence()
    {
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var model = loaded.Model;
        var prompt = loaded.RequireTokenizer().Encode("Once upon a time", prependBos: true);
        var hook = ZeroHead(0, 2);
        var expected = ReferenceGreedy(model, prompt, 40, hook);
        using var hooked = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 40, Hooks = [hook] });
        using var hookedUncached = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 40, Hooks = [hook], UseKeyValueCache = false });
        using var plain = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 40 });
        Assert.Equal(expected, hooked.Tokens[0]);
        Assert.Equal(expected, hookedUncached.Tokens[0]);
        Assert.NotEqual(plain.Tokens[0], hooked.Tokens[0]);
        Assert.Equal(ReferenceGreedy(model, prompt, 40), plain.Tokens[0]);
        Assert.DoesNotContain(model.HookPoints, h => h.IsActive); // detached afterwards
    }

    [Fact]
    public void Each_row_stops_at_its_first_stop_token_and_the_others_continue()
    {
        using var model = PaddingTests.Build("gpt2");
        var prompts = Prompts(model.Config.DVocab, [3, 6, 4]);
        using var free = model.Generate(prompts, new GenerationOptions { MaxNewTokens = 15 });
        int stop = StopFor(free.Tokens);
        var stops = new[] { stop };
        foreach (bool useCache in new[] { true, false })
        {
            using var result = model.Generate(prompts, new GenerationOptions { MaxNewTokens = 15, StopTokens = stops, UseKeyValueCache = useCache });
            for (int b = 0; b < prompts.Length; b++)
            {
                int first = Array.FindIndex(free.Tokens[b], t => stops.Contains(t));
                var expected = first < 0 ? free.Tokens[b] : free.Tokens[b][..(first + 1)];
                Assert.Equal(expected, result.Tokens[b]);
                Assert.Equal(first >= 0, result.Stopped[b]);
                // After its stop token a row is padding.
                var mask = result.AttentionMask[b].data<long>().ToArray();
                Assert.Equal(prompts[b].Length + expected.Length, mask.Sum());
            }
            Assert.True(result.Stopped[0]);
            Assert.Equal(result.PromptLength + result.Tokens.Max(t => t.Length), result.Sequences.shape[1]);
        }
        Assert.Contains(free.Tokens, row => !row.Contains(stop));
    }

    /// <summary>A token that row 0 generates after a few others and another row never does.</summary>
    private static int StopFor(IReadOnlyList<int[]> tokens) =>
        tokens[0].Skip(2).First(t => tokens.Skip(1).Any(row => !row.Contains(t)));

    /// <summary>max |a − b| over the real positions [from, to) of every position axis, −∞ allowed where both are −∞.</summary>
    private static double RealDiff(Tensor a, Tensor b, IReadOnlyList<string> axes, int row, int from, int to)
    {
        using var scope = NewDisposeScope();
        Tensor Part(Tensor t)
        {
            t = t.narrow(0, row, 1);
            for (int i = 0; i < axes.Count; i++)
                if (axes[i] is "pos" or "query_pos" or "key_pos") t = t.narrow(i, from, to - from);
            return t;
        }
        var (x, y) = (Part(a), Part(b));
        var inf = x.isneginf();
        Assert.True(inf.eq(y.isneginf()).all().item<bool>(), "the −∞ entries differ");
        return TensorAssert.MaxAbsDiff(x.masked_fill(inf, 0.0f), y.masked_fill(inf, 0.0f));
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("gemma2")]
    public void The_recorded_activations_equal_one_run_with_cache_over_the_final_sequence(string arch)
    {
        using var model = PaddingTests.Build(arch);
        var prompts = Prompts(model.Config.DVocab, [3, 7]);
        var hook = ZeroHead(1, 1);
        using var free = model.Generate(prompts, new GenerationOptions { MaxNewTokens = 12, Hooks = [hook] });
        // A stop token for row 0, so that its end is padding; hook_result too (computed only when hooked).
        var options = new GenerationOptions
        {
            MaxNewTokens = 12, StopTokens = [StopFor(free.Tokens)], Hooks = [hook], CacheActivations = true,
            ActivationFilter = _ => true,
        };
        using var result = model.Generate(prompts, options);
        var activations = result.Activations!;
        Assert.Equal(model.HookPoints.Count, activations.Count);
        using var scope = NewDisposeScope();
        using var hookedReference = RunWithCacheHooked(model, result, hook);
        int width = (int)result.Sequences.shape[1];
        foreach (var name in hookedReference.Names)
        {
            var axes = model.GetHookPoint(name).Axes;
            Assert.Equal(hookedReference[name].shape, activations[name].shape);
            for (int b = 0; b < prompts.Length; b++)
            {
                int from = result.PromptLength - prompts[b].Length, to = from + prompts[b].Length + result.Tokens[b].Length;
                double diff = RealDiff(hookedReference[name], activations[name], axes, b, from, to);
                // Float32 rounding scales with the activation: 1e-5 of its largest entry (at least 1e-5).
                double scale = Math.Max(1, hookedReference[name].abs().nan_to_num(0, 0, 0).max().item<float>());
                Assert.True(diff <= Tolerance * scale, $"{arch} {name} row {b}: max |Δ| = {diff:g3} (largest entry {scale:g3}) over real positions {from}…{to - 1} of {width}");
            }
        }
        Assert.True(result.Stopped[0], "row 0 should stop");
        Assert.True(result.Tokens[0].Length < result.Tokens[1].Length, "row 0 should end before row 1");
    }

    private static ActivationCache RunWithCacheHooked(HookedTransformer model, GenerationResult result, (string Name, HookFunction Hook) hook)
    {
        using (model.Hooks(hook))
        {
            var (logits, cache) = model.RunWithCache(result.Sequences, result.AttentionMask, _ => true);
            logits.Dispose();
            return cache;
        }
    }

    [Fact]
    public void No_new_tokens_give_the_prompt_and_its_activations()
    {
        using var model = PaddingTests.Build("llama");
        var prompt = Prompt(model.Config.DVocab, 6, 2);
        using var result = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 0, CacheActivations = true });
        Assert.Empty(result.Tokens[0]);
        Assert.Equal([1L, 6], result.Sequences.shape);
        Assert.Equal([1L, 6, 32], result.Activations![HookNames.ResidPost(1)].shape);
    }

    [Fact]
    public void An_encoder_is_refused()
    {
        using var model = PaddingTests.Build("bert");
        var ex = Assert.Throws<InterpException>(() => model.Generate([1, 2, 3], new GenerationOptions()));
        Assert.Contains("generation needs a causal (decoder) model, but bert-like (bert) is a bidirectional encoder", ex.Message);
    }

    public static TheoryData<string, string> BadOptions => new()
    {
        { "temperature", "Temperature must be 0 (greedy) or a positive number, got -0.5" },
        { "nan", "Temperature must be 0 (greedy) or a positive number, got NaN" },
        { "topk", "TopK must be 0 (off) or positive, got -1" },
        { "topp0", "TopP must lie in (0, 1] (1: off), got 0" },
        { "topp", "TopP must lie in (0, 1] (1: off), got 1.5" },
        { "greedy-topk", "TopK (5) and TopP (1) shape sampling, but Temperature 0 is greedy decoding" },
        { "maxnew", "MaxNewTokens must not be negative, got -2" },
        { "stop", "stop token 50 is outside the vocabulary [0, 50)" },
        { "ctx", "the longest prompt (4 tokens) + MaxNewTokens (21) = 25 exceeds the model's context n_ctx = 24" },
        { "empty", "prompt 1 has no tokens" },
        { "id", "token id 77 at [prompt 0, pos 2] is outside the vocabulary [0, 50)" },
        { "hook", "no such hook point" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void Invalid_requests_are_refused_with_a_message_that_names_the_value(string which, string message)
    {
        using var model = PaddingTests.Build("gpt2");
        IReadOnlyList<IReadOnlyList<int>> prompts = [[1, 2, 3, 4]];
        var o = new GenerationOptions { MaxNewTokens = 5 };
        (o, prompts) = which switch
        {
            "temperature" => (o with { Temperature = -0.5 }, prompts),
            "nan" => (o with { Temperature = double.NaN }, prompts),
            "topk" => (o with { Temperature = 1, TopK = -1 }, prompts),
            "topp0" => (o with { Temperature = 1, TopP = 0 }, prompts),
            "topp" => (o with { Temperature = 1, TopP = 1.5 }, prompts),
            "greedy-topk" => (o with { TopK = 5 }, prompts),
            "maxnew" => (o with { MaxNewTokens = -2 }, prompts),
            "stop" => (o with { StopTokens = [3, 50] }, prompts),
            "ctx" => (o with { MaxNewTokens = 21 }, prompts),
            "empty" => (o, new int[][] { [1], [] }),
            "id" => (o, new int[][] { [1, 2, 77] }),
            "hook" => (o with { Hooks = [("blocks.0.attn.hook_zz", (_, _) => null)] }, prompts),
            _ => throw new ArgumentException(which),
        };
        var ex = Assert.ThrowsAny<InterpException>(() => model.Generate(prompts, o));
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void Cancellation_stops_the_generation()
    {
        using var model = PaddingTests.Build("gpt2");
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => model.Generate([1, 2], new GenerationOptions { MaxNewTokens = 5 }, cts.Token));
        Assert.DoesNotContain(model.HookPoints, h => h.IsActive);
    }
}

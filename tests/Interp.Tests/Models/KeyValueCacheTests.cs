using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// The key/value cache: a sequence run in chunks through it gives the logits of one forward pass over the whole
/// sequence (the independent reference: the cache-free pass), with and without padding, past sliding windows, on
/// random configs of every decoder architecture and on the shared Mistral and Gemma 2 checkpoints.
/// </summary>
public sealed class KeyValueCacheTests
{
    private const double Tolerance = 1e-5;

    /// <summary>Runs <paramref name="tokens"/> [batch, n] through a fresh cache in chunks of <paramref name="chunks"/> → the logits concatenated.</summary>
    private static Tensor Chunked(HookedTransformer model, Tensor tokens, int[] chunks, Tensor? mask = null, int capacity = 0)
    {
        using var cache = new KeyValueCache(model, capacity);
        var parts = new List<Tensor>();
        int at = 0;
        foreach (int n in chunks)
        {
            parts.Add(model.ForwardWithCache(tokens.narrow(1, at, n), cache, mask?.narrow(1, at, n)));
            at += n;
        }
        Assert.Equal(tokens.shape[1], at);
        Assert.Equal(at, cache.Length);
        return cat(parts, 1);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("attn-only")]
    [InlineData("neox")]
    [InlineData("gemma2")]
    public void Chunks_through_the_cache_give_the_logits_of_one_forward(string arch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = PaddingTests.Build(arch);
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 22);
        var whole = model.forward(tokens);
        // A prompt, single decode steps past Gemma-like's sliding window of 4, then chunks of several tokens; capacity 1
        // makes the buffers grow several times.
        TensorAssert.Close(whole, Chunked(model, tokens, [5, 1, 1, 1, 1, 7, 1, 3, 2], capacity: 1), Tolerance, $"{arch} chunked");
        TensorAssert.Close(whole, Chunked(model, tokens, [1, .. Enumerable.Repeat(1, 21)]), Tolerance, $"{arch} one token at a time");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("gemma2")]
    public void A_left_padded_batch_continues_each_row_from_its_own_real_tokens(string arch)
    {
        // Rows of 3, 9 and 6 real tokens, left-padded to 9, then 8 real tokens each: at every real position the chunked
        // logits equal each row's own sequence run alone.
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = PaddingTests.Build(arch);
        int[] prompts = [3, 9, 6];
        int width = 9, extra = 8;
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 3, width + extra, seed: 21);
        var mask = ones(3, width + extra, dtype: ScalarType.Int64);
        for (int b = 0; b < 3; b++) mask[b].narrow(0, 0, width - prompts[b]).fill_(0);
        var chunked = Chunked(model, tokens, [2, 7, 1, 1, 4, 2], mask); // the first chunk holds only padding in row 0
        for (int b = 0; b < 3; b++)
        {
            int pad = width - prompts[b];
            var alone = model.forward(tokens[b].narrow(0, pad, width + extra - pad).unsqueeze(0));
            TensorAssert.Close(alone[0], chunked[b].narrow(0, pad, width + extra - pad), Tolerance, $"{arch} row {b}");
        }
    }

    [Theory]
    [InlineData("mistral-tiny-random")]
    [InlineData("gemma2-tiny-random")]
    public void Shared_checkpoints_with_sliding_windows_decode_past_the_window(string folder)
    {
        // Both have a sliding window of 16 (Mistral on every layer, Gemma 2 on the even ones); the reference input has 40
        // tokens: a prompt of 10, then one token at a time up to 40.
        string dir = SharedData.Model(folder);
        using var loaded = ModelLoader.Load(dir);
        var model = loaded.Model;
        Assert.Equal(16, model.Config.SlidingWindow);
        var ids = HfArchitectureReferenceTests.Ints(Path.Combine(dir, "reference", "tokens.txt"));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = tensor(ids, [1, ids.Length]);
        var whole = model.forward(tokens);
        var chunked = Chunked(model, tokens, [10, .. Enumerable.Repeat(1, ids.Length - 10)]);
        // 2e-5 here, not 1e-5: these logits reach ±7, and float32 rounding alone (decode steps multiply one row at a time,
        // softmax and z sum over the cached keys only) moves Mistral's by up to 1.02e-5; the one forward itself differs
        // from the float64 reference by 1.14e-5.
        TensorAssert.Close(whole, chunked, 2e-5, $"{folder} chunked vs one forward");
        var reference = TensorAssert.ReadRawFloats(Path.Combine(dir, "reference", "logits.f32"), ids.Length, 512);
        TensorAssert.Close(reference, chunked[0], 2e-4, $"{folder} chunked vs the Hugging Face reference");
    }

    [Fact]
    public void Hooks_see_only_the_new_positions_and_the_pattern_spans_every_key()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = PaddingTests.Build("llama");
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 9);
        using var cache = new KeyValueCache(model);
        model.ForwardWithCache(tokens.narrow(1, 0, 6), cache);
        var seen = new Dictionary<string, long[]>();
        var names = new[] { HookNames.ResidPre(1), HookNames.K(0), HookNames.RotK(0), HookNames.Pattern(1), HookNames.Z(1) };
        using (model.Hooks(names.Select(n => (n, (HookFunction)((x, h) => { seen[h.Name] = x.shape; return null; }))).ToArray()))
            model.ForwardWithCache(tokens.narrow(1, 6, 3), cache);
        Assert.Equal([2L, 3, 32], seen[HookNames.ResidPre(1)]);
        Assert.Equal([2L, 3, 2, 8], seen[HookNames.K(0)]);
        Assert.Equal([2L, 3, 2, 8], seen[HookNames.RotK(0)]);
        Assert.Equal([2L, 4, 3, 9], seen[HookNames.Pattern(1)]);
        Assert.Equal([2L, 3, 4, 8], seen[HookNames.Z(1)]);
        Assert.Equal(9, cache.Length);
        Assert.Equal([9L, 9], cache.RealTokens);
        Assert.Equal([2L, 9, 2, 8], cache.Keys(1).shape);
        Assert.Null(cache.KeyPadding());

        // The cached keys are hook_rot_k of one forward pass.
        var (_, full) = model.RunWithCache(tokens, name => name == HookNames.RotK(1) || name == HookNames.V(1));
        using (full)
        {
            TensorAssert.Close(full[HookNames.RotK(1)], cache.Keys(1), Tolerance, "cached keys");
            TensorAssert.Close(full[HookNames.V(1)], cache.Values(1), Tolerance, "cached values");
        }
    }

    [Fact]
    public void A_pass_that_throws_leaves_the_cache_as_it_was()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = PaddingTests.Build("gpt2");
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 1, 10);
        using var cache = new KeyValueCache(model);
        var first = model.ForwardWithCache(tokens.narrow(1, 0, 4), cache);
        using (model.Hooks((HookNames.ResidPre(1), (_, _) => throw new InvalidOperationException("boom"))))
            Assert.Throws<InvalidOperationException>(() => model.ForwardWithCache(tokens.narrow(1, 4, 3), cache));
        Assert.Equal(4, cache.Length);
        var rest = model.ForwardWithCache(tokens.narrow(1, 4, 6), cache);
        TensorAssert.Close(model.forward(tokens), cat([first, rest], 1), Tolerance, "after the failed pass");
    }

    [Fact]
    public void An_encoder_is_refused()
    {
        using var model = PaddingTests.Build("bert");
        var ex = Assert.Throws<InterpException>(() => new KeyValueCache(model));
        Assert.Contains("a key/value cache needs a causal (decoder) model, but bert-like (bert) is a bidirectional encoder", ex.Message);
    }

    [Fact]
    public void Misuse_gives_errors_that_name_the_value_at_fault()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = PaddingTests.Build("llama");
        using var other = PaddingTests.Build("llama");
        var tokens = TestModels.RandomTokens(model.Config.DVocab, 2, 24);
        using var cache = new KeyValueCache(model);
        model.ForwardWithCache(tokens.narrow(1, 0, 20), cache, tensor(new long[,] { { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 }, { 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 } }));

        Assert.Contains("the key/value cache holds a batch of 2 rows, but the tokens have 1",
            Assert.Throws<InvalidTokensException>(() => model.ForwardWithCache(tokens.narrow(1, 20, 1)[..1], cache)).Message);
        Assert.Contains("the key/value cache holds 20 positions; 5 more would exceed the model's context n_ctx = 24",
            Assert.Throws<InvalidTokensException>(() => model.ForwardWithCache(tokens.narrow(1, 0, 5), cache)).Message);
        Assert.Contains("the key/value cache belongs to another model",
            Assert.Throws<InterpException>(() => other.ForwardWithCache(tokens.narrow(1, 20, 1), cache)).Message);
        Assert.Contains("attention mask row 0: position 0 of this pass (position 20 of the cached sequence) is a real token after padding that follows real tokens",
            Assert.Throws<InvalidTokensException>(() => model.ForwardWithCache(tokens.narrow(1, 20, 1), cache)).Message);
        Assert.Contains("attention mask value 2 at [batch 1, pos 0] must be 1 (real token) or 0 (padding)",
            Assert.Throws<InvalidTokensException>(() => model.ForwardWithCache(tokens.narrow(1, 20, 1), cache, tensor(new long[] { 0, 2 }, [2, 1]))).Message);
        Assert.Equal(20, cache.Length);
        Assert.Equal([18L, 18], cache.RealTokens);
        // Row 0 has ended (padding after its real tokens): it may go on with padding while row 1 continues.
        model.ForwardWithCache(tokens.narrow(1, 20, 2), cache, tensor(new long[,] { { 0, 0 }, { 1, 1 } }));
        Assert.Equal([18L, 20], cache.RealTokens);
        Assert.Equal([2L, 22], cache.KeyPadding()!.shape);
    }
}

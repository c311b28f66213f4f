using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>Every architecture option against the naive double-precision reference.</summary>
public sealed class ArchitectureTests
{
    public static TheoryData<string> Configs => new() { "gpt2", "llama-halves", "llama-adjacent", "attn-only-sinusoidal", "partial-rotary", "no-positions" };

    private static ModelConfig Config(string name) => name switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama-halves" => TestModels.LlamaLike,
        "llama-adjacent" => TestModels.LlamaLike with { RotaryStyle = RotaryStyle.AdjacentPairs, RotaryBase = 500 },
        "attn-only-sinusoidal" => TestModels.AttnOnlySinusoidal,
        "partial-rotary" => TestModels.LlamaLike with { RotaryDim = 4, NKvHeads = 1 },
        "no-positions" => TestModels.Gpt2Like with { Positional = PositionalKind.None, Act = Activation.Relu },
        _ => throw new ArgumentException(name),
    };

    [Theory, MemberData(nameof(Configs))]
    public void Logits_match_the_naive_reference(string name)
    {
        using var model = TestModels.Random(Config(name), seed: 11);
        int[] ids = [3, 17, 42, 0, 49, 8, 8, 21, 30, 5, 12, 33, 3, 17, 42, 1];
        var expected = new NaiveTransformer(model).Forward(ids);
        using var scope = NewDisposeScope();
        var logits = model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]))[0];
        TensorAssert.Close(tensor(expected.SelectMany(r => r).ToArray(), [ids.Length, model.Config.DVocab]), logits, 2e-4, name);
    }

    [Fact]
    public void Batched_forward_equals_one_sequence_at_a_time()
    {
        using var model = TestModels.Random(TestModels.LlamaLike);
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(50, 3, 9);
        var batched = model.forward(tokens);
        for (int b = 0; b < 3; b++) TensorAssert.Close(model.forward(tokens[b]), batched[b].unsqueeze(0), 1e-5, $"row {b}");
    }

    [Fact]
    public void Bad_tokens_are_clear_errors()
    {
        using var model = TestModels.Random(TestModels.Gpt2Like);
        var outOfRange = Assert.Throws<InvalidTokensException>(() => model.forward(tensor(new long[] { 1, 2, 50, 3 }, [1, 4])));
        Assert.Contains("token id 50 at [batch 0, pos 2]", outOfRange.Message);
        Assert.Contains("[0, 50)", outOfRange.Message);
        var negative = Assert.Throws<InvalidTokensException>(() => model.forward(tensor(new long[] { -1 }, [1, 1])));
        Assert.Contains("token id -1", negative.Message);
        var tooLong = Assert.Throws<InvalidTokensException>(() => model.forward(zeros(1, 25, dtype: ScalarType.Int64)));
        Assert.Contains("25 tokens is longer than the model's context n_ctx = 24", tooLong.Message);
        var empty = Assert.Throws<InvalidTokensException>(() => model.forward(zeros(1, 0, dtype: ScalarType.Int64)));
        Assert.Contains("empty", empty.Message);
        var floats = Assert.Throws<InvalidTokensException>(() => model.forward(zeros(1, 3)));
        Assert.Contains("integer", floats.Message);
    }

    [Fact]
    public void Invalid_configs_name_the_field()
    {
        var ex = Assert.Throws<InvalidModelConfigException>(() => new HookedTransformer(TestModels.LlamaLike with { NKvHeads = 3 }));
        Assert.Contains("NKvHeads", ex.Message);
        Assert.Equal(nameof(ModelConfig.NKvHeads), ex.Field);
        ex = Assert.Throws<InvalidModelConfigException>(() => new HookedTransformer(TestModels.Gpt2Like with { DModel = 30 }));
        Assert.Contains("not divisible by NHeads", ex.Message);
        Assert.Equal(nameof(ModelConfig.NHeads), ex.Field);
        // Caught by validation, not by the constructors of the parts (an OverflowException, an ArgumentException before).
        ex = Assert.Throws<InvalidModelConfigException>(() => new HookedTransformer(TestModels.NeoXLike with { RotaryDim = -2 }));
        Assert.Equal(nameof(ModelConfig.RotaryDim), ex.Field);
        ex = Assert.Throws<InvalidModelConfigException>(() => new HookedTransformer(TestModels.BertLike with { Mlp = MlpKind.None }));
        Assert.Equal(nameof(ModelConfig.Block), ex.Field);
        ex = Assert.Throws<InvalidModelConfigException>(() => new HookedTransformer(TestModels.Gpt2Like with { Family = null! }));
        Assert.Equal(nameof(ModelConfig.Family), ex.Field);
    }
}

using Interp.Analysis;
using Interp.Prompts;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>The lagged least-squares probe against exact cases, and the token-sequence files it reads with.</summary>
public sealed class TokenProbeTests
{
    private static Tensor RandomTokens(int batch, int pos, int vocab, ulong seed)
    {
        var t = randint(1, vocab, [batch, pos], generator: new Generator(seed), dtype: ScalarType.Int64);
        t[.., 0].fill_(Interp.Scalars.Zero);
        return t;
    }

    /// <summary>A state that is the one-hot of the token three back (zero where there is none), plus noise dimensions.</summary>
    private static Tensor ThreeBack(Tensor tokens, int vocab, ulong seed)
    {
        long batch = tokens.shape[0], pos = tokens.shape[1];
        var shifted = cat([zeros(batch, 3, dtype: ScalarType.Int64), tokens[.., ..^3]], 1);       // token at t − 3
        var state = nn.functional.one_hot(shifted, vocab).to(ScalarType.Float32);                 // [batch, pos, vocab]
        var noise = randn([batch, pos, 5], generator: new Generator(seed));
        return cat([state, noise], 2);
    }

    [Fact]
    public void A_state_that_holds_the_token_three_back_is_read_exactly_at_lag_three_and_at_chance_elsewhere()
    {
        const int vocab = 10;
        using var scope = NewDisposeScope();
        var train = RandomTokens(40, 30, vocab, 1);
        var test = RandomTokens(20, 30, vocab, 2);
        var result = TokenProbe.Lagged(ThreeBack(train, vocab, 3), train, ThreeBack(test, vocab, 4), test, vocab, maxLag: 6);
        Assert.Equal(Enumerable.Range(0, 7), result.Select(r => r.Lag));
        Assert.Equal(1.0, result[3].Accuracy);
        Assert.Equal(1.0, result[3].TrainAccuracy);
        Assert.All(result.Where(r => r.Lag != 3), r => Assert.InRange(r.Accuracy, 0, 0.3));   // chance 1/9
        // Positions t with t − k ≥ 1: batch × (pos − 1 − k).
        Assert.Equal(20 * (30 - 1 - 3), result[3].TestPositions);
        Assert.Equal(40 * (30 - 1 - 6), result[6].TrainPositions);
    }

    [Fact]
    public void The_fit_is_ordinary_least_squares_as_the_normal_equations_give_it()
    {
        const int vocab = 6;
        using var scope = NewDisposeScope();
        var tokens = RandomTokens(8, 12, vocab, 5);
        var states = randn([8, 12, 4], generator: new Generator(6));
        var probe = TokenProbe.Lagged(states, tokens, states, tokens, vocab, maxLag: 2)[2];
        // By hand: X = [state at t, 1] for t ≥ 3, Y = one-hot(token at t − 2); W = (XᵀX)⁻¹ XᵀY in double.
        var x = cat([states[.., 3..].reshape(-1, 4), ones(8 * 9, 1)], 1).to(ScalarType.Float64);
        var y = nn.functional.one_hot(tokens[.., 1..10].reshape(-1), vocab).to(ScalarType.Float64);
        var w = linalg.solve(x.t().matmul(x), x.t().matmul(y));
        double expected = x.matmul(w).argmax(1).eq(tokens[.., 1..10].reshape(-1)).to(ScalarType.Float64).mean().item<double>();
        Assert.Equal(expected, probe.TrainAccuracy, 12);
        Assert.Equal(probe.TrainAccuracy, probe.Accuracy, 12);
    }

    [Fact]
    public void A_mask_leaves_padded_positions_out_and_bad_shapes_are_named()
    {
        const int vocab = 10;
        using var scope = NewDisposeScope();
        var train = RandomTokens(30, 20, vocab, 1);
        var test = RandomTokens(3, 20, vocab, 2);
        var mask = ones(3, 20, dtype: ScalarType.Int64);
        mask[1, 10..].fill_(Interp.Scalars.Zero);
        var result = TokenProbe.Lagged(ThreeBack(train, vocab, 3), train, ThreeBack(test, vocab, 4), test, vocab, 3, testMask: mask);
        Assert.Equal(3 * 16 - 10, result[3].TestPositions);
        Assert.Equal(1.0, result[3].Accuracy);
        var error = Assert.Throws<ArgumentException>(() => TokenProbe.Lagged(zeros(2, 5, 3), zeros(2, 4, dtype: ScalarType.Int64), zeros(2, 5, 3), zeros(2, 5, dtype: ScalarType.Int64), 4, 1));
        Assert.Contains("[2, 5, 3] and [2, 4]", error.Message);
        Assert.Contains("lag 4", Assert.Throws<ArgumentException>(() => TokenProbe.Lagged(zeros(2, 5, 3), zeros(2, 5, dtype: ScalarType.Int64), zeros(2, 5, 3), zeros(2, 5, dtype: ScalarType.Int64), 4, 5)).Message);
    }

    [Fact]
    public void Token_sequence_files_pad_their_sequences_and_name_the_line_key_and_value_at_fault()
    {
        using var tmp = new TempDir();
        string file = tmp.File("s.jsonl");
        File.WriteAllText(file, "{\"tokens\": [0, 3, 4]}\n\n{\"tokens\": [0, 5]}\n");
        using (var padded = TokenSequences.Load(file, vocabSize: 8))
        {
            Assert.Equal([3, 2], padded.Lengths);
            Assert.Equal(new long[] { 0, 3, 4, 0, 5, 0 }, padded.Tokens.data<long>().ToArray());
            Assert.Equal(new long[] { 1, 1, 1, 1, 1, 0 }, padded.AttentionMask.data<long>().ToArray());
        }
        foreach (var (line, expected) in new[]
                 {
                     ("{\"tokens\": [0, 8]}", "s.jsonl:1: key 'tokens': item 1 is 8, outside the vocabulary [0, 8)"),
                     ("{\"tokens\": [0, 1.5]}", "item 1 is 1.5, not an integer token id"),
                     ("{\"tokens\": []}", "holds 0 ids"),
                     ("{\"ids\": [1]}", "key 'ids': unknown key"),
                     ("{}", "key 'tokens': missing"),
                     ("[1, 2]", "expected a JSON object"),
                     ("{\"tokens\": [0, 1, 2, 3, 4]}", "a sequence needs 1 to 4"),
                 })
        {
            File.WriteAllText(file, line + "\n");
            var error = Assert.Throws<PromptFileException>(() => TokenSequences.Load(file, 8, maxLength: 4));
            Assert.Contains(expected, error.Message);
        }
        Assert.Contains("not found", Assert.Throws<PromptFileException>(() => TokenSequences.Load(tmp.File("none.jsonl"), 8)).Message);
    }
}

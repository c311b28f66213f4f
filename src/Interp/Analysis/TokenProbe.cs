using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>How well a linear probe reads the token k positions back from a state.</summary>
/// <param name="Lag">k: the probe at position t predicts the token at t − k (0 = the current token).</param>
/// <param name="Accuracy">Fraction of the test positions whose arg-max prediction is the token.</param>
/// <param name="TrainAccuracy">The same on the positions the probe was fitted on.</param>
/// <param name="TestPositions">Test positions scored.</param>
/// <param name="TrainPositions">Positions the probe was fitted on.</param>
public sealed record ProbeAccuracy(int Lag, double Accuracy, double TrainAccuracy, int TestPositions, int TrainPositions);

/// <summary>
/// The "memory" of a state: for each lag k, an ordinary least-squares linear probe (with a bias) from the state at
/// position t [d] to the one-hot token at t − k [vocab], fitted on one set of sequences and scored (arg-max accuracy) on
/// another. States [batch, pos, d] are a cache entry (<c>blocks.1.hook_resid_pre</c>, <c>lstm.0.hook_cell</c>); only
/// positions t whose token t − k lies at or after <c>firstPosition</c> (to leave out a BOS every sequence shares) and
/// within the mask are used. Least squares is solved in float64 through the pseudo-inverse (the minimum-norm
/// solution, so a state with collinear dimensions — a one-hot beside the bias — is fitted exactly too). Chance is about 1/vocab.
/// </summary>
public static class TokenProbe
{
    /// <summary>Fits and scores a probe for each lag 0 … <paramref name="maxLag"/>.</summary>
    /// <param name="trainStates">States of the fitting sequences [batch, pos, d].</param>
    /// <param name="trainTokens">Their tokens [batch, pos].</param>
    /// <param name="testStates">States of the scored sequences [batch', pos', d].</param>
    /// <param name="testTokens">Their tokens [batch', pos'].</param>
    /// <param name="vocabSize">Number of token ids (the one-hot width).</param>
    /// <param name="maxLag">Largest k.</param>
    /// <param name="firstPosition">Earliest position whose token is a target.</param>
    /// <param name="testMask">1 at the scored sequences' real positions [batch', pos'] (null: all real).</param>
    /// <exception cref="ArgumentException">Shapes disagree, or a lag leaves no position to fit or score.</exception>
    public static IReadOnlyList<ProbeAccuracy> Lagged(Tensor trainStates, Tensor trainTokens, Tensor testStates, Tensor testTokens,
        int vocabSize, int maxLag, int firstPosition = 1, Tensor? testMask = null)
    {
        Check(trainStates, trainTokens, "training");
        Check(testStates, testTokens, "test");
        if (trainStates.shape[2] != testStates.shape[2])
            throw new ArgumentException($"probe: training states have width {trainStates.shape[2]}, test states {testStates.shape[2]}");
        ArgumentOutOfRangeException.ThrowIfNegative(maxLag);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 2);
        using var scope = NewDisposeScope();
        var result = new List<ProbeAccuracy>();
        for (int k = 0; k <= maxLag; k++)
        {
            var (x, y) = Samples(trainStates, trainTokens, k, firstPosition, null);
            var (tx, ty) = Samples(testStates, testTokens, k, firstPosition, testMask);
            if (y.shape[0] == 0 || ty.shape[0] == 0)
                throw new ArgumentException($"probe at lag {k}: no position t with t − {k} ≥ {firstPosition} to {(y.shape[0] == 0 ? "fit" : "score")} (sequences of {(y.shape[0] == 0 ? trainTokens : testTokens).shape[1]} positions)");
            var targets = nn.functional.one_hot(y, vocabSize).to(ScalarType.Float64);                 // [n, vocab]
            var weights = linalg.pinv(x).matmul(targets);                                          // [d + 1, vocab]: minimum-norm least squares
            double Accuracy(Tensor states, Tensor tokens) => states.matmul(weights).argmax(1).eq(tokens).to(ScalarType.Float64).mean().item<double>();
            result.Add(new ProbeAccuracy(k, Accuracy(tx, ty), Accuracy(x, y), (int)ty.shape[0], (int)y.shape[0]));
        }
        return result;
    }

    private static void Check(Tensor states, Tensor tokens, string what)
    {
        if (states.dim() != 3 || tokens.dim() != 2 || states.shape[0] != tokens.shape[0] || states.shape[1] != tokens.shape[1])
            throw new ArgumentException($"probe: {what} states must be [batch, pos, d] and tokens [batch, pos] of the same batch and pos, got " +
                $"[{string.Join(", ", states.shape)}] and [{string.Join(", ", tokens.shape)}]");
    }

    /// <summary>Rows [state at t, 1] and targets token[t − k] for every usable t, float64 / int64.</summary>
    private static (Tensor X, Tensor Y) Samples(Tensor states, Tensor tokens, int k, int firstPosition, Tensor? mask)
    {
        long pos = states.shape[1], d = states.shape[2];
        int start = firstPosition + k;                                                  // t − k ≥ firstPosition
        if (start >= pos) return (zeros(0, d + 1, dtype: ScalarType.Float64), zeros(0, dtype: ScalarType.Int64));
        var x = states[.., start..].to(ScalarType.Float64).reshape(-1, d);             // [batch·(pos − start), d]
        var y = tokens[.., firstPosition..(int)(pos - k)].to(ScalarType.Int64).reshape(-1);   // token at t − k
        x = cat([x, ones(x.shape[0], 1, dtype: ScalarType.Float64)], 1);               // [n, d + 1]: the bias column
        if (mask is not null)
        {
            var keep = mask[.., start..].reshape(-1).ne(Scalars.Zero).nonzero().squeeze(1);   // real positions (t real ⇒ t − k real)
            (x, y) = (x.index_select(0, keep), y.index_select(0, keep));
        }
        return (x, y.to(x.device));
    }
}

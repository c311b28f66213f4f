using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>Text continuation with a <see cref="HookedTransformer"/>.</summary>
public static class Generation
{
    /// <summary>
    /// Greedy decoding: appends the most likely next token <paramref name="maxNewTokens"/> times (or until
    /// <paramref name="stopToken"/>), re-running the model on the last n_ctx tokens each step. Returns only the new tokens.
    /// </summary>
    public static int[] GenerateGreedy(this HookedTransformer model, IReadOnlyList<int> prompt, int maxNewTokens,
        int? stopToken = null, CancellationToken cancellationToken = default)
    {
        if (prompt.Count == 0) throw new InvalidTokensException("generation needs a prompt of at least one token");
        if (maxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(maxNewTokens), maxNewTokens, "must not be negative");
        var tokens = prompt.ToList();
        var generated = new List<int>();
        using var _ = no_grad();
        for (int i = 0; i < maxNewTokens; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var window = tokens.Skip(Math.Max(0, tokens.Count - model.Config.NCtx)).Select(t => (long)t).ToArray();
            var logits = model.forward(tensor(window, [1, window.Length]));
            int next = (int)logits[0, -1].argmax().item<long>();
            tokens.Add(next);
            generated.Add(next);
            if (next == stopToken) break;
        }
        return generated.ToArray();
    }
}

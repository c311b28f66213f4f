using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>The checks every model's token input passes: one place for their rules and messages.</summary>
internal static class TokenChecks
{
    /// <summary>
    /// Returns the tokens as int64 [batch, pos] on <paramref name="device"/>: 1-D input gains a batch axis; the tensor must
    /// be an integer one with at least one position (and at most <paramref name="maxPositions"/>), every id in [0, vocab).
    /// </summary>
    public static Tensor Validate(Tensor tokens, int vocab, long? maxPositions, Device device)
    {
        if (tokens.dim() == 1) tokens = tokens.unsqueeze(0);
        if (tokens.dim() != 2)
            throw new InvalidTokensException($"tokens must have shape [batch, pos], got [{string.Join(", ", tokens.shape)}]");
        if (tokens.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte))
            throw new InvalidTokensException($"tokens must be an integer tensor, got {tokens.dtype}");
        long pos = tokens.shape[1];
        if (pos == 0 || tokens.shape[0] == 0) throw new InvalidTokensException("tokens are empty: need at least one position");
        if (pos > maxPositions)
            throw new InvalidTokensException($"sequence of {pos} tokens is longer than the model's context n_ctx = {maxPositions}");
        tokens = tokens.to(ScalarType.Int64, device);
        using (NewDisposeScope())
        {
            using var vocabSize = vocab.ToScalar();
            var bad = tokens.lt(Scalars.Zero).logical_or(tokens.ge(vocabSize));
            if (bad.any().item<bool>())
            {
                long flat = bad.reshape(-1).to(ScalarType.Int32).argmax().item<long>();
                long id = tokens.reshape(-1)[flat].item<long>();
                throw new InvalidTokensException(
                    $"token id {id} at [batch {flat / pos}, pos {flat % pos}] is outside the vocabulary [0, {vocab})");
            }
        }
        return tokens;
    }
}

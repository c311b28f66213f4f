using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>
/// Every head's circuits read through the token and position embeddings, kept factored (rank ≤ d_head), as in
/// "A Mathematical Framework for Transformer Circuits":
/// the full <b>pattern</b> circuit W_E·QK·W_Eᵀ (d_vocab × d_vocab: how much a query token attends to a key token),
/// the full <b>message</b> circuit W_E·OV·W_U (d_vocab × d_vocab: what attending to a token does to each logit) and
/// the positional pattern W_pos·QK·W_posᵀ (n_ctx × n_ctx: how much a query position attends to a key position).
/// They leave out the norms in between: process the weights first (fold the LayerNorm weights in, see <c>WeightProcessing</c>) so that
/// the norms' gains are part of the matrices, as TransformerLens recommends (post-norm models such as BERT cannot fold
/// theirs). The token embedding is the one the model adds to the stream, W_E times its scale (Gemma: √d_model); under a
/// logit soft cap (Gemma 2) the message circuit gives the logits before the cap. The message circuit needs W_U to read
/// the residual stream: it refuses a base encoder (no W_U) and a masked-LM head (a dense layer and an activation
/// before W_U). The factors are vocabulary-sized
/// ([layer, head, d_vocab, d_head]): for scores over a 50,000-token vocabulary use <see cref="CircuitScores"/>,
/// which works from d_model-sized matrices only.
/// </summary>
public static class FullCircuits
{
    /// <summary>The full pattern circuit W_E·W_Q·W_Kᵀ·W_Eᵀ of every head, [layer, head, d_vocab, d_vocab], factored.</summary>
    /// <exception cref="InterpException">The model normalises queries and keys per head (q/k norms): it has no pattern circuit.</exception>
    public static FactoredMatrix Pattern(HookedTransformer model)
    {
        PassChecks.PatternCircuit(model, "the full pattern circuit W_E·QK·W_Eᵀ (FullCircuits.Pattern)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var qk = HeadCircuits.Pattern(model);
        var we = model.Embed.Scaled();
        return Through(we, qk, we.mT).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The full message circuit W_E·W_V·W_O·W_U of every head, [layer, head, d_vocab, d_vocab], factored: entry
    /// (s, t) is what attending to token s does to the logit of token t.
    /// </summary>
    /// <exception cref="InterpException">W_U does not read the residual stream (a base encoder; a masked-LM head).</exception>
    public static FactoredMatrix Message(HookedTransformer model)
    {
        PassChecks.UnembedReadsStream(model, "the full message circuit W_E·OV·W_U (FullCircuits.Message)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var ov = HeadCircuits.Message(model);
        return Through(model.Embed.Scaled(), ov, model.Unembed.W_U.detach()).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The positional pattern W_pos·W_Q·W_Kᵀ·W_posᵀ of every head, [layer, head, n_ctx, n_ctx], factored: entry (i, j)
    /// is the part of query position i's score for key position j that comes from the two position embeddings.
    /// </summary>
    /// <exception cref="InterpException">The model has no additive position embedding (rotary or none): its positions
    /// act inside attention, see <see cref="HeadCircuits.PatternAtOffset"/>; or it normalises queries and keys per head (q/k norms).</exception>
    public static FactoredMatrix PositionalPattern(HookedTransformer model)
    {
        PassChecks.PatternCircuit(model, "the positional pattern W_pos·QK·W_posᵀ (FullCircuits.PositionalPattern)");
        var pos = model.PosEmbed ?? throw new InterpException(
            $"model '{model.Config.Name}' has {model.Config.Positional} positions and no W_pos: the positional pattern W_pos·QK·W_posᵀ needs learned or sinusoidal position embeddings " +
            "(for rotary models use HeadCircuits.PatternAtOffset)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var qk = HeadCircuits.Pattern(model);
        var wpos = pos.W_pos.detach();
        return Through(wpos, qk, wpos.mT).MoveToOuterDisposeScope();
    }

    /// <summary>left·(A·B)·right, factored as (left·A)·(B·right).</summary>
    private static FactoredMatrix Through(Tensor left, FactoredMatrix inner, Tensor right) =>
        new(left.matmul(inner.A), inner.B.matmul(right));
}

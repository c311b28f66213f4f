using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>
/// Every head's two circuits as <see cref="FactoredMatrix"/> over [layer, head] (TransformerLens's <c>model.QK</c> and
/// <c>model.OV</c>), in the residual stream's row-vector convention:
/// the <b>pattern</b> circuit QK = W_Q·W_Kᵀ (d_model × d_model, rank ≤ d_head): score(i, j) = x_i·QK·x_jᵀ / s, s the
/// attention scale (√d_head unless the config sets <see cref="ModelConfig.AttnScale"/>), before any attention soft cap
/// (Gemma 2), for keys inside the layer's sliding window;
/// the <b>message</b> circuit OV = W_V·W_O (d_model × d_model, rank ≤ d_head): what attending to x_j writes, x_j·OV.
/// With grouped-query attention query head h uses key/value head h / (n_heads / n_kv_heads). Biases are not part of
/// either circuit. For rotary models QK is the content part only, as if query and key sat at the same position;
/// <see cref="PatternAtOffset"/> gives the circuit for a given relative offset. Where attention's output is
/// normalised before it joins the stream (Gemma 2's ln1_post) OV includes that norm's gain, W_V·W_O·diag(w): the
/// head's write up to the norm's scale, which all heads of the position share. Models with per-head q/k norms (Qwen 3)
/// have no pattern circuit: their scores are not a bilinear form of the stream, and every pattern circuit refuses them.
/// </summary>
public static class HeadCircuits
{
    /// <summary>The pattern circuit W_Q·W_Kᵀ of every head, [layer, head, d_model, d_model].</summary>
    /// <exception cref="InterpException">The model normalises queries and keys per head (q/k norms).</exception>
    public static FactoredMatrix Pattern(HookedTransformer model)
    {
        PassChecks.PatternCircuit(model, "the pattern circuit QK = W_Q·W_Kᵀ (HeadCircuits.Pattern)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return new FactoredMatrix(Stack(model, a => a.W_Q), Stack(model, a => PerQueryHead(model, a.W_K)).transpose(-1, -2)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The message circuit W_V·W_O of every head, [layer, head, d_model, d_model] (W_V·W_O·diag(w) where a norm with
    /// gain w follows attention, Gemma 2's ln1_post).
    /// </summary>
    public static FactoredMatrix Message(HookedTransformer model)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var writing = stack(model.Blocks.Select(b => b is PreNormBlock { Ln1Post: { } post } ? b.Attn.W_O.detach() * post.W.detach() : b.Attn.W_O.detach()).ToArray());
        return new FactoredMatrix(Stack(model, a => PerQueryHead(model, a.W_V)), writing).MoveToOuterDisposeScope();
    }

    /// <summary>TransformerLens's name for <see cref="Pattern"/>: <c>model.QK()</c>, every head's W_Q·W_Kᵀ.</summary>
    public static FactoredMatrix QK(this HookedTransformer model) => Pattern(model);

    /// <summary>TransformerLens's name for <see cref="Message"/>: <c>model.OV()</c>, every head's W_V·W_O.</summary>
    public static FactoredMatrix OV(this HookedTransformer model) => Message(model);

    /// <summary>
    /// The pattern circuit of a rotary model for a query <paramref name="offset"/> positions after its key:
    /// W_Q·R(offset)·W_Kᵀ, since rotating the query by angle i·θ and the key by j·θ leaves R((i − j)·θ) between them.
    /// For models without rotary embeddings this equals <see cref="Pattern"/>. In a layer with a sliding window W, offsets
    /// of W or more are masked.
    /// </summary>
    /// <exception cref="InterpException">The model normalises queries and keys per head (q/k norms).</exception>
    public static FactoredMatrix PatternAtOffset(HookedTransformer model, int offset)
    {
        PassChecks.PatternCircuit(model, "the pattern circuit at an offset W_Q·R·W_Kᵀ (HeadCircuits.PatternAtOffset)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var rotation = Rotation(model.Config, offset).to(model.Embed.W_E.dtype, model.Device);   // [d_head, d_head]
        var wq = Stack(model, a => a.W_Q).matmul(rotation);
        return new FactoredMatrix(wq, Stack(model, a => PerQueryHead(model, a.W_K)).transpose(-1, -2)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The rotation a rotary model applies between a query and a key <paramref name="offset"/> positions apart, as the
    /// matrix M with q_rotated = q·M (identity outside the rotary dimensions, and for non-rotary models), at the model's
    /// own frequencies (<see cref="Rotary.InverseFrequencies"/>, Llama 3's rescaling included).
    /// </summary>
    public static Tensor Rotation(ModelConfig cfg, int offset)
    {
        int e = cfg.HeadDim;
        var m = new double[e, e];
        for (int i = 0; i < e; i++) m[i, i] = 1;
        if (cfg.Positional == PositionalKind.Rotary)
        {
            int r = cfg.RotaryWidth;
            var frequencies = Rotary.InverseFrequencies(cfg);
            for (int i = 0; i < r / 2; i++)
            {
                double angle = offset * frequencies[i];
                var (a, b) = cfg.RotaryStyle == RotaryStyle.AdjacentPairs ? (2 * i, 2 * i + 1) : (i, i + r / 2);
                // q'_a = q_a cos − q_b sin, q'_b = q_a sin + q_b cos, written as q' = q·M.
                m[a, a] = Math.Cos(angle); m[b, a] = -Math.Sin(angle);
                m[a, b] = Math.Sin(angle); m[b, b] = Math.Cos(angle);
            }
        }
        return tensor(m.Cast<double>().ToArray(), [e, e]).to(ScalarType.Float32);
    }

    private static Tensor Stack(HookedTransformer model, Func<Attention, Tensor> weight) =>
        stack(model.Blocks.Select(b => weight(b.Attn).detach()).ToArray());                    // [layer, head, …]

    /// <summary>Key/value weights [kv_head, …] repeated to one per query head [head, …].</summary>
    private static Tensor PerQueryHead(HookedTransformer model, Tensor kv)
    {
        int group = model.Config.NHeads / model.Config.KvHeads;
        return group == 1 ? kv : kv.repeat_interleave(group, dim: 0);
    }
}

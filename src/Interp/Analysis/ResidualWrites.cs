using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// How much one component writes into the residual stream and in which direction, each [batch, position] (float64):
/// <see cref="Norm"/> ‖write‖; <see cref="Cosine"/> its cosine with the stream it is added to (null for the token
/// embedding, which is added to nothing); <see cref="Projection"/> write·u/‖u‖ on a chosen direction u (null when none
/// was given).
/// </summary>
/// <param name="Component">The writing component.</param>
/// <param name="Norm">L2 norm of the write, [batch, position].</param>
/// <param name="Cosine">Cosine with the stream before the write, [batch, position], or null.</param>
/// <param name="Projection">Scalar projection on the unit direction, [batch, position], or null.</param>
public sealed record ResidualWrite(ResidualComponent Component, Tensor Norm, Tensor? Cosine, Tensor? Projection);

/// <summary>
/// The residual stream's writes, measured per layer and component: the token embedding, the position embedding,
/// every head (without b_O), each layer's whole attention output and MLP output. The cosine is taken with the stream
/// the write is <em>added to</em> — the stream before it: <c>hook_resid_pre</c> of the layer for heads and
/// <c>attn_out</c>, <c>hook_resid_mid</c> for <c>mlp_out</c> (the MLP's input before normalisation), the token
/// embedding for the position embedding — so a positive cosine means the write reinforces what is there and a negative
/// one that it erases it. A parallel block (GPT-NeoX) adds both sublayers' writes to its resid_pre, which the MLP's
/// cosine is then taken with; a post-norm block (BERT) adds the MLP's write to <c>hook_normalized_resid_mid</c>. The
/// projection on a direction (by default, in the experiments, the unembedding column W_U[:, t] of the correct next
/// token t) is raw, before the final norm; <see cref="HeadAttribution"/> gives the normalised, exact logit
/// contributions. A model that normalises attention's output before it joins the stream (Gemma 2's ln1_post) is
/// refused: no head writes into the stream on its own.
/// </summary>
public static class ResidualWrites
{
    private static readonly Scalar Tiny = 1e-12.ToScalar();   // owned for the process (see Scalars)

    /// <summary>The hooks <see cref="Measure"/> reads.</summary>
    public static bool CacheFilter(string name) =>
        name is HookNames.Embed or HookNames.PosEmbed
        || HookNames.Is(name, HookNames.ResidPre)
        || HookNames.Is(name, HookNames.ResidMid)
        || HookNames.Is(name, HookNames.NormalizedResidMid)
        || HookNames.Is(name, HookNames.Result)
        || HookNames.Is(name, HookNames.AttnOut)
        || HookNames.Is(name, HookNames.MlpOut);

    /// <summary>
    /// The unembedding columns of <paramref name="tokens"/> [batch, n]: W_U[:, t] for each, [batch, n, d_model]
    /// (directions that raise t's logit; the next tokens are <c>tokens[.., 1..]</c> of the input).
    /// </summary>
    /// <exception cref="InterpException">A token id is outside the vocabulary, or W_U does not read the residual stream
    /// (a base encoder has no W_U; a masked-LM head sits between the stream and W_U).</exception>
    public static Tensor UnembedDirections(HookedTransformer model, Tensor tokens)
    {
        PassChecks.UnembedReadsStream(model, "unembedding directions (ResidualWrites.UnembedDirections)");
        var ids = model.ValidateTokens(tokens);
        using var scope = NewDisposeScope();
        var wU = model.Unembed.W_U.detach().to(model.ComputeDType);   // the stream's dtype, which the writes are measured in
        return wU.T.index_select(0, ids.reshape(-1)).view(ids.shape[0], ids.shape[1], -1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Measures every write at the first n positions: n is the positions of <paramref name="directions"/>
    /// ([batch, n, d_model], n ≤ pos, one direction per sequence and position; or [d_model], one for all, n = pos),
    /// or every position when no direction is given (then <see cref="ResidualWrite.Projection"/> is null). The cache
    /// must hold <see cref="CacheFilter"/>'s hooks (hook_result, or hook_z to compute it from).
    /// </summary>
    /// <remarks>
    /// For a right-padded batch give the run's <paramref name="attentionMask"/> [batch, pos] (1 at real tokens): every
    /// measure is NaN at padded positions, so that a NaN-aware mean over positions reads real tokens only.
    /// </remarks>
    /// <exception cref="InterpException">The directions' shape does not fit the cached run, a hook is missing, the mask is
    /// invalid, or the model normalises attention's output before it joins the stream (no head writes on its own).</exception>
    public static IReadOnlyList<ResidualWrite> Measure(HookedTransformer model, ActivationCache cache, Tensor? directions = null, Tensor? attentionMask = null)
    {
        var cfg = model.Config;
        PassChecks.HeadWrites(model, "residual writes (ResidualWrites.Measure)");
        var embed = cache[HookNames.Embed];
        long batch = embed.shape[0], pos = embed.shape[1];
        long n = pos;
        if (directions is not null)
        {
            bool single = directions.dim() == 1 && directions.shape[0] == cfg.DModel;
            bool perPosition = directions.dim() == 3 && directions.shape[0] == batch && directions.shape[1] >= 1 && directions.shape[1] <= pos && directions.shape[2] == cfg.DModel;
            if (!single && !perPosition)
                throw new InterpException($"residual writes: directions must be [{cfg.DModel}] or [batch {batch}, n ≤ {pos}, {cfg.DModel}]; got [{string.Join(", ", directions.shape)}]");
            if (perPosition) n = directions.shape[1];
        }

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var unit = directions is null ? null : Unit(directions.to(ScalarType.Float64, embed.device));
        var padding = model.PaddingMask(attentionMask, batch, pos)?.narrow(1, 0, n).to(embed.device);    // [batch, n], true at padding
        Tensor Real(Tensor t) => padding is null ? t : t.masked_fill(padding, Scalars.NaN);
        Tensor At(Tensor x) => x.narrow(1, 0, n).to(ScalarType.Float64);                   // [batch, n, d_model]
        var result = new List<ResidualWrite>();
        void Add(ResidualComponent component, Tensor write, Tensor? stream)
        {
            var w = At(write);
            var norm = w.norm(-1);
            Tensor? cosine = null;
            if (stream is not null)
            {
                var s = At(stream);
                cosine = Real((w * s).sum(-1) / (norm * s.norm(-1)).clamp_min(Tiny)).MoveToOuterDisposeScope();
            }
            var projection = unit is null ? null : Real((w * unit).sum(-1)).MoveToOuterDisposeScope();
            result.Add(new ResidualWrite(component, Real(norm).MoveToOuterDisposeScope(), cosine, projection));
        }

        Add(new(ComponentKind.Embed), embed, null);
        if (model.PosEmbed is not null) Add(new(ComponentKind.PosEmbed), cache[HookNames.PosEmbed], embed);
        for (int l = 0; l < cfg.NLayers; l++)
        {
            var residPre = cache[HookNames.ResidPre(l)];
            var heads = cache.HeadResults(model, l);                                       // [batch, pos, head, d_model]
            for (int h = 0; h < cfg.NHeads; h++) Add(new(ComponentKind.Head, l, h), heads.select(2, h), residPre);
            Add(new(ComponentKind.AttnOut, l), cache[HookNames.AttnOut(l)], residPre);
            if (!cfg.AttentionOnly)
            {
                // The stream the MLP's write is added to: resid_mid; a parallel block's resid_pre; a post-norm block's ln1(resid_mid).
                var before = cfg.Block switch
                {
                    BlockKind.Parallel => residPre,
                    BlockKind.PostNorm => cache[HookNames.NormalizedResidMid(l)],
                    _ => cache[HookNames.ResidMid(l)],
                };
                Add(new(ComponentKind.MlpOut, l), cache[HookNames.MlpOut(l)], before);
            }
        }
        return result;

        Tensor Unit(Tensor d)
        {
            var u = d / d.norm(-1, keepdim: true).clamp_min(Tiny);
            return u.dim() == 1 ? u : u.narrow(1, 0, n);
        }
    }
}

using Interp.Hooks;

namespace Interp.Models;

/// <summary>
/// The architecture properties that analysis passes and circuits rely on, each a check that throws an
/// <see cref="InterpException"/> naming the pass (<c>what</c>), the model and the property that is missing. The
/// model's own <see cref="HookedTransformer.EnsureCausal"/> and <see cref="HookedTransformer.EnsureUnembed"/> cover
/// causality and logits.
/// </summary>
internal static class PassChecks
{
    /// <summary>True when attention's output is normalised before it joins the residual stream (Gemma 2's ln1_post).</summary>
    public static bool NormalisesAttentionOutput(ModelConfig cfg) =>
        cfg.NormAfterSublayers && cfg.Norm != NormKind.None && cfg.Block == BlockKind.PreNorm;

    /// <summary>
    /// The residual stream entering every block, and the final one, is the sum of the components' writes (embeddings,
    /// attention and MLP outputs): not for post-norm blocks, normalised embeddings or token-type embeddings.
    /// </summary>
    public static void SummedStream(HookedTransformer model, string what)
    {
        var cfg = model.Config;
        string why = cfg.Block == BlockKind.PostNorm
            ? "has post-norm blocks: each block passes on ln2(resid_post), a normalised stream, not the sum of the writes before it"
            : model.EmbedLn is not null ? "normalises its embeddings (embed.ln) before block 0"
            : model.TokenTypeEmbed is not null ? "adds a token-type embedding, which no residual component stands for"
            : "";
        if (why.Length > 0)
            throw new InterpException($"{what} needs a residual stream that is the sum of the components' writes, but {Describe(cfg)} {why}");
    }

    /// <summary>Each head's <c>hook_result</c> is its write into the residual stream (no norm on attention's output).</summary>
    public static void HeadWrites(HookedTransformer model, string what)
    {
        var cfg = model.Config;
        if (NormalisesAttentionOutput(cfg))
            throw new InterpException(
                $"{what} needs each head's result ({HookNames.Result(0)}, …) to be its write into the residual stream, but {Describe(cfg)} normalises attention's " +
                $"output (ln1_post) before it joins the stream: the heads' results sum to that norm's input, not to {HookNames.AttnOut(0)} (…), and no head writes on its own");
    }

    /// <summary>
    /// The logits are linear in the final residual stream's components up to one final norm: an unembedding, no
    /// post-norm blocks, no masked-LM head.
    /// </summary>
    public static void LinearReadout(HookedTransformer model, string what)
    {
        model.EnsureUnembed(what);
        var cfg = model.Config;
        if (cfg.Block == BlockKind.PostNorm)
            throw new InterpException(
                $"{what} needs logits that are linear in the residual stream's components up to one final norm, but {Describe(cfg)} has post-norm blocks: " +
                "every block ends with a LayerNorm (ln2) of its whole stream, so earlier writes reach the logits only through every later norm");
        UnembedReadsStream(model, what);
    }

    /// <summary>The unembedding W_U reads the (final-normed) residual stream itself: there is one, and no masked-LM head before it.</summary>
    public static void UnembedReadsStream(HookedTransformer model, string what)
    {
        model.EnsureUnembed(what);
        if (model.MlmHead is not null)
            throw new InterpException(
                $"{what} needs the unembedding W_U to read the residual stream, but {Describe(model.Config)} has a masked-LM head: a dense layer, an activation and a " +
                "LayerNorm sit between the stream and W_U, so W_U's columns are no directions in the stream");
    }

    /// <summary>Attention scores are the bilinear form of the pattern circuit: no per-head q/k norms.</summary>
    public static void PatternCircuit(HookedTransformer model, string what)
    {
        var cfg = model.Config;
        if (cfg.QkNorm)
            throw new InterpException(
                $"{what} needs attention scores that are the bilinear form x_i·W_Q·W_Kᵀ·x_jᵀ of the pattern circuit, but {Describe(cfg)} normalises each query " +
                "and key head (q_norm, k_norm: RMSNorm over d_head) before the scores, which makes them a nonlinear function of the residual stream");
    }

    /// <summary>"name (family)".</summary>
    public static string Describe(ModelConfig cfg) => $"{cfg.Name} ({cfg.Family})";
}

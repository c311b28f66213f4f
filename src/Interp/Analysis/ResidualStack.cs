using Interp.Hooks;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>What one entry of a <see cref="ResidualStack"/> is.</summary>
public enum ComponentKind
{
    /// <summary>The token embedding, <c>hook_embed</c>.</summary>
    Embed,
    /// <summary>The position embedding, <c>hook_pos_embed</c> (learned or sinusoidal models only).</summary>
    PosEmbed,
    /// <summary>One attention head's write, <c>blocks.{l}.attn.hook_result[:, :, h]</c> (without b_O).</summary>
    Head,
    /// <summary>A layer's attention output bias b_O, the part of <c>hook_attn_out</c> that no head writes.</summary>
    AttnBias,
    /// <summary>A layer's whole attention output, <c>hook_attn_out</c> (every head plus b_O).</summary>
    AttnOut,
    /// <summary>A layer's MLP output, <c>hook_mlp_out</c> (its biases included).</summary>
    MlpOut,
    /// <summary>The residual stream entering block l, <c>hook_resid_pre</c>.</summary>
    ResidPre,
    /// <summary>The residual stream between block l's attention and MLP, <c>hook_resid_mid</c>.</summary>
    ResidMid,
    /// <summary>
    /// The last block's output, the stream the final norm and unembedding read: its <c>hook_resid_post</c>
    /// (<c>hook_normalized_resid_post</c> for a post-norm block, whose output is ln2's).
    /// </summary>
    FinalPost,
    /// <summary>The final LayerNorm's shift b (a direct term of every logit).</summary>
    LnFinalBias,
    /// <summary>The unembedding bias b_U.</summary>
    UnembedBias,
}

/// <summary>
/// One entry of a residual stack: its kind, layer and head (−1 where not applicable), TransformerLens's label
/// (<c>embed</c>, <c>pos_embed</c>, <c>0_attn_out</c>, <c>L1H0</c>, <c>0_pre</c>, <c>final_post</c>, …) and the
/// snake_case <see cref="Name"/> used in tables' <c>component</c> column.
/// </summary>
/// <param name="Kind">What the component is.</param>
/// <param name="Layer">Its layer, −1 for embeddings and the final biases; <see cref="ComponentKind.FinalPost"/> uses n_layers.</param>
/// <param name="Head">Its head, −1 unless <paramref name="Kind"/> is <see cref="ComponentKind.Head"/>.</param>
public sealed record ResidualComponent(ComponentKind Kind, int Layer = -1, int Head = -1)
{
    /// <summary>The table name: embed, pos_embed, head, attn_bias, attn_out, mlp_out, resid_pre, resid_mid, final_post, ln_final_bias, unembed_bias.</summary>
    public string Name => Kind switch
    {
        ComponentKind.Embed => "embed",
        ComponentKind.PosEmbed => "pos_embed",
        ComponentKind.Head => "head",
        ComponentKind.AttnBias => "attn_bias",
        ComponentKind.AttnOut => "attn_out",
        ComponentKind.MlpOut => "mlp_out",
        ComponentKind.ResidPre => "resid_pre",
        ComponentKind.ResidMid => "resid_mid",
        ComponentKind.FinalPost => "final_post",
        ComponentKind.LnFinalBias => "ln_final_bias",
        _ => "unembed_bias",
    };

    /// <summary>TransformerLens's label of the component (<c>L{l}H{h}</c> for heads, <c>{l}_attn_out</c>, <c>{l}_pre</c>, …).</summary>
    public string Label => Kind switch
    {
        ComponentKind.Head => $"L{Layer}H{Head}",
        ComponentKind.AttnBias or ComponentKind.AttnOut or ComponentKind.MlpOut => $"{Layer}_{Name}",
        ComponentKind.ResidPre => $"{Layer}_pre",
        ComponentKind.ResidMid => $"{Layer}_mid",
        _ => Name,
    };

    /// <inheritdoc />
    public override string ToString() => Label;
}

/// <summary>
/// A stack of residual-stream components, <see cref="Values"/> [component, batch, pos, d_model], with what each entry
/// is. The tensor belongs to the caller's dispose scope.
/// </summary>
/// <param name="Values">The components, [component, batch, pos, d_model].</param>
/// <param name="Components">What each entry along the first axis is.</param>
public sealed record ResidualStack(Tensor Values, IReadOnlyList<ResidualComponent> Components)
{
    /// <summary>TransformerLens's labels, in order.</summary>
    public string[] Labels => Components.Select(c => c.Label).ToArray();

    /// <summary>The index of the component labelled <paramref name="label"/>.</summary>
    /// <exception cref="InterpException">No component has that label.</exception>
    public int IndexOf(string label)
    {
        for (int i = 0; i < Components.Count; i++)
            if (Components[i].Label == label) return i;
        throw new InterpException($"residual stack has no component '{label}'; it has {string.Join(", ", Labels)}");
    }
}

/// <summary>
/// TransformerLens's residual-stream views of an <see cref="ActivationCache"/>: the stream split into what each
/// component wrote (<see cref="DecomposeResid"/>, <see cref="StackHeadResults"/>), the stream as it accumulates
/// (<see cref="AccumulatedResid"/>), and a norm's cached scale applied to a whole stack (<see cref="ApplyLnToStack"/>),
/// which keeps the stack linear: each normalised component is what it contributes to the norm's output.
/// <para>Layers follow TransformerLens: <c>layer</c> in [0, n_layers] (null or −1 = n_layers) means "the input of
/// block <c>layer</c>", n_layers being the unembedding; the cache must hold the hooks a view reads, or the error
/// names the missing hook.</para>
/// <para>Architectures: parallel blocks (GPT-NeoX) have no <c>hook_resid_mid</c>: their MLP reads resid_pre, as
/// their attention does. The decompositions need a stream that is the sum of the writes and refuse post-norm blocks
/// (BERT, whose blocks pass on a normalised stream), as <see cref="ApplyLnToStack"/> does (no norm there reads the
/// stack's sum); <see cref="StackHeadResults"/> refuses a model that normalises attention's output (Gemma 2's
/// ln1_post), where no head writes into the stream on its own.</para>
/// </summary>
public static class ResidualStacks
{
    /// <summary>The hook of the last block's output: <c>hook_resid_post</c>, or <c>hook_normalized_resid_post</c> for post-norm blocks.</summary>
    internal static string FinalStreamHook(ModelConfig cfg) =>
        cfg.Block == BlockKind.PostNorm ? HookNames.NormalizedResidPost(cfg.NLayers - 1) : HookNames.ResidPost(cfg.NLayers - 1);

    /// <summary>
    /// The residual stream entering block <paramref name="layer"/> split into what wrote it: <c>embed</c>,
    /// <c>pos_embed</c> (if the model has one), then each earlier layer's <c>attn_out</c> and <c>mlp_out</c> (if it has
    /// an MLP); with <paramref name="mlpInput"/> the stream block <paramref name="layer"/>'s MLP reads: also its own
    /// <c>attn_out</c> (resid_mid), except in a parallel block, whose MLP reads resid_pre. The components sum to that
    /// stream (<c>hook_resid_pre</c>, <c>hook_resid_mid</c> or the final <c>hook_resid_post</c>). <paramref name="applyLn"/>
    /// applies <see cref="ApplyLnToStack"/> for that layer.
    /// </summary>
    /// <exception cref="InterpException">The layer is out of range, mlpInput is asked of a block without MLP or of the
    /// unembedding, or the stream is not a sum of writes (post-norm blocks, normalised embeddings).</exception>
    public static ResidualStack DecomposeResid(this ActivationCache cache, HookedTransformer model, int? layer = null, bool mlpInput = false, bool applyLn = false)
    {
        int n = CheckLayer(model, layer, mlpInput);
        PassChecks.SummedStream(model, "decompose_resid (ResidualStacks.DecomposeResid)");
        var cfg = model.Config;
        var parts = new List<(ResidualComponent, Tensor)> { (new(ComponentKind.Embed), cache[HookNames.Embed]) };
        if (model.PosEmbed is not null) parts.Add((new(ComponentKind.PosEmbed), cache[HookNames.PosEmbed]));
        for (int l = 0; l < n; l++)
        {
            parts.Add((new(ComponentKind.AttnOut, l), cache[HookNames.AttnOut(l)]));
            if (!cfg.AttentionOnly) parts.Add((new(ComponentKind.MlpOut, l), cache[HookNames.MlpOut(l)]));
        }
        if (mlpInput && cfg.HasResidMid) parts.Add((new(ComponentKind.AttnOut, n), cache[HookNames.AttnOut(n)]));
        return Finish(cache, model, parts, n, mlpInput, applyLn);
    }

    /// <summary>
    /// The residual stream as it accumulates: <c>hook_resid_pre</c> of blocks 0 … <paramref name="layer"/> (labels
    /// <c>{l}_pre</c>; with <paramref name="includeMid"/> also each earlier block's <c>hook_resid_mid</c>, with
    /// <paramref name="mlpInput"/> block <paramref name="layer"/>'s — for blocks that have one: attention-only and
    /// parallel blocks have none, a parallel block's MLP reads resid_pre), and, when <paramref name="layer"/> is n_layers,
    /// the last block's output (label <c>final_post</c>: <c>hook_resid_post</c>, or <c>hook_normalized_resid_post</c> for
    /// post-norm blocks) in place of a resid_pre. <paramref name="applyLn"/>
    /// at the unembedding (the logit lens) applies the final norm itself to each entry, recomputing its statistics
    /// from that entry, as TransformerLens's <c>accumulated_resid(apply_ln=True)</c> does: every entry is then
    /// normalised as if it were the final stream (by the model's own ln_final module, whose hooks fire), and the last
    /// entry is exactly the model's ln_final output. At an earlier layer it applies that layer's cached scale
    /// (<see cref="ApplyLnToStack"/>).
    /// </summary>
    /// <exception cref="InterpException">The layer is out of range or the model has no layers; applyLn on post-norm blocks (see <see cref="ApplyLnToStack"/>).</exception>
    public static ResidualStack AccumulatedResid(this ActivationCache cache, HookedTransformer model, int? layer = null,
        bool includeMid = false, bool mlpInput = false, bool applyLn = false)
    {
        int n = CheckLayer(model, layer, mlpInput);
        var cfg = model.Config;
        if (cfg.NLayers == 0) throw new InterpException("accumulated residual stream: the model has no layers");
        var parts = new List<(ResidualComponent, Tensor)>();
        for (int l = 0; l <= n; l++)
        {
            if (l == cfg.NLayers)
            {
                parts.Add((new(ComponentKind.FinalPost, l), cache[FinalStreamHook(cfg)]));
                continue;
            }
            parts.Add((new(ComponentKind.ResidPre, l), cache[HookNames.ResidPre(l)]));
            if (cfg.HasResidMid && ((includeMid && l < n) || (mlpInput && l == n)))
                parts.Add((new(ComponentKind.ResidMid, l), cache[HookNames.ResidMid(l)]));
        }
        if (applyLn && n == cfg.NLayers && model.LnFinal is { } lnFinal)
        {
            // The logit lens: the final norm with its own statistics for each entry, one entry at a time so that the
            // last one goes through exactly the computation of the model's forward pass.
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var normed = parts.Select(p => lnFinal.forward(p.Item2)).ToArray();
            return new ResidualStack(stack(normed).MoveToOuterDisposeScope(), parts.Select(p => p.Item1).ToArray());
        }
        return Finish(cache, model, parts, n, mlpInput, applyLn);
    }

    /// <summary>
    /// Every head's write into the residual stream for the blocks before <paramref name="layer"/>, labelled
    /// <c>L{l}H{h}</c>, each layer followed (with <paramref name="includeAttnBias"/>, for models with biases) by its
    /// output bias b_O (label <c>{l}_attn_bias</c>), so that a layer's entries sum to its <c>hook_attn_out</c>.
    /// TransformerLens leaves b_O out (it lands in its <c>remainder</c>). Reads <c>attn.hook_result</c> (cache it with
    /// a names filter) or, failing that, computes it from <c>attn.hook_z</c> and W_O (TransformerLens's
    /// <c>compute_head_results</c>). A layer of 0 gives an empty stack.
    /// </summary>
    /// <exception cref="InterpException">The layer is out of range, neither hook_result nor hook_z is cached, or the
    /// model normalises attention's output before it joins the stream (Gemma 2's ln1_post), so no head writes on its own.</exception>
    public static ResidualStack StackHeadResults(this ActivationCache cache, HookedTransformer model, int? layer = null,
        bool includeAttnBias = true, bool applyLn = false)
    {
        int n = CheckLayer(model, layer, false);
        PassChecks.HeadWrites(model, "stack_head_results (ResidualStacks.StackHeadResults)");
        var cfg = model.Config;
        var parts = new List<(ResidualComponent, Tensor)>();
        for (int l = 0; l < n; l++)
        {
            var result = cache.HeadResults(model, l);                                  // [batch, pos, head, d_model]
            for (int h = 0; h < cfg.NHeads; h++) parts.Add((new(ComponentKind.Head, l, h), result.select(2, h)));
            if (includeAttnBias && cfg.UseBias)
                parts.Add((new(ComponentKind.AttnBias, l), model.Blocks[l].Attn.b_O.detach().expand(result.shape[0], result.shape[1], -1)));
        }
        if (parts.Count == 0)
        {
            var like = cache[HookNames.Embed];
            return new ResidualStack(zeros([0, .. like.shape], like.dtype, like.device), []);
        }
        return Finish(cache, model, parts, n, false, applyLn);
    }

    /// <summary>
    /// Each head's write of block <paramref name="layer"/>, [batch, pos, head, d_model]: the cached
    /// <c>attn.hook_result</c>, or hook_z·W_O when only <c>attn.hook_z</c> was cached.
    /// </summary>
    /// <exception cref="InterpException">Neither hook is cached.</exception>
    public static Tensor HeadResults(this ActivationCache cache, HookedTransformer model, int layer)
    {
        if (layer < 0 || layer >= model.Config.NLayers)
            throw new InterpException($"head results: layer {layer} is outside the model's layers [0, {model.Config.NLayers})");
        if (cache.Contains(HookNames.Result(layer))) return cache[HookNames.Result(layer)];
        if (!cache.Contains(HookNames.Z(layer)))
            throw new HookException(HookNames.Result(layer),
                $"not in the cache, and neither is {HookNames.Z(layer)} to compute it from: cache it with a names filter that accepts it (RunWithCache's default leaves the per-head results out)");
        using var _ = no_grad();
        var z = cache[HookNames.Z(layer)];   // [batch, pos, head, d_head]
        return einsum("bphe,hed->bphd", z, Gemm.Like(model.Blocks[layer].Attn.W_O.detach(), z));
    }

    /// <summary>
    /// TransformerLens's <c>apply_ln_to_stack</c>: treats each entry of <paramref name="stack"/> [component, batch,
    /// pos, d_model] as a part of the input of a norm and applies that norm's scaling with its cached statistics, so
    /// that the entries still sum to the normalised stream. LayerNorm: each entry is centred (minus its mean over
    /// d_model) and divided by the cached <c>hook_scale</c>; RMSNorm: divided only; no norm: returned unchanged. The
    /// norm's gain w and shift b are not applied (TransformerLens's convention, exact for folded weights): the sum of
    /// the entries times w, plus b, is the norm's output. The norm is ln_final for <paramref name="layer"/> = n_layers
    /// (null or −1), else block <paramref name="layer"/>'s ln1 (ln2 with <paramref name="mlpInput"/>; in a parallel block
    /// both read resid_pre).
    /// </summary>
    /// <exception cref="InterpException">The layer is out of range, the scale is not cached, the stack's batch and positions
    /// differ from the cached scale's, or the blocks are post-norm (BERT), where no norm reads the stack's sum.</exception>
    public static Tensor ApplyLnToStack(this ActivationCache cache, HookedTransformer model, Tensor stack, int? layer = null, bool mlpInput = false)
    {
        int n = CheckLayer(model, layer, mlpInput);
        var cfg = model.Config;
        if (cfg.Block == BlockKind.PostNorm)
            throw new InterpException(
                $"apply_ln_to_stack (ResidualStacks.ApplyLnToStack, and every residual stack's applyLn) needs a norm that reads the stack's sum, but {PassChecks.Describe(cfg)} " +
                "has post-norm blocks: attention reads resid_pre unnormalised, ln1 normalises resid_mid and ln2 resid_post, and there is no final norm");
        if (cfg.Norm == NormKind.None) return stack.alias();
        string key = n == cfg.NLayers ? HookNames.LnFinalScale : HookNames.Scale(n, mlpInput ? "ln2" : "ln1");
        if (!cache.Contains(key))
            throw new HookException(key, "not in the cache: applying the norm to a residual stack needs its cached scale");
        var scale = cache[key];                                                           // [batch, pos, 1]
        if (stack.dim() < 2 || stack.shape[^1] != cfg.DModel || !stack.shape[1..^1].SequenceEqual(scale.shape[..^1]))
            throw new InterpException($"apply_ln_to_stack: the stack must be [component, {string.Join(", ", scale.shape[..^1])}, {cfg.DModel}] to match {key}; got [{string.Join(", ", stack.shape)}]");
        using var scope = NewDisposeScope();
        var x = cfg.Norm == NormKind.LayerNorm ? stack - stack.mean([-1], keepdim: true) : stack;
        return (x / scale.to(stack.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>Stacks the parts (expanding each to its own contiguous tensor) and applies the norm if asked.</summary>
    private static ResidualStack Finish(ActivationCache cache, HookedTransformer model, List<(ResidualComponent, Tensor)> parts, int layer, bool mlpInput, bool applyLn)
    {
        using var scope = NewDisposeScope();
        var values = stack(parts.Select(p => p.Item2).ToArray());
        if (applyLn) values = cache.ApplyLnToStack(model, values, layer, mlpInput);
        return new ResidualStack(values.MoveToOuterDisposeScope(), parts.Select(p => p.Item1).ToArray());
    }

    /// <summary>Resolves null/−1 to n_layers and checks the layer (and mlpInput) against the model.</summary>
    internal static int CheckLayer(HookedTransformer model, int? layer, bool mlpInput)
    {
        var cfg = model.Config;
        int n = layer is null or -1 ? cfg.NLayers : layer.Value;
        if (n < 0 || n > cfg.NLayers)
            throw new InterpException($"layer {layer} is outside [0, {cfg.NLayers}] (n_layers = {cfg.NLayers} means the unembedding; −1 or null means n_layers)");
        if (mlpInput && (n == cfg.NLayers || cfg.AttentionOnly))
            throw new InterpException(cfg.AttentionOnly
                ? $"mlpInput: block {n} has no MLP (the model is attention-only)"
                : $"mlpInput: layer {n} is the unembedding, which has no MLP input; pass a block index below {cfg.NLayers}");
        return n;
    }
}

using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Which of TransformerLens's weight-processing steps to apply (see <see cref="WeightProcessing"/>). Every step
/// leaves the model's output distribution exactly as it was (up to float rounding); <see cref="CenterUnembed"/>
/// shifts each position's logits by a constant.
/// </summary>
public sealed record WeightProcessingOptions
{
    /// <summary>
    /// Fold each norm's gain (and LayerNorm's shift) into the weights that read its output, and centre those
    /// reading weights (LayerNorm only); the norms become pure normalisation (TransformerLens's LNPre / RMSPre). The
    /// norms folded are those a weight reads: ln1, ln2 and ln_final (Gemma 2's ln1_post / ln2_post and Qwen 3's q/k
    /// norms keep their gains).
    /// </summary>
    public bool FoldLn { get; init; }
    /// <summary>
    /// Subtract the mean over d_model from every weight and bias that writes to the residual stream (W_E, W_pos,
    /// W_O, b_O, W_out, b_out), so the residual stream has mean zero. LayerNorm models only: skipped otherwise.
    /// </summary>
    public bool CenterWritingWeights { get; init; }
    /// <summary>Subtract the mean over the vocabulary from W_U and b_U; logits change by a constant per position.</summary>
    public bool CenterUnembed { get; init; }
    /// <summary>Fold the value biases into the output bias (b_O += Σ_h b_V·W_O[h]) and zero them.</summary>
    public bool FoldValueBiases { get; init; }

    /// <summary>
    /// All four steps, as TransformerLens's <c>from_pretrained</c> does by default; <see cref="WeightProcessing.Applicable"/>
    /// gives those a model accepts (<see cref="WeightProcessing.ProcessWeights"/> refuses the others).
    /// </summary>
    public static WeightProcessingOptions Default { get; } =
        new() { FoldLn = true, CenterWritingWeights = true, CenterUnembed = true, FoldValueBiases = true };

    /// <summary>No processing: the weights stay exactly as loaded.</summary>
    public static WeightProcessingOptions None { get; } = new();

    /// <summary>True when at least one step is selected.</summary>
    public bool Any => FoldLn || CenterWritingWeights || CenterUnembed || FoldValueBiases;

    /// <summary>The selected steps in words, in TransformerLens's order ("norms folded, …"), or "none".</summary>
    public string Describe()
    {
        var steps = new[] { (FoldLn, "norms folded"), (CenterWritingWeights, "writing weights centred"),
            (CenterUnembed, "unembedding centred"), (FoldValueBiases, "value biases folded") }.Where(s => s.Item1).Select(s => s.Item2).ToArray();
        return steps.Length == 0 ? "none" : string.Join(", ", steps);
    }

    /// <summary>The steps selected here or in <paramref name="other"/>.</summary>
    public WeightProcessingOptions Union(WeightProcessingOptions other) => new()
    {
        FoldLn = FoldLn || other.FoldLn,
        CenterWritingWeights = CenterWritingWeights || other.CenterWritingWeights,
        CenterUnembed = CenterUnembed || other.CenterUnembed,
        FoldValueBiases = FoldValueBiases || other.FoldValueBiases,
    };
}

/// <summary>
/// TransformerLens's weight processing (<c>fold_layer_norm</c>, <c>center_writing_weights</c>,
/// <c>center_unembed</c>, <c>fold_value_biases</c>), done in place on a <see cref="HookedTransformer"/>: the same
/// parameter tensors receive the new values, so the model object, its hooks and its state-dict keys stay the same.
/// The maths is done in float64 and written back in the weights' dtype. Steps run in TransformerLens's order
/// (fold, centre writing weights, centre unembed, fold value biases) and are idempotent; what was applied is
/// accumulated in <see cref="HookedTransformer.Processing"/>. Training or loading weights afterwards does not
/// update that record.
/// <para>
/// Hooks after processing: <c>hook_q</c>/<c>hook_k</c>/<c>hook_v</c>, patterns and MLP activations are unchanged
/// by folding, but LayerNorm's <c>hook_normalized</c> no longer includes w and b; centring the writing weights
/// replaces every residual-stream activation by itself minus its mean over d_model; folding value biases removes
/// b_V from <c>hook_v</c> and <c>hook_z</c> (it reappears in b_O, so <c>hook_attn_out</c> is unchanged).
/// </para>
/// <para>Architectures: parallel blocks (GPT-NeoX) fold ln1 into attention and ln2 into the MLP (both read
/// resid_pre). Gemma 2's ln1_post / ln2_post (norms on the sublayers' outputs, which the residual stream itself
/// reads) and Qwen 3's q/k norms keep their gains: no weight reads their output alone.</para>
/// <para>Refused (before anything is changed, with an <see cref="InterpException"/> naming the step and why):
/// folding a LayerNorm whose shift b is nonzero when the weights reading it have nowhere to put b·W, i.e. a model
/// without biases (<see cref="ModelConfig.UseBias"/> false: its biases are fixed zero buffers that are not saved), or
/// the ln2 of a gated MLP (W_gate has no bias) — a zero shift folds fine in both cases —; folding the norms of
/// post-norm blocks (BERT: ln1's output is both the MLP's input and part of the stream, ln2's is the next block's
/// input and stream alike), of a masked-LM head's model, or of a final norm whose output is the model's output (no
/// unembedding); centring the writing weights of post-norm blocks or of LayerNorm blocks that normalise their
/// sublayers' outputs (the stream is then written by norms, not by W_O and W_out); centring the unembedding under a
/// logit soft cap (the cap does not commute with a per-position shift) or without an unembedding; folding value
/// biases into an output bias the model does not have (q/k/v biases without <see cref="ModelConfig.UseBias"/>, Qwen 2).
/// <see cref="Applicable"/> gives the steps of a selection that a model accepts.</para>
/// </summary>
public static class WeightProcessing
{
    /// <summary>
    /// Applies the selected steps to <paramref name="model"/> in place and returns the steps this call applied:
    /// <see cref="WeightProcessingOptions.CenterWritingWeights"/> is skipped (and not reported) for RMSNorm or
    /// norm-free models, whose output depends on the residual stream's mean; FoldLn on a norm-free model has
    /// nothing to fold and is reported as applied.
    /// </summary>
    /// <exception cref="InterpException">A selected step cannot be applied to this model (see <see cref="WeightProcessing"/>);
    /// the message names the step and why, and the model is left unchanged.</exception>
    public static WeightProcessingOptions ProcessWeights(this HookedTransformer model, WeightProcessingOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var applied = Selected(model, options);
        if (Refusals(model, applied).FirstOrDefault() is { } refusal) throw new InterpException(refusal);

        using var _ = no_grad();
        if (applied.FoldLn) FoldLayerNorms(model);
        if (applied.CenterWritingWeights) CenterWriting(model);
        if (applied.CenterUnembed) CenterUnembedding(model);
        if (applied.FoldValueBiases) FoldValueBias(model);
        model.Processing = model.Processing.Union(applied);
        return applied;
    }

    /// <summary>
    /// The steps of <paramref name="options"/> that <see cref="ProcessWeights"/> would apply to <paramref name="model"/>
    /// without refusing (and without the skipped ones), as TransformerLens's <c>from_pretrained</c> drops the steps a
    /// model does not support: e.g. <c>model.Applicable(WeightProcessingOptions.Default)</c> for Gemma 2 leaves out
    /// centring the unembedding (its logits are soft-capped) and centring the writing weights (RMSNorm).
    /// </summary>
    public static WeightProcessingOptions Applicable(this HookedTransformer model, WeightProcessingOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var selected = Selected(model, options);
        return new WeightProcessingOptions
        {
            FoldLn = selected.FoldLn && FoldLnRefusal(model) is null,
            CenterWritingWeights = selected.CenterWritingWeights && CenterWritingRefusal(model) is null,
            CenterUnembed = selected.CenterUnembed && CenterUnembedRefusal(model) is null,
            FoldValueBiases = selected.FoldValueBiases && FoldValueBiasRefusal(model) is null,
        };
    }

    /// <summary>The selected steps less the skipped one: centring the writing weights only for LayerNorm models.</summary>
    private static WeightProcessingOptions Selected(HookedTransformer model, WeightProcessingOptions options) =>
        options with { CenterWritingWeights = options.CenterWritingWeights && model.Config.Norm == NormKind.LayerNorm };

    /// <summary>Why each selected step cannot be applied, in the order the steps run.</summary>
    private static IEnumerable<string> Refusals(HookedTransformer model, WeightProcessingOptions applied)
    {
        if (applied.FoldLn && FoldLnRefusal(model) is { } fold) yield return fold;
        if (applied.CenterWritingWeights && CenterWritingRefusal(model) is { } writing) yield return writing;
        if (applied.CenterUnembed && CenterUnembedRefusal(model) is { } unembed) yield return unembed;
        if (applied.FoldValueBiases && FoldValueBiasRefusal(model) is { } values) yield return values;
    }

    /// <summary>
    /// Why the norms cannot be folded: post-norm blocks, a masked-LM head, a final norm that is the output, or a
    /// LayerNorm shift that would have to be folded into a bias the model does not have; null when they can.
    /// </summary>
    private static string? FoldLnRefusal(HookedTransformer model)
    {
        var cfg = model.Config;
        if (cfg.Norm == NormKind.None) return null;
        string who = PassChecks.Describe(cfg);
        if (cfg.Block == BlockKind.PostNorm)
            return $"Cannot fold the norms (FoldLn) of {who}: its blocks are post-norm, so ln1's output is both the MLP's input and part of the residual " +
                "stream (resid_post = ln1(resid_mid) + mlp(ln1(resid_mid))) and ln2's is both the next block's input and its residual stream: a norm's " +
                "gain and shift cannot move into the weights that read it. Leave FoldLn off for this model.";
        if (model.MlmHead is not null)
            return $"Cannot fold the norms (FoldLn) of {who}: its masked-LM head reads ln_final's output through a dense layer and an activation before W_U. Leave FoldLn off.";
        if (model.LnFinal is not null && model.UnembedOrNull is null)
            return $"Cannot fold the norms (FoldLn) of {who}: ln_final's output is the model's output (it has no unembedding to fold it into). Leave FoldLn off.";
        if (cfg.Norm != NormKind.LayerNorm) return null; // RMSNorm has no shift to fold
        foreach (var (name, norm, gated) in Norms(model))
        {
            if (!IsNonZero(norm.B)) continue;
            if (!cfg.UseBias)
                return $"Cannot fold {name}.b: the model has no biases (UseBias = false), so ln.b·W has nowhere to go; " +
                    "fold only models whose LayerNorm shifts are zero, or leave FoldLn off.";
            if (gated)
                return $"Cannot fold {name}.b into a gated MLP: W_gate has no bias to receive ln.b·W_gate; leave FoldLn off for this model.";
        }
        return null;
    }

    /// <summary>Why the writing weights cannot be centred (a LayerNorm model whose stream they do not write), or null.</summary>
    private static string? CenterWritingRefusal(HookedTransformer model)
    {
        var cfg = model.Config;
        string who = PassChecks.Describe(cfg);
        if (cfg.Block == BlockKind.PostNorm)
            return $"Cannot centre the writing weights (CenterWritingWeights) of {who}: its blocks are post-norm, so the stream each block passes on is " +
                "ln2's output, which W_E, W_O and W_out do not write: centring them cannot centre the residual stream. Leave CenterWritingWeights off.";
        if (PassChecks.NormalisesAttentionOutput(cfg))
            return $"Cannot centre the writing weights (CenterWritingWeights) of {who}: ln1_post and ln2_post normalise attention's and the MLP's outputs " +
                "before they join the stream, so the stream is written by those norms, not by W_O and W_out, and centring these is meaningless. Leave CenterWritingWeights off.";
        return null;
    }

    /// <summary>Why the unembedding cannot be centred (none, or soft-capped logits), or null.</summary>
    private static string? CenterUnembedRefusal(HookedTransformer model)
    {
        var cfg = model.Config;
        string who = PassChecks.Describe(cfg);
        if (model.UnembedOrNull is null)
            return $"Cannot centre the unembedding (CenterUnembed) of {who}: it has none (its output is its last hidden state). Leave CenterUnembed off.";
        if (cfg.OutputLogitsSoftCap > 0)
            return $"Cannot centre the unembedding (CenterUnembed) of {who}: its logits are soft-capped (c·tanh(l/c), c = {cfg.OutputLogitsSoftCap:G}), and the cap " +
                "does not commute with shifting a position's logits by a constant, so centring W_U would change the output distribution. Leave CenterUnembed off.";
        return null;
    }

    /// <summary>Why the value biases cannot be folded (q/k/v biases but no output bias to receive them), or null.</summary>
    private static string? FoldValueBiasRefusal(HookedTransformer model)
    {
        var cfg = model.Config;
        if (cfg.UseBias || !cfg.QkvBias || !model.Blocks.Any(b => IsNonZero(b.Attn.b_V))) return null;
        return $"Cannot fold the value biases (FoldValueBiases) of {PassChecks.Describe(cfg)}: it has q/k/v biases but no output bias (QkvBias without UseBias: " +
            "b_O is a fixed zero that is not saved), so b_V·W_O has nowhere to go. Leave FoldValueBiases off.";
    }

    /// <summary>Every norm with its TransformerLens name and whether a gated MLP reads it.</summary>
    private static IEnumerable<(string Name, Norm Norm, bool Gated)> Norms(HookedTransformer model)
    {
        for (int l = 0; l < model.Blocks.Count; l++)
        {
            var block = model.Blocks[l];
            if (block.Ln1 is not null) yield return ($"blocks.{l}.ln1", block.Ln1, false);
            if (block.Ln2 is not null) yield return ($"blocks.{l}.ln2", block.Ln2, block.Mlp?.W_gate is not null);
        }
        if (model.LnFinal is not null) yield return ("ln_final", model.LnFinal, false);
    }

    private static bool IsNonZero(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.ne(Scalars.Zero).any().item<bool>();
    }

    private static void FoldLayerNorms(HookedTransformer model)
    {
        var cfg = model.Config;
        if (cfg.Norm == NormKind.None) return;
        bool layerNorm = cfg.Norm == NormKind.LayerNorm;
        foreach (var block in model.Blocks)
        {
            using var scope = NewDisposeScope();
            if (block.Ln1 is { } ln1)
            {
                var attn = block.Attn;
                Fold(ln1, attn.W_Q, 1, cfg.UseBias ? attn.b_Q : null, layerNorm);
                Fold(ln1, attn.W_K, 1, cfg.UseBias ? attn.b_K : null, layerNorm);
                Fold(ln1, attn.W_V, 1, cfg.UseBias ? attn.b_V : null, layerNorm);
                ResetNorm(ln1, layerNorm);
            }
            if (block.Ln2 is { } ln2 && block.Mlp is { } mlp)
            {
                Fold(ln2, mlp.W_in, 0, cfg.UseBias ? mlp.b_in : null, layerNorm);
                if (mlp.W_gate is not null) Fold(ln2, mlp.W_gate, 0, null, layerNorm);
                ResetNorm(ln2, layerNorm);
            }
        }
        if (model.LnFinal is { } lnFinal)
        {
            using var scope = NewDisposeScope();
            Fold(lnFinal, model.Unembed.W_U, 0, cfg.UseBias ? model.Unembed.b_U : null, layerNorm);
            ResetNorm(lnFinal, layerNorm);
        }
    }

    /// <summary>
    /// Folds <paramref name="norm"/> into the weight <paramref name="w"/> that reads it along axis
    /// <paramref name="dModelAxis"/>: b += Σ_d ln.b[d]·W[d] (LayerNorm), W ← diag(ln.w)·W, then (LayerNorm) W minus
    /// its mean over d_model, exact because LayerNorm's normalised output has mean zero. A null
    /// <paramref name="bias"/> means there is none; FoldLnRefusal has ensured the shift is then zero.
    /// </summary>
    private static void Fold(Norm norm, Tensor w, int dModelAxis, Tensor? bias, bool layerNorm)
    {
        var shape = Enumerable.Repeat(1L, (int)w.dim()).ToArray();
        shape[dModelAxis] = -1;
        var weight = w.to(ScalarType.Float64);
        if (layerNorm && bias is not null)
            bias.copy_(bias.to(ScalarType.Float64).add((weight * norm.B.to(ScalarType.Float64).view(shape)).sum(dModelAxis), Scalars.One));
        weight = weight * norm.W.to(ScalarType.Float64).view(shape);
        if (layerNorm) weight = weight - weight.mean([dModelAxis], keepdim: true);
        w.copy_(weight);
    }

    /// <summary>After folding, the norm only normalises: gain one, shift zero (RMSNorm's shift is a fixed zero already).</summary>
    private static void ResetNorm(Norm norm, bool layerNorm)
    {
        norm.W.fill_(Scalars.One);
        if (layerNorm) norm.B.zero_();
    }

    private static void CenterWriting(HookedTransformer model)
    {
        bool biases = model.Config.UseBias;
        using (NewDisposeScope())
        {
            CenterLastAxis(model.Embed.W_E);
            if (model.TokenTypeEmbed is not null) CenterLastAxis(model.TokenTypeEmbed.W_token_type);
            // A sinusoidal table is a derived, unsaved constant: centring it keeps the residual stream centred in
            // this model; a reloaded copy gets the plain table back, which LayerNorm makes equivalent.
            if (model.PosEmbed is not null) CenterLastAxis(model.PosEmbed.W_pos);
        }
        foreach (var block in model.Blocks)
        {
            using var scope = NewDisposeScope();
            CenterLastAxis(block.Attn.W_O);
            if (biases) CenterLastAxis(block.Attn.b_O);
            if (block.Mlp is { } mlp)
            {
                CenterLastAxis(mlp.W_out);
                if (biases) CenterLastAxis(mlp.b_out);
            }
        }
    }

    private static void CenterUnembedding(HookedTransformer model)
    {
        using var scope = NewDisposeScope();
        CenterLastAxis(model.Unembed.W_U);
        if (model.Config.UseBias) CenterLastAxis(model.Unembed.b_U);
    }

    /// <summary>t ← t − mean(t) over its last axis (d_model for writing weights, the vocabulary for W_U).</summary>
    private static void CenterLastAxis(Tensor t)
    {
        var x = t.to(ScalarType.Float64);
        t.copy_(x - x.mean([-1], keepdim: true));
    }

    /// <summary>
    /// b_O += Σ_h b_V[kv(h)]·W_O[h], then b_V ← 0; exact because each attention pattern row sums to one, so the
    /// value bias reaches the output unchanged. Query head h reads key/value head h / (n_heads / n_kv_heads).
    /// </summary>
    private static void FoldValueBias(HookedTransformer model)
    {
        var cfg = model.Config;
        if (!cfg.UseBias) return; // b_V is a fixed zero (or, FoldValueBiasRefusal has checked, a zero q/k/v bias): nothing to fold
        int group = cfg.NHeads / cfg.KvHeads;
        foreach (var block in model.Blocks)
        {
            using var scope = NewDisposeScope();
            var attn = block.Attn;
            var bV = attn.b_V.to(ScalarType.Float64);
            if (group > 1) bV = bV.repeat_interleave(group, dim: 0); // [head, d_head]
            var shift = einsum("he,hed->d", bV, attn.W_O.to(ScalarType.Float64));
            attn.b_O.copy_(attn.b_O.to(ScalarType.Float64).add(shift, Scalars.One));
            attn.b_V.zero_();
        }
    }
}

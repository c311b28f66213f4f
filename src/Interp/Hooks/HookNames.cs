namespace Interp.Hooks;

/// <summary>
/// Every hook name the toolkit defines, in one place, spelled as TransformerLens spells them.
/// Axis names used in hook shapes: <c>batch</c>, <c>pos</c> (position), <c>d_model</c>, <c>head_index</c>
/// (query heads), <c>kv_head_index</c> (key/value heads; equal to head_index without grouped-query attention),
/// <c>d_head</c>, <c>query_pos</c>, <c>key_pos</c>, <c>d_mlp</c>, <c>one</c> (a kept dimension of size 1).
/// </summary>
public static class HookNames
{
    /// <summary>Token embedding, [batch, pos, d_model].</summary>
    public const string Embed = "hook_embed";
    /// <summary>Positional embedding added to the residual stream, [batch, pos, d_model].</summary>
    public const string PosEmbed = "hook_pos_embed";
    /// <summary>Token-type (segment) embedding added to the residual stream (BERT), [batch, pos, d_model].</summary>
    public const string TokenTypeEmbed = "hook_token_type_embed";
    /// <summary>Module path of the norm after the embeddings (BERT); its output is <c>blocks.0.hook_resid_pre</c>.</summary>
    public const string EmbedNorm = "embed.ln";
    /// <summary>Module path of the masked-LM head's norm (BERT).</summary>
    public const string MlmHeadNorm = "mlm_head.ln";
    /// <summary>The masked-LM head's dense output after its activation, before its norm (BERT), [batch, pos, d_model].</summary>
    public const string MlmHeadPost = "mlm_head.hook_post";
    /// <summary>The embedding norm's scale (BERT), [batch, pos, one].</summary>
    public const string EmbedNormScale = EmbedNorm + "." + ScaleLeaf;
    /// <summary>The embedding norm's output (BERT), [batch, pos, d_model]: blocks.0.hook_resid_pre.</summary>
    public const string EmbedNormNormalized = EmbedNorm + "." + NormalizedLeaf;
    /// <summary>The masked-LM head norm's scale (BERT), [batch, pos, one].</summary>
    public const string MlmHeadNormScale = MlmHeadNorm + "." + ScaleLeaf;
    /// <summary>The masked-LM head norm's output (BERT), [batch, pos, d_model].</summary>
    public const string MlmHeadNormNormalized = MlmHeadNorm + "." + NormalizedLeaf;
    /// <summary>The final norm's scale, [batch, pos, one].</summary>
    public const string LnFinalScale = "ln_final." + ScaleLeaf;
    /// <summary>The final norm's output, [batch, pos, d_model].</summary>
    public const string LnFinalNormalized = "ln_final." + NormalizedLeaf;

    private const string ScaleLeaf = "hook_scale", NormalizedLeaf = "hook_normalized";

    /// <summary>The scale hook of the norm at module path <paramref name="normPath"/> (<c>ln_final</c>, <c>blocks.0.ln1</c>), [batch, pos, one].</summary>
    public static string ScaleOf(string normPath) => $"{normPath}.{ScaleLeaf}";
    /// <summary>The output hook of the norm at module path <paramref name="normPath"/>, [batch, pos, d_model].</summary>
    public static string NormalizedOf(string normPath) => $"{normPath}.{NormalizedLeaf}";

    /// <summary>Prefix of block <paramref name="layer"/>'s hooks: <c>blocks.{layer}.</c></summary>
    public static string Block(int layer) => $"blocks.{layer}.";
    /// <summary>Input of block <paramref name="layer"/>.</summary>
    public static string ResidPre(int layer) => $"blocks.{layer}.hook_resid_pre";
    /// <summary>Residual stream between attention and MLP.</summary>
    public static string ResidMid(int layer) => $"blocks.{layer}.hook_resid_mid";
    /// <summary>Output of block <paramref name="layer"/>.</summary>
    public static string ResidPost(int layer) => $"blocks.{layer}.hook_resid_post";
    /// <summary>Post-norm blocks (BERT): ln1 of resid_mid, the MLP's input, [batch, pos, d_model].</summary>
    public static string NormalizedResidMid(int layer) => $"blocks.{layer}.hook_normalized_resid_mid";
    /// <summary>Post-norm blocks (BERT): ln2 of resid_post, the block's output and the next block's resid_pre, [batch, pos, d_model].</summary>
    public static string NormalizedResidPost(int layer) => $"blocks.{layer}.hook_normalized_resid_post";
    /// <summary>Attention output written to the residual stream, [batch, pos, d_model].</summary>
    public static string AttnOut(int layer) => $"blocks.{layer}.hook_attn_out";
    /// <summary>MLP output written to the residual stream, [batch, pos, d_model].</summary>
    public static string MlpOut(int layer) => $"blocks.{layer}.hook_mlp_out";
    /// <summary>
    /// A norm's scale: <paramref name="norm"/> is <c>ln1</c> or <c>ln2</c>, Gemma 2's <c>ln1_post</c> or <c>ln2_post</c>, or
    /// Qwen 3's per-head <c>attn.q_norm</c> or <c>attn.k_norm</c> ([batch, pos, head_index, one] for those).
    /// </summary>
    public static string Scale(int layer, string norm) => ScaleOf($"blocks.{layer}.{norm}");
    /// <summary>A norm's output: <paramref name="norm"/> as for <see cref="Scale"/>.</summary>
    public static string Normalized(int layer, string norm) => NormalizedOf($"blocks.{layer}.{norm}");
    /// <summary>Queries, [batch, pos, head_index, d_head].</summary>
    public static string Q(int layer) => Attn(layer, "hook_q");
    /// <summary>Keys, [batch, pos, kv_head_index, d_head].</summary>
    public static string K(int layer) => Attn(layer, "hook_k");
    /// <summary>Values, [batch, pos, kv_head_index, d_head].</summary>
    public static string V(int layer) => Attn(layer, "hook_v");
    /// <summary>Rotated queries (rotary models only).</summary>
    public static string RotQ(int layer) => Attn(layer, "hook_rot_q");
    /// <summary>Rotated keys (rotary models only).</summary>
    public static string RotK(int layer) => Attn(layer, "hook_rot_k");
    /// <summary>Masked, scaled attention scores, [batch, head_index, query_pos, key_pos].</summary>
    public static string AttnScores(int layer) => Attn(layer, "hook_attn_scores");
    /// <summary>Attention pattern after softmax, [batch, head_index, query_pos, key_pos].</summary>
    public static string Pattern(int layer) => Attn(layer, "hook_pattern");
    /// <summary>Pattern-weighted values, [batch, pos, head_index, d_head].</summary>
    public static string Z(int layer) => Attn(layer, ZLeaf);

    private const string ZLeaf = "hook_z";
    /// <summary>Each head's own write into the residual stream, [batch, pos, head_index, d_model]; computed only when used.</summary>
    public static string Result(int layer) => Attn(layer, "hook_result");
    /// <summary>
    /// Split inputs only (<c>HookedTransformer.UseSplitInputs</c>, TransformerLens's <c>use_split_qkv_input</c>): each
    /// query head's own copy of resid_pre, before ln1, [batch, pos, head_index, d_model].
    /// </summary>
    public static string QInput(int layer) => $"blocks.{layer}.hook_q_input";
    /// <summary>Split inputs only: each key head's own copy of resid_pre, before ln1, [batch, pos, kv_head_index, d_model].</summary>
    public static string KInput(int layer) => $"blocks.{layer}.hook_k_input";
    /// <summary>Split inputs only: each value head's own copy of resid_pre, before ln1, [batch, pos, kv_head_index, d_model].</summary>
    public static string VInput(int layer) => $"blocks.{layer}.hook_v_input";
    /// <summary>
    /// Split inputs only (TransformerLens's <c>use_hook_mlp_in</c>): the MLP's own copy of its input before ln2 (resid_mid,
    /// or resid_pre in a parallel block), [batch, pos, d_model].
    /// </summary>
    public static string MlpIn(int layer) => $"blocks.{layer}.hook_mlp_in";
    /// <summary>MLP pre-activation (the gate's, for gated MLPs), [batch, pos, d_mlp].</summary>
    public static string MlpPre(int layer) => $"blocks.{layer}.mlp.hook_pre";
    /// <summary>Gated MLPs only: the linear (non-gate) input, [batch, pos, d_mlp].</summary>
    public static string MlpPreLinear(int layer) => $"blocks.{layer}.mlp.hook_pre_linear";
    /// <summary>MLP post-activation, [batch, pos, d_mlp].</summary>
    public static string MlpPost(int layer) => $"blocks.{layer}.mlp.hook_post";

    /// <summary>The layer of a per-layer hook name <c>blocks.{layer}.…</c>, or null for any other name.</summary>
    public static int? LayerOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        const string blocks = "blocks.";
        if (!name.StartsWith(blocks, StringComparison.Ordinal)) return null;
        int dot = name.IndexOf('.', blocks.Length);
        return dot > blocks.Length && int.TryParse(name.AsSpan(blocks.Length, dot - blocks.Length), System.Globalization.NumberStyles.None, null, out int layer)
            ? layer : null;
    }

    /// <summary>
    /// True when <paramref name="name"/> is the hook that <paramref name="perLayer"/> names for the name's own layer,
    /// e.g. <c>HookNames.Is(name, HookNames.Pattern)</c> for every layer's <c>hook_pattern</c>: the way to filter hooks
    /// by kind without spelling their names.
    /// </summary>
    public static bool Is(string name, Func<int, string> perLayer) => LayerOf(name) is int layer && name == perLayer(layer);

    /// <summary>The short names <see cref="ActName"/> expands.</summary>
    public static IReadOnlyList<string> ShortNames { get; } =
    [
        "embed", "pos_embed", "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v", "rot_q", "rot_k",
        "attn_scores", "attn", "pattern", "z", "result", "pre", "mlp_pre", "pre_linear", "post", "mlp_post", "scale", "normalized",
    ];

    private static string Attn(int layer, string hook) => $"blocks.{layer}.attn.{hook}";

    /// <summary>
    /// TransformerLens's <c>get_act_name</c>: expands a short name such as <c>resid_pre</c>, <c>pattern</c>,
    /// <c>q</c>, <c>result</c>, <c>mlp_out</c> or <c>scale</c> with a layer into the full hook name.
    /// <paramref name="norm"/> picks <c>ln1</c>/<c>ln2</c> for <c>scale</c> and <c>normalized</c> (<c>ln_final</c> without a layer).
    /// </summary>
    public static string ActName(string shortName, int? layer = null, string? norm = null)
    {
        if (shortName.Contains('.') || shortName.StartsWith("hook_", StringComparison.Ordinal)) return shortName;
        if (layer is null)
        {
            return shortName switch
            {
                "embed" => Embed,
                "pos_embed" => PosEmbed,
                "scale" => LnFinalScale,
                "normalized" => LnFinalNormalized,
                _ when ShortNames.Contains(shortName) => throw new HookException(shortName, "this short name needs a layer"),
                _ => throw new HookException(shortName, $"unknown short hook name. Did you mean: {string.Join(", ", NameSuggestions.Closest(shortName, ShortNames))}?"),
            };
        }
        int l = layer.Value;
        return shortName switch
        {
            "resid_pre" => ResidPre(l),
            "resid_mid" => ResidMid(l),
            "resid_post" => ResidPost(l),
            "attn_out" => AttnOut(l),
            "mlp_out" => MlpOut(l),
            "q" => Q(l), "k" => K(l), "v" => V(l),
            "rot_q" => RotQ(l), "rot_k" => RotK(l),
            "attn_scores" or "attn" => AttnScores(l),
            "pattern" => Pattern(l),
            "z" => Z(l),
            "result" => Result(l),
            "pre" or "mlp_pre" => MlpPre(l),
            "pre_linear" => MlpPreLinear(l),
            "post" or "mlp_post" => MlpPost(l),
            "scale" => Scale(l, norm ?? "ln1"),
            "normalized" => Normalized(l, norm ?? "ln1"),
            _ => throw new HookException(shortName, $"unknown short hook name. Did you mean: {string.Join(", ", NameSuggestions.Closest(shortName, ShortNames))}?"),
        };
    }
    /// <summary>
    /// The hook points of a recurrent model (<c>HookedLstm</c>): layer <c>l</c>'s gates, cell state and hidden state at
    /// each step, <c>lstm.{l}.hook_…</c>, [batch, pos, d_hidden] once cached. The recurrence runs one position at a time,
    /// so a hook function sees [batch, 1, d_hidden] per call, position by position.
    /// </summary>
    public static class Lstm
    {
        /// <summary>Input gate i_t = σ(W_ii x_t + b_ii + W_hi h_{t−1} + b_hi).</summary>
        public static string InputGate(int layer) => $"lstm.{layer}.hook_input_gate";
        /// <summary>Forget gate f_t = σ(W_if x_t + b_if + W_hf h_{t−1} + b_hf).</summary>
        public static string ForgetGate(int layer) => $"lstm.{layer}.hook_forget_gate";
        /// <summary>Cell candidate g_t = tanh(W_ig x_t + b_ig + W_hg h_{t−1} + b_hg): what the input gate lets in.</summary>
        public static string CellCandidate(int layer) => $"lstm.{layer}.hook_cell_candidate";
        /// <summary>Output gate o_t = σ(W_io x_t + b_io + W_ho h_{t−1} + b_ho).</summary>
        public static string OutputGate(int layer) => $"lstm.{layer}.hook_output_gate";
        /// <summary>Cell state c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t: the long-term memory.</summary>
        public static string Cell(int layer) => $"lstm.{layer}.hook_cell";
        /// <summary>Hidden state h_t = o_t ⊙ tanh(c_t): what the layer passes on (to the next layer, the next step and the unembedding).</summary>
        public static string Hidden(int layer) => $"lstm.{layer}.hook_hidden";
    }

    /// <summary>
    /// The hook points inside a sparse autoencoder spliced in at a model hook point (SAELens's
    /// <c>HookedSAETransformer.add_sae</c>): <c>{hookName}.{leaf}</c>.
    /// </summary>
    public static class SaeLeaf
    {
        /// <summary>The SAE's input, before any normalization, [..., d_in].</summary>
        public const string Input = "hook_sae_input";
        /// <summary>The encoder pre-activation, [..., d_sae].</summary>
        public const string ActsPre = "hook_sae_acts_pre";
        /// <summary>The feature activations, [..., d_sae].</summary>
        public const string ActsPost = "hook_sae_acts_post";
        /// <summary>The decoder output before de-normalization, [..., d_in].</summary>
        public const string Recons = "hook_sae_recons";
        /// <summary>Input minus reconstruction (only with the error term), [..., d_in].</summary>
        public const string Error = "hook_sae_error";
        /// <summary>What the model continues from, [..., d_in].</summary>
        public const string Output = "hook_sae_output";
        /// <summary>SAELens's <c>reshape_activations</c> value for an SAE that reads attention <see cref="Z"/> (its last name part).</summary>
        public const string ReshapeHookZ = ZLeaf;

        /// <summary>The full name of SAE hook <paramref name="leaf"/> for an SAE at <paramref name="hookName"/>.</summary>
        public static string Of(string hookName, string leaf) => $"{hookName}.{leaf}";

        /// <summary>True when <paramref name="name"/> is SAE hook <paramref name="leaf"/> of an SAE at some hook point.</summary>
        public static bool IsLeaf(string name, string leaf)
        {
            ArgumentNullException.ThrowIfNull(name);
            return name.Length > leaf.Length + 1 && name.EndsWith(leaf, StringComparison.Ordinal) && name[^(leaf.Length + 1)] == '.';
        }
    }
}

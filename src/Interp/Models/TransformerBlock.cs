using Interp.Hooks;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// One block of a <see cref="HookedTransformer"/>: attention and (usually) an MLP joined to the residual stream the way
/// the config's <see cref="BlockKind"/> says. <see cref="Create"/> picks the variant: <see cref="PreNormBlock"/>,
/// <see cref="ParallelBlock"/> or <see cref="PostNormBlock"/>. Every variant starts with <c>hook_resid_pre</c> and
/// returns what the next block reads.
/// </summary>
public abstract class TransformerBlock : Component
{
    /// <summary>The norm before attention (pre-norm), or after attention's residual sum (post-norm); null without normalisation.</summary>
    public Norm? Ln1 { get; }
    /// <summary>The attention layer.</summary>
    public Attention Attn { get; }
    /// <summary>The norm before the MLP (pre-norm), or at the block's end (post-norm); null without normalisation or MLP.</summary>
    public Norm? Ln2 { get; }
    /// <summary>The MLP (null for attention-only models).</summary>
    public Mlp? Mlp { get; }

    /// <summary>Input of the block, [batch, pos, d_model].</summary>
    protected HookPoint ResidPre { get; }
    /// <summary>Attention's write into the residual stream.</summary>
    protected HookPoint AttnOut { get; }
    /// <summary>The MLP's write (null without an MLP).</summary>
    protected HookPoint? MlpOut { get; }

    /// <summary>The split-input hooks (q, k, v inputs and the MLP's input; null for post-norm blocks and without an MLP).</summary>
    private protected HookPoint? QInput, KInput, VInput, MlpIn;

    /// <summary>
    /// True while the block lists and runs its split-input hooks (<see cref="HookedTransformer.UseSplitInputs"/>). They
    /// cost nothing until a hook is attached to one of them.
    /// </summary>
    internal bool SplitInputs { get; set; }

    /// <summary>Declares the split-input hooks (pre-norm and parallel blocks).</summary>
    private protected void DeclareSplitInputs(int layer)
    {
        QInput = new HookPoint(HookNames.QInput(layer), "batch", "pos", "head_index", "d_model");
        KInput = new HookPoint(HookNames.KInput(layer), "batch", "pos", "kv_head_index", "d_model");
        VInput = new HookPoint(HookNames.VInput(layer), "batch", "pos", "kv_head_index", "d_model");
        if (Mlp is not null) MlpIn = new HookPoint(HookNames.MlpIn(layer), "batch", "pos", "d_model");
    }

    /// <summary>The q, k and v input hooks while split inputs are on (forward order), else nothing.</summary>
    private protected IEnumerable<HookPoint> AttentionInputHooks() =>
        SplitInputs && QInput is not null ? [QInput, KInput!, VInput!] : [];

    /// <summary>The MLP input hook while split inputs are on, else nothing.</summary>
    private protected IEnumerable<HookPoint> MlpInputHooks() => SplitInputs && MlpIn is not null ? [MlpIn] : [];

    /// <summary>
    /// Attention of a pre-norm block on resid_pre [batch, pos, d_model] → its output [batch, pos, d_model]: through the
    /// split inputs (each head its own copy of resid_pre, normalised by ln1 on its own) while one of their hooks is
    /// active, otherwise ln1 then attention.
    /// </summary>
    private protected Tensor PreNormAttention(Tensor residPre, AttentionContext context)
    {
        if (SplitInputs && QInput is not null && (QInput.IsActive || KInput!.IsActive || VInput!.IsActive))
            return Attn.ForwardSplit(residPre, Ln1, QInput, KInput!, VInput!, context);
        return Attn.forward(Ln1 is null ? residPre : Ln1.forward(residPre), context);
    }

    /// <summary>The MLP's input [batch, pos, d_model] (before ln2) through <c>hook_mlp_in</c> while split inputs are on.</summary>
    private protected Tensor MlpInput(Tensor input) => SplitInputs && MlpIn is { IsActive: true } ? MlpIn.Run(input) : input;

    /// <summary>Creates the parts every variant has.</summary>
    protected TransformerBlock(ModelConfig cfg, int layer) : base($"block{layer}", HookNames.Block(layer))
    {
        bool norm = cfg.Norm != NormKind.None;
        if (norm) register_module("ln1", Ln1 = new Norm(cfg, Prefix + "ln1."));
        register_module("attn", Attn = new Attention(cfg, layer));
        if (!cfg.AttentionOnly)
        {
            if (norm) register_module("ln2", Ln2 = new Norm(cfg, Prefix + "ln2."));
            register_module("mlp", Mlp = new Mlp(cfg, layer));
        }
        ResidPre = Declare(HookNames.ResidPre(layer), "batch", "pos", "d_model");
        AttnOut = Declare(HookNames.AttnOut(layer), "batch", "pos", "d_model");
        if (Mlp is not null) MlpOut = Declare(HookNames.MlpOut(layer), "batch", "pos", "d_model");
    }

    /// <summary>Block <paramref name="layer"/> of the variant <paramref name="cfg"/> asks for.</summary>
    public static TransformerBlock Create(ModelConfig cfg, int layer) => cfg.Block switch
    {
        BlockKind.PreNorm => new PreNormBlock(cfg, layer),
        BlockKind.Parallel => new ParallelBlock(cfg, layer),
        BlockKind.PostNorm => new PostNormBlock(cfg, layer),
        _ => throw new ArgumentOutOfRangeException(nameof(cfg), cfg.Block, "unknown block kind"),
    };

    /// <summary>The block's layer index.</summary>
    public int Layer => HookNames.LayerOf(ResidPre.Name)!.Value;

    /// <summary>True when the block has <c>hook_resid_mid</c> and <see cref="ForwardFromMid"/>.</summary>
    public abstract bool HasResidMid { get; }

    /// <summary>resid_pre [batch, pos, d_model] → the next block's input [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor x) => forward(x, AttentionContext.None);

    /// <summary>resid_pre [batch, pos, d_model] → the next block's input, attention following <paramref name="context"/>.</summary>
    public abstract Tensor forward(Tensor x, AttentionContext context);

    /// <summary>
    /// The MLP half: resid_mid [batch, pos, d_model] (entering as <c>hook_resid_mid</c>) → the next block's input. Only
    /// for blocks that have a resid_mid (<see cref="HasResidMid"/>).
    /// </summary>
    public abstract Tensor ForwardFromMid(Tensor residMid);

    /// <summary>The error for a block without resid_mid.</summary>
    protected InvalidOperationException NoResidMid(string why) => new($"{Prefix}: {why} has no resid_mid");
}

/// <summary>
/// Pre-norm, sequential: resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))
/// (GPT-2, LLaMA and its descendants). With <see cref="ModelConfig.NormAfterSublayers"/> (Gemma 2) each sublayer's
/// output is normalised again (<c>ln1_post</c>, <c>ln2_post</c>) before it joins the stream, and <c>hook_attn_out</c> /
/// <c>hook_mlp_out</c> are taken after those norms, as in TransformerLens. Attention-only blocks have no MLP, no ln2
/// and no resid_mid: resid_post = resid_pre + attn_out.
/// </summary>
public sealed class PreNormBlock : TransformerBlock
{
    private readonly HookPoint? _residMid;
    private readonly HookPoint _residPost;

    /// <summary>Gemma 2's norm on attention's output (null otherwise).</summary>
    public Norm? Ln1Post { get; }
    /// <summary>Gemma 2's norm on the MLP's output (null otherwise).</summary>
    public Norm? Ln2Post { get; }

    /// <summary>Creates block <paramref name="layer"/>.</summary>
    public PreNormBlock(ModelConfig cfg, int layer) : base(cfg, layer)
    {
        if (cfg.NormAfterSublayers && cfg.Norm != NormKind.None)
        {
            register_module("ln1_post", Ln1Post = new Norm(cfg, Prefix + "ln1_post."));
            if (Mlp is not null) register_module("ln2_post", Ln2Post = new Norm(cfg, Prefix + "ln2_post."));
        }
        if (Mlp is not null) _residMid = Declare(HookNames.ResidMid(layer), "batch", "pos", "d_model");
        _residPost = Declare(HookNames.ResidPost(layer), "batch", "pos", "d_model");
        DeclareSplitInputs(layer);
    }

    /// <inheritdoc />
    public override bool HasResidMid => _residMid is not null;

    /// <inheritdoc />
    public override IEnumerable<HookPoint> HookPoints
    {
        get
        {
            // Forward order, so that listings read like the computation.
            yield return ResidPre;
            foreach (var h in AttentionInputHooks()) yield return h;
            if (Ln1 is not null) foreach (var h in Ln1.HookPoints) yield return h;
            foreach (var h in Attn.HookPoints) yield return h;
            if (Ln1Post is not null) foreach (var h in Ln1Post.HookPoints) yield return h;
            yield return AttnOut;
            if (_residMid is not null) yield return _residMid;
            foreach (var h in MlpInputHooks()) yield return h;
            if (Ln2 is not null) foreach (var h in Ln2.HookPoints) yield return h;
            if (Mlp is not null) foreach (var h in Mlp.HookPoints) yield return h;
            if (Ln2Post is not null) foreach (var h in Ln2Post.HookPoints) yield return h;
            if (MlpOut is not null) yield return MlpOut;
            yield return _residPost;
        }
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x, AttentionContext context)
    {
        var residPre = ResidPre.Run(x);
        var attn = PreNormAttention(residPre, context);
        var attnOut = AttnOut.Run(Ln1Post is null ? attn : Ln1Post.forward(attn));
        var residMid = residPre.add(attnOut, Scalars.One);
        return Mlp is null ? _residPost.Run(residMid) : ForwardFromMid(residMid);
    }

    /// <inheritdoc />
    public override Tensor ForwardFromMid(Tensor residMid)
    {
        if (Mlp is null) throw NoResidMid("an attention-only block");
        residMid = _residMid!.Run(residMid);
        var mlpIn = MlpInput(residMid);
        var mlp = Mlp.forward(Ln2 is null ? mlpIn : Ln2.forward(mlpIn));
        var mlpOut = MlpOut!.Run(Ln2Post is null ? mlp : Ln2Post.forward(mlp));
        return _residPost.Run(residMid.add(mlpOut, Scalars.One));
    }
}

/// <summary>
/// Pre-norm, parallel (GPT-NeoX with <c>use_parallel_residual</c>, GPT-J): attention and MLP both read resid_pre,
/// resid_post = resid_pre + attn(ln1(resid_pre)) + mlp(ln2(resid_pre)). There is no resid_mid, as in TransformerLens.
/// </summary>
public sealed class ParallelBlock : TransformerBlock
{
    private readonly HookPoint _residPost;

    /// <summary>Creates block <paramref name="layer"/>.</summary>
    public ParallelBlock(ModelConfig cfg, int layer) : base(cfg, layer)
    {
        if (Mlp is null) throw new ArgumentException("a parallel block needs an MLP", nameof(cfg));
        _residPost = Declare(HookNames.ResidPost(layer), "batch", "pos", "d_model");
        DeclareSplitInputs(layer);
    }

    /// <inheritdoc />
    public override bool HasResidMid => false;

    /// <inheritdoc />
    public override IEnumerable<HookPoint> HookPoints
    {
        get
        {
            yield return ResidPre;
            foreach (var h in AttentionInputHooks()) yield return h;
            if (Ln1 is not null) foreach (var h in Ln1.HookPoints) yield return h;
            foreach (var h in Attn.HookPoints) yield return h;
            yield return AttnOut;
            foreach (var h in MlpInputHooks()) yield return h;
            if (Ln2 is not null) foreach (var h in Ln2.HookPoints) yield return h;
            foreach (var h in Mlp!.HookPoints) yield return h;
            yield return MlpOut!;
            yield return _residPost;
        }
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x, AttentionContext context)
    {
        var residPre = ResidPre.Run(x);
        var attnOut = AttnOut.Run(PreNormAttention(residPre, context));
        var mlpIn = MlpInput(residPre);
        var mlpOut = MlpOut!.Run(Mlp!.forward(Ln2 is null ? mlpIn : Ln2.forward(mlpIn)));
        return _residPost.Run(residPre.add(attnOut, Scalars.One).add(mlpOut, Scalars.One));
    }

    /// <inheritdoc />
    public override Tensor ForwardFromMid(Tensor residMid) => throw NoResidMid("a parallel block (attention and MLP both read resid_pre)");
}

/// <summary>
/// Post-norm (BERT, TransformerLens's BertBlock): resid_mid = resid_pre + attn(resid_pre); n = ln1(resid_mid)
/// (<c>hook_normalized_resid_mid</c>); resid_post = n + mlp(n); the output is ln2(resid_post)
/// (<c>hook_normalized_resid_post</c>), which is the next block's resid_pre.
/// </summary>
public sealed class PostNormBlock : TransformerBlock
{
    private readonly HookPoint _residMid, _normalizedMid, _residPost, _normalizedPost;

    /// <summary>Creates block <paramref name="layer"/>.</summary>
    public PostNormBlock(ModelConfig cfg, int layer) : base(cfg, layer)
    {
        if (Mlp is null || Ln1 is null) throw new ArgumentException("a post-norm block needs a norm and an MLP", nameof(cfg));
        _residMid = Declare(HookNames.ResidMid(layer), "batch", "pos", "d_model");
        _normalizedMid = Declare(HookNames.NormalizedResidMid(layer), "batch", "pos", "d_model");
        _residPost = Declare(HookNames.ResidPost(layer), "batch", "pos", "d_model");
        _normalizedPost = Declare(HookNames.NormalizedResidPost(layer), "batch", "pos", "d_model");
    }

    /// <inheritdoc />
    public override bool HasResidMid => true;

    /// <inheritdoc />
    public override IEnumerable<HookPoint> HookPoints
    {
        get
        {
            yield return ResidPre;
            foreach (var h in Attn.HookPoints) yield return h;
            yield return AttnOut;
            yield return _residMid;
            foreach (var h in Ln1!.HookPoints) yield return h;
            yield return _normalizedMid;
            foreach (var h in Mlp!.HookPoints) yield return h;
            yield return MlpOut!;
            yield return _residPost;
            foreach (var h in Ln2!.HookPoints) yield return h;
            yield return _normalizedPost;
        }
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x, AttentionContext context)
    {
        var residPre = ResidPre.Run(x);
        var attnOut = AttnOut.Run(Attn.forward(residPre, context));
        return ForwardFromMid(residPre.add(attnOut, Scalars.One));
    }

    /// <inheritdoc />
    public override Tensor ForwardFromMid(Tensor residMid)
    {
        residMid = _residMid.Run(residMid);
        var normalized = _normalizedMid.Run(Ln1!.forward(residMid));
        var mlpOut = MlpOut!.Run(Mlp!.forward(normalized));
        var residPost = _residPost.Run(normalized.add(mlpOut, Scalars.One));
        return _normalizedPost.Run(Ln2!.forward(residPost));
    }
}

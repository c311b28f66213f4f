using Interp.Hooks;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// One pre-norm block: resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid)).
/// Attention-only blocks have no MLP, no ln2 and no resid_mid: resid_post = resid_pre + attn_out.
/// </summary>
public sealed class TransformerBlock : Component
{
    private readonly HookPoint _residPre, _attnOut, _residPost;
    private readonly HookPoint? _residMid, _mlpOut;

    /// <summary>The norm before attention (null without normalisation).</summary>
    public Norm? Ln1 { get; }
    /// <summary>The attention layer.</summary>
    public Attention Attn { get; }
    /// <summary>The norm before the MLP (null without normalisation or MLP).</summary>
    public Norm? Ln2 { get; }
    /// <summary>The MLP (null for attention-only models).</summary>
    public Mlp? Mlp { get; }

    /// <summary>Creates block <paramref name="layer"/>.</summary>
    public TransformerBlock(ModelConfig cfg, int layer) : base($"block{layer}", HookNames.Block(layer))
    {
        bool norm = cfg.Norm != NormKind.None;
        if (norm) register_module("ln1", Ln1 = new Norm(cfg, Prefix + "ln1."));
        register_module("attn", Attn = new Attention(cfg, layer));
        if (!cfg.AttentionOnly)
        {
            if (norm) register_module("ln2", Ln2 = new Norm(cfg, Prefix + "ln2."));
            register_module("mlp", Mlp = new Mlp(cfg, layer));
        }
        _residPre = Declare(HookNames.ResidPre(layer), "batch", "pos", "d_model");
        _attnOut = Declare(HookNames.AttnOut(layer), "batch", "pos", "d_model");
        if (Mlp is not null)
        {
            _residMid = Declare(HookNames.ResidMid(layer), "batch", "pos", "d_model");
            _mlpOut = Declare(HookNames.MlpOut(layer), "batch", "pos", "d_model");
        }
        _residPost = Declare(HookNames.ResidPost(layer), "batch", "pos", "d_model");
    }

    /// <inheritdoc />
    public override IEnumerable<HookPoint> HookPoints
    {
        get
        {
            // Forward order, so that listings read like the computation.
            yield return _residPre;
            if (Ln1 is not null) foreach (var h in Ln1.HookPoints) yield return h;
            foreach (var h in Attn.HookPoints) yield return h;
            yield return _attnOut;
            if (_residMid is not null) yield return _residMid;
            if (Ln2 is not null) foreach (var h in Ln2.HookPoints) yield return h;
            if (Mlp is not null) foreach (var h in Mlp.HookPoints) yield return h;
            if (_mlpOut is not null) yield return _mlpOut;
            yield return _residPost;
        }
    }

    /// <summary>resid_pre [batch, pos, d_model] → resid_post [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor x) => forward(x, null);

    /// <summary>
    /// resid_pre [batch, pos, d_model] → resid_post [batch, pos, d_model], attention kept off the keys that
    /// <paramref name="keyPadding"/> (bool [batch, pos], true at padding; null: none) marks.
    /// </summary>
    public Tensor forward(Tensor x, Tensor? keyPadding)
    {
        var residPre = _residPre.Run(x);
        var attnOut = _attnOut.Run(Attn.forward(Ln1 is null ? residPre : Ln1.forward(residPre), keyPadding));
        var residMid = residPre.add(attnOut, Scalars.One);
        return Mlp is null ? _residPost.Run(residMid) : ForwardFromMid(residMid);
    }

    /// <summary>
    /// The MLP half: resid_mid [batch, pos, d_model] (entering as <c>hook_resid_mid</c>) → resid_post. Only for blocks
    /// with an MLP.
    /// </summary>
    public Tensor ForwardFromMid(Tensor residMid)
    {
        if (Mlp is null) throw new InvalidOperationException($"{Prefix}: an attention-only block has no resid_mid");
        residMid = _residMid!.Run(residMid);
        var mlpOut = _mlpOut!.Run(Mlp.forward(Ln2 is null ? residMid : Ln2.forward(residMid)));
        return _residPost.Run(residMid.add(mlpOut, Scalars.One));
    }
}

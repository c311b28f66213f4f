using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>
/// The direct logit attribution of an SAE's features: what each feature, by writing acts_f · W_dec[f] into the residual
/// stream, adds to a logit (or logit difference) through the final norm and the unembedding, plus the decoder bias's
/// and (with the error term) the error's share. Float64.
/// </summary>
/// <param name="Values">Feature f's contribution at [batch, position, f].</param>
/// <param name="DecoderBias">b_dec's contribution, [batch, position].</param>
/// <param name="Error">The error term's contribution, [batch, position]; null when the SAE was spliced without it.</param>
public sealed record FeatureAttribution(Tensor Values, Tensor DecoderBias, Tensor? Error) : IDisposable
{
    /// <summary>The table <c>sae_feature_dla</c>: (batch, position, feature, value) for the <paramref name="top"/> features
    /// by |value| at each position.</summary>
    public ParquetTable ToTable(int top = 10)
    {
        if (top < 1) throw new ArgumentOutOfRangeException(nameof(top), top, "at least one feature per position");
        using var scope = NewDisposeScope();
        long batch = Values.shape[0], pos = Values.shape[1];
        int k = (int)Math.Min(top, Values.shape[2]);
        var (_, idx) = Values.abs().topk(k, dim: -1);                        // [batch, pos, k]
        var picked = Values.gather(-1, idx);
        var ids = idx.cpu().data<long>().ToArray();
        var vals = picked.cpu().data<double>().ToArray();
        var rows = new ParquetColumns();
        for (long b = 0, i = 0; b < batch; b++)
            for (long p = 0; p < pos; p++)
                for (int r = 0; r < k; r++, i++)
                    rows.Row(("batch", (int)b), (Columns.Position, (int)p), ("feature", (int)ids[i]), (Columns.Value, vals[i]));
        return rows.ToTable();
    }

    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        Values.Dispose();
        DecoderBias.Dispose();
        Error?.Dispose();
    }
}

/// <summary>Direct logit attribution of SAE features (see <see cref="FeatureAttribution"/>).</summary>
public static class SaeAttribution
{
    /// <summary>The hooks <see cref="Attribute"/> reads: the SAE's features and error, and the final norm's scale.</summary>
    public static Func<string, bool> CacheFilter(Sae sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        string acts = HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.ActsPost);
        string error = HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.Error);
        return name => name == acts || name == error || name == HookNames.LnFinalScale;
    }

    /// <summary>
    /// Attributes, at the first n positions, the logit of <paramref name="correct"/> [batch, n] (or, with
    /// <paramref name="wrong"/>, logit(correct) − logit(wrong)) to the features of <paramref name="sae"/>, from a run
    /// with the SAE spliced in whose <paramref name="cache"/> holds <see cref="CacheFilter"/>'s hooks. Feature f at
    /// position p contributes acts_f · ((W_dec[f] − mean W_dec[f]) / s_p ⊙ w)·u for a final LayerNorm of scale s_p and
    /// gain w (RMSNorm: not centred; no norm: neither), u = W_U[:, correct] (− W_U[:, wrong]): TransformerLens's
    /// direct path with the cached scale, as <see cref="HeadAttribution"/> does for heads.
    /// </summary>
    /// <exception cref="InterpException">The SAE does not write the residual stream, the model's logits are not linear in
    /// the stream, a hook is not cached, or the targets do not fit.</exception>
    public static FeatureAttribution Attribute(HookedTransformer model, Sae sae, ActivationCache cache, Tensor correct, Tensor? wrong = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(correct);
        PassChecks.LinearReadout(model, "direct logit attribution of SAE features (SaeAttribution)");
        var cfg = model.Config;
        string site = sae.Config.IsTranscoder ? sae.Config.HookNameOut! : sae.Config.HookName;
        bool writesStream = HookNames.Is(site, HookNames.ResidPre) || HookNames.Is(site, HookNames.ResidMid) || HookNames.Is(site, HookNames.ResidPost)
            || HookNames.Is(site, HookNames.AttnOut) || HookNames.Is(site, HookNames.MlpOut);
        if (!writesStream || sae.Config.DOut != cfg.DModel)
            throw new InterpException($"direct logit attribution of SAE features: the SAE writes {site}, which is not a d_model-wide residual-stream write (resid_pre/mid/post, attn_out, mlp_out)");
        if (PassChecks.NormalisesAttentionOutput(cfg) && HookNames.Is(site, HookNames.AttnOut))
            throw new InterpException($"direct logit attribution of SAE features: {cfg.Name} normalises attention's output before it joins the stream, so {site} is not a direct write");

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var acts = cache[HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.ActsPost)].to(ScalarType.Float64);   // [batch, pos, d_sae]
        long batch = acts.shape[0], pos = acts.shape[1];
        if (correct.dim() != 2 || correct.shape[0] != batch || correct.shape[1] > pos || correct.shape[1] == 0)
            throw new InterpException($"SAE feature attribution: correct tokens must be [batch = {batch}, n ≤ {pos}], got [{string.Join(", ", correct.shape)}]");
        if (wrong is not null && !wrong.shape.SequenceEqual(correct.shape))
            throw new InterpException($"SAE feature attribution: wrong tokens [{string.Join(", ", wrong.shape)}] must have the shape of the correct ones [{string.Join(", ", correct.shape)}]");
        long n = correct.shape[1];
        foreach (var t in wrong is null ? [correct] : new[] { correct, wrong })
        {
            long lo = t.min().item<long>(), hi = t.max().item<long>();
            if (lo < 0 || hi >= cfg.DVocab) throw new InterpException($"SAE feature attribution: token id {(lo < 0 ? lo : hi)} is outside the vocabulary [0, {cfg.DVocab})");
        }
        var device = acts.device;
        var wU = model.Unembed.W_U.detach().to(ScalarType.Float64);                            // [d_model, d_vocab]
        Tensor Cols(Tensor ids) => wU.T.index_select(0, ids.to(ScalarType.Int64, device).reshape(-1)).view(batch, n, cfg.DModel);
        var direction = wrong is null ? Cols(correct) : Cols(correct) - Cols(wrong);          // [batch, n, d_model]
        if (model.LnFinal?.W is { } gain) direction = direction * gain.detach().to(ScalarType.Float64);

        // Each write through the final norm: centred (LayerNorm) and divided by the cached scale, as ApplyLnToStack.
        Tensor Normed(Tensor writes)                                                           // [..., d_model] → same
        {
            var x = cfg.Norm == NormKind.LayerNorm ? writes - writes.mean([-1], keepdim: true) : writes;
            return x;
        }
        Tensor scale = cfg.Norm == NormKind.None ? ones(batch, n, 1, dtype: ScalarType.Float64, device: device)
            : cache[HookNames.LnFinalScale].narrow(1, 0, n).to(ScalarType.Float64);            // [batch, n, 1]
        var decoder = Normed(sae.WDec.to(ScalarType.Float64, device));                          // [d_sae, d_model]
        var perFeature = einsum("bpd,fd->bpf", direction / scale, decoder);                    // [batch, n, d_sae]: one unit of feature f
        var values = acts.narrow(1, 0, n) * perFeature;
        var bias = ((direction / scale) * Normed(sae.BDec.to(ScalarType.Float64, device))).sum(-1);   // [batch, n]
        Tensor? error = null;
        string errorName = HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.Error);
        if (cache.Contains(errorName))
            error = ((direction / scale) * Normed(cache[errorName].narrow(1, 0, n).to(ScalarType.Float64))).sum(-1);
        var result = new FeatureAttribution(values.MoveToOuterDisposeScope(), bias.MoveToOuterDisposeScope(), error?.MoveToOuterDisposeScope());
        return result;
    }
}

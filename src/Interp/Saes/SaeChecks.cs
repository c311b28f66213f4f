using Interp.Hooks;
using Interp.Models;

namespace Interp.Saes;

/// <summary>What the feature-reading passes require of an SAE, each a check that throws an <see cref="InterpException"/> naming the pass.</summary>
internal static class SaeChecks
{
    /// <summary>The hook whose activation the SAE's decoder reconstructs (a transcoder's output hook).</summary>
    public static string WrittenHook(SaeConfig c) => c.IsTranscoder ? c.HookNameOut! : c.HookName;

    /// <summary>
    /// The SAE's decoder writes the residual stream: it reconstructs <c>hook_resid_pre</c>, <c>hook_resid_mid</c>,
    /// <c>hook_resid_post</c>, <c>hook_attn_out</c> or <c>hook_mlp_out</c>, with d_out = d_model.
    /// </summary>
    public static void WritesResidualStream(HookedTransformer model, Sae sae, string what)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        var c = sae.Config;
        string writes = WrittenHook(c);
        bool residual = !c.ReshapeHookZ && (HookNames.Is(writes, HookNames.ResidPre) || HookNames.Is(writes, HookNames.ResidMid)
            || HookNames.Is(writes, HookNames.ResidPost) || HookNames.Is(writes, HookNames.AttnOut) || HookNames.Is(writes, HookNames.MlpOut));
        if (!residual)
            throw new InterpException($"{what} needs an SAE whose decoder writes the residual stream (a block's resid_pre, resid_mid, resid_post, " +
                $"attn_out or mlp_out), but this SAE writes '{writes}': its decoder directions are not directions of the residual stream");
        if (c.DOut != model.Config.DModel)
            throw new InterpException($"{what}: the SAE's decoder writes d_out = {c.DOut}, but the model's residual stream has d_model = {model.Config.DModel}");
        if (HookNames.LayerOf(writes) is not int layer || layer >= model.Config.NLayers)
            throw new InterpException($"{what}: the SAE writes '{writes}', which is not a hook of this model's {model.Config.NLayers} blocks");
    }

    /// <summary>The feature is in [0, d_sae).</summary>
    public static void Feature(Sae sae, int feature)
    {
        if (feature < 0 || feature >= sae.Config.DSae)
            throw new InterpException($"feature {feature} is outside the SAE's features [0, {sae.Config.DSae})");
    }
}

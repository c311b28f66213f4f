using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>
/// A hook that steers with an SAE feature, for <c>model.Hooks(steer.Hook)</c> or <c>RunWithHooks</c> (also during
/// <c>Generate</c>, where it acts on every new token). Owns the tensor or scalar it adds; dispose it after use.
/// </summary>
public sealed class SteeringHook : IDisposable
{
    private readonly Tensor? _direction;
    private readonly Scalar? _value;
    private readonly Tensor? _index;

    private SteeringHook(string name, Tensor? direction, Scalar? value, Tensor? index, string description)
    {
        Name = name;
        _direction = direction;
        _value = value;
        _index = index;
        Description = description;
    }

    /// <summary>The hook point it attaches to.</summary>
    public string Name { get; }

    /// <summary>What it does, e.g. <c>+8 × feature 12 of the SAE at blocks.1.hook_resid_pre</c>.</summary>
    public string Description { get; }

    /// <summary>The hook, as the (name, function) pair the model's hook methods take.</summary>
    public (string Name, HookFunction Hook) Hook => (Name, Run);

    private Tensor? Run(Tensor activation, HookPoint point)
    {
        if (_direction is not null)
        {
            // [d_out] broadcast over the leading axes; for hook_z, [n_heads · d_head] → [n_heads, d_head].
            var direction = activation.shape[^1] == _direction.shape[0] ? _direction : _direction.reshape(activation.shape[^2], activation.shape[^1]);
            direction = direction.to(activation.dtype, activation.device);
            return activation.add(direction, Scalars.One);
        }
        var edited = activation.clone();
        return edited.index_fill_(-1, _index!.to(activation.device), _value!);
    }

    /// <summary>
    /// Adds <paramref name="alpha"/> × feature <paramref name="feature"/>'s decoder direction W_dec[f] to the activation
    /// at the SAE's output hook (its <c>hook_name</c>; a transcoder's <c>hook_name_out</c>) at every position. The SAE
    /// need not be spliced in.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The feature is outside the SAE, or alpha is not finite.</exception>
    public static SteeringHook Steer(Sae sae, int feature, double alpha)
    {
        ArgumentNullException.ThrowIfNull(sae);
        CheckFeature(sae, feature);
        if (!double.IsFinite(alpha)) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "the steering coefficient must be finite");
        using var a = alpha.ToScalar();
        var c = sae.Config;
        var direction = sae.WDec[feature].mul(a).DetachFromDisposeScope();                 // [d_out]
        string site = c.IsTranscoder ? c.HookNameOut! : c.HookName;
        return new SteeringHook(site, direction, null, null,
            $"{(alpha >= 0 ? "+" : "")}{alpha:G4} × feature {feature} of the SAE at {c.HookName}");
    }

    /// <summary>
    /// Sets feature <paramref name="feature"/>'s activation to <paramref name="value"/> at every position (0: zero
    /// ablation), at the spliced SAE's <c>hook_sae_acts_post</c>: splice the SAE in (<c>model.WithSaes</c>, with the
    /// error term to change nothing else) while the hook is attached.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The feature is outside the SAE, or the value is not finite.</exception>
    public static SteeringHook Clamp(Sae sae, int feature, double value)
    {
        ArgumentNullException.ThrowIfNull(sae);
        CheckFeature(sae, feature);
        if (!double.IsFinite(value)) throw new ArgumentOutOfRangeException(nameof(value), value, "the clamped value must be finite");
        return new SteeringHook(HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.ActsPost), null, value.ToScalar(),
            tensor(new long[] { feature }).DetachFromDisposeScope(), $"feature {feature} of the SAE at {sae.Config.HookName} clamped to {value:G4}");
    }

    private static void CheckFeature(Sae sae, int feature)
    {
        if (feature < 0 || feature >= sae.Config.DSae)
            throw new ArgumentOutOfRangeException(nameof(feature), feature, $"the SAE at {sae.Config.HookName} has features 0…{sae.Config.DSae - 1}");
    }

    /// <summary>Frees the direction or value.</summary>
    public void Dispose()
    {
        _direction?.Dispose();
        _value?.Dispose();
        _index?.Dispose();
    }
}

using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Training;

/// <summary>
/// Zeroes attention heads' outputs (<c>hook_z</c>) at random during training, per sequence — a way to shape which
/// heads a model comes to rely on. Dropping heads of a layer makes them redundant (each learns to do the job alone);
/// never dropping one head while dropping its neighbours makes that one indispensable. No rescaling: a kept head's
/// output is unchanged.
/// </summary>
/// <param name="Layer">The layer whose heads may be dropped.</param>
/// <param name="Heads">The heads that may be dropped.</param>
/// <param name="Probability">With <paramref name="OneAtATime"/>, the probability that one of <paramref name="Heads"/>
/// (chosen uniformly) is dropped from a sequence; otherwise each head's own probability of being dropped.</param>
/// <param name="OneAtATime">Drop at most one of the heads per sequence (so the others always remain).</param>
public sealed record HeadDropout(int Layer, int[] Heads, double Probability, bool OneAtATime)
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the layer, head or probability that does not fit <paramref name="config"/>.</summary>
    public void Validate(ModelConfig config)
    {
        if (Layer < 0 || Layer >= config.NLayers)
            throw new ArgumentException($"head dropout: layer {Layer} is outside the model's {config.NLayers} layers");
        if (Heads.Length == 0 || Heads.Any(h => h < 0 || h >= config.NHeads))
            throw new ArgumentException($"head dropout: heads [{string.Join(", ", Heads)}] of layer {Layer} must be among the model's {config.NHeads} heads");
        if (!(Probability is >= 0 and <= 1))
            throw new ArgumentException($"head dropout: probability {Probability} of layer {Layer} must be in [0, 1]");
    }

    /// <summary>The hook that applies this dropout, drawing from <paramref name="generator"/>.</summary>
    public (string Name, HookFunction Hook) ToHook(Generator generator) => (HookNames.Z(Layer), (z, _) =>
    {
        long batch = z.shape[0], heads = z.shape[2];
        var keep = ones([batch, heads], dtype: z.dtype, device: z.device);
        using Scalar p = Probability.ToScalar(), k = Heads.Length.ToScalar(), last = (Heads.Length - 1).ToScalar();
        if (OneAtATime)
        {
            // u < p drops head Heads[⌊u/p·k⌋]: one uniform draw per sequence decides both whether and which.
            var u = rand([batch], generator: generator);
            var which = u.div(p).mul(k).floor().clamp_max(last);
            for (int i = 0; i < Heads.Length; i++)
            {
                using var index = i.ToScalar();
                keep.select(1, Heads[i]).fill_(Scalars.One).sub_(u.lt(p).bitwise_and(which.eq(index)).to(z.dtype));   // 1 − dropped
            }
        }
        else
        {
            var u = rand([batch, Heads.Length], generator: generator);
            for (int i = 0; i < Heads.Length; i++)
                keep.select(1, Heads[i]).copy_(u.select(1, i).ge(p).to(z.dtype));
        }
        return z * keep.reshape(batch, 1, heads, 1);
    });
}

using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// The MLP sublayer: standard act(x·W_in + b_in)·W_out + b_out, or gated (act(x·W_gate) ⊙ (x·W_in + b_in))·W_out + b_out.
/// Hooks: <c>mlp.hook_pre</c> (the gate's pre-activation when gated), <c>mlp.hook_pre_linear</c> (gated only),
/// <c>mlp.hook_post</c>, all [batch, pos, d_mlp].
/// </summary>
public sealed class Mlp : Component
{
    private readonly Activation _act;
    private readonly HookPoint _pre, _post;
    private readonly HookPoint? _preLinear;

    /// <summary>W_in [d_model, d_mlp].</summary>
    public Tensor W_in { get; }
    /// <summary>W_gate [d_model, d_mlp] (gated MLPs only).</summary>
    public Tensor? W_gate { get; }
    /// <summary>W_out [d_mlp, d_model].</summary>
    public Tensor W_out { get; }
    /// <summary>b_in [d_mlp].</summary>
    public Tensor b_in { get; }
    /// <summary>b_out [d_model].</summary>
    public Tensor b_out { get; }

    /// <summary>Creates the MLP of block <paramref name="layer"/>.</summary>
    public Mlp(ModelConfig cfg, int layer) : base("mlp", HookNames.Block(layer) + "mlp.")
    {
        _act = cfg.Act;
        W_in = Weight("W_in", cfg.DModel, cfg.DMlp);
        if (cfg.Mlp == MlpKind.Gated) W_gate = Weight("W_gate", cfg.DModel, cfg.DMlp);
        W_out = Weight("W_out", cfg.DMlp, cfg.DModel);
        b_in = Bias("b_in", cfg.UseBias, cfg.DMlp);
        b_out = Bias("b_out", cfg.UseBias, cfg.DModel);
        _pre = Declare(HookNames.MlpPre(layer), "batch", "pos", "d_mlp");
        if (W_gate is not null) _preLinear = Declare(HookNames.MlpPreLinear(layer), "batch", "pos", "d_mlp");
        _post = Declare(HookNames.MlpPost(layer), "batch", "pos", "d_mlp");
    }

    /// <summary>x [batch, pos, d_model] (already normalised) → mlp_out [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor x)
    {
        Tensor post;
        if (W_gate is null)
        {
            post = _post.Run(Apply(_act, _pre.Run(Gemm.MatMul(x, W_in, b_in))));
        }
        else
        {
            var gate = _pre.Run(Gemm.MatMul(x, W_gate));
            var linear = _preLinear!.Run(Gemm.MatMul(x, W_in, b_in));
            post = _post.Run(Apply(_act, gate) * linear);
        }
        return Gemm.MatMul(post, W_out, b_out);
    }

    /// <summary>
    /// The nonlinearity; GeluTanh is GPT-2's gelu_new, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as libtorch's one
    /// kernel (<c>gelu(approximate='tanh')</c>) rather than seven elementwise passes.
    /// </summary>
    public static Tensor Apply(Activation act, Tensor x) => act switch
    {
        Activation.GeluTanh => x.gelu(TorchSharp.Modules.GELU.Approximate.tanh),
        Activation.Gelu => nn.functional.gelu(x),
        Activation.Relu => nn.functional.relu(x),
        Activation.Silu => nn.functional.silu(x),
        _ => throw new ArgumentOutOfRangeException(nameof(act), act, "unknown activation"),
    };
}

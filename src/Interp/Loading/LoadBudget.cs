using Interp.Models;

namespace Interp.Loading;

/// <summary>
/// The memory a model of a given config allocates, checked against what its weights file can justify before the
/// model is built: a config.json or manifest from a stranger could otherwise make a 4 KB model directory allocate
/// gigabytes (a million layers, or a 65536-wide residual stream), long before any weight is read.
/// </summary>
/// <remarks>
/// Every parameter comes from one tensor of the file, except the unembedding when it is tied to the embedding (a copy
/// of a tensor of the file) and GPT-2's unembedding bias (d_vocab zeros), so the parameters may be at most twice the
/// file's elements plus d_vocab. Buffers derived from the config alone (rotary and sinusoidal tables, fixed zero
/// biases) may take at most as many elements as the parameters, plus <see cref="DerivedAllowance"/>.
/// </remarks>
public static class LoadBudget
{
    /// <summary>Elements that derived buffers may take beyond the parameters' count: 4 Mi (16 MiB of float32).</summary>
    public const long DerivedAllowance = 1L << 22;

    /// <summary>
    /// The trainable parameters of a <see cref="HookedTransformer"/> of <paramref name="cfg"/>, in elements: what a
    /// weights file must supply. Computed without overflow (Int128) for any config, however absurd.
    /// </summary>
    public static Int128 Parameters(ModelConfig cfg) => Count(cfg).Parameters;

    /// <summary>
    /// The buffers of a <see cref="HookedTransformer"/> of <paramref name="cfg"/>, in elements: rotary and sinusoidal
    /// tables and the fixed zero biases of bias-free architectures, all derived from the config.
    /// </summary>
    public static Int128 Buffers(ModelConfig cfg) => Count(cfg).Buffers;

    private static (Int128 Parameters, Int128 Buffers) Count(ModelConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        Int128 d = cfg.DModel, v = cfg.DVocab, ctx = cfg.NCtx, h = cfg.NHeads, kv = cfg.KvHeads, e = cfg.HeadDim, f = cfg.DMlp;
        // A bias is a parameter when the architecture has biases, else a fixed zero buffer kept for uniform maths.
        (Int128, Int128) Bias(Int128 n, bool trainable) => trainable ? (n, 0) : (0, n);
        // A norm: its gain, and its bias (a zero buffer for RMSNorm).
        (Int128, Int128) Norm() => cfg.Norm == NormKind.None ? (0, 0) : Sum((d, 0), Bias(d, cfg.Norm == NormKind.LayerNorm));

        var block = Sum(
            Norm(),                                                                  // ln1
            (2 * h * d * e + 2 * kv * d * e, 0),                                     // W_Q, W_O; W_K, W_V
            Bias(h * e + 2 * kv * e + d, cfg.UseBias),                               // b_Q, b_K, b_V, b_O
            (0, cfg.Positional == PositionalKind.Rotary ? ctx * cfg.RotaryWidth : 0)); // rotary cos, sin [n_ctx, rot/2]
        if (cfg.Mlp != MlpKind.None)
            block = Sum(block, Norm(), ((cfg.Mlp == MlpKind.Gated ? 3 : 2) * d * f, 0), Bias(f + d, cfg.UseBias)); // ln2, W_in, W_out (, W_gate), b_in, b_out
        return Sum(
            (v * d, 0),                                                              // W_E
            cfg.Positional switch
            {
                PositionalKind.Learned => (ctx * d, 0),                              // W_pos
                PositionalKind.Sinusoidal => (0, ctx * d),                           // fixed W_pos
                _ => (0, 0),
            },
            (cfg.NLayers * block.Item1, cfg.NLayers * block.Item2),
            Norm(),                                                                  // ln_final
            (d * v, 0),                                                              // W_U
            Bias(v, cfg.UseBias));                                                   // b_U
    }

    private static (Int128, Int128) Sum(params (Int128, Int128)[] parts) =>
        parts.Aggregate(((Int128)0, (Int128)0), (a, b) => (a.Item1 + b.Item1, a.Item2 + b.Item2));

    /// <summary>
    /// Throws unless a model of <paramref name="cfg"/> fits the budget that <paramref name="fileElements"/> (the number of
    /// elements the weights file holds, already checked against its length) justifies.
    /// </summary>
    /// <exception cref="ModelFileException">The config asks for more than the file can justify; names <paramref name="path"/>.</exception>
    public static void Check(ModelConfig cfg, long fileElements, string path)
    {
        var (parameters, buffers) = Count(cfg);
        string sizes = $"d_model {cfg.DModel}, n_layers {cfg.NLayers}, n_heads {cfg.NHeads}, d_mlp {cfg.DMlp}, d_vocab {cfg.DVocab}, n_ctx {cfg.NCtx}";
        // Each parameter comes from the file, except a tied unembedding (a copy of the embedding, itself in the file) and
        // GPT-2's zero unembedding bias (d_vocab elements, fewer than the embedding's): at most 2 × file + d_vocab.
        // The margin also lets a file that lacks a tensor or two reach the loader's precise message for that tensor.
        long file = Math.Max(0, fileElements);
        if (parameters > 2 * (Int128)file + Math.Min(cfg.DVocab, file))
        {
            throw new ModelFileException(path, null,
                $"the config ({sizes}) describes a model of {parameters:N0} parameters, but the weights hold only {fileElements:N0} elements: " +
                "the config disagrees with the weights (checked before allocating anything)");
        }
        if (buffers > parameters + DerivedAllowance)
        {
            throw new ModelFileException(path, null,
                $"the config ({sizes}) asks for {buffers:N0} elements of derived tables (rotary or sinusoidal positions, fixed biases) for a model of " +
                $"{parameters:N0} parameters; refusing more than the parameters plus {DerivedAllowance:N0} (n_ctx is implausibly large)");
        }
    }
}

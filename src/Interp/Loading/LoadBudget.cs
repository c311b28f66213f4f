using Interp.Models;

namespace Interp.Loading;

/// <summary>
/// The memory a model of a given config allocates, checked against what its weights file can justify before the
/// model is built: a config.json or manifest from a stranger could otherwise make a 4 KB model directory allocate
/// gigabytes (a million layers, or a 65536-wide residual stream), long before any weight is read.
/// </summary>
/// <remarks>
/// The counts come from the model's own declarations: a one-block and a two-block model of the config are built with
/// every weight recorded rather than allocated, and the per-block difference is scaled to n_layers (every block of an
/// architecture has the same shapes). Every parameter comes from one tensor of the file, except the unembedding when
/// it is tied to the embedding (a copy of a tensor of the file) and a zero unembedding bias (d_vocab), so the
/// parameters may be at most twice the file's elements plus d_vocab. Buffers derived from the config alone
/// (sinusoidal tables, fixed zero biases) may take at most as many elements as the parameters, plus
/// <see cref="DerivedAllowance"/>.
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
    /// The buffers of a <see cref="HookedTransformer"/> of <paramref name="cfg"/>, in elements: sinusoidal tables and the
    /// fixed zero biases of bias-free architectures, all derived from the config.
    /// </summary>
    public static Int128 Buffers(ModelConfig cfg) => Count(cfg).Buffers;

    private static (Int128 Parameters, Int128 Buffers) Count(ModelConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        cfg.Validate();
        var one = Plan(cfg, Math.Min(cfg.NLayers, 1));
        if (cfg.NLayers <= 1) return one;
        var two = Plan(cfg, 2);
        Int128 rest = cfg.NLayers - 1;
        return (one.Parameters + rest * (two.Parameters - one.Parameters), one.Buffers + rest * (two.Buffers - one.Buffers));
    }

    /// <summary>What a model of <paramref name="cfg"/> with <paramref name="layers"/> blocks declares, built without allocating.</summary>
    private static (Int128 Parameters, Int128 Buffers) Plan(ModelConfig cfg, int layers)
    {
        var plan = new Component.ShapePlan();
        var previous = Component.Planning;
        Component.Planning = plan;
        try
        {
            // The per-layer attention kinds do not change any shape; drop them so that a 1- or 2-layer plan validates.
            using var model = new HookedTransformer(cfg with { NLayers = layers, SlidingWindowLayers = null });
        }
        finally { Component.Planning = previous; }
        return (plan.Parameters, plan.Buffers);
    }

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
        // a zero unembedding bias (d_vocab elements, fewer than the embedding's): at most 2 × file + d_vocab.
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
                $"the config ({sizes}) asks for {buffers:N0} elements of derived tables (sinusoidal positions, fixed biases) for a model of " +
                $"{parameters:N0} parameters; refusing more than the parameters plus {DerivedAllowance:N0} (n_ctx is implausibly large)");
        }
    }
}

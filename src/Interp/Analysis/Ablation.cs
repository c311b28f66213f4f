using Interp.Hooks;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>What an ablated activation is replaced with.</summary>
public enum AblationKind
{
    /// <summary>Zeros.</summary>
    Zero,
    /// <summary>
    /// The mean of the activation over a reference batch, taken at each position separately (TransformerLens style:
    /// position p gets the mean of the reference sequences' activations at position p).
    /// </summary>
    Mean,
    /// <summary>
    /// The activation of another sequence of a reference batch, at the same positions: sequence b takes reference
    /// sequence (b + s_b) mod R, with s_b drawn uniformly from 1…R−1 by a seeded generator
    /// (<see cref="AblationReference.ResampleIndices"/>).
    /// </summary>
    Resample,
}

/// <summary>The part of the model an ablation removes.</summary>
public enum AblationComponent
{
    /// <summary>One attention head: its slice of <c>blocks.{l}.attn.hook_z</c>.</summary>
    Head,
    /// <summary>A whole attention layer: <c>blocks.{l}.hook_attn_out</c>.</summary>
    Attention,
    /// <summary>An MLP layer: <c>blocks.{l}.hook_mlp_out</c>.</summary>
    Mlp,
    /// <summary>One feature of an SAE spliced in with <c>model.WithSaes</c>: its entry of the SAE's <c>hook_sae_acts_post</c>.</summary>
    SaeFeature,
}

/// <summary>
/// One ablation site: a head (<see cref="OfHead"/>), an attention layer (<see cref="OfAttention"/>), an MLP layer
/// (<see cref="OfMlp"/>) or a feature of a spliced SAE (<see cref="OfFeature"/>), at every position or at chosen
/// positions only.
/// </summary>
public sealed class AblationTarget
{
    private AblationTarget(AblationComponent component, int layer, int head, IReadOnlyList<int>? positions, string? saeHookName = null, int feature = -1)
    {
        Component = component;
        Layer = layer;
        Head = head;
        Positions = positions?.Distinct().Order().ToArray();
        SaeHookName = saeHookName;
        Feature = feature;
    }

    /// <summary>For an SAE feature: the hook point the SAE is spliced at (its <c>hook_name</c>); null otherwise.</summary>
    public string? SaeHookName { get; }
    /// <summary>For an SAE feature: the feature's index; −1 otherwise.</summary>
    public int Feature { get; }

    /// <summary>Head, attention layer or MLP layer.</summary>
    public AblationComponent Component { get; }
    /// <summary>The layer.</summary>
    public int Layer { get; }
    /// <summary>The head (−1 for a whole layer).</summary>
    public int Head { get; }
    /// <summary>The positions ablated, ascending (null: all). An empty list ablates nothing.</summary>
    public IReadOnlyList<int>? Positions { get; }

    /// <summary>Head <paramref name="layer"/>.<paramref name="head"/> at <paramref name="positions"/> (null: all).</summary>
    public static AblationTarget OfHead(int layer, int head, IReadOnlyList<int>? positions = null) => new(AblationComponent.Head, layer, head, positions);
    /// <summary>The whole attention layer <paramref name="layer"/> (its output, biases included).</summary>
    public static AblationTarget OfAttention(int layer, IReadOnlyList<int>? positions = null) => new(AblationComponent.Attention, layer, -1, positions);
    /// <summary>The MLP of layer <paramref name="layer"/>.</summary>
    public static AblationTarget OfMlp(int layer, IReadOnlyList<int>? positions = null) => new(AblationComponent.Mlp, layer, -1, positions);

    /// <summary>
    /// Feature <paramref name="feature"/> of the SAE spliced at <paramref name="saeHookName"/> (a per-layer hook such as
    /// <c>blocks.1.hook_resid_pre</c>); the SAE must be spliced in (<c>model.WithSaes</c>) while the ablation runs.
    /// </summary>
    public static AblationTarget OfFeature(string saeHookName, int feature, IReadOnlyList<int>? positions = null)
    {
        ArgumentNullException.ThrowIfNull(saeHookName);
        return new(AblationComponent.SaeFeature, HookNames.LayerOf(saeHookName) ?? -1, -1, positions, saeHookName, feature);
    }

    /// <summary>Every head of the model, layer by layer.</summary>
    public static IReadOnlyList<AblationTarget> AllHeads(ModelConfig config, IReadOnlyList<int>? positions = null) =>
        Enumerable.Range(0, config.NLayers).SelectMany(l => Enumerable.Range(0, config.NHeads).Select(h => OfHead(l, h, positions))).ToArray();

    /// <summary>Every attention layer, then every MLP layer (none for attention-only models).</summary>
    public static IReadOnlyList<AblationTarget> AllLayers(ModelConfig config, IReadOnlyList<int>? positions = null) =>
        Enumerable.Range(0, config.NLayers).Select(l => OfAttention(l, positions))
            .Concat(config.AttentionOnly ? [] : Enumerable.Range(0, config.NLayers).Select(l => OfMlp(l, positions))).ToArray();

    /// <summary>The hook point the ablation replaces: <c>hook_z</c>, <c>hook_attn_out</c> or <c>hook_mlp_out</c> of the
    /// layer, or the SAE's <c>hook_sae_acts_post</c>.</summary>
    public string HookName => Component switch
    {
        AblationComponent.Head => HookNames.Z(Layer),
        AblationComponent.Attention => HookNames.AttnOut(Layer),
        AblationComponent.SaeFeature => HookNames.SaeLeaf.Of(SaeHookName!, HookNames.SaeLeaf.ActsPost),
        _ => HookNames.MlpOut(Layer),
    };

    /// <summary>The name used in tables: <c>head</c>, <c>attn</c> or <c>mlp</c>.</summary>
    public string ComponentName => Name(Component);

    /// <summary>The positions as written in tables: <c>all</c>, or runs such as <c>13-24</c> and <c>3,5</c>.</summary>
    public string PositionsName
    {
        get
        {
            if (Positions is null) return "all";
            var runs = new List<string>();
            for (int i = 0; i < Positions.Count;)
            {
                int j = i;
                while (j + 1 < Positions.Count && Positions[j + 1] == Positions[j] + 1) j++;
                runs.Add(j == i ? $"{Positions[i]}" : $"{Positions[i]}-{Positions[j]}");
                i = j + 1;
            }
            return string.Join(",", runs);
        }
    }

    /// <summary>The table name of a component: <c>head</c>, <c>attn</c>, <c>mlp</c> or <c>sae_feature</c>.</summary>
    public static string Name(AblationComponent component) => component switch
    {
        AblationComponent.Head => "head",
        AblationComponent.Attention => "attn",
        AblationComponent.SaeFeature => "sae_feature",
        _ => "mlp",
    };

    /// <inheritdoc />
    public override string ToString() => Component switch
    {
        AblationComponent.Head => $"head {Layer}.{Head}",
        AblationComponent.SaeFeature => $"feature {Feature} of the SAE at {SaeHookName}",
        _ => $"{ComponentName} {Layer}",
    } + $" (positions {PositionsName})";

    /// <summary>Checks the target against the model: layer and head in range, an MLP to ablate, an SAE spliced in.</summary>
    /// <exception cref="InterpException">The layer, head, component, SAE or feature does not exist in the model.</exception>
    internal void Validate(HookedTransformer model)
    {
        var cfg = model.Config;
        if (Component == AblationComponent.SaeFeature)
        {
            if (Layer < 0)
                throw new InterpException($"ablation of {this}: features are ablated at SAEs on per-layer hooks (blocks.L.…), not at {SaeHookName}");
            HookPoint point;
            try { point = model.GetHookPoint(HookName); }
            catch (UnknownHookException) { throw new InterpException($"ablation of {this}: no SAE is spliced at {SaeHookName} (splice it with model.WithSaes first)"); }
            long width = model.HookShape(point, 1, 1)[^1];
            if (Feature < 0 || Feature >= width)
                throw new InterpException($"ablation of {this}: feature {Feature} is outside the SAE's features 0…{width - 1} ({HookName})");
        }
        if (Layer < 0 || Layer >= cfg.NLayers)
            throw new InterpException($"ablation of {this}: layer {Layer} is outside the model's layers 0…{cfg.NLayers - 1} ({HookName})");
        if (Component == AblationComponent.Head && (Head < 0 || Head >= cfg.NHeads))
            throw new InterpException($"ablation of {this}: head {Head} is outside layer {Layer}'s heads 0…{cfg.NHeads - 1} ({HookName})");
        if (Component == AblationComponent.Mlp && cfg.AttentionOnly)
            throw new InterpException($"ablation of {this}: {cfg.Name} is attention-only, it has no MLP and no hook {HookName} to ablate");
        if (Positions is { Count: > 0 } && Positions[0] < 0)
            throw new InterpException($"ablation of {this}: position {Positions[0]} is negative");
    }

    /// <summary>
    /// Where one sequence's activation is replaced, a bool mask broadcastable to it without the batch axis:
    /// [pos, n_heads, 1] for a head (hook_z), [pos, 1] for a layer output.
    /// </summary>
    internal bool[] Mask(HookedTransformer model, long pos, out long[] shape)
    {
        if (Positions is { Count: > 0 } && Positions[^1] >= pos)
            throw new InterpException($"ablation of {this}: position {Positions[^1]} is outside a sequence of {pos} tokens");
        var cfg = model.Config;
        long width;
        int index;
        switch (Component)
        {
            case AblationComponent.Head:
                (width, index, shape) = (cfg.NHeads, Head, [pos, cfg.NHeads, 1]);   // hook_z [batch, pos, head, d_head]
                break;
            case AblationComponent.SaeFeature:
                width = model.HookShape(model.GetHookPoint(HookName), 1, 1)[^1];
                (index, shape) = (Feature, [pos, width]);                             // acts [batch, pos, d_sae]
                break;
            default:
                (width, index, shape) = (1, 0, [pos, 1]);                             // [batch, pos, d_model]
                break;
        }
        var mask = new bool[pos * width];
        foreach (long p in Positions?.Select(p => (long)p) ?? LongRange(pos))
            mask[p * width + index] = true;
        return mask;
    }

    private static IEnumerable<long> LongRange(long count)
    {
        for (long i = 0; i < count; i++) yield return i;
    }
}

/// <summary>The metric of a run with and without an ablation.</summary>
/// <param name="MetricClean">The metric of the clean run.</param>
/// <param name="MetricAblated">The metric with the ablation.</param>
public sealed record AblationResult(double MetricClean, double MetricAblated)
{
    /// <summary>MetricAblated − MetricClean.</summary>
    public double Delta => MetricAblated - MetricClean;
}

/// <summary>
/// Zero, mean and resample ablation of heads (their <c>hook_z</c> slice), attention layers (<c>hook_attn_out</c>) and
/// MLP layers (<c>hook_mlp_out</c>), as hooks for <see cref="HookedTransformer.RunWithHooks(Tensor, ValueTuple{string, HookFunction}[])"/> or
/// <see cref="HookedTransformer.Hooks"/>, and <see cref="Run(HookedTransformer, Tensor, IReadOnlyList{AblationTarget}, AblationKind, Metric, AblationReference?, Tensor?)"/>
/// to measure a metric with and without. <see cref="AblationSweep"/> ablates many sites, one at a time, efficiently.
/// Mean and resample ablation read an <see cref="AblationReference"/> (a reference batch and a seed).
/// </summary>
public static class Ablation
{
    /// <summary>The table name of a kind: <c>zero</c>, <c>mean</c> or <c>resample</c>.</summary>
    public static string Name(AblationKind kind) => kind switch
    {
        AblationKind.Zero => "zero",
        AblationKind.Mean => "mean",
        _ => "resample",
    };

    /// <summary>Parses <c>zero</c>, <c>mean</c> or <c>resample</c>.</summary>
    /// <exception cref="InterpException">Any other name.</exception>
    public static AblationKind ParseKind(string name) => name.Trim().ToLowerInvariant() switch
    {
        "zero" => AblationKind.Zero,
        "mean" => AblationKind.Mean,
        "resample" => AblationKind.Resample,
        _ => throw new InterpException($"unknown ablation kind '{name}': expected zero, mean or resample"),
    };

    /// <summary>
    /// Hooks that ablate all <paramref name="targets"/> at once (one hook per hook point), for
    /// <c>model.RunWithHooks(tokens, hooks)</c> or <c>using (model.Hooks(hooks))</c>. Mean and resample ablation need
    /// <paramref name="reference"/> (computed for the targets' hook points now); zero ablation ignores it.
    /// </summary>
    /// <exception cref="InterpException">A target does not exist in the model, or mean/resample ablation without a reference.</exception>
    public static (string Name, HookFunction Hook)[] Hooks(HookedTransformer model, AblationKind kind, AblationReference? reference, params AblationTarget[] targets)
    {
        foreach (var t in targets) t.Validate(model);
        PrepareReference(model, kind, reference, targets);
        var cfg = model.Config;
        return targets.GroupBy(t => t.HookName).Select(group =>
        {
            var sites = group.ToArray();
            string name = group.Key;
            return (name, (HookFunction)((activation, _) =>
            {
                long pos = activation.shape[1];
                using var scope = NewDisposeScope();
                var mask = sites.Select(s => MaskTensor(s, model, pos, activation.device)).Aggregate((a, b) => a.logical_or(b)).unsqueeze(0);
                return Replace(activation, mask, Source(kind, reference, name, activation.shape[0], activation)).MoveToOuterDisposeScope();
            }));
        }).ToArray();
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> clean and with <paramref name="targets"/> ablated together, and returns the
    /// <paramref name="metric"/> of both (means over the batch). Without a reference, mean and resample ablation use
    /// <paramref name="tokens"/> themselves as the reference batch (seed 0).
    /// </summary>
    /// <remarks>
    /// A right-padded batch (prompts of different lengths) runs with its <paramref name="attentionMask"/> [batch, pos]
    /// (1 at real tokens; see <see cref="HookedTransformer.forward(Tensor, Tensor?, Tensor?)"/>), and its own reference, when none
    /// is given, uses real positions only. The metric then reads each sequence where it is real, e.g.
    /// <see cref="Metrics.LogitDiff(IReadOnlyList{int}, IReadOnlyList{int}, IReadOnlyList{int})"/> at each prompt's last real token.
    /// </remarks>
    /// <exception cref="InterpException">A target does not exist in the model, the reference does not fit, or the mask is invalid; the model
    /// has no logits for the metric (a base encoder), or a next-token metric meets a bidirectional encoder.</exception>
    public static AblationResult Run(HookedTransformer model, Tensor tokens, IReadOnlyList<AblationTarget> targets, AblationKind kind, Metric metric, AblationReference? reference = null,
        Tensor? attentionMask = null)
    {
        Metrics.EnsureApplies(metric, model, "ablation (Ablation.Run)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        tokens = model.ValidateTokens(tokens);
        using var own = reference is null && kind != AblationKind.Zero ? new AblationReference(model, tokens, attentionMask: attentionMask) : null;
        var hooks = Hooks(model, kind, reference ?? own, [.. targets]);
        double clean = Metrics.Evaluate(metric, model.forward(tokens, attentionMask), tokens);
        double ablated = Metrics.Evaluate(metric, model.RunWithHooks(tokens, attentionMask, hooks), tokens);
        return new AblationResult(clean, ablated);
    }

    /// <summary>
    /// <see cref="Run(HookedTransformer, Tensor, IReadOnlyList{AblationTarget}, AblationKind, Metric, AblationReference?, Tensor?)"/> for one target.
    /// </summary>
    public static AblationResult Run(HookedTransformer model, Tensor tokens, AblationTarget target, AblationKind kind, Metric metric, AblationReference? reference = null,
        Tensor? attentionMask = null) =>
        Run(model, tokens, [target], kind, metric, reference, attentionMask);

    /// <summary>Checks that mean/resample ablation have a reference of this model, and caches its activations at the targets' hooks.</summary>
    internal static void PrepareReference(HookedTransformer model, AblationKind kind, AblationReference? reference, IEnumerable<AblationTarget> targets)
    {
        if (kind == AblationKind.Zero) return;
        if (reference is null)
            throw new InterpException($"{Name(kind)} ablation needs a reference batch (an AblationReference); zero ablation does not");
        if (!ReferenceEquals(reference.Model, model))
            throw new InterpException($"{Name(kind)} ablation: the reference batch was computed with another model ({reference.Model.Config.Name})");
        reference.Prepare(targets.Select(t => t.HookName));
    }

    /// <summary>The mask of one target as a bool tensor [pos, n_heads, 1], [pos, d_sae] or [pos, 1] on <paramref name="device"/>.</summary>
    internal static Tensor MaskTensor(AblationTarget target, HookedTransformer model, long pos, Device device)
    {
        var values = target.Mask(model, pos, out var shape);
        return tensor(values, shape).to(device);
    }

    /// <summary>
    /// What replaces the activation of a batch of <paramref name="batch"/> sequences at <paramref name="hook"/>
    /// (<paramref name="activation"/> gives the length, dtype and device): a zero scalar, the reference mean [1, pos, …]
    /// or the resampled reference activations [batch, pos, …].
    /// </summary>
    internal static Tensor Source(AblationKind kind, AblationReference? reference, string hook, long batch, Tensor activation) => kind switch
    {
        AblationKind.Zero => zeros(1, dtype: activation.dtype, device: activation.device),
        AblationKind.Mean => reference!.Mean(hook, activation.shape[1]).to(activation.dtype, activation.device),
        _ => reference!.Resample(hook, batch, activation.shape[1]).to(activation.dtype, activation.device),
    };

    /// <summary>
    /// The core of every ablation: <paramref name="activation"/> [k·B, pos, …] seen as k copies of a batch of B, where
    /// copy i takes <paramref name="source"/> (broadcastable to [B, pos, …]) wherever <paramref name="masks"/>[i]
    /// (bool [k, pos, …], broadcastable to one sequence) is true, and keeps its own values elsewhere. Values are copied,
    /// never recomputed, so an all-false mask returns the activation bit for bit.
    /// </summary>
    internal static Tensor Replace(Tensor activation, Tensor masks, Tensor source)
    {
        long k = masks.shape[0];
        long batch = activation.shape[0] / k;
        var copies = activation.reshape([k, batch, .. activation.shape[1..]]);
        return where(masks.unsqueeze(1), source.unsqueeze(0), copies).reshape(activation.shape);
    }
}

using Interp.Hooks;
using Interp.Models;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>The activations activation patching can copy from one run into another.</summary>
public enum PatchKind
{
    /// <summary>The residual stream entering a block, <c>blocks.{l}.hook_resid_pre</c> [batch, pos, d_model].</summary>
    ResidPre,
    /// <summary>A block's attention output, <c>blocks.{l}.hook_attn_out</c> [batch, pos, d_model].</summary>
    AttnOut,
    /// <summary>A block's MLP output, <c>blocks.{l}.hook_mlp_out</c> [batch, pos, d_model] (models with MLPs only).</summary>
    MlpOut,
    /// <summary>One head's output: its slice of <c>blocks.{l}.attn.hook_z</c> [batch, pos, head_index, d_head].</summary>
    HeadOut,
    /// <summary>One head's attention pattern: its slice of <c>blocks.{l}.attn.hook_pattern</c> [batch, head_index, query_pos, key_pos].</summary>
    HeadPattern,
    /// <summary>One feature of an SAE spliced in with <c>model.WithSaes</c>: its entry of the SAE's
    /// <c>hook_sae_acts_post</c> [batch, pos, d_sae]. The SAE must be spliced in from construction to the last patch.</summary>
    SaeFeature,
}

/// <summary>
/// One place to patch: an activation (<paramref name="Kind"/> at <paramref name="Layer"/>), for head kinds one head,
/// and one position (the query position for patterns) or every position (−1). The slice is patched for every
/// sequence of the batch.
/// </summary>
/// <param name="Kind">The activation.</param>
/// <param name="Layer">The block.</param>
/// <param name="Head">The head (head kinds only; −1 otherwise).</param>
/// <param name="Position">The position (query position for <see cref="PatchKind.HeadPattern"/>), or −1 for all.</param>
public readonly record struct PatchSite(PatchKind Kind, int Layer, int Head = -1, int Position = -1)
{
    /// <summary><c>blocks.{layer}.hook_resid_pre</c> at one position, or at every position (−1).</summary>
    public static PatchSite ResidPre(int layer, int position = -1) => new(PatchKind.ResidPre, layer, -1, position);
    /// <summary><c>blocks.{layer}.hook_attn_out</c> at one position, or at every position (−1).</summary>
    public static PatchSite AttnOut(int layer, int position = -1) => new(PatchKind.AttnOut, layer, -1, position);
    /// <summary><c>blocks.{layer}.hook_mlp_out</c> at one position, or at every position (−1).</summary>
    public static PatchSite MlpOut(int layer, int position = -1) => new(PatchKind.MlpOut, layer, -1, position);
    /// <summary>Head <paramref name="head"/>'s slice of <c>hook_z</c> at one position, or at every position (−1).</summary>
    public static PatchSite HeadOut(int layer, int head, int position = -1) => new(PatchKind.HeadOut, layer, head, position);
    /// <summary>Head <paramref name="head"/>'s attention pattern for one query position, or for all (−1).</summary>
    public static PatchSite HeadPattern(int layer, int head, int queryPosition = -1) => new(PatchKind.HeadPattern, layer, head, queryPosition);
    /// <summary>Feature <paramref name="feature"/> of the SAE spliced at <paramref name="saeHookName"/>, at one position or every position (−1).</summary>
    public static PatchSite SaeFeature(string saeHookName, int feature, int position = -1)
    {
        ArgumentNullException.ThrowIfNull(saeHookName);
        return new(PatchKind.SaeFeature, HookNames.LayerOf(saeHookName) ?? -1, -1, position) { SaeHookName = saeHookName, Feature = feature };
    }

    /// <summary>For an SAE feature: the hook point the SAE is spliced at; null otherwise.</summary>
    public string? SaeHookName { get; init; }
    /// <summary>For an SAE feature: the feature's index; −1 otherwise.</summary>
    public int Feature { get; init; } = -1;

    /// <summary>The snake_case name used in tables: resid_pre, attn_out, mlp_out, head_out, head_pattern.</summary>
    public static string Name(PatchKind kind) => kind switch
    {
        PatchKind.ResidPre => "resid_pre",
        PatchKind.AttnOut => "attn_out",
        PatchKind.MlpOut => "mlp_out",
        PatchKind.HeadOut => "head_out",
        PatchKind.SaeFeature => "sae_feature",
        _ => "head_pattern",
    };

    /// <summary>True for the kinds that patch one head's slice.</summary>
    public bool IsHead => Kind is PatchKind.HeadOut or PatchKind.HeadPattern;

    /// <summary>The hook the site patches.</summary>
    public string HookName => Kind switch
    {
        PatchKind.ResidPre => HookNames.ResidPre(Layer),
        PatchKind.AttnOut => HookNames.AttnOut(Layer),
        PatchKind.MlpOut => HookNames.MlpOut(Layer),
        PatchKind.HeadOut => HookNames.Z(Layer),
        PatchKind.SaeFeature => HookNames.SaeLeaf.Of(SaeHookName!, HookNames.SaeLeaf.ActsPost),
        _ => HookNames.Pattern(Layer),
    };

    /// <inheritdoc />
    public override string ToString() => Kind == PatchKind.SaeFeature
        ? $"feature {Feature} of the SAE at {SaeHookName} {(Position < 0 ? "all positions" : $"position {Position}")}"
        : $"{Name(Kind)} layer {Layer}{(IsHead ? $" head {Head}" : "")} {(Position < 0 ? "all positions" : $"position {Position}")}";

    /// <summary>The site's slice of an activation, for the sequences [<paramref name="from"/>, <paramref name="to"/>) of the batch.</summary>
    internal TensorIndex[] Slice(long from, long to)
    {
        var batch = TensorIndex.Slice(from, to);
        var position = Position < 0 ? TensorIndex.Colon : TensorIndex.Single(Position);
        return Kind switch
        {
            PatchKind.HeadOut => [batch, position, TensorIndex.Single(Head)],                 // [batch, pos, head, d_head]
            PatchKind.HeadPattern => [batch, TensorIndex.Single(Head), position],             // [batch, head, query, key]
            PatchKind.SaeFeature => [batch, position, TensorIndex.Single(Feature)],            // [batch, pos, d_sae]
            _ => [batch, position],                                                           // [batch, pos, d_model]
        };
    }

    /// <summary>Throws <see cref="InterpException"/> naming the layer, head or position that the model lacks.</summary>
    internal void Validate(HookedTransformer model, long positions)
    {
        var cfg = model.Config;
        string what = ToString();
        if (Kind == PatchKind.SaeFeature)
        {
            HookPoint point;
            try { point = model.GetHookPoint(HookName); }
            catch (UnknownHookException) { throw new InterpException($"patch {what}: no SAE is spliced at {SaeHookName} (splice it with model.WithSaes before the patching)"); }
            long width = model.HookShape(point, 1, 1)[^1];
            if (Feature < 0 || Feature >= width)
                throw new InterpException($"patch {what}: feature {Feature} is outside the SAE's features [0, {width})");
            if (Position < -1 || Position >= positions)
                throw new InterpException($"patch {what}: position {Position} is outside the sequence [0, {positions}) (−1 = all positions)");
            return;
        }
        if (Layer < 0 || Layer >= cfg.NLayers)
            throw new InterpException($"patch {what}: layer {Layer} is outside the model's layers [0, {cfg.NLayers})");
        if (Kind == PatchKind.MlpOut && cfg.Mlp == MlpKind.None)
            throw new InterpException($"patch {what}: {HookName} does not exist: this model is attention-only (no MLP)");
        if (IsHead && (Head < 0 || Head >= cfg.NHeads))
            throw new InterpException($"patch {what}: head {Head} is outside the model's heads [0, {cfg.NHeads})");
        if (!IsHead && Head != -1)
            throw new InterpException($"patch {what}: {Name(Kind)} has no heads; use head −1");
        if (Position < -1 || Position >= positions)
            throw new InterpException($"patch {what}: position {Position} is outside the sequence [0, {positions}) (−1 = all positions)");
    }
}

/// <summary>The metric with one site patched: <paramref name="Raw"/> as measured, <paramref name="Value"/> normalised (0 = corrupted, 1 = clean).</summary>
public sealed record PatchResult(PatchSite Site, double Raw, double Value);

/// <summary>
/// Activation patching (causal tracing): run a clean and a corrupted input of the same shape [batch, pos], cache the
/// clean run's activations, then rerun the corrupted input with one activation (or a slice of it) replaced by its
/// clean value and see how much of the metric comes back. Normalised, (m_patched − m_corrupted) / (m_clean −
/// m_corrupted) is 0 when the patch changes nothing and 1 when it restores the clean behaviour.
/// </summary>
/// <remarks>
/// The metric is evaluated on the patched run's logits with the patched (target) run's tokens, and must return one
/// value per sequence (<see cref="Metric"/>): a sweep runs many patches as one batch of copies of the target and
/// splits the per-sequence values (the target tiled: sequence r is sequence r mod batch). Right-padded prompts of
/// different lengths run with their attention mask. The clean activations stay cached (only the patchable hooks) until
/// disposal.
/// </remarks>
public sealed class ActivationPatching : IDisposable
{
    private readonly ActivationCache _cache;
    private bool _disposed;

    /// <summary>The model.</summary>
    public HookedTransformer Model { get; }
    /// <summary>The clean tokens [batch, pos] (the source of every patch).</summary>
    public Tensor Clean { get; }
    /// <summary>The corrupted tokens [batch, pos] (the default target).</summary>
    public Tensor Corrupted { get; }
    /// <summary>The metric.</summary>
    public Metric Metric { get; }
    /// <summary>The metric on the clean run (mean over the batch).</summary>
    public double CleanMetric { get; }
    /// <summary>The metric on the corrupted run.</summary>
    public double CorruptedMetric { get; }
    /// <summary>The most sequences one forward pass of a sweep runs (copies of the target × its batch).</summary>
    public int SequencesPerPass { get; init; } = 1024;

    /// <summary>Runs the clean input (caching its activations) and the corrupted input.</summary>
    /// <param name="model">The model.</param>
    /// <param name="clean">The clean tokens [batch, pos].</param>
    /// <param name="corrupted">The corrupted tokens, of the same shape.</param>
    /// <param name="metric">The per-sequence metric.</param>
    /// <param name="attentionMask">
    /// For right-padded batches (prompts of different lengths), their attention mask [batch, pos] (1 at real tokens),
    /// shared by both: each corrupted prompt has its clean prompt's length, so a position is real in both or in neither.
    /// Every run (clean, corrupted, patched) uses it; null: no padding.
    /// </param>
    /// <exception cref="InterpException">The two inputs differ in shape, are not valid tokens for the model, or the mask is invalid; the model
    /// has no logits for the metric (a base encoder), or a next-token metric meets a bidirectional encoder.</exception>
    public ActivationPatching(HookedTransformer model, Tensor clean, Tensor corrupted, Metric metric, Tensor? attentionMask = null)
    {
        if (!clean.shape.SequenceEqual(corrupted.shape))
            throw new InterpException($"activation patching needs clean and corrupted tokens of the same shape [batch, pos]: clean tokens have shape {Shape(clean)}, corrupted tokens {Shape(corrupted)}");
        Metrics.EnsureApplies(metric, model, "activation patching");
        Model = model;
        Metric = metric;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var c = model.ValidateTokens(clean);
        var k = model.ValidateTokens(corrupted);
        var mask = model.PaddingMask(attentionMask, c.shape[0], c.shape[1])?.logical_not();
        // A metric that declares what it reads is evaluated the way the patched runs evaluate it (only those logits),
        // so that patching nothing gives exactly these values: for the clean run, from the last residual stream of the
        // cached run (the same tensor a reads-only forward would unembed), not a second clean forward.
        var reads = Metrics.ReadsFor(metric, model);
        string? last = reads is null ? null : HookNames.ResidPost(model.Config.NLayers - 1);
        var (logits, cache) = model.RunWithCache(c, mask, n => IsPatchable(n) || n == last);
        _cache = cache;
        try
        {
            if (reads is not null)
            {
                CleanMetric = Metrics.PerSequence(reads, model.ForwardFrom(model.Config.NLayers, cache[last!], mask, reads)).to(ScalarType.Float64).mean().item<double>();
                CorruptedMetric = Metrics.PerSequence(reads, model.forward(k, mask, reads)).to(ScalarType.Float64).mean().item<double>();
            }
            else
            {
                CleanMetric = Metrics.Evaluate(metric, logits, c);
                CorruptedMetric = Metrics.Evaluate(metric, model.forward(k, mask), k);
            }
        }
        catch
        {
            _cache.Dispose();
            throw;
        }
        Clean = c.clone().DetachFromDisposeScope();
        Corrupted = k.clone().DetachFromDisposeScope();
        AttentionMask = mask?.clone().DetachFromDisposeScope();
    }

    /// <summary>The attention mask of padded inputs, bool [batch, pos] (true at real tokens), or null without padding.</summary>
    public Tensor? AttentionMask { get; }

    /// <summary>
    /// Tokenises two prompts for patching, as [1, pos] tensors.
    /// </summary>
    /// <exception cref="InterpException">The prompts tokenise to different lengths (both shapes are named).</exception>
    public static (Tensor Clean, Tensor Corrupted) Tokenize(ITokenizer tokenizer, string clean, string corrupted, bool prependBos = true)
    {
        var a = tokenizer.Encode(clean, prependBos);
        var b = tokenizer.Encode(corrupted, prependBos);
        if (a.Length != b.Length)
            throw new InterpException($"activation patching needs prompts of the same length: clean prompt \"{clean}\" tokenises to shape [1, {a.Length}], corrupted prompt \"{corrupted}\" to [1, {b.Length}]");
        return (tensor(a.Select(i => (long)i).ToArray()).unsqueeze(0), tensor(b.Select(i => (long)i).ToArray()).unsqueeze(0));
    }

    /// <summary>
    /// (<paramref name="raw"/> − m_corrupted) / (m_clean − m_corrupted): 0 = the corrupted run's metric, 1 = the clean run's.
    /// </summary>
    /// <exception cref="InterpException">The metric is the same on both runs: there is nothing to recover.</exception>
    public double Normalise(double raw) => Normalise(raw, CleanMetric, CorruptedMetric);

    /// <summary>
    /// (<paramref name="raw"/> − <paramref name="corrupted"/>) / (<paramref name="clean"/> − <paramref name="corrupted"/>):
    /// the normalisation every patching method shares (activation and attribution patching).
    /// </summary>
    /// <exception cref="InterpException">The metric is the same on both runs (to 1e-6 of its size, float32 rounding): there is nothing to recover.</exception>
    public static double Normalise(double raw, double clean, double corrupted)
    {
        double gap = clean - corrupted;
        // Float32 runs of the same tokens agree only to rounding (kernels and thread counts vary with the machine's load):
        // a gap within that noise would normalise noise.
        if (Math.Abs(gap) <= 1e-6 * Math.Max(1, Math.Max(Math.Abs(clean), Math.Abs(corrupted))))
            throw new InterpException($"nothing to recover: the metric is {clean:G6} on the clean run and {corrupted:G6} on the corrupted run, so a normalised patching score is undefined");
        return (raw - corrupted) / gap;
    }

    /// <summary>
    /// The raw metric of the <paramref name="target"/> run (default: the corrupted tokens) with every site in
    /// <paramref name="sites"/> patched at once from the clean run; no sites = the target run as it is.
    /// </summary>
    public double PatchedMetric(IEnumerable<PatchSite> sites, Tensor? target = null) => Run([sites.ToArray()], target)[0];

    /// <summary>The normalised metric of the corrupted run with all of <paramref name="sites"/> patched at once.</summary>
    public double Patch(params PatchSite[] sites) => Normalise(PatchedMetric(sites));

    /// <summary>The raw metric with each site patched on its own into <paramref name="target"/> (default: the corrupted tokens).</summary>
    public double[] PatchedMetrics(IEnumerable<PatchSite> sites, Tensor? target = null, IProgress<double>? progress = null, CancellationToken cancellationToken = default) =>
        Run(sites.Select(s => new[] { s }).ToArray(), target, progress, cancellationToken);

    /// <summary>Each site patched on its own into the corrupted run: raw and normalised metric.</summary>
    public IReadOnlyList<PatchResult> Sweep(IEnumerable<PatchSite> sites, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        var list = sites.ToArray();
        var raw = PatchedMetrics(list, null, progress, cancellationToken);
        return list.Select((s, i) => new PatchResult(s, raw[i], Normalise(raw[i]))).ToArray();
    }

    /// <summary>
    /// The standard sites of one kind for <paramref name="cfg"/> and sequences of <paramref name="positions"/> tokens:
    /// one per layer (× head for head kinds) covering every position, and with <paramref name="perPosition"/> one
    /// per position as well. None for <see cref="PatchKind.SaeFeature"/>, whose sites name their SAE.
    /// </summary>
    public static IReadOnlyList<PatchSite> Sites(ModelConfig cfg, int positions, PatchKind kind, bool perPosition)
    {
        var sites = new List<PatchSite>();
        if (kind == PatchKind.MlpOut && cfg.Mlp == MlpKind.None) return sites;
        if (kind == PatchKind.SaeFeature) return sites;   // features belong to an SAE: build them with PatchSite.SaeFeature
        bool head = kind is PatchKind.HeadOut or PatchKind.HeadPattern;
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < (head ? cfg.NHeads : 1); h++)
                for (int p = -1; p < (perPosition ? positions : 0); p++)
                    sites.Add(new PatchSite(kind, l, head ? h : -1, p));
        return sites;
    }

    /// <summary>Runs each variant (a set of sites patched together) into copies of the target; one raw metric per variant.</summary>
    private double[] Run(PatchSite[][] variants, Tensor? target, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (target is not null && !target.shape.SequenceEqual(Clean.shape))
            throw new InterpException($"the target of a patch must have the clean tokens' shape {Shape(Clean)}; got {Shape(target)}");
        var tokens = target is null ? Corrupted : Model.ValidateTokens(target);
        long batch = tokens.shape[0], positions = tokens.shape[1];
        foreach (var site in variants.SelectMany(v => v)) site.Validate(Model, positions);

        var result = new double[variants.Length];
        int perPass = (int)Math.Max(1, SequencesPerPass / batch);
        for (int start = 0; start < variants.Length; start += perPass)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var pass = NewDisposeScope();
            int count = Math.Min(perPass, variants.Length - start);
            var copies = tokens.repeat(count, 1);                                          // [count · batch, pos]
            var hooks = Enumerable.Range(0, count)
                .SelectMany(i => variants[start + i].Select(site => (Copy: i, Site: site)))
                .GroupBy(p => p.Site.HookName)
                .Select(g => (g.Key, (HookFunction)((activation, _) =>
                {
                    var patched = activation.clone();
                    var source = _cache.Contains(g.Key) ? _cache[g.Key]
                        : throw new InterpException($"patch at {g.Key}: the clean run did not pass it (splice the SAE in before constructing the patching)");
                    foreach (var (copy, site) in g)
                        patched.index_put_(source[site.Slice(0, batch)], site.Slice(copy * batch, (copy + 1) * batch));
                    return patched;
                })))
                .ToArray();
            // A metric that declares what it reads (a logit difference) gets only those logits.
            var reads = Metrics.ReadsFor(Metric, Model);
            Tensor perSequence;
            using (Model.Hooks(hooks))
                perSequence = reads is null ? Metrics.PerSequence(Metric, Model.forward(copies, AttentionMask?.repeat(count, 1)), copies)
                    : Metrics.PerSequence(reads, Model.forward(copies, AttentionMask?.repeat(count, 1), reads));
            var values = perSequence.to(ScalarType.Float64).view(count, batch).mean([1]);
            var means = values.cpu().data<double>().ToArray();
            Array.Copy(means, 0, result, start, count);
            progress?.Report((double)(start + count) / variants.Length);
        }
        return result;
    }

    /// <summary>The hooks a patch can read from the clean run.</summary>
    internal static bool IsPatchable(string name) =>
        HookNames.Is(name, HookNames.ResidPre) || HookNames.Is(name, HookNames.AttnOut) || HookNames.Is(name, HookNames.MlpOut) ||
        HookNames.Is(name, HookNames.Z) || HookNames.Is(name, HookNames.Pattern) || HookNames.SaeLeaf.IsLeaf(name, HookNames.SaeLeaf.ActsPost);

    private static string Shape(Tensor t) => $"[{string.Join(", ", t.shape)}]";

    /// <summary>Frees the cached clean activations and the tokens.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _cache.Dispose();
        Clean.Dispose();
        Corrupted.Dispose();
        AttentionMask?.Dispose();
    }
}

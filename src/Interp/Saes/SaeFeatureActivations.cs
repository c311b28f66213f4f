using Interp.Hooks;
using Interp.Models;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>One active feature at one token: feature <paramref name="Feature"/> has activation <paramref name="Value"/> &gt; 0
/// at <paramref name="Position"/> of sequence <paramref name="Sequence"/>.</summary>
/// <param name="Sequence">Row of the token batch.</param>
/// <param name="Position">Position in the sequence.</param>
/// <param name="Feature">Feature index in [0, d_sae).</param>
/// <param name="Value">The activation (<c>hook_sae_acts_post</c>), &gt; 0.</param>
public readonly record struct FeatureActivation(int Sequence, int Position, int Feature, float Value);

/// <summary>How often and how strongly one feature fires over the real positions of a collection.</summary>
/// <param name="Feature">Feature index.</param>
/// <param name="ActiveCount">Positions where the activation is &gt; 0.</param>
/// <param name="Density">ActiveCount / number of real positions (SAELens's "feature sparsity", a firing frequency).</param>
/// <param name="Max">Largest activation (0 for a dead feature).</param>
/// <param name="MeanWhenActive">Mean activation over the positions where it is active (NaN for a dead feature).</param>
public sealed record FeatureStats(int Feature, long ActiveCount, double Density, double Max, double MeanWhenActive)
{
    /// <summary>Never active on the collection.</summary>
    public bool IsDead => ActiveCount == 0;

    /// <summary>log10(density + 1e-10), the quantity SAELens logs and saves as <c>sparsity.safetensors</c>.</summary>
    public double Log10Density => Math.Log10(Density + SaeFeatureActivations.DensityEpsilon);
}

/// <summary>How <see cref="SaeFeatureActivations.Collect"/> batches its forward passes.</summary>
public sealed record SaeFeatureActivationOptions
{
    /// <summary>Sequences per forward pass (default 8): memory is bounded by one batch's activations at the SAE's hook and its feature activations.</summary>
    public int SequencesPerForward { get; init; } = 8;
}

/// <summary>
/// The feature activations of an SAE over a batch of token sequences, kept sparse: every (sequence, position,
/// feature) whose activation is &gt; 0, sorted by sequence, position and feature, with the tokens they were read at
/// and per-feature <see cref="Stats"/>. Padded positions (attention mask 0) are neither recorded nor counted.
/// </summary>
public sealed class SaeFeatureActivations
{
    /// <summary>The table name of <see cref="ToTable"/>.</summary>
    public const string TableName = "sae_feature_acts";
    /// <summary>The table name of <see cref="StatsTable"/>.</summary>
    public const string StatsTableName = "sae_feature_stats";
    /// <summary>Added to a density before its log10, as SAELens does (a dead feature's log10 density is −10).</summary>
    public const double DensityEpsilon = 1e-10;

    private readonly FeatureActivation[] _entries;
    private readonly int[] _rowStart;   // [sequences · positions + 1]: entries of (s, p) are _rowStart[s·P + p] .. _rowStart[s·P + p + 1]
    private readonly int[] _tokens;     // [sequences · positions]
    private readonly bool[] _real;      // [sequences · positions]

    private SaeFeatureActivations(int dSae, int sequences, int positions, FeatureActivation[] entries, int[] tokens, bool[] real)
    {
        (DSae, Sequences, Positions, _entries, _tokens, _real) = (dSae, sequences, positions, entries, tokens, real);
        RealPositions = real.LongCount(r => r);
        _rowStart = new int[sequences * positions + 1];
        foreach (var e in entries) _rowStart[e.Sequence * positions + e.Position + 1]++;
        for (int i = 0; i < sequences * positions; i++) _rowStart[i + 1] += _rowStart[i];
        var count = new long[dSae];
        var max = new double[dSae];
        var sum = new double[dSae];
        foreach (var e in entries)
        {
            count[e.Feature]++;
            sum[e.Feature] += e.Value;
            max[e.Feature] = Math.Max(max[e.Feature], e.Value);
        }
        Stats = Enumerable.Range(0, dSae).Select(f => new FeatureStats(f, count[f], RealPositions == 0 ? 0 : (double)count[f] / RealPositions, max[f],
            count[f] == 0 ? double.NaN : sum[f] / count[f])).ToArray();
    }

    /// <summary>Number of features of the SAE.</summary>
    public int DSae { get; }
    /// <summary>Number of sequences.</summary>
    public int Sequences { get; }
    /// <summary>Positions per sequence (padded length).</summary>
    public int Positions { get; }
    /// <summary>Real (unpadded) positions over all sequences: the denominator of every density.</summary>
    public long RealPositions { get; }
    /// <summary>Every activation &gt; 0 at a real position, sorted by sequence, position, feature.</summary>
    public IReadOnlyList<FeatureActivation> Entries => _entries;
    /// <summary>One entry per feature, in feature order.</summary>
    public IReadOnlyList<FeatureStats> Stats { get; }

    /// <summary>The token id at (<paramref name="sequence"/>, <paramref name="position"/>).</summary>
    public int TokenAt(int sequence, int position) => _tokens[Index(sequence, position)];

    /// <summary>Whether (<paramref name="sequence"/>, <paramref name="position"/>) is a real token (not padding).</summary>
    public bool IsReal(int sequence, int position) => _real[Index(sequence, position)];

    /// <summary>The active features at (<paramref name="sequence"/>, <paramref name="position"/>), in feature order.</summary>
    public ReadOnlySpan<FeatureActivation> At(int sequence, int position)
    {
        int i = Index(sequence, position);
        return _entries.AsSpan(_rowStart[i], _rowStart[i + 1] - _rowStart[i]);
    }

    /// <summary>Feature <paramref name="feature"/>'s activation at (<paramref name="sequence"/>, <paramref name="position"/>): 0 where it is not active.</summary>
    public float ValueAt(int sequence, int position, int feature)
    {
        CheckFeature(feature);
        var row = At(sequence, position);
        int lo = 0, hi = row.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            int f = row[mid].Feature;
            if (f == feature) return row[mid].Value;
            if (f < feature) lo = mid + 1; else hi = mid - 1;
        }
        return 0;
    }

    /// <summary>Throws unless <paramref name="feature"/> is in [0, d_sae).</summary>
    /// <exception cref="InterpException">The feature is out of range.</exception>
    public void CheckFeature(int feature)
    {
        if (feature < 0 || feature >= DSae) throw new InterpException($"feature {feature} is outside the SAE's features [0, {DSae})");
    }

    private int Index(int sequence, int position)
    {
        if (sequence < 0 || sequence >= Sequences || position < 0 || position >= Positions)
            throw new InterpException($"(sequence {sequence}, position {position}) is outside the collection's [{Sequences}, {Positions}] tokens");
        return sequence * Positions + position;
    }

    /// <summary>
    /// Runs <paramref name="model"/> over <paramref name="tokens"/> [n_seq, pos] in batches of
    /// <see cref="SaeFeatureActivationOptions.SequencesPerForward"/> and encodes the activation at the SAE's hook point
    /// (<see cref="SaeConfig.HookName"/>) with <see cref="Sae.Encode"/>, keeping the activations &gt; 0 at real positions
    /// (<paramref name="attentionMask"/> [n_seq, pos], 1 at real tokens; null: all real). The model runs unchanged: the
    /// SAE reads its hook point and nothing is spliced in.
    /// </summary>
    /// <exception cref="InterpException">The tokens or the mask are invalid, the batch size is below 1, or the SAE's hook does not give one activation per token.</exception>
    /// <exception cref="HookException">The SAE's hook point does not exist in the model.</exception>
    public static SaeFeatureActivations Collect(HookedTransformer model, Sae sae, Tensor tokens, Tensor? attentionMask = null,
        SaeFeatureActivationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        options ??= new SaeFeatureActivationOptions();
        if (options.SequencesPerForward < 1)
            throw new InterpException($"sequences per forward pass must be at least 1, got {options.SequencesPerForward}");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        tokens = model.ValidateTokens(tokens);                                                   // [n_seq, pos]
        int n = (int)tokens.shape[0], pos = (int)tokens.shape[1];
        var padding = model.PaddingMask(attentionMask, n, pos);                                  // [n_seq, pos], true at padding; null: none
        var real = padding is null ? Enumerable.Repeat(true, n * pos).ToArray() : padding.logical_not().cpu().reshape(-1).data<bool>().ToArray();
        var entries = new List<FeatureActivation>();
        string hook = sae.Config.HookName;
        model.GetHookPoint(hook);   // an unknown name fails here, with suggestions
        for (int start = 0; start < n; start += options.SequencesPerForward)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var step = NewDisposeScope();
            int count = Math.Min(options.SequencesPerForward, n - start);
            var batch = tokens.narrow(0, start, count);                                          // [b, pos]
            var mask = padding?.narrow(0, start, count).logical_not();                            // [b, pos], true at real tokens
            Tensor? acts = null;
            var logits = model.RunWithHooks(batch, mask, (hook, (x, _) =>
            {
                acts = sae.Encode(x).detach().DetachFromDisposeScope();
                return null;
            }));
            logits.Dispose();
            using var encoded = acts ?? throw new InterpException($"the SAE's hook point '{hook}' was not reached in the forward pass");
            if (encoded.dim() != 3 || encoded.shape[0] != count || encoded.shape[1] != pos)
                throw new InterpException($"the SAE at '{hook}' gives feature activations [{string.Join(", ", encoded.shape)}], not one per token [{count}, {pos}, d_sae]");
            AddEntries(entries, encoded, real, start, pos);
        }
        return new SaeFeatureActivations(sae.Config.DSae, n, pos, entries.ToArray(), tokens.cpu().to(ScalarType.Int32).reshape(-1).data<int>().ToArray(), real);
    }

    /// <summary>
    /// The sparse collection of feature activations already computed: <paramref name="acts"/> [n_seq, pos, d_sae] read
    /// at <paramref name="tokens"/> [n_seq, pos] (integer ids), with an optional <paramref name="attentionMask"/>
    /// [n_seq, pos] (1 or true at real tokens). Activations ≤ 0 and padded positions are left out.
    /// </summary>
    /// <exception cref="InterpException">The shapes do not fit together, or an activation is not finite.</exception>
    public static SaeFeatureActivations FromActs(Tensor acts, Tensor tokens, Tensor? attentionMask = null)
    {
        ArgumentNullException.ThrowIfNull(acts);
        ArgumentNullException.ThrowIfNull(tokens);
        if (acts.dim() != 3) throw new InterpException($"feature activations must be [n_seq, pos, d_sae], got [{string.Join(", ", acts.shape)}]");
        int n = (int)acts.shape[0], pos = (int)acts.shape[1], dSae = (int)acts.shape[2];
        if (tokens.dim() != 2 || tokens.shape[0] != n || tokens.shape[1] != pos)
            throw new InterpException($"tokens must be [n_seq {n}, pos {pos}] like the activations, got [{string.Join(", ", tokens.shape)}]");
        if (attentionMask is not null && (attentionMask.dim() != 2 || attentionMask.shape[0] != n || attentionMask.shape[1] != pos))
            throw new InterpException($"the attention mask must be [n_seq {n}, pos {pos}] like the activations, got [{string.Join(", ", attentionMask.shape)}]");
        using var scope = NewDisposeScope();
        var values = acts.detach().cpu().to(ScalarType.Float32);
        if (!values.isfinite().all().item<bool>()) throw new InterpException("feature activations have a non-finite value");
        var real = attentionMask is null ? Enumerable.Repeat(true, n * pos).ToArray() : attentionMask.cpu().ne(Scalars.Zero).reshape(-1).data<bool>().ToArray();
        var entries = new List<FeatureActivation>();
        AddEntries(entries, values, real, 0, pos);
        return new SaeFeatureActivations(dSae, n, pos, entries.ToArray(), tokens.cpu().to(ScalarType.Int32).reshape(-1).data<int>().ToArray(), real);
    }

    /// <summary>
    /// The collection from its parts, as a sharded run's merge rebuilds it: <paramref name="tokens"/> the ids of
    /// sequences × <paramref name="positions"/> tokens (row-major, every position real) and <paramref name="entries"/>
    /// the activations &gt; 0, in order of sequence, position and feature (as <see cref="Entries"/> lists them).
    /// </summary>
    /// <exception cref="InterpException">The token count is not a multiple of the positions, or an entry is out of range,
    /// not positive and finite, or out of order.</exception>
    public static SaeFeatureActivations FromEntries(int dSae, int positions, IReadOnlyList<int> tokens, IReadOnlyList<FeatureActivation> entries)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(entries);
        if (dSae < 1 || positions < 1 || tokens.Count % positions != 0)
            throw new InterpException($"feature activations of d_sae {dSae} over {tokens.Count} tokens in sequences of {positions}: expected d_sae ≥ 1 and whole sequences");
        int sequences = tokens.Count / positions;
        long last = -1;
        foreach (var e in entries)
        {
            if (e.Sequence < 0 || e.Sequence >= sequences || e.Position < 0 || e.Position >= positions || e.Feature < 0 || e.Feature >= dSae)
                throw new InterpException($"feature activation (sequence {e.Sequence}, position {e.Position}, feature {e.Feature}) is outside {sequences} sequences × {positions} positions × d_sae {dSae}");
            if (!(e.Value > 0) || !float.IsFinite(e.Value))
                throw new InterpException($"feature activation (sequence {e.Sequence}, position {e.Position}, feature {e.Feature}) is {e.Value}; the collection holds values > 0");
            long key = ((long)e.Sequence * positions + e.Position) * dSae + e.Feature;
            if (key <= last)
                throw new InterpException($"feature activation (sequence {e.Sequence}, position {e.Position}, feature {e.Feature}) is out of order or repeated");
            last = key;
        }
        return new SaeFeatureActivations(dSae, sequences, positions, [.. entries], [.. tokens], Enumerable.Repeat(true, tokens.Count).ToArray());
    }

    /// <summary>Appends the activations &gt; 0 of <paramref name="acts"/> [b, pos, d_sae] at real positions, sequences numbered from <paramref name="start"/>.</summary>
    private static void AddEntries(List<FeatureActivation> entries, Tensor acts, bool[] real, int start, int pos)
    {
        using var scope = NewDisposeScope();
        var cpu = acts.cpu().to(ScalarType.Float32);
        var active = cpu.gt(Scalars.Zero);                                                      // [b, pos, d_sae]
        var where = active.nonzero().to(ScalarType.Int32).contiguous();                         // [nnz, 3]: (sequence, position, feature), row-major order
        var values = cpu.masked_select(active).contiguous();                                    // [nnz], the same order
        if (values.shape[0] == 0) return;
        var idx = where.data<int>().ToArray();
        var v = values.data<float>().ToArray();
        for (int i = 0; i < v.Length; i++)
        {
            int s = start + idx[3 * i], p = idx[3 * i + 1];
            if (real[s * pos + p]) entries.Add(new FeatureActivation(s, p, idx[3 * i + 2], v[i]));
        }
    }

    /// <summary>
    /// The <c>sae_feature_acts</c> table, one row per active (sequence, position, feature): <c>sequence</c> (int32),
    /// <c>position</c> (int32), <c>feature</c> (int32), <c>value</c> (float32, &gt; 0).
    /// </summary>
    public ParquetTable ToTable() => new ParquetTable()
        .Add(Columns.Sequence, _entries.Select(e => e.Sequence).ToArray())
        .Add(Columns.Position, _entries.Select(e => e.Position).ToArray())
        .Add(SaeColumns.Feature, _entries.Select(e => e.Feature).ToArray())
        .Add(Columns.Value, _entries.Select(e => e.Value).ToArray());

    /// <summary>
    /// The <c>sae_feature_stats</c> table, one row per feature: <c>feature</c> (int32), <c>active_count</c> (int64),
    /// <c>positions</c> (int64, the real positions counted), <c>density</c> (float64, active_count / positions),
    /// <c>log10_density</c> (float64, log10(density + 1e-10) as SAELens's <c>sparsity.safetensors</c>), <c>max</c>
    /// (float64) and <c>mean_active</c> (float64, NaN for a dead feature).
    /// </summary>
    public ParquetTable StatsTable()
    {
        var s = Stats;
        return new ParquetTable()
            .Add(SaeColumns.Feature, s.Select(x => x.Feature).ToArray())
            .Add("active_count", s.Select(x => x.ActiveCount).ToArray())
            .Add("positions", s.Select(_ => RealPositions).ToArray())
            .Add("density", s.Select(x => x.Density).ToArray())
            .Add("log10_density", s.Select(x => x.Log10Density).ToArray())
            .Add("max", s.Select(x => x.Max).ToArray())
            .Add("mean_active", s.Select(x => x.MeanWhenActive).ToArray());
    }
}

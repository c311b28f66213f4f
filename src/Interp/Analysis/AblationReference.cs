using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// The reference batch of mean and resample ablation: tokens [R, pos_ref] run through the model once per set of hook
/// points asked for, their activations kept (on the model's device) until disposed.
/// <list type="bullet">
/// <item>Mean ablation replaces an activation at position p with the mean over the R reference sequences of their
/// activations at position p (TransformerLens style), so the reference must be at least as long as the input; positions
/// beyond the input's length are not used (causal: a prefix's activations do not depend on what follows; in a
/// bidirectional encoder the activations at p are those of the whole reference sequences).</item>
/// <item>Resample ablation gives input sequence b the activations of reference sequence (b + s_b) mod R at the same
/// positions, with s_b uniform in 1…R−1 from a generator seeded with <see cref="Seed"/>: the same indices for every
/// site and every call with the same batch size, and, when the reference is the input batch itself, never a
/// sequence's own activations (a single-sequence reference gives every sequence that one).</item>
/// </list>
/// A right-padded reference batch (given with its attention mask) uses real positions only: the mean at position p is
/// over the sequences that have a real token there (0 where none has), and a resampled sequence that is padding at p
/// gives the mean at p instead.
/// </summary>
public sealed class AblationReference : IDisposable
{
    private readonly Dictionary<string, Tensor> _activations = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _means = new(StringComparer.Ordinal);
    private readonly AblationReference? _owner;   // set on a view (Rows): the reference whose activations it shares

    /// <summary>
    /// A reference batch of <paramref name="tokens"/> [R, pos] (or [pos]) for <paramref name="model"/>, right-padded with
    /// <paramref name="attentionMask"/> [R, pos] (1 at real tokens; null: no padding).
    /// </summary>
    /// <exception cref="InterpException">The tokens or the mask are not valid for the model.</exception>
    public AblationReference(HookedTransformer model, Tensor tokens, long seed = 0, Tensor? attentionMask = null)
    {
        Model = model;
        using (NewDisposeScope())
        {
            var valid = model.ValidateTokens(tokens);
            Padding = model.PaddingMask(attentionMask, valid.shape[0], valid.shape[1])?.clone().DetachFromDisposeScope();
            Tokens = valid.clone().DetachFromDisposeScope();
        }
        Seed = seed;
    }

    private AblationReference(AblationReference owner, long rowOffset)
    {
        (_owner, _activations, _means) = (owner, owner._activations, owner._means);
        (Model, Tokens, Padding, Seed, RowOffset) = (owner.Model, owner.Tokens, owner.Padding, owner.Seed, rowOffset);
    }

    /// <summary>
    /// This reference for an input batch that is rows <paramref name="offset"/>… of a larger one (a chunk of it): resampling
    /// gives chunk row b what it gives row <paramref name="offset"/> + b of the whole batch, so that a batch run in chunks
    /// is ablated as it is in one piece. The view shares this reference's activations; disposing it frees nothing.
    /// </summary>
    public AblationReference Rows(long offset)
    {
        if (offset < 0) throw new InterpException($"a row offset is at least 0, got {offset}");
        return new AblationReference(_owner ?? this, RowOffset + offset);
    }

    /// <summary>The index, in the whole input batch, of the input's first sequence (see <see cref="Rows"/>); 0 unless a view.</summary>
    public long RowOffset { get; }

    /// <summary>Where the reference batch is padding, bool [R, pos_ref] (true at padding), or null when it has none.</summary>
    public Tensor? Padding { get; }

    /// <summary>The model whose activations these are.</summary>
    public HookedTransformer Model { get; }
    /// <summary>The reference tokens [R, pos_ref].</summary>
    public Tensor Tokens { get; }
    /// <summary>Seed of the resampling indices.</summary>
    public long Seed { get; }
    /// <summary>R, the number of reference sequences.</summary>
    public long BatchSize => Tokens.shape[0];
    /// <summary>pos_ref, the reference sequences' length.</summary>
    public long Length => Tokens.shape[1];

    /// <summary>
    /// For an input batch of <paramref name="batch"/> sequences: the reference sequence each one takes its activations
    /// from in resample ablation, (g + s_g) mod R with g = <see cref="RowOffset"/> + b and s_g uniform in 1…R−1 (seeded;
    /// 0 when R = 1).
    /// </summary>
    public long[] ResampleIndices(long batch)
    {
        long r = BatchSize;
        if (r == 1) return new long[batch];
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)Seed);
        // Draws for rows 0 … offset + batch − 1 of the whole batch: a chunk's rows take the draws of their place in it.
        var shifts = randint(1, r, [RowOffset + batch], generator: generator, dtype: ScalarType.Int64).data<long>().ToArray();
        return Enumerable.Range(0, (int)batch).Select(b => (RowOffset + b + shifts[RowOffset + b]) % r).ToArray();
    }

    /// <summary>The reference activations [R, pos_ref, …] at <paramref name="hookName"/>, computed on first use.</summary>
    /// <exception cref="Hooks.UnknownHookException">The model has no such hook.</exception>
    public Tensor Activation(string hookName)
    {
        Prepare([hookName]);
        return _activations[hookName];
    }

    /// <summary>The mean over the reference batch at each of the first <paramref name="pos"/> positions, [1, pos, …].</summary>
    /// <exception cref="InterpException">The reference is shorter than <paramref name="pos"/>.</exception>
    public Tensor Mean(string hookName, long pos)
    {
        CheckLength(hookName, pos);
        Prepare([hookName]);
        if (!_means.TryGetValue(hookName, out var mean))
        {
            using (no_grad())
            using (NewDisposeScope())
            {
                var activations = _activations[hookName];
                if (Padding is null) mean = activations.mean([0], keepdim: true);
                else
                {
                    var real = Broadcast(Padding.logical_not(), activations).to(activations.dtype);    // [R, pos_ref, 1, …]
                    mean = (activations * real).sum([0], keepdim: true) / real.sum([0], keepdim: true).clamp_min(Scalars.One);
                }
                mean = mean.DetachFromDisposeScope();
            }
            _means[hookName] = mean;
        }
        return mean.narrow(1, 0, pos);
    }

    /// <summary>
    /// The resampled activations for an input batch of <paramref name="batch"/> sequences of <paramref name="pos"/>
    /// tokens: row b is reference sequence <see cref="ResampleIndices"/>[b] at positions 0…pos−1, [batch, pos, …].
    /// </summary>
    /// <exception cref="InterpException">The reference is shorter than <paramref name="pos"/>.</exception>
    public Tensor Resample(string hookName, long batch, long pos)
    {
        CheckLength(hookName, pos);
        Prepare([hookName]);
        var activations = _activations[hookName];
        var index = tensor(ResampleIndices(batch), device: activations.device);
        var resampled = activations.index_select(0, index);
        if (Padding is not null)
            resampled = where(Broadcast(Padding.index_select(0, index), resampled), Mean(hookName, Length), resampled);
        return resampled.narrow(1, 0, pos);
    }

    /// <summary>A [R, pos] mask viewed as [R, pos, 1, …] to broadcast against <paramref name="activations"/> [R, pos, …].</summary>
    private static Tensor Broadcast(Tensor mask, Tensor activations) =>
        mask.to(activations.device).view([.. mask.shape, .. Enumerable.Repeat(1L, (int)activations.dim() - 2)]);

    /// <summary>Computes, in one forward pass, the reference activations at every hook in <paramref name="hookNames"/> not cached yet.</summary>
    internal void Prepare(IEnumerable<string> hookNames)
    {
        ObjectDisposedException.ThrowIf(_disposed || _owner?._disposed == true, this);
        var missing = hookNames.Where(n => !_activations.ContainsKey(n)).Distinct().ToHashSet(StringComparer.Ordinal);
        if (missing.Count == 0) return;
        foreach (var name in missing) Model.GetHookPoint(name);   // unknown names fail with suggestions
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (logits, cache) = Model.RunWithCache(Tokens, Padding?.logical_not(), missing.Contains);
        using (cache)
            foreach (var name in missing) _activations[name] = cache[name].clone().DetachFromDisposeScope();
    }

    private void CheckLength(string hookName, long pos)
    {
        if (pos > Length)
            throw new InterpException($"{hookName}: the reference batch has {Length} positions but the input has {pos}; mean and resample ablation need a reference at least as long as the input");
    }

    private bool _disposed;

    /// <summary>Frees the cached activations.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_owner is not null) return;   // a view: the owner frees the activations
        foreach (var t in _activations.Values.Concat(_means.Values)) t.Dispose();
        _activations.Clear();
        _means.Clear();
        Tokens.Dispose();
        Padding?.Dispose();
    }
}

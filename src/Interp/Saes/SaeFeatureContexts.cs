using System.Globalization;
using Interp.Results;
using Interp.Tokenizers;

namespace Interp.Saes;

/// <summary>One token of a context window.</summary>
/// <param name="Offset">Position relative to the maximum (0 at the maximum, negative before it).</param>
/// <param name="Position">Position in the sequence.</param>
/// <param name="TokenId">The token id.</param>
/// <param name="Token">Its display string (the tokenizer's <see cref="ITokenizer.ToStrTokens"/>; the id in decimal without a tokenizer).</param>
/// <param name="Value">The feature's activation at this token (0 where it is not active), for colouring.</param>
public sealed record FeatureContextToken(int Offset, int Position, int TokenId, string Token, float Value);

/// <summary>One of a feature's top-activating contexts: the token window around one of its maxima.</summary>
/// <param name="Feature">The feature.</param>
/// <param name="Rank">1 for the feature's largest activation, 2 for the next, ….</param>
/// <param name="Sequence">The sequence of the maximum.</param>
/// <param name="Position">The position of the maximum.</param>
/// <param name="Value">The activation at the maximum.</param>
/// <param name="Tokens">The window [position − before, position + after], clipped to the sequence's real tokens.</param>
public sealed record FeatureContext(int Feature, int Rank, int Sequence, int Position, float Value, IReadOnlyList<FeatureContextToken> Tokens);

/// <summary>Which contexts <see cref="SaeFeatureContexts.Top"/> picks.</summary>
public sealed record SaeFeatureContextOptions
{
    /// <summary>Contexts per feature (default 10): the feature's largest activations at distinct (sequence, position).</summary>
    public int TopN { get; init; } = 10;
    /// <summary>Tokens shown before each maximum (default 8).</summary>
    public int Before { get; init; } = 8;
    /// <summary>Tokens shown after each maximum (default 2).</summary>
    public int After { get; init; } = 2;
    /// <summary>The features to read; null: every feature that is active at least once, in feature order.</summary>
    public IReadOnlyList<int>? Features { get; init; }
}

/// <summary>
/// Top-activating contexts per feature (as Neuronpedia and SAELens's feature dashboards show them): for each feature
/// its <see cref="SaeFeatureContextOptions.TopN"/> largest activations over the collection, each at a distinct
/// (sequence, position), ordered by value (ties: earlier sequence, then earlier position, first), each with the token
/// window around it and the feature's activation at every token of the window. Windows of two maxima may overlap.
/// </summary>
public sealed class SaeFeatureContexts
{
    /// <summary>The table name of <see cref="ToTable"/>.</summary>
    public const string TableName = "sae_feature_contexts";

    private SaeFeatureContexts(IReadOnlyList<FeatureContext> contexts) => Contexts = contexts;

    /// <summary>Every context, by feature (in the order asked for) and then rank.</summary>
    public IReadOnlyList<FeatureContext> Contexts { get; }

    /// <summary>The contexts of one feature, by rank (empty for a feature that never fires).</summary>
    public IReadOnlyList<FeatureContext> Of(int feature) => Contexts.Where(c => c.Feature == feature).ToArray();

    /// <summary>
    /// The top contexts of <paramref name="acts"/>'s features (<paramref name="options"/>), with token strings from
    /// <paramref name="tokenizer"/> (null: the ids in decimal).
    /// </summary>
    /// <exception cref="InterpException">TopN is below 1, a window size is negative, or a feature is out of range.</exception>
    public static SaeFeatureContexts Top(SaeFeatureActivations acts, ITokenizer? tokenizer = null, SaeFeatureContextOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(acts);
        options ??= new SaeFeatureContextOptions();
        if (options.TopN < 1) throw new InterpException($"contexts per feature (TopN) must be at least 1, got {options.TopN}");
        if (options.Before < 0) throw new InterpException($"the window's tokens before the maximum (Before) must be ≥ 0, got {options.Before}");
        if (options.After < 0) throw new InterpException($"the window's tokens after the maximum (After) must be ≥ 0, got {options.After}");
        var features = options.Features ?? acts.Stats.Where(s => !s.IsDead).Select(s => s.Feature).ToArray();
        foreach (int f in features) acts.CheckFeature(f);

        // One pass over the sparse entries: per wanted feature, a bounded min-heap of its largest activations.
        var heaps = new Dictionary<int, PriorityQueue<FeatureActivation, (float, int, int)>>();
        foreach (int f in features) heaps.TryAdd(f, new PriorityQueue<FeatureActivation, (float, int, int)>(Comparer<(float, int, int)>.Create(Worse)));
        foreach (var e in acts.Entries)
        {
            if (!heaps.TryGetValue(e.Feature, out var heap)) continue;
            var key = (e.Value, e.Sequence, e.Position);
            if (heap.Count < options.TopN) heap.Enqueue(e, key);
            else if (heap.TryPeek(out _, out var least) && Worse(least, key) < 0) heap.EnqueueDequeue(e, key);
        }
        var contexts = new List<FeatureContext>();
        foreach (int f in features.Distinct())
        {
            var top = heaps[f].UnorderedItems.Select(x => x.Element).OrderByDescending(e => e.Value).ThenBy(e => e.Sequence).ThenBy(e => e.Position).ToArray();
            for (int r = 0; r < top.Length; r++)
                contexts.Add(new FeatureContext(f, r + 1, top[r].Sequence, top[r].Position, top[r].Value, Window(acts, tokenizer, f, top[r], options)));
        }
        return new SaeFeatureContexts(contexts);
    }

    /// <summary>Orders keys from the one to drop first: smaller value, then later sequence, then later position.</summary>
    private static int Worse((float Value, int Sequence, int Position) a, (float Value, int Sequence, int Position) b)
    {
        int c = a.Value.CompareTo(b.Value);
        if (c != 0) return c;
        c = b.Sequence.CompareTo(a.Sequence);
        return c != 0 ? c : b.Position.CompareTo(a.Position);
    }

    private static FeatureContextToken[] Window(SaeFeatureActivations acts, ITokenizer? tokenizer, int feature, FeatureActivation max, SaeFeatureContextOptions options)
    {
        int s = max.Sequence;
        int first = Math.Max(0, max.Position - options.Before), last = Math.Min(acts.Positions - 1, max.Position + options.After);
        var positions = Enumerable.Range(first, last - first + 1).Where(p => acts.IsReal(s, p)).ToArray();
        var ids = positions.Select(p => acts.TokenAt(s, p)).ToArray();
        var text = tokenizer is null ? ids.Select(id => id.ToString(CultureInfo.InvariantCulture)).ToArray() : tokenizer.ToStrTokens(ids);
        return positions.Select((p, i) => new FeatureContextToken(p - max.Position, p, ids[i], text[i], acts.ValueAt(s, p, feature))).ToArray();
    }

    /// <summary>
    /// The <c>sae_feature_contexts</c> table, one row per window token: <c>feature</c>, <c>rank</c>, <c>sequence</c>,
    /// <c>position</c> (of the maximum), <c>offset</c> (of the token from the maximum), <c>token_id</c> (all int32),
    /// <c>token</c> (string) and <c>value</c> (float32, the feature's activation at the token).
    /// </summary>
    public ParquetTable ToTable()
    {
        var rows = Contexts.SelectMany(c => c.Tokens.Select(t => (c, t))).ToArray();
        return new ParquetTable()
            .Add(SaeColumns.Feature, rows.Select(x => x.c.Feature).ToArray())
            .Add(Columns.Rank, rows.Select(x => x.c.Rank).ToArray())
            .Add(Columns.Sequence, rows.Select(x => x.c.Sequence).ToArray())
            .Add(Columns.Position, rows.Select(x => x.c.Position).ToArray())
            .Add("offset", rows.Select(x => x.t.Offset).ToArray())
            .Add(Columns.TokenId, rows.Select(x => x.t.TokenId).ToArray())
            .Add(Columns.Token, rows.Select(x => x.t.Token).ToArray())
            .Add(Columns.Value, rows.Select(x => x.t.Value).ToArray());
    }
}

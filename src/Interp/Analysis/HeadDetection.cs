using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Results;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>The three standard attention-head scores (TransformerLens's head detector).</summary>
public enum HeadScoreKind
{
    /// <summary>Attention from each position to the one before it.</summary>
    PreviousToken,
    /// <summary>Attention from a token in the repeated half to the same token in the first half.</summary>
    DuplicateToken,
    /// <summary>Attention from a token in the repeated half to the token after its first occurrence.</summary>
    Induction,
}

/// <summary>Scores of every head: <c>Values[kind][layer, head]</c>.</summary>
public sealed record HeadScores(IReadOnlyDictionary<HeadScoreKind, double[,]> Values)
{
    /// <summary>The snake_case name used in tables: previous_token, duplicate_token, induction.</summary>
    public static string Name(HeadScoreKind kind) => kind switch
    {
        HeadScoreKind.PreviousToken => "previous_token",
        HeadScoreKind.DuplicateToken => "duplicate_token",
        _ => "induction",
    };

    /// <summary>The head with the highest score of <paramref name="kind"/> in <paramref name="layer"/> (or any layer).</summary>
    public (int Layer, int Head, double Score) Best(HeadScoreKind kind, int? layer = null)
    {
        var v = Values[kind];
        var best = (Layer: -1, Head: -1, Score: double.NegativeInfinity);
        for (int l = 0; l < v.GetLength(0); l++)
            for (int h = 0; h < v.GetLength(1); h++)
                if ((layer is null || layer == l) && v[l, h] > best.Score) best = (l, h, v[l, h]);
        return best;
    }

    /// <summary>The scores as a long table: layer, head, score (previous_token | duplicate_token | induction), value.</summary>
    public ParquetTable ToTable() => ToTable(Values.Select(kv => (Name(kv.Key), kv.Value)));

    /// <summary>Named [layer, head] scores as the same long table: layer int32, head int32, score string, value float.</summary>
    public static ParquetTable ToTable(IEnumerable<(string Score, double[,] Values)> scores)
    {
        var rows = new ParquetColumns();
        foreach (var (name, values) in scores)
            for (int l = 0; l < values.GetLength(0); l++)
                for (int h = 0; h < values.GetLength(1); h++)
                    rows.Row((Columns.Layer, l), (Columns.Head, h), (Columns.Score, name), (Columns.Value, (float)values[l, h]));
        return rows.ToTable();
    }
}

/// <summary>Repeated random sequences [batch, prefix + 2·half] and how they were drawn.</summary>
/// <param name="Tokens">The sequences.</param>
/// <param name="Half">Length of the random part that is repeated.</param>
/// <param name="Prefix">1 when every sequence starts with <paramref name="FirstToken"/>, else 0.</param>
/// <param name="Low">Lowest id drawn.</param>
/// <param name="High">One past the highest id drawn.</param>
/// <param name="FirstToken">The token that starts every sequence, if any.</param>
public sealed record RepeatedTokens(Tensor Tokens, int Half, int Prefix, int Low, int High, int? FirstToken)
{
    /// <summary>
    /// The corrupted twin for patching: [prefix] + c + r, each c_i drawn uniformly (seeded) from the same id range
    /// without r_i, so that no position of the first copy keeps its token and the repeated half's targets are unchanged.
    /// </summary>
    /// <exception cref="InterpException">The id range holds fewer than 2 ids.</exception>
    public Tensor CorruptFirstCopy(long seed)
    {
        long range = High - Low;
        if (range < 2) throw new InterpException($"corrupting the first copy needs at least 2 token ids to draw from, got [{Low}, {High})");
        using var generator = new Generator((ulong)seed);
        using var scope = NewDisposeScope();
        var first = Tokens.narrow(1, Prefix, Half);                                                 // [batch, half]
        var shift = randint(1, range, first.shape, generator: generator, dtype: ScalarType.Int64);  // never 0: c_i ≠ r_i
        var corrupted = Tokens.clone();
        using Scalar lowest = Low.ToScalar(), ids = range.ToScalar();
        corrupted.narrow(1, Prefix, Half).copy_(first.sub(lowest).add(shift, Scalars.One).remainder(ids).add(lowest, Scalars.One)); // (r − low + shift) mod range + low
        return corrupted.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The metric of patching on repeated tokens: the mean log-probability of the correct next token over the repeated
    /// half (predicted positions prefix + half + 1 …, whose targets are the same in the clean and corrupted runs), per
    /// sequence. Higher is better: near 0 on the clean run, near −ln(#ids) on the corrupted one.
    /// </summary>
    public Metric RepeatedHalfLogProb()
    {
        var loss = Metrics.Loss(Prefix + Half + 1);
        return (logits, tokens) =>
        {
            using var scope = NewDisposeScope();
            return loss(logits, tokens).neg().MoveToOuterDisposeScope();
        };
    }
}

/// <summary>
/// Detects previous-token, duplicate-token and induction heads from attention patterns on repeated random
/// sequences: [prefix] + r + r, with r uniformly random tokens. Each score is the mean attention weight on the
/// position the mechanism predicts, so 1 means the head attends there and nowhere else. User-given detection
/// patterns (TransformerLens's <c>detect_head</c>) are scored by <see cref="Detect(HookedTransformer, Tensor, Tensor, DetectionOptions?, CancellationToken)"/>.
/// </summary>
public static partial class HeadDetection
{
    /// <summary>
    /// Repeated random tokens [batch, prefix + 2·half]: an optional first token (e.g. BOS), then a random sequence
    /// of <paramref name="half"/> tokens drawn uniformly from [<paramref name="low"/>, <paramref name="high"/>), then the same again.
    /// </summary>
    public static Tensor RepeatedRandomTokens(int batch, int half, int low, int high, long seed, int? firstToken = null)
    {
        if (half < 2 || low < 0 || high <= low + 1)
            throw new InterpException($"repeated random tokens need half ≥ 2 and a token range of at least 2 ids, got half {half}, range [{low}, {high})");
        var generator = new Generator((ulong)seed);
        var random = randint(low, high, [batch, half], generator: generator, dtype: ScalarType.Int64);
        var parts = new List<Tensor>();
        if (firstToken is int t)
        {
            using var first = t.ToScalar();
            parts.Add(full(batch, 1, first, dtype: ScalarType.Int64));
        }
        parts.Add(random);
        parts.Add(random);
        return cat(parts, 1);
    }

    /// <summary>
    /// Repeated random tokens suited to <paramref name="loaded"/>: each sequence starts with <paramref name="firstToken"/>
    /// (default: the tokenizer's BOS, if any); ids are drawn from [low, high), by default the whole vocabulary except
    /// the special ids (BOS, EOS) at either end; <paramref name="half"/> is capped so that both copies fit the context.
    /// </summary>
    public static RepeatedTokens RepeatedRandomTokens(LoadedModel loaded, int batch, int half, long seed, int? firstToken = null, int? low = null, int? high = null)
    {
        var cfg = loaded.Model.Config;
        var tokenizer = loaded.Tokenizer;
        int? first = firstToken ?? tokenizer?.BosId;
        var special = new[] { first, tokenizer?.EosId }.OfType<int>().ToArray();
        int lo = low ?? special.Where(s => s < cfg.DVocab / 2).Select(s => s + 1).DefaultIfEmpty(0).Max();
        int hi = high ?? special.Where(s => s >= cfg.DVocab / 2).DefaultIfEmpty(cfg.DVocab).Min();
        int prefix = first is null ? 0 : 1;
        half = Math.Min(half, (cfg.NCtx - prefix) / 2);
        return new RepeatedTokens(RepeatedRandomTokens(batch, half, lo, hi, seed, first), half, prefix, lo, hi, first);
    }

    /// <summary>Scores every head on <paramref name="tokens"/> = [prefix] + r + r, r of length <paramref name="half"/>.</summary>
    /// <exception cref="InterpException">The tokens cannot hold two copies, or the model is a bidirectional encoder: the
    /// scores measure how a causal head reads the past (a bidirectional head may as well attend to the later copy).</exception>
    public static HeadScores Score(HookedTransformer model, Tensor tokens, int half, CancellationToken cancellationToken = default)
    {
        model.EnsureCausal("head detection on repeated sequences (HeadDetection.Score: previous-token, duplicate-token and induction scores)");
        int prefix = (int)tokens.shape[1] - 2 * half;
        if (prefix < 0) throw new InterpException($"tokens of length {tokens.shape[1]} cannot hold two copies of {half} tokens");
        var cfg = model.Config;
        var values = Enum.GetValues<HeadScoreKind>().ToDictionary(k => k, _ => new double[cfg.NLayers, cfg.NHeads]);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (logits, cache) = model.RunWithCache(tokens, name => HookNames.Is(name, HookNames.Pattern));
        using (cache)
        {
            logits.Dispose();
            for (int l = 0; l < cfg.NLayers; l++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var pattern = cache[HookNames.Pattern(l)];                                           // [batch, head, q, k]
                var previous = pattern.diagonal(offset: -1, dim1: 2, dim2: 3).mean([0, 2]);           // q → q−1, all q ≥ 1
                // Second copy: query q ∈ [prefix+half, prefix+2·half); same token at q − half, the one after it at q − half + 1.
                var second = pattern.narrow(2, prefix + half, half);                                 // [batch, head, half, k]
                var duplicate = second.narrow(3, prefix, half).diagonal(offset: 0, dim1: 2, dim2: 3).mean([0, 2]);
                var induction = second.narrow(3, prefix + 1, half).diagonal(offset: 0, dim1: 2, dim2: 3).mean([0, 2]);
                for (int h = 0; h < cfg.NHeads; h++)
                {
                    values[HeadScoreKind.PreviousToken][l, h] = previous[h].item<float>();
                    values[HeadScoreKind.DuplicateToken][l, h] = duplicate[h].item<float>();
                    values[HeadScoreKind.Induction][l, h] = induction[h].item<float>();
                }
            }
        }
        return new HeadScores(values);
    }
}

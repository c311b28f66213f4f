using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>How <see cref="HeadDetection.Detect(HookedTransformer, Tensor, Tensor, DetectionOptions?, CancellationToken)"/> compares a head's attention with a detection pattern.</summary>
public sealed record DetectionOptions
{
    /// <summary>Drop the attention paid to key position 0 (the BOS token, when sequences start with one) before scoring (TransformerLens's <c>exclude_bos</c>).</summary>
    public bool ExcludeBos { get; init; }

    /// <summary>Drop the attention each query pays to itself before scoring (TransformerLens's <c>exclude_current_token</c>).</summary>
    public bool ExcludeCurrentToken { get; init; }

    /// <summary>
    /// Score only the query rows in which the detection pattern has a target (default). TransformerLens divides by the
    /// attention of every row, so that rows where the pattern predicts nothing (e.g. the first position of a
    /// previous-token pattern) count as misses; false does the same.
    /// </summary>
    public bool TargetRowsOnly { get; init; } = true;
}

/// <summary>
/// Detection patterns [query_pos, key_pos] (or [batch, query_pos, key_pos] when they depend on the tokens): 1 where a
/// head of the kind looked for should attend, 0 elsewhere, lower triangular (a causal head never looks ahead; a
/// bidirectional encoder's patterns may mark later keys too).
/// </summary>
public static class DetectionPatterns
{
    /// <summary>Each query attends <paramref name="offset"/> tokens back: 1 at [q, q − offset] for q ≥ offset (offset 0 = the current token).</summary>
    public static Tensor AttendBack(int positions, int offset)
    {
        if (positions < 1 || offset < 0 || offset >= positions)
            throw new InterpException($"an attend-{offset}-back pattern needs 0 ≤ offset < positions, got offset {offset} for {positions} positions");
        return ones(positions, positions).tril(-offset).triu(-offset);                              // [q, k]: the diagonal k = q − offset
    }

    /// <summary>The previous-token pattern: 1 at [q, q − 1].</summary>
    public static Tensor PreviousToken(int positions) => AttendBack(positions, 1);

    /// <summary>
    /// HeadDetection's duplicate-token target on [prefix] + r + r: 1 at [q, q − half] for each query q in the second copy
    /// (the same token in the first copy).
    /// </summary>
    public static Tensor RepeatedDuplicate(int prefix, int half) => RepeatedShift(prefix, half, 0);

    /// <summary>HeadDetection's induction target on [prefix] + r + r: 1 at [q, q − half + 1] for each query q in the second copy (the token after the first occurrence).</summary>
    public static Tensor RepeatedInduction(int prefix, int half) => RepeatedShift(prefix, half, 1);

    /// <summary>
    /// TransformerLens's duplicate-token pattern from the tokens [batch, pos] → [batch, pos, pos]: 1 at [q, k] for every
    /// earlier k &lt; q holding the same token as q.
    /// </summary>
    public static Tensor DuplicateToken(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var t = tokens.dim() == 1 ? tokens.unsqueeze(0) : tokens;
        var same = t.unsqueeze(2).eq(t.unsqueeze(1)).to(ScalarType.Float32);                      // [batch, q, k]
        return same.tril(-1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// TransformerLens's induction pattern from the tokens [batch, pos] → [batch, pos, pos]: the duplicate-token pattern
    /// shifted one key to the right, 1 at [q, k] for k ≤ q whose previous token k − 1 equals the token at q.
    /// </summary>
    public static Tensor Induction(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var t = tokens.dim() == 1 ? tokens.unsqueeze(0) : tokens;
        long pos = t.shape[1];
        var shifted = zeros(t.shape[0], pos, pos);
        if (pos > 1) shifted[.., .., 1..] = t.unsqueeze(2).eq(t[.., ..^1].unsqueeze(1)).to(ScalarType.Float32);   // [q, k] ← tokens[k − 1] == tokens[q]
        return shifted.tril().MoveToOuterDisposeScope();
    }

    private static Tensor RepeatedShift(int prefix, int half, int shift)
    {
        if (prefix < 0 || half < 2) throw new InterpException($"a repeated-sequence pattern needs prefix ≥ 0 and half ≥ 2, got prefix {prefix}, half {half}");
        int n = prefix + 2 * half;
        var p = zeros(n, n);
        for (int q = prefix + half; q < n; q++) p[q, q - half + shift] = 1;
        return p;
    }
}

public static partial class HeadDetection
{
    /// <summary>
    /// TransformerLens's <c>detect_head</c> with the "mul" measure: how much of each head's attention on
    /// <paramref name="tokens"/> [batch, pos] falls where <paramref name="detectionPattern"/> ([pos, pos], or [batch,
    /// pos, pos] per sequence; see <see cref="DetectionPatterns"/>) puts weight. Per sequence and head,
    /// Σ(pattern ⊙ detection) / Σ(pattern) over the scored query rows (<see cref="DetectionOptions.TargetRowsOnly"/>),
    /// then the mean over the batch; returns [layer, head]. With a 0/1 detection pattern that marks one key per row it
    /// is the mean attention weight on the marked keys: the previous-token pattern gives <see cref="Score"/>'s
    /// previous-token score.
    /// </summary>
    /// <remarks>On a bidirectional encoder (BERT) the detection pattern may mark keys after the query.</remarks>
    /// <exception cref="InterpException">The detection pattern's shape does not fit the tokens, it looks ahead of the query in a causal model, or it is all zero.</exception>
    public static double[,] Detect(HookedTransformer model, Tensor tokens, Tensor detectionPattern, DetectionOptions? options = null, CancellationToken cancellationToken = default) =>
        Detect(model, tokens, [detectionPattern], null, options, cancellationToken)[0];

    /// <summary>
    /// <see cref="Detect(HookedTransformer, Tensor, Tensor, DetectionOptions?, CancellationToken)"/> on a right-padded
    /// batch: the run uses its <paramref name="attentionMask"/> [batch, pos] (1 at real tokens; null: no padding), and
    /// padded query rows are not scored.
    /// </summary>
    public static double[,] Detect(HookedTransformer model, Tensor tokens, Tensor detectionPattern, Tensor? attentionMask, DetectionOptions? options = null, CancellationToken cancellationToken = default) =>
        Detect(model, tokens, [detectionPattern], attentionMask, options, cancellationToken)[0];

    /// <summary>Several detection patterns scored on one forward pass: one [layer, head] array per pattern.</summary>
    public static double[][,] Detect(HookedTransformer model, Tensor tokens, IReadOnlyList<Tensor> detectionPatterns, DetectionOptions? options = null, CancellationToken cancellationToken = default) =>
        Detect(model, tokens, detectionPatterns, null, options, cancellationToken);

    /// <summary>Several detection patterns scored on one forward pass of a right-padded batch (padding as in the single-pattern overload).</summary>
    public static double[][,] Detect(HookedTransformer model, Tensor tokens, IReadOnlyList<Tensor> detectionPatterns, Tensor? attentionMask, DetectionOptions? options = null, CancellationToken cancellationToken = default)
    {
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        tokens = model.ValidateTokens(tokens);
        foreach (var d in detectionPatterns) ValidateDetectionPattern(d, tokens.shape[0], tokens.shape[1], cfg.Causal);
        var result = detectionPatterns.Select(_ => new double[cfg.NLayers, cfg.NHeads]).ToArray();
        var real = model.PaddingMask(attentionMask, tokens.shape[0], tokens.shape[1])?.logical_not();
        var (logits, cache) = model.RunWithCache(tokens, real, name => HookNames.Is(name, HookNames.Pattern));
        using (cache)
        {
            for (int l = 0; l < cfg.NLayers; l++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                for (int i = 0; i < detectionPatterns.Count; i++)
                {
                    var scores = DetectionScores(cache[HookNames.Pattern(l)], detectionPatterns[i], options, real, cfg.Causal).data<double>().ToArray();
                    for (int h = 0; h < cfg.NHeads; h++) result[i][l, h] = scores[h];
                }
            }
        }
        return result;
    }

    /// <summary>
    /// The detection score of every head of one layer: <paramref name="pattern"/> [batch, head_index, query_pos, key_pos]
    /// (a <c>hook_pattern</c>) against <paramref name="detectionPattern"/> → [head_index], float64 on the CPU. A sequence
    /// whose scored rows hold no attention (after the exclusions) is left out of the batch mean. With
    /// <paramref name="attentionMask"/> [batch, pos] (1 at real tokens) padded query rows are not scored.
    /// <paramref name="causal"/> false (a bidirectional encoder's pattern) lets the detection pattern mark later keys.
    /// </summary>
    public static Tensor DetectionScores(Tensor pattern, Tensor detectionPattern, DetectionOptions? options = null, Tensor? attentionMask = null, bool causal = true)
    {
        options ??= new DetectionOptions();
        if (pattern.dim() != 4 || pattern.shape[2] != pattern.shape[3])
            throw new InterpException($"an attention pattern must have shape [batch, head_index, pos, pos], got [{string.Join(", ", pattern.shape)}]");
        ValidateDetectionPattern(detectionPattern, pattern.shape[0], pattern.shape[2], causal);
        using var scope = NewDisposeScope();
        long pos = pattern.shape[2];
        var p = pattern.detach().to(ScalarType.Float64).cpu();                                   // [batch, head, q, k]
        var keep = ones(pos, pos, dtype: ScalarType.Float64);                                    // [q, k]: which attention counts
        if (options.ExcludeBos) keep.select(1, 0).zero_();                                     // key 0 (BOS)
        if (options.ExcludeCurrentToken) keep.diagonal().zero_();                              // key = query
        p = p * keep;
        var d = detectionPattern.detach().to(ScalarType.Float64).cpu();
        if (d.dim() == 2) d = d.unsqueeze(0);
        d = d.unsqueeze(1);                                                                      // [batch or 1, 1, q, k]
        var rows = options.TargetRowsOnly ? d.ne(Scalars.Zero).any(-1, keepdim: true).to(ScalarType.Float64) : ones_like(d[.., .., .., ..1]);   // [·, 1, q, 1]
        if (attentionMask is not null)
        {
            if (attentionMask.dim() != 2 || attentionMask.shape[0] != pattern.shape[0] || attentionMask.shape[1] != pos)
                throw new InterpException($"detection scores: the attention mask must be [batch {pattern.shape[0]}, pos {pos}], got [{string.Join(", ", attentionMask.shape)}]");
            rows = rows * attentionMask.detach().to(ScalarType.Float64).cpu().view(-1, 1, pos, 1);      // [batch, 1, q, 1]: real queries only
        }
        var matched = (p * d * rows).sum([2, 3]);                                                // [batch, head]
        var total = (p * rows).sum([2, 3]);                                                      // [batch, head]
        var counted = total.gt(Scalars.Zero).to(ScalarType.Float64);
        using var tiny = double.Epsilon.ToScalar();
        var perSequence = where(total.gt(Scalars.Zero), matched / total.clamp_min(tiny), zeros_like(total));
        return ((perSequence * counted).sum([0]) / counted.sum([0])).MoveToOuterDisposeScope();  // [head]; NaN if no sequence counts
    }

    /// <summary>
    /// Checks a detection pattern against sequences of <paramref name="batch"/> × <paramref name="positions"/> tokens;
    /// weight above the diagonal is allowed only when <paramref name="causal"/> is false (a bidirectional encoder).
    /// </summary>
    /// <exception cref="InterpException">Wrong shape, values that are not finite and ≥ 0, weight above the diagonal (causal), or all zero.</exception>
    public static void ValidateDetectionPattern(Tensor detectionPattern, long batch, long positions, bool causal = true)
    {
        string shape = $"[{string.Join(", ", detectionPattern.shape)}]";
        if (detectionPattern.dim() is not (2 or 3) || detectionPattern.shape[^1] != positions || detectionPattern.shape[^2] != positions
            || (detectionPattern.dim() == 3 && detectionPattern.shape[0] != batch))
            throw new InterpException($"a detection pattern must have shape [{positions}, {positions}] ([query_pos, key_pos]) or [{batch}, {positions}, {positions}] ([batch, query_pos, key_pos]) to match tokens [{batch}, {positions}]; got {shape}");
        using var scope = NewDisposeScope();
        var d = detectionPattern.detach().to(ScalarType.Float64).cpu();
        if (!d.isfinite().all().item<bool>() || d.lt(Scalars.Zero).any().item<bool>())
            throw new InterpException($"detection pattern {shape}: values must be finite and ≥ 0 (1 where the head should attend, 0 elsewhere)");
        var ahead = d.triu(1).ne(Scalars.Zero);
        if (causal && ahead.any().item<bool>())
        {
            var at = ahead.nonzero()[0].data<long>().ToArray();                                  // [(batch,) q, k]
            throw new InterpException($"detection pattern {shape} puts weight on key position {at[^1]} after query position {at[^2]}: causal attention never looks ahead, the pattern must be lower triangular");
        }
        if (!d.ne(Scalars.Zero).any().item<bool>())
            throw new InterpException($"detection pattern {shape} is all zero: it marks no key for any query");
    }
}

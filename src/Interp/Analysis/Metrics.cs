using System.Runtime.CompilerServices;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// A metric of a forward pass: the logits [batch, pos, d_vocab] and the input tokens [batch, pos] → one value per
/// sequence, [batch]. Per-sequence values let a sweep run several ablations in one batch and split the result; the
/// metric of a run is their mean (<see cref="Metrics.Evaluate"/>). Any function of this shape can be passed wherever a
/// metric is asked for.
/// </summary>
public delegate Tensor Metric(Tensor logits, Tensor tokens);

/// <summary>The standard metrics, as <see cref="Metric"/> values.</summary>
public static class Metrics
{
    /// <summary>The metrics that predict the next token (<see cref="Loss"/>), which only a causal model's logits answer.</summary>
    private static readonly ConditionalWeakTable<Metric, string> NextToken = new();

    /// <summary>
    /// Checks that a pass that evaluates <paramref name="metric"/> on <paramref name="model"/>'s output can: the model has
    /// logits (not a base encoder's hidden state), and a next-token metric (<see cref="Loss"/>) runs on a causal model.
    /// <paramref name="pass"/> names the pass in the error.
    /// </summary>
    /// <exception cref="InterpException">The model has no unembedding, or a next-token metric meets a bidirectional encoder.</exception>
    internal static void EnsureApplies(Metric metric, HookedTransformer model, string pass)
    {
        model.EnsureUnembed($"{pass} (its metric reads logits)");
        if (NextToken.TryGetValue(metric, out var name)) model.EnsureCausal($"{pass} with {name}");
    }

    /// <summary>
    /// Next-token loss at every position: entry [b, p] is −log P(tokens[b, p + 1] | tokens[b, ..p]), [batch, pos − 1].
    /// Column p is the prediction made at position p of the token at position p + 1.
    /// </summary>
    public static Tensor PerTokenLoss(Tensor logits, Tensor tokens)
    {
        CheckShapes(logits, tokens);
        using var scope = NewDisposeScope();
        // −log softmax(x)[t] = logsumexp(x) − x[t]: reads the logits once and writes [batch, pos − 1], where log_softmax
        // would first write a second [batch, pos − 1, d_vocab] tensor (103 MB for GPT-2 at 4 × 128).
        var predicting = logits[.., ..^1];
        var targets = tokens[.., 1..].to(ScalarType.Int64, logits.device).unsqueeze(-1);
        return (predicting.logsumexp(-1) - predicting.gather(-1, targets).squeeze(-1)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean next-token loss per sequence over the predicted tokens at positions [<paramref name="fromTarget"/>,
    /// <paramref name="toTarget"/>) (positions of the tokens being predicted, 1 … pos − 1; default all).
    /// </summary>
    /// <remarks>A next-token metric: the passes that take a metric refuse it on a bidirectional encoder (BERT), whose logit at p does not predict token p + 1.</remarks>
    /// <exception cref="InterpException">The range is empty or outside the sequence (checked when the metric runs).</exception>
    public static Metric Loss(int fromTarget = 1, int? toTarget = null)
    {
        Metric metric = (logits, tokens) => LossOver(logits, tokens, fromTarget, toTarget);
        NextToken.Add(metric, "the next-token loss metric (Metrics.Loss)");
        return metric;
    }

    private static Tensor LossOver(Tensor logits, Tensor tokens, int fromTarget, int? toTarget)
    {
        long pos = tokens.shape[^1];
        long to = toTarget ?? pos;
        if (fromTarget < 1 || to > pos || to <= fromTarget)
            throw new InterpException($"loss over predicted positions [{fromTarget}, {to}) does not fit a sequence of {pos} tokens: positions must lie in [1, {pos})");
        using var scope = NewDisposeScope();
        return PerTokenLoss(logits, tokens)[.., (fromTarget - 1)..(int)(to - 1)].mean([1]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// logit(<paramref name="correct"/>) − logit(<paramref name="wrong"/>) at <paramref name="position"/> (negative
    /// counts from the end), per sequence.
    /// </summary>
    /// <exception cref="InterpException">A token id is outside the vocabulary or the position outside the sequence (checked when the metric runs).</exception>
    public static Metric LogitDiff(int correct, int wrong, int position = -1)
    {
        Metric metric = (logits, tokens) =>
        {
            long vocab = logits.shape[^1], pos = logits.shape[^2];
            foreach (var (id, name) in new[] { (correct, "correct"), (wrong, "wrong") })
                if (id < 0 || id >= vocab) throw new InterpException($"logit difference: {name} token id {id} is outside the vocabulary [0, {vocab})");
            if (position < -pos || position >= pos) throw new InterpException($"logit difference: position {position} is outside a sequence of {pos} tokens");
            using var scope = NewDisposeScope();
            var at = logits.select(-2, position < 0 ? pos + position : position);     // [batch, vocab]
            return (at[.., correct] - at[.., wrong]).MoveToOuterDisposeScope();
        };
        // Reads one position and two columns: read [batch, 2] → column 0 − column 1.
        return Declare(metric, new LogitReads([position], [correct, wrong], read => read.select(1, 0) - read.select(1, 1)));
    }

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Metric, LogitReads> Declared = new();

    /// <summary>
    /// Declares what <paramref name="metric"/> reads of the logits, so that passes which know it compute only those
    /// logits (<see cref="LogitReads"/>); returns the metric. The declaration must describe the metric exactly:
    /// <c>reads.Evaluate</c> of the read logits must equal the metric of the full logits.
    /// </summary>
    public static Metric Declare(Metric metric, LogitReads reads)
    {
        ArgumentNullException.ThrowIfNull(metric);
        ArgumentNullException.ThrowIfNull(reads);
        Declared.AddOrUpdate(metric, reads);
        return metric;
    }

    /// <summary>
    /// <paramref name="reads"/>' evaluation of read logits [rows, columns] → the per-sequence metric [rows], checked to
    /// return one value per sequence (as <see cref="PerSequence(Metric, Tensor, Tensor)"/> checks a metric).
    /// </summary>
    /// <exception cref="InterpException">The evaluation returned another shape.</exception>
    public static Tensor PerSequence(LogitReads reads, Tensor read)
    {
        ArgumentNullException.ThrowIfNull(reads);
        var values = reads.Evaluate(read);
        if (values.dim() != 1 || values.shape[0] != read.shape[0])
            throw new InterpException($"a metric's declared LogitReads.Evaluate must return one value per sequence, shape [{read.shape[0]}]; it returned [{string.Join(", ", values.shape)}]");
        return values;
    }

    /// <summary>
    /// What <paramref name="metric"/> reads, when it declared it (<see cref="Declare"/>) and <paramref name="model"/>
    /// can compute just that (<see cref="HookedTransformer.CanRead"/>); else null: every logit.
    /// </summary>
    public static LogitReads? ReadsFor(Metric metric, HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return ReadsOf(metric) is { } reads && model.CanRead(reads, out _) ? reads : null;
    }

    /// <summary>What <paramref name="metric"/> declared it reads (<see cref="Declare"/>), or null: it reads every logit.</summary>
    public static LogitReads? ReadsOf(Metric metric) => Declared.TryGetValue(metric, out var reads) ? reads : null;

    /// <summary>
    /// logit(answers[i]) − logit(wrongs[i]) at position lastPositions[i] of sequence i, per sequence: the logit
    /// difference of a prompt set whose prompts have different lengths (right-padded, each read at its last real token).
    /// A batch of k·n sequences (n = the number of prompts) is read as the n prompts tiled k times — sequence r is
    /// prompt r mod n — which is how <see cref="AblationSweep"/> and <see cref="ActivationPatching"/> batch several
    /// ablations or patches into one forward pass (<c>tokens.repeat(k, 1)</c>); any other batch size is an error.
    /// </summary>
    /// <exception cref="InterpException">The lists are empty or of different lengths (now); a token id outside the vocabulary, a position outside the sequence, or a batch that is not a multiple of the prompts (when the metric runs).</exception>
    public static Metric LogitDiff(IReadOnlyList<int> answers, IReadOnlyList<int> wrongs, IReadOnlyList<int> lastPositions)
    {
        var metric = PromptLogitDiff(answers, wrongs, lastPositions);
        // Reads each prompt's last position and the answers' and wrong tokens' columns.
        var columns = answers.Concat(wrongs).Distinct().ToArray();
        var index = columns.Select((id, c) => (id, c)).ToDictionary(x => x.id, x => (long)x.c);
        var good = answers.Select(id => index[id]).ToArray();
        var bad = wrongs.Select(id => index[id]).ToArray();
        int n = good.Length;
        return Declare(metric, new LogitReads(lastPositions.ToArray(), columns, read =>
        {
            using var scope = NewDisposeScope();
            long rows = read.shape[0];
            var g = tensor(Enumerable.Range(0, (int)rows).Select(r => good[r % n]).ToArray(), device: read.device).unsqueeze(1);
            var w = tensor(Enumerable.Range(0, (int)rows).Select(r => bad[r % n]).ToArray(), device: read.device).unsqueeze(1);
            return (read.gather(1, g).squeeze(1) - read.gather(1, w).squeeze(1)).MoveToOuterDisposeScope();
        }));
    }

    private static Metric PromptLogitDiff(IReadOnlyList<int> answers, IReadOnlyList<int> wrongs, IReadOnlyList<int> lastPositions)
    {
        ArgumentNullException.ThrowIfNull(answers);
        ArgumentNullException.ThrowIfNull(wrongs);
        ArgumentNullException.ThrowIfNull(lastPositions);
        if (answers.Count == 0 || answers.Count != wrongs.Count || answers.Count != lastPositions.Count)
            throw new InterpException($"logit difference: need one answer, one wrong token and one position per prompt, got {answers.Count} answers, {wrongs.Count} wrong tokens and {lastPositions.Count} positions");
        var a = answers.ToArray();
        var w = wrongs.ToArray();
        var at = lastPositions.ToArray();
        int n = a.Length;
        return (logits, tokens) =>
        {
            long batch = logits.shape[0], pos = logits.shape[^2], vocab = logits.shape[^1];
            if (logits.dim() != 3 || batch % n != 0)
                throw new InterpException($"logit difference over {n} prompts: logits must be [k·{n}, pos, d_vocab] (the prompts, tiled k times), got [{string.Join(", ", logits.shape)}]");
            for (int i = 0; i < n; i++)
            {
                if (a[i] < 0 || a[i] >= vocab) throw new InterpException($"logit difference: prompt {i}'s answer id {a[i]} is outside the vocabulary [0, {vocab})");
                if (w[i] < 0 || w[i] >= vocab) throw new InterpException($"logit difference: prompt {i}'s wrong id {w[i]} is outside the vocabulary [0, {vocab})");
                if (at[i] < 0 || at[i] >= pos) throw new InterpException($"logit difference: prompt {i}'s position {at[i]} is outside a sequence of {pos} tokens");
            }
            using var scope = NewDisposeScope();
            var rows = new long[batch];
            var answer = new long[batch];
            var wrong = new long[batch];
            for (long r = 0; r < batch; r++)
            {
                int i = (int)(r % n);
                rows[r] = r * pos + at[i];
                answer[r] = a[i];
                wrong[r] = w[i];
            }
            var read = logits.reshape(batch * pos, vocab).index_select(0, tensor(rows, device: logits.device));   // [batch, vocab]
            var good = read.gather(1, tensor(answer, device: logits.device).unsqueeze(1)).squeeze(1);
            var bad = read.gather(1, tensor(wrong, device: logits.device).unsqueeze(1)).squeeze(1);
            return (good - bad).MoveToOuterDisposeScope();
        };
    }

    /// <summary>The metric of a run: the mean of <paramref name="metric"/>'s per-sequence values.</summary>
    /// <exception cref="InterpException">The metric did not return one value per sequence.</exception>
    public static double Evaluate(Metric metric, Tensor logits, Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var values = PerSequence(metric, logits, tokens);
        return values.to(ScalarType.Float64).mean().item<double>();
    }

    /// <summary>Runs <paramref name="metric"/> and checks that it returned one value per sequence, [batch].</summary>
    public static Tensor PerSequence(Metric metric, Tensor logits, Tensor tokens)
    {
        var values = metric(logits, tokens);
        if (values.dim() != 1 || values.shape[0] != tokens.shape[0])
            throw new InterpException($"a metric must return one value per sequence, shape [{tokens.shape[0]}]; this one returned [{string.Join(", ", values.shape)}]");
        return values;
    }

    private static void CheckShapes(Tensor logits, Tensor tokens)
    {
        if (logits.dim() != 3 || tokens.dim() != 2 || logits.shape[0] != tokens.shape[0] || logits.shape[1] != tokens.shape[1])
            throw new InterpException($"metric: logits must be [batch, pos, d_vocab] and tokens [batch, pos] with the same batch and pos; got logits [{string.Join(", ", logits.shape)}] and tokens [{string.Join(", ", tokens.shape)}]");
        if (tokens.shape[1] < 2) throw new InterpException("next-token loss needs at least 2 positions");
    }
}

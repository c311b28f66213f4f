namespace Interp.Analysis;

/// <summary>
/// A circuit of edges: a set of edges of an <see cref="EdgeGraph"/> with the scores that chose them, best first (by |score|).
/// <see cref="EdgeAttribution.Faithfulness"/> measures it; <c>Interp.Results.EdgeTable</c> exports it.
/// </summary>
/// <param name="Method">The method whose scores chose the edges.</param>
/// <param name="Edges">The edges and their scores, by decreasing |score|.</param>
public sealed record EdgeCircuit(EdgeMethod Method, IReadOnlyList<EdgeScore> Edges)
{
    /// <summary>The edges alone.</summary>
    public IEnumerable<Edge> EdgeSet => Edges.Select(e => e.Edge);

    /// <summary>The <paramref name="count"/> edges of largest |score| (ties keep the graph's order).</summary>
    /// <exception cref="InterpException">count is negative.</exception>
    public static EdgeCircuit Top(IReadOnlyList<EdgeScore> scores, int count, EdgeMethod method)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (count < 0) throw new InterpException($"a circuit of {count} edges: the count must be at least 0");
        return new EdgeCircuit(method, Ranked(scores).Take(count).ToArray());
    }

    /// <summary>Every edge whose |score| is at least <paramref name="threshold"/>.</summary>
    /// <exception cref="InterpException">The threshold is negative or not a number.</exception>
    public static EdgeCircuit Threshold(IReadOnlyList<EdgeScore> scores, double threshold, EdgeMethod method)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (!(threshold >= 0)) throw new InterpException($"a circuit by score threshold {threshold}: the threshold must be a number ≥ 0");
        return new EdgeCircuit(method, Ranked(scores).Where(s => Math.Abs(s.Score) >= threshold).ToArray());
    }

    /// <summary>The scores by decreasing |score|, stable.</summary>
    public static IEnumerable<EdgeScore> Ranked(IEnumerable<EdgeScore> scores) => scores.OrderByDescending(s => Math.Abs(s.Score));
}

/// <summary>
/// One point of a faithfulness curve: the top <paramref name="Edges"/> edges by <paramref name="Method"/> and the share
/// of the metric they recover with every other edge ablated by <paramref name="Ablation"/>.
/// </summary>
public readonly record struct FaithfulnessPoint(EdgeMethod Method, int Edges, double Faithfulness, CircuitAblation Ablation = CircuitAblation.Corrupted);

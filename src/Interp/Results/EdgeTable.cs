using Interp.Analysis;

namespace Interp.Results;

/// <summary>
/// The edge-attribution tables: <c>edge_attribution</c> (<c>upstream</c> — <c>embed</c>, <c>pos_embed</c>,
/// <c>L{l}H{h}</c>, <c>mlp{l}</c> —, <c>downstream</c> — <c>L{l}H{h}</c>, <c>mlp{l}</c>, <c>logits</c> —, <c>input</c>
/// — <c>q</c>, <c>k</c>, <c>v</c>, <c>mlp</c>, <c>logits</c> —, <c>method</c> — <c>eap</c>, <c>eap_ig</c> — string,
/// <c>score</c> double) and <c>circuit_faithfulness</c> (<c>method</c> string, <c>edges</c> int32, <c>faithfulness</c>
/// double, <c>ablation</c> string — <c>corrupted</c>, <c>mean</c>: what the edges outside the circuit carry).
/// </summary>
public static class EdgeTable
{
    /// <summary>The <c>method</c> value of <paramref name="method"/>: <c>eap</c> or <c>eap_ig</c>.</summary>
    public static string MethodName(EdgeMethod method) => method == EdgeMethod.Eap ? "eap" : "eap_ig";

    /// <summary>The <c>ablation</c> value of <paramref name="ablation"/>: <c>corrupted</c> or <c>mean</c>.</summary>
    public static string AblationName(CircuitAblation ablation) => ablation == CircuitAblation.Corrupted ? "corrupted" : "mean";

    /// <summary>The method called <paramref name="name"/> (<c>eap</c>, <c>eap_ig</c>).</summary>
    /// <exception cref="InterpException">Another name.</exception>
    public static EdgeMethod ParseMethod(string name) => name switch
    {
        "eap" => EdgeMethod.Eap,
        "eap_ig" => EdgeMethod.EapIg,
        _ => throw new InterpException($"edge-attribution method '{name}' is neither eap nor eap_ig"),
    };

    /// <summary>The <c>edge_attribution</c> table: one row per method and edge, in the order given.</summary>
    public static ParquetTable Build(params (EdgeMethod Method, IEnumerable<EdgeScore> Scores)[] methods)
    {
        var rows = new ParquetColumns();
        foreach (var (method, scores) in methods)
            foreach (var s in scores)
                rows.Row(("upstream", s.Edge.Upstream.Name), ("downstream", s.Edge.Downstream.Name), ("input", s.Edge.Downstream.InputName),
                    ("method", MethodName(method)), ("score", s.Score));
        return rows.ToTable();
    }

    /// <summary>A circuit's edges as an <c>edge_attribution</c> table.</summary>
    public static ParquetTable Build(EdgeCircuit circuit)
    {
        ArgumentNullException.ThrowIfNull(circuit);
        return Build((circuit.Method, circuit.Edges));
    }

    /// <summary>The <c>circuit_faithfulness</c> table.</summary>
    public static ParquetTable Faithfulness(IEnumerable<FaithfulnessPoint> points)
    {
        var rows = new ParquetColumns();
        foreach (var p in points)
            rows.Row(("method", MethodName(p.Method)), ("edges", p.Edges), ("faithfulness", p.Faithfulness), ("ablation", AblationName(p.Ablation)));
        return rows.ToTable();
    }
}

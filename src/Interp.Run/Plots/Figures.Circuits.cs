using System.Globalization;
using Interp.Analysis;
using ScottPlot;

namespace Interp.Plots;

public static partial class Figures
{
    /// <summary>
    /// A circuit as a graph: nodes by layer from the bottom (the embeddings, then each layer's heads and its MLP, the
    /// logits on top), each circuit edge a line from its upstream node to the downstream node it enters, its width by
    /// |score| (relative to the circuit's largest), blue where the score is positive and red where negative; an edge into
    /// a head ends left of the head's centre for its query, at the centre for its key and right of it for its value
    /// input, and is labelled q, k or v there. Every node of the graph is drawn when there are at most 64, else only
    /// the circuit's.
    /// </summary>
    /// <exception cref="InterpException">The circuit has an edge that is not in the graph.</exception>
    public static Plot CircuitGraph(EdgeGraph graph, EdgeCircuit circuit, string title)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(circuit);
        foreach (var e in circuit.Edges)
            if (!graph.Contains(e.Edge)) throw new InterpException($"circuit figure: {e.Edge} is not an edge of {graph.Config.Name}'s graph");
        var cfg = graph.Config;
        // Levels: 0 embeddings; 1 + 2l layer l's heads; 2 + 2l its MLP; the logits above the last layer.
        static int Level(UpstreamNode n) => n.Kind switch
        {
            UpstreamKind.Embed or UpstreamKind.PosEmbed => 0,
            UpstreamKind.Head => 1 + 2 * n.Layer,
            _ => 2 + 2 * n.Layer,
        };
        int top = 1 + 2 * cfg.NLayers;
        var used = new HashSet<string>(circuit.Edges.SelectMany(e => new[] { e.Edge.Upstream.Name, e.Edge.Downstream.Name }));
        bool all = graph.Upstream.Count <= 64;
        var nodes = new List<(string Name, int Level)>();
        foreach (var n in graph.Upstream)
            if (all || used.Contains(n.Name)) nodes.Add((n.Name, Level(n)));
        // Key/value heads that are not query heads (never with n_kv_heads ≤ n_heads) need no node of their own.
        nodes.Add(("logits", top));
        var position = new Dictionary<string, (double X, double Y)>();
        foreach (var group in nodes.GroupBy(n => n.Level))
        {
            var list = group.ToArray();
            for (int i = 0; i < list.Length; i++) position[list[i].Name] = ((i + 1.0) / (list.Length + 1), list[i].Level);
        }
        var plot = new Plot();
        double max = circuit.Edges.Count == 0 ? 1 : circuit.Edges.Max(e => Math.Abs(e.Score));
        if (max == 0) max = 1;
        double spread = 0.25 / Math.Max(1, nodes.GroupBy(n => n.Level).Max(g => g.Count()));
        foreach (var e in circuit.Edges.Reverse())   // the strongest drawn last, on top
        {
            var (x0, y0) = position[e.Edge.Upstream.Name];
            var (x1, y1) = position[e.Edge.Downstream.Name];
            double offset = e.Edge.Downstream.Input switch { EdgeInput.Q => -spread, EdgeInput.V => spread, _ => 0 };
            var line = plot.Add.Line(x0, y0, x1 + offset, y1 - 0.12);
            line.LineWidth = (float)(0.5 + 9 * Math.Abs(e.Score) / max);
            line.LineColor = (e.Score >= 0 ? new Color(40, 90, 200) : new Color(210, 50, 40)).WithAlpha(0.75);
            if (e.Edge.Downstream.Input is EdgeInput.Q or EdgeInput.K or EdgeInput.V)
            {
                var label = plot.Add.Text(e.Edge.Downstream.InputName, x1 + offset, y1 - 0.16);
                label.LabelFontSize = 10;
                label.LabelAlignment = Alignment.UpperCenter;
            }
        }
        foreach (var (name, _) in nodes)
        {
            var (x, y) = position[name];
            var marker = plot.Add.Marker(x, y, MarkerShape.FilledCircle, 14, used.Contains(name) ? Colors.Black : Colors.LightGray);
            marker.LegendText = "";
            var text = plot.Add.Text(name, x, y + 0.08);
            text.LabelFontSize = 12;
            text.LabelBold = used.Contains(name);
            text.LabelAlignment = Alignment.LowerCenter;
        }
        plot.Axes.SetLimits(0, 1, -0.5, top + 0.6);
        var ticks = new List<Tick> { new(0, "embeddings") };
        for (int l = 0; l < cfg.NLayers; l++)
        {
            ticks.Add(new(1 + 2 * l, $"layer {l} heads"));
            if (!cfg.AttentionOnly) ticks.Add(new(2 + 2 * l, $"layer {l} MLP"));
        }
        ticks.Add(new(top, "logits"));
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks.ToArray());
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([]);
        plot.HideGrid();
        plot.Title(title);
        return plot;
    }

    /// <summary>
    /// Input attribution as token-coloured text: every token of <paramref name="tokens"/> a box coloured by its
    /// attribution (blue positive, red negative, white zero; relative to the largest |attribution|), with the value
    /// below it, wrapped at <paramref name="perLine"/> tokens a line. Tokens are drawn with <see cref="VisibleToken"/>.
    /// </summary>
    /// <exception cref="InterpException">The token and value counts differ, or there are none.</exception>
    public static Plot TokenAttribution(IReadOnlyList<string> tokens, IReadOnlyList<double> values, string title, int perLine = 16)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(values);
        if (tokens.Count == 0 || tokens.Count != values.Count)
            throw new InterpException($"token attribution figure: need one value per token, got {tokens.Count} tokens and {values.Count} values");
        if (perLine < 1) throw new InterpException($"token attribution figure: perLine must be at least 1, got {perLine}");
        double max = values.Max(v => Math.Abs(v));
        if (!(max > 0)) max = 1;
        var plot = new Plot();
        int lines = (tokens.Count + perLine - 1) / perLine;
        const double rowHeight = 2.0;
        for (int i = 0; i < tokens.Count; i++)
        {
            double x = i % perLine, y = (lines - 1 - i / perLine) * rowHeight;
            double f = Math.Clamp(values[i] / max, -1, 1);
            var box = plot.Add.Rectangle(x + 0.04, x + 0.96, y + 0.05, y + 0.95);
            box.FillColor = Colors.White.InterpolateRgb(f >= 0 ? new Color(40, 90, 200) : new Color(210, 50, 40), Math.Abs(f));
            box.LineColor = Colors.LightGray;
            var text = plot.Add.Text(VisibleToken(tokens[i], 8), x + 0.5, y + 0.5);
            text.LabelFontName = Fonts.Monospace;
            text.LabelFontSize = 12;
            text.LabelFontColor = Math.Abs(f) > 0.6 ? Colors.White : Colors.Black;
            text.LabelAlignment = Alignment.MiddleCenter;
            var value = plot.Add.Text(values[i].ToString("0.00", CultureInfo.InvariantCulture), x + 0.5, y - 0.05);
            value.LabelFontSize = 9;
            value.LabelAlignment = Alignment.UpperCenter;
        }
        plot.Axes.Frameless();
        plot.HideGrid();
        plot.Axes.SetLimits(-0.1, Math.Min(perLine, tokens.Count) + 0.1, -0.8, (lines - 1) * rowHeight + 1.1);
        plot.Title(title);
        return plot;
    }
}

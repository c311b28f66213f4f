using System.Globalization;
using System.Text;
using Interp.Saes;
using ScottPlot;

namespace Interp.Plots;

public static partial class Figures
{
    // The token-text figure is laid out in pixels: one data unit is one pixel of the PNG saved at FeatureContextsSize.
    private const float ContextFontSize = 13;
    private const double CharPx = ContextFontSize * 0.62;   // advance of a monospace glyph (DejaVu Sans Mono: 0.602 em)
    private const double RowPx = 22, BoxGapPx = 2, PanelGapPx = 24, MarginPx = 10, ValueColumnChars = 7;

    /// <summary>
    /// A token as it is drawn: whitespace and control characters made visible (space → ·, newline → ↵, tab → ⇥,
    /// carriage return → ␍, others → \xNN), cut to <paramref name="maxChars"/> characters with a trailing … when longer.
    /// </summary>
    public static string VisibleToken(string token, int maxChars = 12)
    {
        ArgumentNullException.ThrowIfNull(token);
        var sb = new StringBuilder();
        foreach (char ch in token)
            sb.Append(ch switch
            {
                ' ' => "·",
                '\n' => "↵",
                '\t' => "⇥",
                '\r' => "␍",
                _ when char.IsControl(ch) => $"\\x{(int)ch:X2}",
                _ => ch.ToString(),
            });
        string s = sb.Length == 0 ? "∅" : sb.ToString();
        return maxChars >= 2 && s.Length > maxChars ? s[..(maxChars - 1)] + "…" : s;
    }

    /// <summary>
    /// Top-activating contexts as token-coloured text, in a grid of panels (one per feature, <paramref name="columns"/>
    /// across, in the order the features first appear in <paramref name="contexts"/>): each panel a header (the feature,
    /// its top activation and, given <paramref name="stats"/>, its density), then one line per context: the activation
    /// at the maximum, then every token of the window as a box coloured white → orange by the feature's activation
    /// there (relative to the panel's largest), the maximum's box outlined. Tokens are drawn with
    /// <see cref="VisibleToken"/>. Save it at <see cref="FeatureContextsSize"/>, where one glyph fits one cell exactly.
    /// </summary>
    /// <exception cref="InterpException">No contexts, or fewer than one column.</exception>
    public static Plot FeatureContexts(IReadOnlyList<FeatureContext> contexts, IReadOnlyList<FeatureStats>? stats = null, int columns = 2, int maxTokenChars = 12)
    {
        var layout = ContextLayout.Of(contexts, columns, maxTokenChars);
        var plot = new Plot();
        var low = Colors.White;
        var high = new Color(240, 110, 20);
        foreach (var panel in layout.Panels)
        {
            var s = stats?.FirstOrDefault(x => x.Feature == panel.Feature);
            string density = s is null ? "" : $" · density {s.Density.ToString("0.###%", CultureInfo.InvariantCulture)}";
            AddContextText(plot, $"feature {panel.Feature} · max {panel.Max.ToString("0.###", CultureInfo.InvariantCulture)}{density}",
                panel.Left, layout.Height - panel.Top - RowPx / 2, Alignment.MiddleLeft, bold: true);
            for (int r = 0; r < panel.Contexts.Count; r++)
            {
                var c = panel.Contexts[r];
                double yMid = layout.Height - panel.Top - RowPx * (r + 1.5);
                AddContextText(plot, c.Value.ToString("0.00", CultureInfo.InvariantCulture), panel.Left + ValueColumnChars * CharPx - CharPx, yMid, Alignment.MiddleRight);
                double x = panel.Left + ValueColumnChars * CharPx;
                foreach (var t in c.Tokens)
                {
                    string text = VisibleToken(t.Token, maxTokenChars);
                    double w = BoxWidth(text);
                    double fraction = panel.Max > 0 ? Math.Clamp(t.Value / panel.Max, 0, 1) : 0;
                    var box = plot.Add.Rectangle(x, x + w, yMid - RowPx / 2 + 2, yMid + RowPx / 2 - 2);
                    box.FillColor = low.InterpolateRgb(high, fraction);
                    box.LineColor = t.Offset == 0 ? Colors.Black : Colors.LightGray;
                    box.LineWidth = t.Offset == 0 ? 2 : 1;
                    AddContextText(plot, text, x + w / 2, yMid, Alignment.MiddleCenter);
                    x += w + BoxGapPx;
                }
            }
        }
        plot.Axes.Frameless();
        plot.Layout.Frameless();
        plot.HideGrid();
        plot.Axes.SetLimits(0, layout.Width, 0, layout.Height);
        return plot;
    }

    /// <summary>The PNG size (pixels) at which <see cref="FeatureContexts"/> draws each glyph in its cell.</summary>
    public static (int Width, int Height) FeatureContextsSize(IReadOnlyList<FeatureContext> contexts, int columns = 2, int maxTokenChars = 12)
    {
        var layout = ContextLayout.Of(contexts, columns, maxTokenChars);
        return ((int)Math.Ceiling(layout.Width), (int)Math.Ceiling(layout.Height));
    }

    private static double BoxWidth(string text) => text.Length * CharPx + 6;

    private static void AddContextText(Plot plot, string text, double x, double y, Alignment alignment, bool bold = false)
    {
        var label = plot.Add.Text(text, x, y);
        label.LabelFontName = Fonts.Monospace;
        label.LabelFontSize = ContextFontSize;
        label.LabelFontColor = Colors.Black;
        label.LabelBold = bold;
        label.LabelAlignment = alignment;
    }

    /// <summary>Where each feature's panel goes, in pixels from the top left.</summary>
    private sealed record ContextLayout(IReadOnlyList<ContextPanel> Panels, double Width, double Height)
    {
        public static ContextLayout Of(IReadOnlyList<FeatureContext> contexts, int columns, int maxTokenChars)
        {
            ArgumentNullException.ThrowIfNull(contexts);
            if (contexts.Count == 0) throw new InterpException("the feature-context figure needs at least one context");
            if (columns < 1) throw new InterpException($"the feature-context figure needs at least 1 column, got {columns}");
            var groups = contexts.GroupBy(c => c.Feature).Select(g => g.OrderBy(c => c.Rank).ToArray()).ToArray();
            double LineWidth(FeatureContext c) => ValueColumnChars * CharPx + c.Tokens.Sum(t => BoxWidth(VisibleToken(t.Token, maxTokenChars)) + BoxGapPx);
            double header = 60 * CharPx;   // room for the header line
            int cols = Math.Min(columns, groups.Length);
            var colWidth = Enumerable.Range(0, cols).Select(k => groups.Where((_, i) => i % cols == k).SelectMany(g => g).Select(LineWidth).Append(header).Max()).ToArray();
            var panels = new List<ContextPanel>();
            double top = MarginPx, height = 0;
            for (int row = 0; row * cols < groups.Length; row++)
            {
                var inRow = groups.Skip(row * cols).Take(cols).ToArray();
                double left = MarginPx;
                for (int k = 0; k < inRow.Length; k++)
                {
                    panels.Add(new ContextPanel(inRow[k][0].Feature, inRow[k], inRow[k].Max(c => c.Value), left, top));
                    left += colWidth[k] + PanelGapPx;
                }
                double rowHeight = RowPx * (1 + inRow.Max(g => g.Length));
                top += rowHeight + PanelGapPx;
                height = top - PanelGapPx + MarginPx;
            }
            return new ContextLayout(panels, colWidth.Sum() + PanelGapPx * (cols - 1) + 2 * MarginPx, height);
        }
    }

    private sealed record ContextPanel(int Feature, IReadOnlyList<FeatureContext> Contexts, double Max, double Left, double Top);

    /// <summary>
    /// The histogram of log10 feature density (<see cref="FeatureDensityHistogram"/>): one bar per bin, the dead
    /// features (density 0, off the log axis) counted in the title.
    /// </summary>
    public static Plot FeatureDensity(FeatureDensityHistogram histogram, string title = "feature density")
    {
        ArgumentNullException.ThrowIfNull(histogram);
        var plot = new Plot();
        var bars = new List<Bar>();
        for (int b = 0; b < histogram.Counts.Length; b++)
        {
            double lo = histogram.Edges[b], hi = histogram.Edges[b + 1];
            bars.Add(new Bar { Position = (lo + hi) / 2, Value = histogram.Counts[b], Size = (hi - lo) * 0.95, FillColor = Colors.SteelBlue, LineWidth = 0 });
        }
        plot.Add.Bars(bars);
        plot.Axes.Margins(bottom: 0);
        plot.Title($"{title} ({histogram.Live} live, {histogram.Dead} dead of {histogram.Features} features)");
        plot.XLabel("log10(feature density)");
        plot.YLabel("features");
        plot.Axes.SetLimitsX(histogram.Edges[0], histogram.Edges[^1]);
        return plot;
    }

    /// <summary>
    /// Top logit effects as horizontal bars, one section per feature of <paramref name="features"/> (null: every feature
    /// in <paramref name="effects"/>, in order), stacked top to bottom on one shared axis: the promoted tokens
    /// (blue, largest first) then the suppressed ones (red, most negative last), each bar labelled with its token.
    /// </summary>
    /// <exception cref="InterpException">No effects for a feature asked for.</exception>
    public static Plot LogitEffects(IReadOnlyList<LogitEffect> effects, IReadOnlyList<int>? features = null, int maxTokenChars = 16)
    {
        ArgumentNullException.ThrowIfNull(effects);
        features ??= effects.Select(e => e.Feature).Distinct().ToArray();
        if (features.Count == 0) throw new InterpException("the logit-effects figure needs at least one feature");
        var plot = new Plot();
        var bars = new List<Bar>();
        var ticks = new List<(double Position, string Label)>();
        double y = 0;
        foreach (int f in features)
        {
            var rows = effects.Where(e => e.Feature == f).OrderBy(e => e.Direction).ThenBy(e => e.Direction == LogitEffectDirection.Promoted ? e.Rank : -e.Rank).ToArray();
            if (rows.Length == 0) throw new InterpException($"the logit-effects figure has no effects for feature {f}");
            var header = plot.Add.Text($"feature {f}", 0, y);
            header.LabelBold = true;
            header.LabelFontSize = 13;
            header.LabelAlignment = Alignment.LowerCenter;
            y -= 1;
            foreach (var e in rows)
            {
                var color = e.Direction == LogitEffectDirection.Promoted ? Colors.SteelBlue : Colors.IndianRed;
                bars.Add(new Bar { Position = y, Value = e.Value, FillColor = color, Size = 0.8, LineWidth = 0, Orientation = Orientation.Horizontal });
                ticks.Add((y, VisibleToken(e.Token, maxTokenChars)));
                y -= 1;
            }
            y -= 1;
        }
        plot.Add.Bars(bars);
        plot.Add.VerticalLine(0, 1, Colors.Gray);
        plot.Axes.Left.SetTicks(ticks.Select(t => t.Position).ToArray(), ticks.Select(t => t.Label).ToArray());
        plot.Axes.Left.MajorTickStyle.Length = 0;
        plot.Axes.Left.TickLabelStyle.FontName = Fonts.Monospace;
        plot.Title("direct logit effects (W_dec · W_U)");
        plot.XLabel("logit change per unit activation");
        return plot;
    }
}

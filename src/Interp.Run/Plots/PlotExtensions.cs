using ScottPlot;
using ScottPlot.Plottables;

namespace Interp.Plots;

/// <summary>
/// The toolkit's figure kinds as ScottPlot adders, so that they compose with anything else on a plot:
/// <c>plot.Add.LayerHeadHeatmap(scores)</c>, <c>plot.Add.AttentionPattern(pattern, tokens)</c>,
/// <c>plot.Add.LabelledMatrix(values, rows, columns)</c>. <see cref="Figures"/> builds whole figures from them.
/// </summary>
public static class PlotExtensions
{
    /// <summary>
    /// A heatmap of <paramref name="values"/> [row, column] with row 0 at the top, tick labels (every label when given,
    /// about 16 numbered ticks otherwise), a colour bar, and the value written in each cell of a matrix of at most 400
    /// cells when <paramref name="annotate"/>; NaN cells stay blank. <paramref name="min"/>/<paramref name="max"/> fix the colour range.
    /// </summary>
    public static Heatmap LabelledMatrix(this PlottableAdder add, double[,] values, string[]? rowLabels = null, string[]? columnLabels = null,
        string colorbarLabel = "", bool annotate = false, double? min = null, double? max = null)
    {
        var plot = add.Plot;
        int rows = values.GetLength(0), cols = values.GetLength(1);
        var heatmap = add.Heatmap(values);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        if (min is not null || max is not null)
            heatmap.ManualRange = new ScottPlot.Range(min ?? Min(values), max ?? Max(values));
        var bar = add.ColorBar(heatmap);
        bar.Label = colorbarLabel;
        // ScottPlot draws row 0 at the top, at y = rows − 1.
        var rowTicks = TickIndices(rows, rowLabels is not null);
        var colTicks = TickIndices(cols, columnLabels is not null);
        plot.Axes.Left.SetTicks(rowTicks.Select(r => (double)(rows - 1 - r)).ToArray(), rowTicks.Select(r => rowLabels?[r] ?? r.ToString()).ToArray());
        plot.Axes.Bottom.SetTicks(colTicks.Select(c => (double)c).ToArray(), colTicks.Select(c => columnLabels?[c] ?? c.ToString()).ToArray());
        if (Math.Max(rowLabels?.Length ?? 0, columnLabels?.Length ?? 0) > 30)
        {
            plot.Axes.Left.TickLabelStyle.FontSize = 9;
            plot.Axes.Bottom.TickLabelStyle.FontSize = 9;
        }
        if (columnLabels is not null && columnLabels.Any(l => l.Length > 2))
        {
            // Rotated labels need room below the axis, or they run into the axis title.
            plot.Axes.Bottom.TickLabelStyle.Rotation = -60;
            plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleRight;
            plot.Axes.Bottom.MinimumSize = 30 + 7 * columnLabels.Max(l => l.Length);
        }
        if (annotate && rows * cols <= 400)
        {
            double middle = (Min(values) + Max(values)) / 2;
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    if (!double.IsFinite(values[r, c])) continue;   // NaN marks "not applicable": left blank
                    var text = add.Text(values[r, c].ToString("0.00"), c, rows - 1 - r);
                    text.LabelFontColor = values[r, c] > middle ? Colors.Black : Colors.White;
                    text.LabelAlignment = Alignment.MiddleCenter;
                    text.LabelFontSize = 11;
                }
        }
        return heatmap;
    }

    /// <summary>An attention pattern [query, key] on a 0–1 scale with the tokens on both axes, and the axes named.</summary>
    public static Heatmap AttentionPattern(this PlottableAdder add, double[,] pattern, string[] tokens)
    {
        var heatmap = add.LabelledMatrix(pattern, tokens, tokens, "attention", min: 0, max: 1);
        add.Plot.XLabel("key (attended-to token)");
        add.Plot.YLabel("query (attending token)");
        return heatmap;
    }

    /// <summary>A layer × head heatmap of one score per head, annotated, and the axes named.</summary>
    public static Heatmap LayerHeadHeatmap(this PlottableAdder add, double[,] values, string colorbarLabel = "")
    {
        var heatmap = add.LabelledMatrix(values, colorbarLabel: colorbarLabel, annotate: true);
        add.Plot.XLabel("head");
        add.Plot.YLabel("layer");
        return heatmap;
    }

    private static int[] TickIndices(int n, bool labelled)
    {
        int step = labelled ? 1 : Math.Max(1, (int)Math.Ceiling(n / 16.0));
        return Enumerable.Range(0, n).Where(i => i % step == 0).ToArray();
    }

    internal static double Min(double[,] v) => v.Cast<double>().Where(double.IsFinite).DefaultIfEmpty(0).Min();
    internal static double Max(double[,] v) => v.Cast<double>().Where(double.IsFinite).DefaultIfEmpty(1).Max();
}

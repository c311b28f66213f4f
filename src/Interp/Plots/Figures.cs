using ScottPlot;

namespace Interp.Plots;

/// <summary>
/// The toolkit's figures, each drawn in one place: matrices with labelled rows and columns (attention patterns,
/// layer × head scores), line charts (loss curves, per-position losses) and vector diagrams.
/// </summary>
public static class Figures
{
    /// <summary>
    /// A heatmap of <paramref name="values"/> [row, column] with row 0 at the top, optional tick labels, a colour bar,
    /// and the value written in each cell when the matrix is small enough to read.
    /// </summary>
    public static Plot Matrix(double[,] values, string title, string xLabel, string yLabel,
        string[]? rowLabels = null, string[]? columnLabels = null, string colorbarLabel = "", bool annotate = false,
        double? min = null, double? max = null)
    {
        int rows = values.GetLength(0), cols = values.GetLength(1);
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(values);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        if (min is not null || max is not null)
            heatmap.ManualRange = new ScottPlot.Range(min ?? Min(values), max ?? Max(values));
        var bar = plot.Add.ColorBar(heatmap);
        bar.Label = colorbarLabel;
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        // ScottPlot draws row 0 at the top, at y = rows − 1.
        // Labelled axes show every label; numbered ones about 16 ticks, so that large matrices stay legible.
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
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    var text = plot.Add.Text(values[r, c].ToString("0.00"), c, rows - 1 - r);
                    text.LabelFontColor = values[r, c] > (Min(values) + Max(values)) / 2 ? Colors.Black : Colors.White;
                    text.LabelAlignment = Alignment.MiddleCenter;
                    text.LabelFontSize = 11;
                }
        }
        return plot;
    }

    /// <summary>An attention pattern [query, key] with the tokens as labels on both axes.</summary>
    public static Plot AttentionPattern(double[,] pattern, string[] tokens, string title) =>
        Matrix(pattern, title, "key (attended-to token)", "query (attending token)", tokens, tokens, "attention", min: 0, max: 1);

    /// <summary>A layer × head heatmap of one score, annotated.</summary>
    public static Plot LayerHead(double[,] values, string title, string colorbarLabel) =>
        Matrix(values, title, "head", "layer", colorbarLabel: colorbarLabel, annotate: true);

    /// <summary>Line chart of several named series over a shared x axis.</summary>
    public static Plot Lines(string title, string xLabel, string yLabel, double[] xs, params (string Name, double[] Ys)[] series)
    {
        var plot = new Plot();
        foreach (var (name, ys) in series)
        {
            var line = plot.Add.ScatterLine(xs, ys);
            line.LegendText = name;
            line.LineWidth = 2;
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (series.Length > 1) plot.ShowLegend(Alignment.UpperRight);
        return plot;
    }

    /// <summary>Vectors from the origin in a 2-D plane, labelled at their tips.</summary>
    public static Plot Vectors(string title, string xLabel, string yLabel, params (string Label, double X, double Y, Color Color)[] vectors)
    {
        var plot = new Plot();
        foreach (var (label, x, y, color) in vectors)
        {
            var arrow = plot.Add.Arrow(new Coordinates(0, 0), new Coordinates(x, y));
            arrow.ArrowFillColor = color;
            arrow.ArrowLineColor = color;
            var text = plot.Add.Text(label, x, y);
            text.LabelFontColor = color;
            text.LabelFontSize = 13;
        }
        plot.Add.Marker(0, 0, MarkerShape.FilledCircle, 5, Colors.Gray);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        double extent = vectors.Max(v => Math.Max(Math.Abs(v.X), Math.Abs(v.Y))) * 1.3 + 1e-9;
        plot.Axes.SetLimits(-0.15 * extent, extent, -0.15 * extent, extent);
        return plot;
    }

    /// <summary>Renders <paramref name="plot"/> as a PNG and writes it atomically (a reader never sees a partial image).</summary>
    public static void SavePng(Plot plot, string path, int width, int height)
    {
        var png = plot.GetImage(width, height).GetImageBytes(ImageFormat.Png);
        Loading.AtomicFile.Write(path, tmp => File.WriteAllBytes(tmp, png));
    }

    private static int[] TickIndices(int n, bool labelled)
    {
        int step = labelled ? 1 : Math.Max(1, (int)Math.Ceiling(n / 16.0));
        return Enumerable.Range(0, n).Where(i => i % step == 0).ToArray();
    }

    private static double Min(double[,] v) => v.Cast<double>().Where(double.IsFinite).DefaultIfEmpty(0).Min();
    private static double Max(double[,] v) => v.Cast<double>().Where(double.IsFinite).DefaultIfEmpty(1).Max();
}

using ScottPlot;

namespace Interp.Plots;

/// <summary>
/// The toolkit's figures, each drawn in one place: matrices with labelled rows and columns (attention patterns,
/// layer × head scores), line charts (loss curves, per-position losses) and vector diagrams.
/// </summary>
public static partial class Figures
{
    /// <summary>
    /// A heatmap of <paramref name="values"/> [row, column] with row 0 at the top, optional tick labels, a colour bar,
    /// and the value written in each cell when the matrix is small enough to read (<see cref="PlotExtensions.LabelledMatrix"/>).
    /// </summary>
    public static Plot Matrix(double[,] values, string title, string xLabel, string yLabel,
        string[]? rowLabels = null, string[]? columnLabels = null, string colorbarLabel = "", bool annotate = false,
        double? min = null, double? max = null)
    {
        var plot = new Plot();
        plot.Add.LabelledMatrix(values, rowLabels, columnLabels, colorbarLabel, annotate, min, max);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        return plot;
    }

    /// <summary>An attention pattern [query, key] with the tokens as labels on both axes (<see cref="PlotExtensions.AttentionPattern"/>).</summary>
    public static Plot AttentionPattern(double[,] pattern, string[] tokens, string title)
    {
        var plot = new Plot();
        plot.Add.AttentionPattern(pattern, tokens);
        plot.Title(title);
        return plot;
    }

    /// <summary>A layer × head heatmap of one score, annotated (<see cref="PlotExtensions.LayerHeadHeatmap"/>).</summary>
    public static Plot LayerHead(double[,] values, string title, string colorbarLabel)
    {
        var plot = new Plot();
        plot.Add.LayerHeadHeatmap(values, colorbarLabel);
        plot.Title(title);
        return plot;
    }

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

    /// <summary>
    /// A scatter of labelled points (e.g. one per head, labelled "layer.head"), with optional fixed axis limits and
    /// dashed reference lines at x = <paramref name="xLine"/> and y = <paramref name="yLine"/>.
    /// </summary>
    public static Plot Scatter(string title, string xLabel, string yLabel, IReadOnlyList<(string Label, double X, double Y)> points,
        (double Min, double Max)? xLimits = null, (double Min, double Max)? yLimits = null, double? xLine = null, double? yLine = null)
    {
        var plot = new Plot();
        var finite = points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToArray();
        var markers = plot.Add.ScatterPoints(finite.Select(p => p.X).ToArray(), finite.Select(p => p.Y).ToArray());
        markers.MarkerSize = 8;
        if (finite.Length <= 200)
            foreach (var (label, x, y) in finite)
            {
                var text = plot.Add.Text(label, x, y);
                text.LabelFontSize = 11;
                text.LabelOffsetX = 5;
                text.LabelOffsetY = -5;
            }
        if (xLine is double xl) plot.Add.VerticalLine(xl, 1, Colors.Gray, LinePattern.Dashed);
        if (yLine is double yl) plot.Add.HorizontalLine(yl, 1, Colors.Gray, LinePattern.Dashed);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (xLimits is var (x0, x1)) plot.Axes.SetLimitsX(x0, x1);
        if (yLimits is var (y0, y1)) plot.Axes.SetLimitsY(y0, y1);
        return plot;
    }

    /// <summary>
    /// Singular-value spectra of pairs of matrices, one colour per pair: the first of each pair solid, the second
    /// dashed (e.g. each head's pattern and message circuits), each normalised by its largest value so that shapes
    /// compare across heads of different scale.
    /// </summary>
    public static Plot Spectra(string title, string solidName, string dashedName, IReadOnlyList<(string Name, double[] Solid, double[] Dashed)> pairs)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < pairs.Count; i++)
        {
            var color = palette.GetColor(i);
            foreach (var (values, dashed) in new[] { (pairs[i].Solid, false), (pairs[i].Dashed, true) })
            {
                if (values.Length == 0) continue;
                double top = values[0] > 0 ? values[0] : 1;
                var line = plot.Add.ScatterLine(Enumerable.Range(1, values.Length).Select(k => (double)k).ToArray(), values.Select(v => v / top).ToArray());
                line.Color = color;
                line.LineWidth = 2;
                line.LinePattern = dashed ? LinePattern.Dashed : LinePattern.Solid;
                line.MarkerSize = 0;
                line.LegendText = $"{pairs[i].Name} {(dashed ? dashedName : solidName)}";
            }
        }
        plot.Title(title);
        plot.XLabel("singular value index");
        plot.YLabel("σᵢ / σ₁");
        plot.Axes.SetLimitsY(0, 1.05);
        plot.ShowLegend(Alignment.UpperRight);
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
}

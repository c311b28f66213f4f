using ScottPlot;

namespace Interp.Plots;

public static partial class Figures
{
    /// <summary>
    /// Stacked bars: one bar per category (e.g. per layer), each made of one segment per series (e.g. per head and the
    /// MLP), stacked in series order from zero, with a legend of the series on the right. Values are expected non-negative (norms,
    /// counts); a series that is zero everywhere is left out of the legend.
    /// </summary>
    /// <exception cref="InterpException">A series does not have one value per category, or a value is negative or not finite.</exception>
    public static Plot StackedBars(string title, string xLabel, string yLabel, string[] categories, IReadOnlyList<(string Name, double[] Values)> series)
    {
        foreach (var (name, values) in series)
        {
            if (values.Length != categories.Length)
                throw new InterpException($"stacked bars: series '{name}' has {values.Length} values for {categories.Length} categories");
            if (values.Any(v => !double.IsFinite(v) || v < 0))
                throw new InterpException($"stacked bars: series '{name}' has a negative or non-finite value; stacked bars show non-negative parts of a whole");
        }
        var plot = new Plot();
        // Colours go to the series that are drawn, so that no two share one (Category20 beyond ten series).
        int shown = series.Count(x => x.Values.Any(v => v != 0));
        IPalette palette = shown <= 10 ? new ScottPlot.Palettes.Category10() : new ScottPlot.Palettes.Category20();
        int colour = 0;
        var bottoms = new double[categories.Length];
        var bars = new List<Bar>();
        for (int s = 0; s < series.Count; s++)
        {
            var values = series[s].Values;
            if (values.All(v => v == 0)) continue;
            var color = palette.GetColor(colour++);
            for (int c = 0; c < categories.Length; c++)
            {
                if (values[c] == 0) continue;
                bars.Add(new Bar { Position = c, ValueBase = bottoms[c], Value = bottoms[c] + values[c], FillColor = color, Size = 0.7 });
                bottoms[c] += values[c];
            }
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[s].Name, FillColor = color });
        }
        plot.Add.Bars(bars);
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, categories.Length).Select(c => (double)c).ToArray(), categories);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Right);   // beside the plot: the bars use the whole height
        return plot;
    }
}

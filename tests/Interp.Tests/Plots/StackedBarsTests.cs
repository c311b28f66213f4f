using Interp.Plots;
using Interp.Tests.Support;

namespace Interp.Tests.Plots;

/// <summary>The stacked-bar figure: segments stacked from zero in series order; bad series are clear errors.</summary>
public sealed class StackedBarsTests
{
    [Fact]
    public void Segments_stack_from_zero_and_the_figure_renders()
    {
        var plot = Figures.StackedBars("norms", "layer", "‖write‖", ["embed", "L0", "L1"],
            [("embedding", [2.0, 0, 0]), ("empty", [0.0, 0, 0]), ("head 0", [0.0, 1.5, 3]), ("head 1", [0.0, 0.5, 1])]);
        var bars = plot.GetPlottables().OfType<ScottPlot.Plottables.BarPlot>().Single().Bars;
        Assert.Equal([(0.0, 0.0, 2.0), (1, 0, 1.5), (2, 0, 3), (1, 1.5, 2.0), (2, 3, 4)], bars.Select(b => (b.Position, b.ValueBase, b.Value)));
        Assert.Equal(["embedding", "head 0", "head 1"], plot.Legend.ManualItems.Select(i => i.LabelText));   // the empty series is left out
        using var tmp = new TempDir();
        Figures.SavePng(plot, tmp.File("bars.png"), 400, 300);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(tmp.File("bars.png"))[..4]);
    }

    [Fact]
    public void Bad_series_are_refused()
    {
        Assert.Contains("series 'h' has 1 values for 2 categories",
            Assert.Throws<InterpException>(() => Figures.StackedBars("t", "x", "y", ["a", "b"], [("h", [1.0])])).Message);
        Assert.Contains("series 'h' has a negative or non-finite value",
            Assert.Throws<InterpException>(() => Figures.StackedBars("t", "x", "y", ["a", "b"], [("h", [1.0, -2])])).Message);
    }
}

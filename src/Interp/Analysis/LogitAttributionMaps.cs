using Interp.Models;

namespace Interp.Analysis;

/// <summary>Views of a <see cref="LogitAttribution"/> shaped for figures and tables.</summary>
public static class LogitAttributionMaps
{
    /// <summary>Mean attribution of every head over <paramref name="positions"/>, [layer, head].</summary>
    public static double[,] HeadMap(this LogitAttribution attribution, ModelConfig cfg, IEnumerable<int> positions)
    {
        var mean = attribution.Mean(positions);
        var map = new double[cfg.NLayers, cfg.NHeads];
        for (int c = 0; c < attribution.Components.Count; c++)
            if (attribution.Components[c] is { Kind: ComponentKind.Head } head) map[head.Layer, head.Head] = mean[c];
        return map;
    }
}

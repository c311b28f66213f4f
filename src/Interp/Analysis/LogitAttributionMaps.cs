using Interp.Models;

namespace Interp.Analysis;

/// <summary>Views of a <see cref="LogitAttribution"/> shaped for figures and tables.</summary>
public static class LogitAttributionMaps
{
    /// <summary>Mean attribution of every head over <paramref name="positions"/>, [layer, head].</summary>
    /// <exception cref="InterpException">The attribution has no per-head components (its model normalises attention's
    /// output before it joins the stream, as Gemma 2 does, so its attention components are whole layers).</exception>
    public static double[,] HeadMap(this LogitAttribution attribution, ModelConfig cfg, IEnumerable<int> positions)
    {
        if (cfg.NLayers > 0 && !attribution.Components.Any(c => c.Kind == ComponentKind.Head))
            throw new InterpException(
                $"a head map of a logit attribution needs per-head components, but this one has none: {PassChecks.Describe(cfg)} normalises attention's output " +
                "(ln1_post) before it joins the stream, so its attention components are whole layers ({l}_attn_out)");
        var mean = attribution.Mean(positions);
        var map = new double[cfg.NLayers, cfg.NHeads];
        for (int c = 0; c < attribution.Components.Count; c++)
            if (attribution.Components[c] is { Kind: ComponentKind.Head } head) map[head.Layer, head.Head] = mean[c];
        return map;
    }
}

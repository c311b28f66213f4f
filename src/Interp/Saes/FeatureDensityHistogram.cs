namespace Interp.Saes;

/// <summary>
/// A histogram of log10 feature density over the live features of an SAE (SAELens's and Neuronpedia's feature density
/// histogram), with the dead features (density 0, whose log10 is −∞) counted apart.
/// </summary>
/// <param name="Edges">Bin edges in log10 density, ascending, one more than <paramref name="Counts"/>; bin i is
/// [Edges[i], Edges[i + 1]), the last bin closed on both sides.</param>
/// <param name="Counts">Live features per bin.</param>
/// <param name="Dead">Features never active.</param>
/// <param name="Features">All features (live + dead).</param>
public sealed record FeatureDensityHistogram(double[] Edges, long[] Counts, int Dead, int Features)
{
    /// <summary>Features with a density &gt; 0.</summary>
    public int Live => Features - Dead;

    /// <summary>
    /// The histogram of log10(density) of <paramref name="stats"/>' live features in <paramref name="bins"/> equal bins
    /// over [<paramref name="min"/>, <paramref name="max"/>]. Without <paramref name="min"/> the range starts at the floor
    /// of the smallest live log10 density (−1 at the least: one decade); <paramref name="max"/> defaults to 0
    /// (a feature active everywhere). A density outside a range given by hand falls in the nearest end bin.
    /// </summary>
    /// <exception cref="InterpException">Fewer than one bin, a range that is empty or not finite, or a density outside [0, 1].</exception>
    public static FeatureDensityHistogram Of(IReadOnlyList<FeatureStats> stats, int bins = 40, double? min = null, double max = 0)
    {
        ArgumentNullException.ThrowIfNull(stats);
        return Of(stats.Select(s => s.Density).ToArray(), bins, min, max);
    }

    /// <summary>The histogram of per-feature <paramref name="densities"/> (fractions in [0, 1]); see <see cref="Of(IReadOnlyList{FeatureStats}, int, double?, double)"/>.</summary>
    /// <exception cref="InterpException">Fewer than one bin, a range that is empty or not finite, or a density outside [0, 1].</exception>
    public static FeatureDensityHistogram Of(double[] densities, int bins = 40, double? min = null, double max = 0)
    {
        ArgumentNullException.ThrowIfNull(densities);
        if (bins < 1) throw new InterpException($"a density histogram needs at least 1 bin, got {bins}");
        for (int f = 0; f < densities.Length; f++)
            if (!(densities[f] >= 0 && densities[f] <= 1)) throw new InterpException($"feature {f} has density {densities[f]}, outside [0, 1]");
        var logs = densities.Where(d => d > 0).Select(Math.Log10).ToArray();
        double lo = min ?? Math.Min(-1, logs.Length == 0 ? -1 : Math.Floor(logs.Min()));
        if (!double.IsFinite(lo) || !double.IsFinite(max) || lo >= max)
            throw new InterpException($"the density histogram's range [{lo}, {max}] (log10 density) is empty or not finite");
        var edges = Enumerable.Range(0, bins + 1).Select(i => lo + (max - lo) * i / bins).ToArray();
        edges[^1] = max;
        var counts = new long[bins];
        foreach (double v in logs)
        {
            int b = (int)Math.Floor((v - lo) / (max - lo) * bins);
            counts[Math.Clamp(b, 0, bins - 1)]++;
        }
        return new FeatureDensityHistogram(edges, counts, densities.Length - logs.Length, densities.Length);
    }
}

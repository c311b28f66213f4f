using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>
/// The singular-value spectrum of one circuit matrix and the summaries read from it: Frobenius and spectral norms and
/// the effective rank.
/// </summary>
/// <param name="SingularValues">Singular values in descending order (at most the inner rank of the factors).</param>
public sealed record CircuitSpectrum(double[] SingularValues)
{
    /// <summary>‖M‖_F = √Σσ².</summary>
    public double FrobeniusNorm => Math.Sqrt(SingularValues.Sum(s => s * s));

    /// <summary>‖M‖₂ = σ_max.</summary>
    public double SpectralNorm => SingularValues.Length == 0 ? 0 : SingularValues[0];

    /// <summary>
    /// Effective rank (Roy and Vetterli, 2007): exp of the entropy of the normalised singular values p_i = σ_i / Σσ.
    /// 1 for a rank-one matrix, k for k equal singular values; 0 for the zero matrix.
    /// </summary>
    public double EffectiveRank
    {
        get
        {
            double total = SingularValues.Sum();
            if (total <= 0) return 0;
            double entropy = SingularValues.Where(s => s > 0).Select(s => s / total).Sum(p => -p * Math.Log(p));
            return Math.Exp(entropy);
        }
    }

    /// <summary>The spectrum of every matrix of a [layer, head] batch, computed from the factors (<see cref="FactoredMatrix.Svd"/>).</summary>
    /// <exception cref="InterpException"><paramref name="matrix"/> does not have exactly two leading dims.</exception>
    public static CircuitSpectrum[,] Of(FactoredMatrix matrix)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        var dims = matrix.LeadingDims;
        if (dims.Length != 2)
            throw new InterpException($"CircuitSpectrum.Of needs a [layer, head] batch of matrices; got shape {FactoredMatrix.Fmt(matrix.Shape)}");
        using var scope = NewDisposeScope();
        using var svd = matrix.Svd();
        var s = svd.S.to(ScalarType.Float64).cpu();
        long k = s.shape[^1];
        var flat = s.data<double>().ToArray();
        var result = new CircuitSpectrum[dims[0], dims[1]];
        for (int l = 0; l < dims[0]; l++)
            for (int h = 0; h < dims[1]; h++)
                result[l, h] = new CircuitSpectrum(flat.AsSpan((int)((l * dims[1] + h) * k), (int)k).ToArray());
        return result;
    }
}

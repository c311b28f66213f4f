using Interp.Models;
using Interp.Results;

namespace Interp.Circuits;

/// <summary>One head's pattern or message circuit, summarised.</summary>
/// <param name="Layer">Layer of the head.</param>
/// <param name="Head">Index of the head in its layer.</param>
/// <param name="Circuit">Pattern (QK) or message (OV).</param>
/// <param name="Spectrum">Singular values of the d_model × d_model circuit.</param>
/// <param name="FullSpectrum">Singular values of the full circuit through tokens (W_E·QK·W_Eᵀ or W_E·OV·W_U).</param>
/// <param name="EigenScore">Σλ/Σ|λ| of the full circuit: the copying score for the message circuit, the same-token
/// score for the pattern circuit (<see cref="CircuitScores"/>).</param>
public sealed record HeadCircuitStats(int Layer, int Head, Circuit Circuit, CircuitSpectrum Spectrum, CircuitSpectrum FullSpectrum, double EigenScore);

/// <summary>
/// Both circuits of every head of a model, summarised, and the <c>head_circuits.parquet</c> table they make (one row
/// per layer, head and circuit). Everything is computed from d_model-sized matrices (<see cref="CircuitScores"/>), so
/// it costs the same for a 50,000-token vocabulary.
/// </summary>
public sealed class HeadCircuitSummary
{
    private readonly Dictionary<(int, int, Circuit), HeadCircuitStats> _stats;

    private HeadCircuitSummary(IReadOnlyList<HeadCircuitStats> rows, int layers, int heads, int dHead)
    {
        Rows = rows;
        _stats = rows.ToDictionary(r => (r.Layer, r.Head, r.Circuit));
        (Layers, Heads, DHead) = (layers, heads, dHead);
    }

    /// <summary>Every (layer, head, circuit), layer-major, pattern before message.</summary>
    public IReadOnlyList<HeadCircuitStats> Rows { get; }

    /// <summary>Number of layers.</summary>
    public int Layers { get; }

    /// <summary>Heads per layer.</summary>
    public int Heads { get; }

    /// <summary>Head width: the bound on every circuit's rank.</summary>
    public int DHead { get; }

    /// <summary>Summarises both circuits of every head of <paramref name="model"/> (process its weights first to include the norms' gains).</summary>
    /// <exception cref="InterpException">The model has no pattern circuit (q/k norms), or its W_U does not read the residual stream (a base encoder; a masked-LM head).</exception>
    public static HeadCircuitSummary Compute(HookedTransformer model)
    {
        PassChecks.PatternCircuit(model, "the head-circuit summary (HeadCircuitSummary.Compute)");
        PassChecks.UnembedReadsStream(model, "the head-circuit summary (HeadCircuitSummary.Compute)");
        var cfg = model.Config;
        var spectra = new Dictionary<Circuit, CircuitSpectrum[,]>();
        using (var qk = HeadCircuits.Pattern(model)) spectra[Circuit.Pattern] = CircuitSpectrum.Of(qk);
        using (var ov = HeadCircuits.Message(model)) spectra[Circuit.Message] = CircuitSpectrum.Of(ov);
        var full = new Dictionary<Circuit, CircuitSpectrum[,]>
        {
            [Circuit.Pattern] = CircuitScores.FullSpectra(model, Circuit.Pattern),
            [Circuit.Message] = CircuitScores.FullSpectra(model, Circuit.Message),
        };
        var eigen = new Dictionary<Circuit, double[,]>
        {
            [Circuit.Pattern] = CircuitScores.SameToken(model),
            [Circuit.Message] = CircuitScores.Copying(model),
        };
        var rows = new List<HeadCircuitStats>();
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < cfg.NHeads; h++)
                foreach (var c in new[] { Circuit.Pattern, Circuit.Message })
                    rows.Add(new HeadCircuitStats(l, h, c, spectra[c][l, h], full[c][l, h], eigen[c][l, h]));
        return new HeadCircuitSummary(rows, cfg.NLayers, cfg.NHeads, cfg.HeadDim);
    }

    /// <summary>The summary of one head's circuit.</summary>
    /// <exception cref="InterpException">No such layer or head.</exception>
    public HeadCircuitStats Get(int layer, int head, Circuit circuit) =>
        _stats.TryGetValue((layer, head, circuit), out var s) ? s
        : throw new InterpException($"no head {layer}.{head}: the model has {Layers} layers of {Heads} heads");

    /// <summary>The d_model circuit's spectrum of one head.</summary>
    public CircuitSpectrum Spectrum(int layer, int head, Circuit circuit) => Get(layer, head, circuit).Spectrum;

    /// <summary>One number per head for one circuit, as a [layer, head] map (for heatmaps).</summary>
    public double[,] Map(Circuit circuit, Func<HeadCircuitStats, double> value)
    {
        var map = new double[Layers, Heads];
        for (int l = 0; l < Layers; l++)
            for (int h = 0; h < Heads; h++) map[l, h] = value(Get(l, h, circuit));
        return map;
    }

    /// <summary>
    /// The <c>head_circuits.parquet</c> table: layer, head, circuit (pattern | message), d_head (the rank bound),
    /// norm (Frobenius), spectral_norm, effective_rank, full_norm and full_effective_rank (of the circuit through
    /// tokens), copying_score (Σλ/Σ|λ| of the full circuit: copying for message rows, same-token attention for pattern
    /// rows), singular_values (list, descending).
    /// </summary>
    public ParquetTable ToTable()
    {
        var rows = new ParquetColumns();
        foreach (var r in Rows)
            rows.Row((Columns.Layer, r.Layer), (Columns.Head, r.Head), ("circuit", r.Circuit == Circuit.Pattern ? "pattern" : "message"), ("d_head", DHead),
                ("norm", r.Spectrum.FrobeniusNorm), ("spectral_norm", r.Spectrum.SpectralNorm), ("effective_rank", r.Spectrum.EffectiveRank),
                ("full_norm", r.FullSpectrum.FrobeniusNorm), ("full_effective_rank", r.FullSpectrum.EffectiveRank),
                ("copying_score", r.EigenScore), ("singular_values", r.Spectrum.SingularValues));
        return rows.ToTable();
    }
}

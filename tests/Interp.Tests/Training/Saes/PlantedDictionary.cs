using Interp.Training.Saes;
using static TorchSharp.torch;

namespace Interp.Tests.Training.Saes;

/// <summary>
/// Synthetic activations with a known sparse dictionary: <see cref="Features"/> random unit directions in d_in
/// dimensions; each sample activates each feature independently with probability <see cref="Density"/>, with a
/// magnitude uniform in [0.5, 1.5], and is the sum of the active features' directions times their magnitudes.
/// </summary>
internal sealed class PlantedDictionary : IActivationSource, IDisposable
{
    private readonly Generator _generator;
    private readonly double _density;

    public PlantedDictionary(int dIn, int features, double density, ulong seed)
    {
        DIn = dIn;
        _density = density;
        _generator = new Generator(seed);
        var d = randn([features, dIn], generator: _generator);
        Directions = (d / d.norm(1, keepdim: true)).DetachFromDisposeScope();   // [features, d_in], unit rows
    }

    public int DIn { get; }
    public Tensor Directions { get; }
    public int Features => (int)Directions.shape[0];
    public double Density => _density;

    public Tensor NextBatch(int size)
    {
        using var scope = NewDisposeScope();
        var active = rand([size, Features], generator: _generator).lt(_density).to(ScalarType.Float32);
        var magnitude = rand([size, Features], generator: _generator) + 0.5;
        return (active * magnitude).matmul(Directions).MoveToOuterDisposeScope();
    }

    /// <summary>For each planted direction, the largest cosine similarity with any row of <paramref name="decoder"/> [d_sae, d_in].</summary>
    public float[] BestCosines(Tensor decoder)
    {
        using var scope = NewDisposeScope();
        var rows = decoder / decoder.norm(1, keepdim: true);
        return Directions.matmul(rows.t()).max(1).values.data<float>().ToArray();
    }

    public void Dispose()
    {
        Directions.Dispose();
        _generator.Dispose();
    }
}

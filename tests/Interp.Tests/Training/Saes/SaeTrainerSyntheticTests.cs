using Interp.Saes;
using Interp.Tests.Support;
using Interp.Training.Saes;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Interp.Tests.Training.Saes;

/// <summary>
/// Training on a planted sparse dictionary (<see cref="PlantedDictionary"/>: 48 unit directions in 24 dimensions, each
/// active with probability 3/48, so ~3 per sample, Poisson-like, so a TopK SAE gets k = 6 to cover the samples with more). The planted directions are the right answer: an SAE that learns
/// them reconstructs the data exactly with L0 ≈ 3. The thresholds: explained variance above 0.85 is far out of reach for
/// a dense code that ignores the structure with this budget of 3–4 active features (the best rank-4 linear
/// reconstruction of 24 equal-variance isotropic-ish directions explains about 4/24 ≈ 0.17 of the variance), and
/// recovering a planted direction at cosine 0.9 by chance in 24 dimensions is practically impossible (a random unit
/// vector's cosine with a fixed one has standard deviation 1/√24 ≈ 0.2).
/// </summary>
public sealed class SaeTrainerSyntheticTests(ITestOutputHelper output)
{
    private const int DIn = 24, Features = 48;

    private (double Ev, double L0, float[] Cosines) TrainOn(SaeTrainingOptions options)
    {
        using var data = new PlantedDictionary(DIn, Features, 3.0 / Features, seed: 7);
        using var tmp = new TempDir();
        var trainer = new SaeTrainer(options);
        var result = trainer.Train(data, new SaeTrainingTarget("synthetic", null, 1, false, "planted"), tmp.Path);
        using var sae = Sae.Load(tmp.Path);
        using var scope = NewDisposeScope();
        var x = data.NextBatch(8192);
        var acts = sae.Encode(x);
        double ev = Sae.ExplainedVariance(x, sae.Reconstruct(x));
        double l0 = Sae.L0(acts).to(ScalarType.Float64).mean().item<double>();
        var cos = data.BestCosines(sae.WDec);
        output.WriteLine($"{options.Architecture}: EV {ev:F4}, L0 {l0:F2}, planted directions at cos > 0.9: {cos.Count(c => c > 0.9)}/{Features}, " +
                         $"median cos {cos.Order().ElementAt(Features / 2):F3}, {result.Elapsed.TotalSeconds:F1} s");
        return (ev, l0, cos);
    }

    private static SaeTrainingOptions Base => new()
    {
        DSae = 96,
        BatchSizeTokens = 512,
        TrainingTokens = 512 * 2000,
        BufferTokens = 4096,
        LearningRate = 3e-3,
        LrDecaySteps = 400,
        LogEverySteps = 500,
        Seed = 1,
    };

    [Fact]
    public void Standard_sae_recovers_the_planted_directions()
    {
        var (ev, l0, cos) = TrainOn(Base with { Architecture = SaeArchitecture.Standard, L1Coefficient = 0.3, SparsityWarmUpSteps = 200 });
        Assert.True(ev > 0.85, $"explained variance {ev}");
        Assert.True(l0 < 20, $"L0 {l0}");
        Assert.True(cos.Count(c => c > 0.9) >= 0.8 * Features, $"only {cos.Count(c => c > 0.9)} of {Features} planted directions recovered");
    }

    [Fact]
    public void TopK_sae_recovers_the_planted_directions()
    {
        var (ev, l0, cos) = TrainOn(Base with { Architecture = SaeArchitecture.TopK, K = 6, DeadFeatureWindow = 200 });
        Assert.True(ev > 0.85, $"explained variance {ev}");
        Assert.True(l0 <= 6, $"L0 {l0}");
        Assert.True(cos.Count(c => c > 0.9) >= 0.8 * Features, $"only {cos.Count(c => c > 0.9)} of {Features} planted directions recovered");
    }
}

using Interp.Models;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Training;

/// <summary>The induction-training helpers: data, schedule, determinism, progress and cancellation (serial: determinism needs a fixed thread count).</summary>
[Collection(nameof(TrainingCollection))]
public sealed class TrainingTests
{
    private static long[] Data(Tensor t) => t.data<long>().ToArray();

    [Fact]
    public void Generator_is_deterministic_starts_with_bos_and_stays_in_the_vocabulary()
    {
        var options = new InductionDataOptions { VocabSize = 20, SequenceLength = 40, SpanMaxLength = 12 };
        using var a = new InductionDataGenerator(options, 7).NextBatch(16);
        using var b = new InductionDataGenerator(options, 7).NextBatch(16);
        using var c = new InductionDataGenerator(options, 8).NextBatch(16);
        Assert.Equal(Data(a), Data(b));
        Assert.NotEqual(Data(a), Data(c));
        Assert.Equal(new long[] { 16, 40 }, a.shape);
        Assert.All(Enumerable.Range(0, 16), i => Assert.Equal(InductionDataGenerator.Bos, a[i, 0].item<long>()));
        Assert.All(Data(a[.., 1..]), t => Assert.InRange(t, 1, 19));
    }

    [Fact]
    public void Noise_free_bigram_sequences_follow_one_successor_table_per_sequence()
    {
        var options = new InductionDataOptions { VocabSize = 30, SequenceLength = 64, MarkovFraction = 1, MarkovNoise = 0 };
        using var batch = new InductionDataGenerator(options, 1).NextBatch(8);
        var data = Data(batch);
        for (int s = 0; s < 8; s++)
        {
            var successor = new Dictionary<long, long>();
            for (int i = 1; i < 63; i++)
                Assert.Equal(successor.TryAdd(data[s * 64 + i], data[s * 64 + i + 1]) ? data[s * 64 + i + 1] : successor[data[s * 64 + i]], data[s * 64 + i + 1]);
        }
    }

    [Fact]
    public void Repeated_random_tokens_are_bos_then_r_then_r()
    {
        using var t = InductionDataGenerator.RepeatedRandomTokens(4, 10, 50, 3);
        Assert.Equal(new long[] { 4, 21 }, t.shape);
        Assert.Equal(Data(t[.., 1..11]), Data(t[.., 11..]));
        Assert.Equal(new long[4], Data(t[.., 0]));
    }

    [Fact]
    public void Learning_rate_warms_up_then_follows_the_schedule()
    {
        var o = new TrainingOptions { Steps = 110, WarmupSteps = 10, LearningRate = 1.0, Schedule = LrSchedule.Cosine, MinLrFraction = 0.1 };
        Assert.Equal(0.5, o.LearningRateAt(5), 1e-12);
        Assert.Equal(1.0, o.LearningRateAt(10), 1e-12);
        Assert.Equal(0.55, o.LearningRateAt(60), 1e-12);
        Assert.Equal(0.1, o.LearningRateAt(110), 1e-12);
        Assert.Equal(1.0, (o with { Schedule = LrSchedule.Constant }).LearningRateAt(80), 1e-12);
    }

    [Fact]
    public void Training_is_deterministic_reports_progress_and_can_be_cancelled()
    {
        var options = InductionRecipe.Training with { Steps = 12, LogInterval = 5, Seed = 4 };
        float[] Run(List<TrainingProgress> seen)
        {
            using var model = InductionRecipe.CreateModel(4);
            return InductionTrainer.Train(model, InductionRecipe.Data, options, seen.Add).Loss;
        }
        var progress = new List<TrainingProgress>();
        var first = Run(progress);
        Assert.Equal(first, Run([]));
        Assert.Equal(new[] { 5, 10, 12 }, progress.Select(p => p.Step));
        Assert.All(first, l => Assert.True(float.IsFinite(l)));

        using var cts = new CancellationTokenSource();
        using var model = InductionRecipe.CreateModel(4);
        Assert.ThrowsAny<OperationCanceledException>(() =>
            InductionTrainer.Train(model, InductionRecipe.Data, options, p => cts.Cancel(), cts.Token));
    }
}

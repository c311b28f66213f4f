using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Training;

/// <summary>
/// The built-in transformer's recipe (<see cref="InductionRecipe"/>) for an LSTM language model of the same size: the
/// same data, vocabulary, optimiser, schedule, step budget, batch, seeds and evaluation, without the head dropout (an
/// LSTM has no heads). What <c>lstm_analogy</c> compares the transformer with.
/// </summary>
public static class LstmRecipe
{
    /// <summary>
    /// One LSTM layer with embedding, cell and hidden width 68: 46,304 parameters, against the built-in transformer's
    /// 46,016 (one layer: all the memory is in one cell state, as all of the transformer's is in one residual stream).
    /// </summary>
    public static LstmConfig ModelConfig { get; } = new() { Name = "lstm-1l-induction", DVocab = 64, DHidden = 68, NLayers = 1 };

    /// <summary>The built-in model's data.</summary>
    public static InductionDataOptions Data => InductionRecipe.Data;

    /// <summary>The built-in model's optimisation, without head dropout.</summary>
    public static TrainingOptions Training { get; } = InductionRecipe.Training with { HeadDropout = [] };

    /// <summary>A freshly initialised model (<see cref="HookedLstm.InitWeights"/>).</summary>
    public static HookedLstm CreateModel(LstmConfig? config = null, long seed = 0) => new HookedLstm(config ?? ModelConfig).InitWeights(seed);

    /// <summary>
    /// Initialises and trains a model of <paramref name="config"/> (default <see cref="ModelConfig"/>) for
    /// <paramref name="steps"/> steps (default the recipe's) on one thread, as the built-in model is trained: the float
    /// sums then do not depend on the core count, so the same seed gives the same weights bit for bit on the same CPU.
    /// </summary>
    public static (HookedLstm Model, TrainingResult Result) Train(LstmConfig? config = null, int? steps = null, long seed = 0,
        Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var model = CreateModel(config, seed);
        var options = Training with { Steps = steps ?? Training.Steps, Seed = (ulong)seed, LogInterval = 25 };
        int threads = get_num_threads();
        set_num_threads(1);
        try { return (model, InductionTrainer.Train(model, Data, options, progress, cancellationToken)); }
        catch
        {
            model.Dispose();
            throw;
        }
        finally { set_num_threads(threads); }
    }
}

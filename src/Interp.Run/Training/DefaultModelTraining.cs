using System.Globalization;
using Interp.Analysis;
using Interp.Loading;
using Interp.Plots;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Training;

/// <summary>What training the built-in model produced.</summary>
/// <param name="Directory">Where the model was saved.</param>
/// <param name="Result">The loss curves.</param>
/// <param name="Scores">Head scores of the trained model on repeated random tokens.</param>
public sealed record DefaultModelReport(string Directory, TrainingResult Result, HeadScores Scores);

/// <summary>
/// Trains the built-in default model with <see cref="InductionRecipe"/> and saves it, in the project's own format,
/// with its training curve (<c>training_loss.parquet</c>, <c>training_loss.png</c>) and a manifest (config, seed,
/// steps, final losses, weights hash). <c>interp train-default</c> runs this; the repository ships the result.
/// </summary>
public static class DefaultModelTraining
{
    /// <summary>Trains and saves into <paramref name="directory"/>; <paramref name="steps"/> overrides the recipe's step count.</summary>
    public static async Task<DefaultModelReport> TrainAsync(string directory, int? steps = null, long seed = 0,
        Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var options = InductionRecipe.Training with { Steps = steps ?? InductionRecipe.Training.Steps, Seed = (ulong)seed, LogInterval = 25 };
        using var model = InductionRecipe.CreateModel(seed);
        // One thread: float sums then do not depend on the machine's core count, so the shipped weights reproduce
        // exactly on the same CPU and up to float noise elsewhere; for a model this small it is also no slower.
        int threads = get_num_threads();
        set_num_threads(1);
        TrainingResult result;
        try { result = InductionTrainer.Train(model, InductionRecipe.Data, options, progress, cancellationToken); }
        finally { set_num_threads(threads); }

        using var scope = NewDisposeScope();
        var tokens = HeadDetection.RepeatedRandomTokens(64, 25, 1, model.Config.DVocab, seed: 12345, firstToken: (int)InductionDataGenerator.Bos);
        var scores = HeadDetection.Score(model, tokens, 25, cancellationToken);
        string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        var metadata = new Dictionary<string, string>
        {
            ["recipe"] = nameof(InductionRecipe),
            ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
            ["steps"] = options.Steps.ToString(CultureInfo.InvariantCulture),
            ["final_train_loss"] = F(result.Loss[^1]),
            ["final_loss_first_half"] = F(result.FirstHalfLoss[^1]),
            ["final_loss_repeated_half"] = F(result.RepeatedHalfLoss[^1]),
            ["best_previous_token_score_layer0"] = F(scores.Best(HeadScoreKind.PreviousToken, 0).Score),
            ["best_induction_score_layer1"] = F(scores.Best(HeadScoreKind.Induction, 1).Score),
        };
        Directory.CreateDirectory(directory);
        InterpModelFormat.Save(model, directory, tokenizer: null, metadata);

        await result.ToTable().WriteAsync(Path.Combine(directory, "training_loss.parquet"), cancellationToken);
        var plot = result.Figure("Training the built-in model");
        Figures.SavePng(plot, Path.Combine(directory, "training_loss.png"), 1000, 500);
        return new DefaultModelReport(directory, result, scores);
    }
}

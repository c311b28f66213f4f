using System.Diagnostics;
using Interp.Models;
using Interp.Plots;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Training;

/// <summary>How the learning rate evolves after the linear warm-up.</summary>
public enum LrSchedule
{
    /// <summary>Stay at the peak learning rate.</summary>
    Constant,
    /// <summary>Cosine decay from the peak to <see cref="TrainingOptions.MinLrFraction"/> × peak at the last step.</summary>
    Cosine,
    /// <summary>Linear decay from the peak to <see cref="TrainingOptions.MinLrFraction"/> × peak at the last step.</summary>
    Linear,
}

/// <summary>Hyperparameters of <see cref="InductionTrainer"/>; the defaults are <see cref="InductionRecipe"/>'s, except
/// <see cref="HeadDropout"/> (none by default).</summary>
public sealed record TrainingOptions
{
    /// <summary>Optimiser steps.</summary>
    public int Steps { get; init; } = 3000;
    /// <summary>Sequences per step.</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 2e-3;
    /// <summary>Steps of linear warm-up from 0 to the peak.</summary>
    public int WarmupSteps { get; init; } = 100;
    /// <summary>Schedule after warm-up.</summary>
    public LrSchedule Schedule { get; init; } = LrSchedule.Constant;
    /// <summary>Final learning rate as a fraction of the peak, for decaying schedules.</summary>
    public double MinLrFraction { get; init; }
    /// <summary>AdamW's decoupled weight decay (applied to every parameter).</summary>
    public double WeightDecay { get; init; } = 0.01;
    /// <summary>AdamW's β₁.</summary>
    public double Beta1 { get; init; } = 0.9;
    /// <summary>AdamW's β₂.</summary>
    public double Beta2 { get; init; } = 0.99;
    /// <summary>Seed of the data stream (and of TorchSharp's global RNG, set at the start).</summary>
    public ulong Seed { get; init; }
    /// <summary>Evaluate and report progress every this many steps (and at the last step); 0 reports only the end.</summary>
    public int LogInterval { get; init; } = 100;
    /// <summary>Sequences in the fixed evaluation batch of repeated random tokens.</summary>
    public int EvalBatchSize { get; init; } = 64;
    /// <summary>Length n of the random half of each evaluation sequence (BOS + r + r has 2n + 1 tokens).</summary>
    public int EvalHalfLength { get; init; } = 25;
    /// <summary>Seed of the evaluation batch (fixed, so curves of different runs compare).</summary>
    public ulong EvalSeed { get; init; } = 12345;
    /// <summary>Heads zeroed at random during training steps (never during evaluation); drawn from a generator seeded by <see cref="Seed"/>.</summary>
    public IReadOnlyList<HeadDropout> HeadDropout { get; init; } = [];

    /// <summary>The learning rate at 1-based <paramref name="step"/>.</summary>
    public double LearningRateAt(int step)
    {
        if (step <= WarmupSteps) return LearningRate * step / Math.Max(1, WarmupSteps);
        double t = (double)(step - WarmupSteps) / Math.Max(1, Steps - WarmupSteps); // 0 → 1 after warm-up
        double decay = Schedule switch
        {
            LrSchedule.Cosine => 0.5 * (1 + Math.Cos(Math.PI * t)),
            LrSchedule.Linear => 1 - t,
            _ => 1.0,
        };
        return LearningRate * (MinLrFraction + (1 - MinLrFraction) * decay);
    }
}

/// <summary>A progress report: the step just taken and, on the fixed evaluation batch, the two half losses.</summary>
/// <param name="Step">1-based step just completed.</param>
/// <param name="Steps">Total steps of the run.</param>
/// <param name="Loss">Training loss of this step's batch.</param>
/// <param name="LearningRate">Learning rate used at this step.</param>
/// <param name="FirstHalfLoss">Evaluation loss on the unpredictable first copy.</param>
/// <param name="RepeatedHalfLoss">Evaluation loss on the repeated copy (low once induction works).</param>
/// <param name="Elapsed">Wall time since training started.</param>
public sealed record TrainingProgress(int Step, int Steps, double Loss, double LearningRate, double FirstHalfLoss,
    double RepeatedHalfLoss, TimeSpan Elapsed);

/// <summary>The loss curves of a run.</summary>
/// <param name="Loss">Training loss at every step (index = step − 1).</param>
/// <param name="EvalSteps">The steps at which the evaluation batch was scored.</param>
/// <param name="FirstHalfLoss">Evaluation first-copy loss at each of <paramref name="EvalSteps"/>.</param>
/// <param name="RepeatedHalfLoss">Evaluation repeated-copy loss at each of <paramref name="EvalSteps"/>.</param>
/// <param name="Elapsed">Total wall time of the run, evaluations included.</param>
public sealed record TrainingResult(float[] Loss, int[] EvalSteps, float[] FirstHalfLoss, float[] RepeatedHalfLoss, TimeSpan Elapsed)
{
    /// <summary>The curves at the evaluation steps (<c>training_loss.parquet</c>'s schema): step, loss, loss_first_half, loss_repeated_half.</summary>
    public ParquetTable ToTable() => new ParquetTable()
        .Add("step", EvalSteps)
        .Add("loss", EvalSteps.Select(s => Loss[s - 1]).ToArray())
        .Add("loss_first_half", FirstHalfLoss)
        .Add("loss_repeated_half", RepeatedHalfLoss);

    /// <summary>The curves as a figure: the training batch's loss and the evaluation batch's two halves per step.</summary>
    public ScottPlot.Plot Figure(string title)
    {
        var xs = EvalSteps.Select(s => (double)s).ToArray();
        return Figures.Lines(title, "step", "loss", xs,
            ("training batch", EvalSteps.Select(s => (double)Loss[s - 1]).ToArray()),
            ("first copy (random)", FirstHalfLoss.Select(v => (double)v).ToArray()),
            ("repeated copy", RepeatedHalfLoss.Select(v => (double)v).ToArray()));
    }
}

/// <summary>
/// Trains a <see cref="HookedTransformer"/> (or a <see cref="HookedLstm"/>) on <see cref="InductionDataGenerator"/> batches
/// with AdamW and next-token cross-entropy on every position. The model's weights are trained in place; initialise them
/// first (<see cref="HookedTransformer.InitWeights"/>, <see cref="HookedLstm.InitWeights"/>). Deterministic for fixed options, model initialisation and
/// TorchSharp thread count (<c>torch.set_num_threads</c>, which this method leaves alone).
/// </summary>
public static class InductionTrainer
{
    /// <summary>Runs <see cref="TrainingOptions.Steps"/> steps; cancellation throws <see cref="OperationCanceledException"/>.</summary>
    public static TrainingResult Train(HookedTransformer model, InductionDataOptions data, TrainingOptions options,
        Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (data.VocabSize != model.Config.DVocab || data.SequenceLength > model.Config.NCtx)
            throw new ArgumentException($"data (vocab {data.VocabSize}, length {data.SequenceLength}) does not fit the model " +
                $"(vocab {model.Config.DVocab}, n_ctx {model.Config.NCtx})", nameof(data));
        foreach (var rule in options.HeadDropout) rule.Validate(model.Config);
        var dropoutGenerator = new Generator(options.Seed ^ 0x5EED_D809UL);
        var dropout = options.HeadDropout.Select(rule => rule.ToHook(dropoutGenerator)).ToArray();
        return Run(model, tokens => model.RunWithHooks(tokens, dropout), data, options, progress, cancellationToken);
    }

    /// <summary>
    /// Trains an LSTM language model on the same data, with the same optimiser, schedule, seeds and evaluation as the
    /// transformer (<see cref="TrainingOptions.HeadDropout"/> must be empty: an LSTM has no heads). Its passes are
    /// TorchSharp's fused LSTM (no hooks are attached).
    /// </summary>
    public static TrainingResult Train(HookedLstm model, InductionDataOptions data, TrainingOptions options,
        Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (data.VocabSize != model.Config.DVocab)
            throw new ArgumentException($"data (vocab {data.VocabSize}) does not fit {model.Config.Name} (vocab {model.Config.DVocab})", nameof(data));
        if (options.HeadDropout.Count > 0)
            throw new ArgumentException($"head dropout ({options.HeadDropout.Count} rules) drops attention heads; {model.Config.Name} is an LSTM and has none", nameof(options));
        return Run(model, model.forward, data, options, progress, cancellationToken);
    }

    /// <summary>The training loop every model shares: <paramref name="trainForward"/> is the pass of a training step.</summary>
    private static TrainingResult Run(nn.Module<Tensor, Tensor> model, Func<Tensor, Tensor> trainForward, InductionDataOptions data,
        TrainingOptions options, Action<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Steps, 1);
        // Grad mode is per thread: make sure it is on here, whatever the caller's thread was doing.
        using var gradMode = enable_grad();
        manual_seed((long)options.Seed);
        var generator = new InductionDataGenerator(data, options.Seed);
        using var evalTokens = InductionDataGenerator.RepeatedRandomTokens(options.EvalBatchSize, options.EvalHalfLength,
            data.VocabSize, options.EvalSeed);
        using var optimizer = new AdamWOptimizer(model.parameters(), options.LearningRate, options.Beta1, options.Beta2,
            weightDecay: options.WeightDecay);
        int vocab = data.VocabSize;
        var losses = new float[options.Steps];
        var evalSteps = new List<int>();
        var firstHalf = new List<float>();
        var repeated = new List<float>();
        var clock = Stopwatch.StartNew();
        model.train();
        for (int step = 1; step <= options.Steps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double lr = options.LearningRateAt(step);
            optimizer.LearningRate = lr;
            using (NewDisposeScope())
            {
                var tokens = generator.NextBatch(options.BatchSize);
                var logits = trainForward(tokens);
                var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, vocab), tokens[.., 1..].reshape(-1));
                optimizer.ZeroGrad();
                loss.backward();
                optimizer.Step();
                losses[step - 1] = loss.item<float>();
            }
            bool log = step == options.Steps || (options.LogInterval > 0 && step % options.LogInterval == 0);
            if (!log) continue;
            var (first, rep) = EvalLosses(model, evalTokens, options.EvalHalfLength);
            evalSteps.Add(step);
            firstHalf.Add((float)first);
            repeated.Add((float)rep);
            progress?.Invoke(new TrainingProgress(step, options.Steps, losses[step - 1], lr, first, rep, clock.Elapsed));
        }
        model.eval();
        return new TrainingResult(losses, evalSteps.ToArray(), firstHalf.ToArray(), repeated.ToArray(), clock.Elapsed);
    }

    private static (double, double) EvalLosses(nn.Module<Tensor, Tensor> model, Tensor tokens, int halfLength)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = model.forward(tokens);
        // loss[i] predicts token i + 1 of [BOS, r, r]; skip each copy's first token (unpredictable in both copies).
        var loss = nn.functional.cross_entropy(logits[.., ..^1].permute(0, 2, 1), tokens[.., 1..], reduction: nn.Reduction.None);
        return (loss[.., 1..halfLength].mean().item<float>(), loss[.., (halfLength + 1)..].mean().item<float>());
    }
}

using System.Diagnostics;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Saes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Training.Saes;

/// <summary>How a default SAE is trained and evaluated on one model.</summary>
/// <param name="Name">The recipe's name (<c>builtin</c>, <c>stories260K</c>).</param>
/// <param name="HookName">The hook point.</param>
/// <param name="Options">The training options.</param>
/// <param name="Bos">The BOS id (for a model without a tokenizer; otherwise the tokenizer's is used).</param>
/// <param name="CorpusDocuments">Documents the model generates for training.</param>
/// <param name="DocumentTokens">Longest generated document.</param>
/// <param name="CorpusSeed">Seed of the training corpus.</param>
/// <param name="EvalDocuments">Held-out documents generated for evaluation (another seed).</param>
/// <param name="EvalSeed">Seed of the held-out corpus.</param>
public sealed record SaeRecipe(string Name, string HookName, SaeTrainingOptions Options, int Bos, int CorpusDocuments, int DocumentTokens,
    int CorpusSeed, int EvalDocuments, int EvalSeed)
{
    /// <summary>
    /// The built-in model (2-layer attention-only, d_model 64, n_ctx 64, no tokenizer; BOS is token 0 as in its training
    /// data): the residual stream between its two layers, <c>blocks.1.hook_resid_pre</c>. TopK, k 16, d_sae 512 (8 × d_in),
    /// context 64, batch 4096 tokens, 2M tokens (488 steps), Adam lr 1e-3 with 50 warm-up steps and a linear decay over
    /// the last 100 steps to lr / 10, inputs normalised (expected_average_only_in, folded at save). Corpus: 1,000 sequences of 63 tokens the
    /// model samples itself (temperature 1) from BOS, looped; evaluation on 64 others.
    /// </summary>
    public static SaeRecipe BuiltIn { get; } = new("builtin", HookNames.ResidPre(1), Common with { ContextSize = 64, LrDecaySteps = 100 },
        Bos: 0, CorpusDocuments: 1000, DocumentTokens: 63, CorpusSeed: 1, EvalDocuments: 64, EvalSeed: 1_000_001);

    /// <summary>
    /// stories260K (5 layers, d_model 64): the residual stream entering its middle block, <c>blocks.2.hook_resid_pre</c>.
    /// TopK, k 16, d_sae 512, context 128, batch 4096 tokens, 2M tokens (488 steps), the schedule of <see cref="BuiltIn"/>.
    /// Corpus: 1,000 stories of at most 255 tokens the model samples itself (temperature 1, ending at EOS) from BOS,
    /// looped; evaluation on 64 others.
    /// </summary>
    public static SaeRecipe Stories260K { get; } = new("stories260K", HookNames.ResidPre(2), Common with { ContextSize = 128, LrDecaySteps = 100 },
        Bos: 1, CorpusDocuments: 1000, DocumentTokens: 255, CorpusSeed: 1, EvalDocuments: 64, EvalSeed: 1_000_001);

    private static SaeTrainingOptions Common => new()
    {
        Architecture = SaeArchitecture.TopK,
        K = 16,
        DSae = 512,
        BatchSizeTokens = 4096,
        TrainingTokens = 2_000_000,
        BufferTokens = 65_536,
        StoreBatchSizePrompts = 32,
        LearningRate = 1e-3,
        LrWarmUpSteps = 50,
        NormalizeActivations = SaeNormalization.ExpectedAverageOnlyIn,
        DeadFeatureWindow = 200,
        FeatureSamplingWindow = 500,
        LogEverySteps = 50,
        CheckpointEverySteps = 250,
        Seed = 42,
    };

    /// <summary>The recipe called <paramref name="name"/> (case-insensitive).</summary>
    /// <exception cref="InterpException">No such recipe.</exception>
    public static SaeRecipe Named(string name) =>
        new[] { BuiltIn, Stories260K }.FirstOrDefault(r => string.Equals(r.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new InterpException($"no SAE recipe '{name}' (builtin, stories260K)");

    /// <summary>
    /// Generates the corpus, trains into <paramref name="outDir"/> and evaluates the saved SAE on held-out generated text
    /// (<see cref="Evaluate"/>).
    /// </summary>
    public SaeRecipeReport Run(HookedTransformer model, string outDir, ILogger? logger = null, IProgress<SaeTrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        logger ??= NullLogger.Instance;
        var clock = Stopwatch.StartNew();
        var corpus = new GeneratedTokenSource(model, Bos, CorpusDocuments, DocumentTokens, CorpusSeed, batchSize: 50);
        int tokens = corpus.Documents(cancellationToken).Sum(d => d.Length);
        var generation = clock.Elapsed;
        logger.LogInformation("Generated {Documents} documents ({Tokens:N0} tokens) in {Seconds:F1} s", CorpusDocuments, tokens, generation.TotalSeconds);
        var trainer = new SaeTrainer(Options, logger);
        var result = trainer.TrainOnModel(model, HookName, corpus, outDir, Bos, progress, cancellationToken);
        using var sae = Sae.Load(outDir);
        var eval = new GeneratedTokenSource(model, Bos, EvalDocuments, DocumentTokens, EvalSeed, batchSize: 64);
        var scores = Evaluate(model, sae, eval, Options.ContextSize ?? Math.Min(128, model.Config.NCtx), model.Tokenizer?.BosId ?? Bos, cancellationToken);
        logger.LogInformation("{Recipe}: L0 {L0:F1}, explained variance {Ev:F3}, CE clean {Clean:F3} / SAE {Sae:F3} / zero {Zero:F3}: score {Score:F3}",
            Name, scores.L0, scores.ExplainedVariance, scores.CeLossClean, scores.CeLossWithSae, scores.CeLossZeroAblated, scores.CeLossScore);
        return new SaeRecipeReport(this, result, scores, generation, tokens);
    }

    /// <summary>
    /// SAELens's evals (<see cref="SaeEvaluation"/>: L0, explained variance, CE loss score, …) of <paramref name="sae"/>
    /// on the windows of <paramref name="corpus"/>, packed as training packs them (BOS first).
    /// </summary>
    /// <exception cref="InterpException">The corpus holds no window.</exception>
    public static SaeEvalResult Evaluate(HookedTransformer model, Sae sae, ISaeTokenSource corpus, int contextSize, int bos,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(corpus);
        using var scope = NewDisposeScope();
        var tokens = TokenWindows.Batch(corpus, contextSize, bos, cancellationToken: cancellationToken);   // [windows, pos]
        return SaeEvaluation.Run(model, sae, tokens, new SaeEvalOptions(BatchSize: 16), cancellationToken);
    }
}

/// <summary>A recipe run: the recipe, the training result, the held-out scores, and the corpus generation's cost.</summary>
/// <param name="Recipe">The recipe.</param>
/// <param name="Training">What training wrote and measured.</param>
/// <param name="Scores">Held-out evaluation.</param>
/// <param name="GenerationTime">Time spent generating the training corpus.</param>
/// <param name="CorpusTokens">Tokens in the generated training corpus.</param>
public sealed record SaeRecipeReport(SaeRecipe Recipe, SaeTrainingResult Training, SaeEvalResult Scores, TimeSpan GenerationTime, int CorpusTokens);

namespace Interp.Training.Saes;

/// <summary>A progress report of <see cref="SaeTrainer"/>, on the step's training batch.</summary>
/// <param name="Step">1-based step just completed.</param>
/// <param name="TotalSteps">Steps of the run.</param>
/// <param name="Tokens">Activations trained on so far.</param>
/// <param name="Mse">MSE of the batch (summed over d_in, mean over tokens; in the scaled space when the inputs are normalised).</param>
/// <param name="L0">Mean number of active features per token.</param>
/// <param name="ExplainedVariance">Explained variance of the batch (<see cref="Interp.Saes.Sae.ExplainedVariance"/>).</param>
/// <param name="DeadFeatures">Features that have not fired in the last <c>dead_feature_window</c> steps.</param>
/// <param name="LearningRate">Learning rate of the step.</param>
/// <param name="Elapsed">Wall time since training started.</param>
public sealed record SaeTrainingProgress(int Step, int TotalSteps, long Tokens, double Mse, double L0, double ExplainedVariance,
    int DeadFeatures, double LearningRate, TimeSpan Elapsed);

/// <summary>What a finished <see cref="SaeTrainer"/> run wrote and measured.</summary>
/// <param name="Directory">Where the final SAE is (cfg.json, sae_weights.safetensors, sparsity.safetensors).</param>
/// <param name="Steps">Optimiser steps taken.</param>
/// <param name="Tokens">Activations trained on.</param>
/// <param name="ScalingFactor">The activation scaling factor folded into the saved weights (1 without normalisation).</param>
/// <param name="Final">The last progress report.</param>
/// <param name="DenseFeatures">Features firing on more than 10% of the tokens of the last sampling window.</param>
/// <param name="Elapsed">Wall time of the whole run (buffer filling included).</param>
public sealed record SaeTrainingResult(string Directory, int Steps, long Tokens, double ScalingFactor, SaeTrainingProgress Final,
    int DenseFeatures, TimeSpan Elapsed);

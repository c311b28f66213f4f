namespace Interp.Training.Saes;

/// <summary>
/// A corpus for SAE training: documents as token ids (no BOS; <see cref="TokenWindows"/> adds it). Enumerating again
/// starts the corpus again, so the activation buffer can loop over a corpus smaller than the training run.
/// </summary>
public interface ISaeTokenSource
{
    /// <summary>What the corpus is, for logs and the saved config's <c>dataset_path</c>.</summary>
    string Description { get; }

    /// <summary>The documents in order, each as token ids without BOS.</summary>
    /// <exception cref="InterpException">The corpus is malformed; the message names the file, line and key.</exception>
    IEnumerable<int[]> Documents(CancellationToken cancellationToken = default);
}

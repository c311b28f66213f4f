namespace Interp.Training.Saes;

/// <summary>
/// Packs documents into fixed-length context windows as SAELens's <c>concat_and_batch_sequences</c> does with its
/// defaults: the documents are concatenated into one stream, separated by BOS; with <c>prependBos</c> every window
/// is BOS followed by the next <c>contextSize − 1</c> tokens of the stream (so no window starts mid-nowhere without a
/// BOS), otherwise the next <c>contextSize</c> tokens. A final partial window is dropped.
/// </summary>
public static class TokenWindows
{
    /// <summary>The windows of <paramref name="documents"/>, each exactly <paramref name="contextSize"/> tokens.</summary>
    /// <exception cref="ArgumentException">The context size is below 2, or BOS is asked for without a BOS id.</exception>
    public static IEnumerable<int[]> Pack(IEnumerable<int[]> documents, int contextSize, int? bos, bool prependBos)
    {
        ArgumentNullException.ThrowIfNull(documents);
        if (contextSize < 2) throw new ArgumentException($"context size must be at least 2, got {contextSize}", nameof(contextSize));
        if (prependBos && bos is null) throw new ArgumentException("prepend_bos needs a BOS token id, and the model's tokenizer has none", nameof(bos));
        return PackIterator(documents, contextSize, bos, prependBos);
    }

    /// <summary>
    /// At most <paramref name="maxWindows"/> windows of <paramref name="source"/> (BOS first) as int64 tokens
    /// [windows, contextSize], for an evaluation or a read-out pass.
    /// </summary>
    /// <exception cref="InterpException">The source holds no window of that length.</exception>
    public static TorchSharp.torch.Tensor Batch(ISaeTokenSource source, int contextSize, int bos, int maxWindows = int.MaxValue, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        var windows = Pack(source.Documents(cancellationToken), contextSize, bos, prependBos: true).Take(maxWindows).ToArray();
        if (windows.Length == 0) throw new InterpException($"{source.Description} holds no window of {contextSize} tokens");
        return TorchSharp.torch.tensor(windows.SelectMany(w => w.Select(t => (long)t)).ToArray(), [windows.Length, contextSize]);   // [windows, pos]
    }

    private static IEnumerable<int[]> PackIterator(IEnumerable<int[]> documents, int contextSize, int? bos, bool prependBos)
    {
        int body = prependBos ? contextSize - 1 : contextSize;
        var window = new List<int>(contextSize);
        void Start()
        {
            window.Clear();
            if (prependBos) window.Add(bos!.Value);
        }
        Start();
        bool first = true;
        foreach (var doc in documents)
        {
            // Documents are separated by BOS; a window's own leading BOS already separates at a window start.
            IEnumerable<int> tokens = !first && bos is int b ? doc.Prepend(b) : doc;
            first = false;
            foreach (int t in tokens)
            {
                if (prependBos && window.Count == 1 && t == bos && window[0] == bos) continue;   // no BOS BOS at a window start
                window.Add(t);
                if (window.Count == body + (prependBos ? 1 : 0))
                {
                    yield return window.ToArray();
                    Start();
                }
            }
        }
    }
}

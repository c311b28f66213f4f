using Interp.Models;

namespace Interp.Training.Saes;

/// <summary>
/// A corpus the model writes itself: <see cref="Count"/> documents sampled (temperature <see cref="Temperature"/>) from
/// a one-token BOS prompt with <see cref="Generation.Generate(HookedTransformer, IReadOnlyList{IReadOnlyList{int}}, GenerationOptions, CancellationToken)"/>,
/// <see cref="BatchSize"/> at a time, each batch seeded from <see cref="Seed"/>, so the corpus is the same on every
/// enumeration. A document ends at the tokenizer's EOS (when the model has one; EOS is not part of it) or after
/// <see cref="MaxNewTokens"/> tokens. The documents are generated once and kept (token ids only: a few MB at most).
/// </summary>
public sealed class GeneratedTokenSource : ISaeTokenSource
{
    private readonly HookedTransformer _model;
    private List<int[]>? _documents;

    /// <summary>A generated corpus of <paramref name="count"/> documents from <paramref name="model"/>, prompted with <paramref name="bos"/>.</summary>
    /// <exception cref="ArgumentException">A count or length is not positive, the BOS id is outside the vocabulary, or the length does not fit n_ctx.</exception>
    public GeneratedTokenSource(HookedTransformer model, int bos, int count, int maxNewTokens, int seed, double temperature = 1.0, int batchSize = 16)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (count <= 0) throw new ArgumentException($"generated corpus: the number of documents must be positive, got {count}", nameof(count));
        if (batchSize <= 0) throw new ArgumentException($"generated corpus: the batch size must be positive, got {batchSize}", nameof(batchSize));
        if (bos < 0 || bos >= model.Config.DVocab) throw new ArgumentException($"generated corpus: BOS id {bos} is outside the vocabulary [0, {model.Config.DVocab})", nameof(bos));
        if (maxNewTokens <= 0 || maxNewTokens + 1 > model.Config.NCtx)
            throw new ArgumentException($"generated corpus: {maxNewTokens} new tokens after BOS must lie in [1, n_ctx − 1 = {model.Config.NCtx - 1}]", nameof(maxNewTokens));
        if (!(temperature > 0)) throw new ArgumentException($"generated corpus: temperature must be positive, got {temperature}", nameof(temperature));
        _model = model;
        (Bos, Count, MaxNewTokens, Seed, Temperature, BatchSize) = (bos, count, maxNewTokens, seed, temperature, batchSize);
    }

    /// <summary>The prompt token.</summary>
    public int Bos { get; }
    /// <summary>Documents sampled (rows that stop at once add none).</summary>
    public int Count { get; }
    /// <summary>Longest document.</summary>
    public int MaxNewTokens { get; }
    /// <summary>Seed of the first batch (batch b uses seed + b).</summary>
    public int Seed { get; }
    /// <summary>Sampling temperature.</summary>
    public double Temperature { get; }
    /// <summary>Documents generated per call.</summary>
    public int BatchSize { get; }

    /// <inheritdoc />
    public string Description => $"generated:{_model.Config.Name}:n={Count}:len={MaxNewTokens}:seed={Seed}:T={Temperature}";

    /// <inheritdoc />
    public IEnumerable<int[]> Documents(CancellationToken cancellationToken = default)
    {
        if (_documents is null)
        {
            var docs = new List<int[]>(Count);
            int? eos = _model.Tokenizer?.EosId;
            for (int b = 0, rows = 0; rows < Count; b++)
            {
                int n = Math.Min(BatchSize, Count - rows);
                rows += n;
                var prompts = Enumerable.Range(0, n).Select(_ => (IReadOnlyList<int>)[Bos]).ToArray();
                var options = new GenerationOptions
                {
                    MaxNewTokens = MaxNewTokens,
                    Temperature = Temperature,
                    Seed = unchecked(Seed + b),
                    StopTokens = eos is int e ? [e] : [],
                };
                using var result = _model.Generate(prompts, options, cancellationToken);
                foreach (var row in result.Tokens)
                {
                    var doc = row.Where(t => t != eos).ToArray();
                    if (doc.Length > 0) docs.Add(doc);   // a row that stopped at once adds nothing
                }
            }
            _documents = docs;
        }
        return _documents;
    }
}

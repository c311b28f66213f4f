using Interp.Hooks;
using Interp.Models;
using Interp.Results;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Experiments;

/// <summary>The report's attention explorer for a batch: the two tables it reads, then the view.</summary>
public static class AttentionExplorer
{
    /// <summary>
    /// Runs <paramref name="model"/> on <paramref name="tokens"/> [batch, pos] (a few short sequences: every head's pattern
    /// is tabulated), writes <c>tokens.parquet</c> (<see cref="TokenTable"/>) and <c>attention_patterns.parquet</c>
    /// (<see cref="AttentionTable"/>), and adds an <see cref="AttentionView"/> with head <paramref name="layer"/>.<paramref name="head"/> selected.
    /// </summary>
    public static async Task AddAsync(ExperimentContext context, HookedTransformer model, Tensor tokens, ITokenizer? tokenizer, int layer, int head,
        string caption, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(model);
        await context.WriteTableAsync("tokens.parquet", TokenTable.From(tokens, tokenizer), "the tokens of the sequences the report's views show", cancellationToken);
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var (_, cache) = model.RunWithCache(tokens, n => HookNames.Is(n, HookNames.Pattern));
            using (cache)
                await context.WriteTableAsync("attention_patterns.parquet",
                    AttentionTable.From(Enumerable.Range(0, model.Config.NLayers).Select(l => cache[HookNames.Pattern(l)]).ToArray()),
                    $"every head's attention pattern on the {tokens.shape[0]} sequences of tokens.parquet (causal entries, key ≤ query)", cancellationToken);
        }
        await context.AddViewAsync(new AttentionView("Attention explorer", caption, "attention_patterns.parquet", "tokens.parquet", layer, head), cancellationToken);
    }
}

using Interp.Analysis;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Results;

/// <summary>
/// The tokens of a batch as a long table, one row per token: <c>sequence</c> (int32, the batch index), <c>position</c>
/// (int32), <c>token_id</c> (int32) and <c>token</c> (string: the tokenizer's piece, or the id where there is no
/// tokenizer). The tables keyed by (sequence, position) — <see cref="AttentionTable"/>, <see cref="TokenValuesTable"/>,
/// a logit lens — join to it, and the report's views label their tokens from it.
/// </summary>
public static class TokenTable
{
    /// <summary>Builds the table from tokens [batch, pos]; <paramref name="tokenizer"/> (optional) gives the text of each.</summary>
    /// <exception cref="InterpException">The tokens are not [batch, pos].</exception>
    public static ParquetTable From(Tensor tokens, ITokenizer? tokenizer)
    {
        if (tokens.dim() != 2) throw new InterpException($"tokens must be [batch, pos], got [{string.Join(", ", tokens.shape)}]");
        int batch = (int)tokens.shape[0], pos = (int)tokens.shape[1];
        var ids = tokens.cpu().to(ScalarType.Int64).contiguous().data<long>().Select(i => (int)i).ToArray();
        var rows = Enumerable.Range(0, batch).Select(b => (IReadOnlyList<int>)ids[(b * pos)..((b + 1) * pos)]).ToArray();
        var pieces = rows.Select(r => (IReadOnlyList<string>)(tokenizer?.ToStrTokens(r) ?? r.Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray())).ToArray();
        return From(rows, pieces);
    }

    /// <summary>Builds the table from sequences of different lengths: each one's ids and their text (as many of each).</summary>
    /// <exception cref="InterpException">A sequence has more ids than texts or the other way round.</exception>
    public static ParquetTable From(IReadOnlyList<IReadOnlyList<int>> ids, IReadOnlyList<IReadOnlyList<string>> tokens)
    {
        if (ids.Count != tokens.Count) throw new InterpException($"token table: {ids.Count} sequences of ids but {tokens.Count} of token texts");
        var (sequences, positions, all, text) = (new List<int>(), new List<int>(), new List<int>(), new List<string>());
        for (int b = 0; b < ids.Count; b++)
        {
            if (ids[b].Count != tokens[b].Count) throw new InterpException($"token table: sequence {b} has {ids[b].Count} ids but {tokens[b].Count} token texts");
            for (int p = 0; p < ids[b].Count; p++) { sequences.Add(b); positions.Add(p); all.Add(ids[b][p]); text.Add(tokens[b][p]); }
        }
        return new ParquetTable().Add(Columns.Sequence, sequences.ToArray()).Add(Columns.Position, positions.ToArray()).Add(Columns.TokenId, all.ToArray()).Add(Columns.Token, text.ToArray());
    }
}

/// <summary>
/// Attention patterns as a long table, one row per entry: <c>sequence</c>, <c>layer</c>, <c>head</c>, <c>query</c>,
/// <c>key</c> (int32) and <c>weight</c> (float32, the softmax weight of <c>blocks.{layer}.attn.hook_pattern</c>). A causal
/// model's entries above the diagonal are zero and are not stored (key ≤ query); a bidirectional encoder's are all stored.
/// </summary>
public static class AttentionTable
{
    /// <summary>Column <c>query</c>: the attending position (int32).</summary>
    public const string Query = "query";
    /// <summary>Column <c>key</c>: the attended position (int32).</summary>
    public const string Key = "key";
    /// <summary>Column <c>weight</c>: the attention weight (float32).</summary>
    public const string Weight = "weight";

    /// <summary>Builds the table from each layer's pattern [batch, head, query, key] (the cache's <c>hook_pattern</c>, layer 0 first).</summary>
    /// <exception cref="InterpException">A pattern is not [batch, head, pos, pos], or the layers' shapes differ.</exception>
    public static ParquetTable From(IReadOnlyList<Tensor> patterns, bool causal = true)
    {
        if (patterns.Count == 0) throw new InterpException("no attention patterns to tabulate");
        var shape = patterns[0].shape;
        for (int l = 0; l < patterns.Count; l++)
            if (patterns[l].dim() != 4 || !patterns[l].shape.SequenceEqual(shape))
                throw new InterpException($"pattern of layer {l} must be [batch, head, pos, pos] like layer 0's [{string.Join(", ", shape)}], got [{string.Join(", ", patterns[l].shape)}]");
        var builder = new Builder(causal);
        for (int b = 0; b < shape[0]; b++) builder.Add(b, patterns.Select(p => p[b]).ToArray());
        return builder.ToTable();
    }

    /// <summary>A table built one sequence at a time (sequences of different lengths: an encoder run per sentence).</summary>
    /// <param name="causal">Store only key ≤ query (a causal model), or every entry (a bidirectional encoder).</param>
    public sealed class Builder(bool causal = true)
    {
        private readonly List<int> _sequence = [], _layer = [], _head = [], _query = [], _key = [];
        private readonly List<float> _weight = [];

        /// <summary>Adds sequence <paramref name="sequence"/>'s pattern of each layer, [head, query, key] (layer 0 first).</summary>
        /// <exception cref="InterpException">A pattern is not [head, pos, pos], or the layers' shapes differ.</exception>
        public Builder Add(int sequence, IReadOnlyList<Tensor> layers)
        {
            for (int l = 0; l < layers.Count; l++)
                if (layers[l].dim() != 3 || layers[l].shape[1] != layers[l].shape[2] || !layers[l].shape.SequenceEqual(layers[0].shape))
                    throw new InterpException($"sequence {sequence}: pattern of layer {l} must be [head, pos, pos] like layer 0's [{string.Join(", ", layers[0].shape)}], got [{string.Join(", ", layers[l].shape)}]");
            for (int l = 0; l < layers.Count; l++)
            {
                int heads = (int)layers[l].shape[0], n = (int)layers[l].shape[1];
                var w = layers[l].detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();   // [head, q, k] flattened
                for (int h = 0; h < heads; h++)
                    for (int q = 0; q < n; q++)
                        for (int k = 0; k < (causal ? q + 1 : n); k++)
                        {
                            _sequence.Add(sequence); _layer.Add(l); _head.Add(h); _query.Add(q); _key.Add(k);
                            _weight.Add(w[((long)h * n + q) * n + k]);
                        }
            }
            return this;
        }

        /// <summary>The table.</summary>
        public ParquetTable ToTable() => new ParquetTable().Add(Columns.Sequence, _sequence.ToArray()).Add(Columns.Layer, _layer.ToArray())
            .Add(Columns.Head, _head.ToArray()).Add(Query, _query.ToArray()).Add(Key, _key.ToArray()).Add(Weight, _weight.ToArray());
    }
}

/// <summary>
/// Per-token quantities as a long table: <c>sequence</c>, <c>position</c> (int32), <c>quantity</c> (string: what was
/// measured, e.g. <c>loss</c> or <c>dla_head_1.0</c>) and <c>value</c> (float32). Rows join to <see cref="TokenTable"/>;
/// a position without a value (the loss of the first token) has no row.
/// </summary>
public static class TokenValuesTable
{
    /// <summary>Column <c>quantity</c>: the name of the per-token quantity (string).</summary>
    public const string Quantity = "quantity";

    /// <summary>A table builder: add each quantity's values per sequence, then <see cref="Builder.ToTable"/>.</summary>
    public sealed class Builder
    {
        private readonly List<int> _sequence = [], _position = [];
        private readonly List<string> _quantity = [];
        private readonly List<float> _value = [];

        /// <summary>Adds <paramref name="values"/>[p] as the value of <paramref name="quantity"/> at position <paramref name="firstPosition"/> + p of <paramref name="sequence"/>.</summary>
        public Builder Add(string quantity, int sequence, IReadOnlyList<double> values, int firstPosition = 0)
        {
            if (string.IsNullOrWhiteSpace(quantity)) throw new InterpException("a per-token quantity needs a name");
            for (int p = 0; p < values.Count; p++)
            {
                if (!double.IsFinite(values[p])) throw new InterpException($"per-token quantity '{quantity}' is {values[p]} at sequence {sequence}, position {firstPosition + p}");
                _sequence.Add(sequence); _position.Add(firstPosition + p); _quantity.Add(quantity); _value.Add((float)values[p]);
            }
            return this;
        }

        /// <summary>The table.</summary>
        public ParquetTable ToTable() => new ParquetTable().Add(Columns.Sequence, _sequence.ToArray()).Add(Columns.Position, _position.ToArray())
            .Add(Quantity, _quantity.ToArray()).Add(Columns.Value, _value.ToArray());
    }
}

/// <summary>
/// The logit lens's top predictions as a long table (<see cref="LogitLens.Top"/>), one row per (sequence, layer, position,
/// rank): <c>sequence</c>, <c>layer</c> (the stream entering block <c>layer</c>; n_layers = the final stream), <c>position</c>,
/// <c>rank</c> (1 = most probable), <c>token_id</c> (int32), <c>token</c> (string) and <c>probability</c> (float32).
/// </summary>
public static class LogitLensTopTable
{
    /// <summary>Column <c>probability</c>: the predicted token's probability (float32).</summary>
    public const string Probability = "probability";

    /// <summary>Builds the table; <paramref name="tokenizer"/> (optional) gives each predicted token's text.</summary>
    public static ParquetTable From(LogitLensTop top, ITokenizer? tokenizer)
    {
        ArgumentNullException.ThrowIfNull(top);
        var shape = top.Ids.shape;                                                          // [layer, batch, pos, k]
        int layers = (int)shape[0], batch = (int)shape[1], pos = (int)shape[2], k = (int)shape[3];
        var ids = top.Ids.cpu().to(ScalarType.Int64).contiguous().data<long>().Select(i => (int)i).ToArray();
        var probability = top.Probability.cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();
        var text = ids.Distinct().ToDictionary(i => i, i => tokenizer?.DecodeToken(i) ?? i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var (sequence, layer, position, rank) = (new int[ids.Length], new int[ids.Length], new int[ids.Length], new int[ids.Length]);
        for (int l = 0, i = 0; l < layers; l++)
            for (int b = 0; b < batch; b++)
                for (int p = 0; p < pos; p++)
                    for (int r = 0; r < k; r++, i++)
                        (sequence[i], layer[i], position[i], rank[i]) = (b, top.Layers[l].Layer, p, r + 1);
        return new ParquetTable().Add(Columns.Sequence, sequence).Add(Columns.Layer, layer).Add(Columns.Position, position).Add(Columns.Rank, rank)
            .Add(Columns.TokenId, ids).Add(Columns.Token, ids.Select(i => text[i]).ToArray()).Add(Probability, probability);
    }
}

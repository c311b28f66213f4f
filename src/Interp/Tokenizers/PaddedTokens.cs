using static TorchSharp.torch;

namespace Interp.Tokenizers;

/// <summary>
/// Token sequences of different lengths as one right-padded batch: <see cref="Tokens"/> int64 [batch, pos_max] with
/// each row's real tokens first and padding after, <see cref="AttentionMask"/> int64 [batch, pos_max] (1 at real
/// tokens, 0 at padding) and each row's <see cref="Lengths"/>. Feed both to the model
/// (<c>model.forward(batch.Tokens, batch.AttentionMask)</c>). It owns its tensors: dispose it to free them.
/// </summary>
public sealed class PaddedTokens : IDisposable
{
    private PaddedTokens(Tensor tokens, Tensor attentionMask, int[] lengths, int padId)
    {
        Tokens = tokens;
        AttentionMask = attentionMask;
        Lengths = lengths;
        PadId = padId;
    }

    /// <summary>The tokens, int64 [batch, pos_max], padded with <see cref="PadId"/> after each row's real tokens.</summary>
    public Tensor Tokens { get; }
    /// <summary>int64 [batch, pos_max]: 1 at real tokens, 0 at padding.</summary>
    public Tensor AttentionMask { get; }
    /// <summary>Each row's number of real tokens.</summary>
    public int[] Lengths { get; }
    /// <summary>Each row's last real position, <c>Lengths[b] − 1</c>: where a prompt's next token is predicted.</summary>
    public int[] LastPositions => Lengths.Select(n => n - 1).ToArray();
    /// <summary>The id in the padded positions.</summary>
    public int PadId { get; }
    /// <summary>The number of rows.</summary>
    public int Count => Lengths.Length;
    /// <summary>pos_max, the longest row's length.</summary>
    public int MaxLength => (int)Tokens.shape[1];

    /// <summary>Right-pads <paramref name="sequences"/> with <paramref name="padId"/> to the longest one's length.</summary>
    /// <exception cref="InvalidTokensException">There are no sequences, or one is empty.</exception>
    public static PaddedTokens FromIds(IReadOnlyList<IReadOnlyList<int>> sequences, int padId)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count == 0) throw new InvalidTokensException("a padded batch needs at least one sequence");
        for (int b = 0; b < sequences.Count; b++)
            if (sequences[b].Count == 0) throw new InvalidTokensException($"sequence {b} of the batch has no tokens");
        int max = sequences.Max(s => s.Count);
        var ids = new long[sequences.Count * max];
        var mask = new long[ids.Length];
        Array.Fill(ids, padId);
        for (int b = 0; b < sequences.Count; b++)
            for (int p = 0; p < sequences[b].Count; p++)
            {
                ids[b * max + p] = sequences[b][p];
                mask[b * max + p] = 1;
            }
        return new PaddedTokens(tensor(ids, [sequences.Count, max]).DetachFromDisposeScope(),
            tensor(mask, [sequences.Count, max]).DetachFromDisposeScope(), sequences.Select(s => s.Count).ToArray(), padId);
    }

    /// <summary>
    /// Encodes each text (with BOS first when <paramref name="prependBos"/>) and right-pads them with
    /// <see cref="PadIdOf"/> of the tokenizer.
    /// </summary>
    /// <exception cref="InvalidTokensException">There are no texts, one encodes to no tokens, or BOS is asked for and the tokenizer has none.</exception>
    public static PaddedTokens FromTexts(ITokenizer tokenizer, IReadOnlyList<string> texts, bool prependBos)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(texts);
        if (prependBos && tokenizer.BosId is null) throw new InvalidTokensException("cannot prepend BOS: the tokenizer has no BOS token");
        var rows = new IReadOnlyList<int>[texts.Count];
        for (int b = 0; b < texts.Count; b++)
        {
            rows[b] = tokenizer.Encode(texts[b], prependBos);
            if (rows[b].Count == 0) throw new InvalidTokensException($"text {b} (\"{texts[b]}\") encodes to no tokens");
        }
        return FromIds(rows, PadIdOf(tokenizer));
    }

    /// <summary>The id padding uses with <paramref name="tokenizer"/>: its pad id, else its EOS, else 0 (the mask makes the choice immaterial).</summary>
    public static int PadIdOf(ITokenizer tokenizer) => tokenizer.PadId ?? tokenizer.EosId ?? 0;

    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        Tokens.Dispose();
        AttentionMask.Dispose();
    }
}

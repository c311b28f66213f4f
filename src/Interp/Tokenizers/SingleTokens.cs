namespace Interp.Tokenizers;

/// <summary>Texts that must be exactly one continuation token: answers, names, the targets of a logit difference.</summary>
public static class SingleTokens
{
    /// <summary>The id of <paramref name="text"/> as one continuation token (<see cref="ITokenizer.EncodeContinuation"/>).</summary>
    /// <exception cref="InvalidTokensException">The text is not exactly one token; the message shows the split.</exception>
    public static int Of(ITokenizer tokenizer, string text)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(text);
        var ids = tokenizer.EncodeContinuation(text);
        if (ids.Length != 1) throw new InvalidTokensException(DescribeSplit(tokenizer, text, ids));
        return ids[0];
    }

    /// <summary>True when <paramref name="text"/> is one continuation token, whose id is then <paramref name="id"/>.</summary>
    public static bool TryOf(ITokenizer tokenizer, string text, out int id)
    {
        var ids = tokenizer.EncodeContinuation(text);
        id = ids.Length == 1 ? ids[0] : -1;
        return ids.Length == 1;
    }

    /// <summary>How a text splits: <c>" Mary" is 2 tokens: " M" (44) + "ary" (322)</c>.</summary>
    public static string DescribeSplit(ITokenizer tokenizer, string text, IReadOnlyList<int> ids)
    {
        if (ids.Count == 0) return $"\"{text}\" is no token at all: it encodes to nothing";
        var pieces = tokenizer.ToStrTokens(ids);
        string split = string.Join(" + ", ids.Select((id, i) => $"\"{pieces[i]}\" ({id})"));
        return $"\"{text}\" is {ids.Count} token{(ids.Count == 1 ? "" : "s")}: {split}";
    }
}

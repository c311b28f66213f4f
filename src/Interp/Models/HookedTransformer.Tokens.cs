using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Models;

// Text in and out, as TransformerLens users expect (to_tokens, to_str_tokens, to_single_token, to_string). The work is
// the tokenizer's; these only choose the defaults (BOS when the tokenizer has one) and the tensor shapes.
public sealed partial class HookedTransformer
{
    private ITokenizer? _tokenizer;

    /// <summary>
    /// The tokenizer that goes with the model (set by the loader), or null. Text methods such as <see cref="ToTokens(string, bool?)"/>
    /// need it.
    /// </summary>
    /// <exception cref="InterpException">Set to a tokenizer whose ids do not fit the model's vocabulary.</exception>
    public ITokenizer? Tokenizer
    {
        get => _tokenizer;
        set
        {
            if (value is not null && value.VocabSize > Config.DVocab)
                throw new InterpException($"{Config.Name}: a tokenizer of {value.VocabSize} tokens does not fit the model's vocabulary of {Config.DVocab}");
            _tokenizer = value;
        }
    }

    /// <summary>The tokenizer, or an error that says the model has none.</summary>
    /// <exception cref="InterpException">The model has no tokenizer.</exception>
    public ITokenizer RequireTokenizer() => _tokenizer ??
        throw new InterpException($"{Config.Name}: the model has no tokenizer (set HookedTransformer.Tokenizer, or load the model with its tokenizer file); pass token ids instead of text");

    /// <summary>
    /// Encodes <paramref name="text"/> as int64 [1, pos] on the model's device. <paramref name="prependBos"/> defaults
    /// to true when the tokenizer has a BOS token (TransformerLens's default_prepend_bos). An encoder (BERT) gets the
    /// special tokens its tokenizer's files add by default ([CLS] … [SEP], as TransformerLens's HookedEncoder does);
    /// <paramref name="prependBos"/> false leaves them out.
    /// </summary>
    /// <exception cref="InterpException">The model has no tokenizer, or BOS is asked for and the tokenizer has none.</exception>
    public Tensor ToTokens(string text, bool? prependBos = null)
    {
        var ids = Encode(text, prependBos);
        return tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]).to(Device);
    }

    /// <summary>
    /// Encodes each text and right-pads them into one batch (<see cref="PaddedTokens"/>; pad id: the tokenizer's pad,
    /// else EOS, else 0), for <c>forward(batch.Tokens, batch.AttentionMask)</c>. BOS as in <see cref="ToTokens(string, bool?)"/>.
    /// </summary>
    /// <exception cref="InterpException">The model has no tokenizer, there are no texts, or one encodes to no tokens.</exception>
    public PaddedTokens ToTokens(IReadOnlyList<string> texts, bool? prependBos = null)
    {
        var tokenizer = RequireTokenizer();
        if (!Config.Causal && prependBos is null)
        {
            ArgumentNullException.ThrowIfNull(texts);
            return PaddedTokens.FromIds(texts.Select(t => (IReadOnlyList<int>)tokenizer.EncodeWithSpecialTokens(t)).ToArray(), PaddedTokens.PadIdOf(tokenizer));
        }
        return PaddedTokens.FromTexts(tokenizer, texts, prependBos ?? tokenizer.BosId is not null);
    }

    /// <summary>The tokens of <paramref name="text"/> as display strings, BOS as in <see cref="ToTokens(string, bool?)"/>.</summary>
    public string[] ToStrTokens(string text, bool? prependBos = null) => RequireTokenizer().ToStrTokens(Encode(text, prependBos));

    /// <summary>The display strings of one sequence of tokens, [pos] or [1, pos].</summary>
    /// <exception cref="InterpException">No tokenizer, the tokens are not one sequence, or an id is outside the vocabulary.</exception>
    public string[] ToStrTokens(Tensor tokens) => RequireTokenizer().ToStrTokens(Ids(tokens, nameof(ToStrTokens)));

    /// <summary>The decoded text of one sequence of tokens, [pos] or [1, pos].</summary>
    /// <exception cref="InterpException">No tokenizer, the tokens are not one sequence, or an id is outside the vocabulary.</exception>
    public string ToText(Tensor tokens) => RequireTokenizer().Decode(Ids(tokens, nameof(ToText)));

    /// <summary>
    /// The id of <paramref name="text"/> as one continuation token (<see cref="ITokenizer.EncodeContinuation"/>): the
    /// token the model predicts for an answer such as " Mary" after a prompt.
    /// </summary>
    /// <exception cref="InterpException">No tokenizer, or the text is not exactly one token (the message shows its split).</exception>
    public int ToSingleToken(string text) => SingleTokens.Of(RequireTokenizer(), text);

    private int[] Encode(string text, bool? prependBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        var tokenizer = RequireTokenizer();
        if (!Config.Causal && prependBos is null) return tokenizer.EncodeWithSpecialTokens(text);
        bool bos = prependBos ?? tokenizer.BosId is not null;
        if (bos && tokenizer.BosId is null) throw new InvalidTokensException($"{Config.Name}: cannot prepend BOS, the tokenizer has no BOS token");
        return tokenizer.Encode(text, bos);
    }

    private static int[] Ids(Tensor tokens, string what)
    {
        if (!(tokens.dim() == 1 || (tokens.dim() == 2 && tokens.shape[0] == 1)))
            throw new InvalidTokensException($"{what}: tokens must be one sequence, [pos] or [1, pos]; got [{string.Join(", ", tokens.shape)}]");
        using var scope = NewDisposeScope();
        return tokens.reshape(-1).to(ScalarType.Int64).cpu().data<long>().Select(i => (int)i).ToArray();
    }
}

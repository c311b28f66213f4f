using Interp.Experiments;
using System.CommandLine;
using System.Globalization;
using Interp.Models;
using Interp.Tokenizers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp info --model PATH</c>: the architecture (family, block, attention, positions, embedding and head variants),
/// the tokenizer, the parameter count and every hook name with its shape.
/// </summary>
public sealed class InfoCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<InfoCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var model = ModelOption();
        var tokenizer = TokenizerOption();
        var command = new Command("info", "Show a model's architecture, parameter count and hook points with their shapes") { model, tokenizer };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            using var loaded = LoadModel(parse.GetValue(model)!, parse.GetValue(tokenizer), "cpu");
            await Console.Out.WriteAsync(Describe(loaded.Model, loaded.Format, loaded.Source, loaded.Tokenizer));
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// The text <c>info</c> prints: the architecture family and format, sizes, the block, attention, position, embedding and
    /// head variants (each feature only when the model has it), the tokenizer, the parameter count and every hook point
    /// with its shape.
    /// </summary>
    public static string Describe(HookedTransformer model, string format, string source, ITokenizer? tokenizer)
    {
        var c = model.Config;
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"model:       {c.Name} ({format}, {source})");
        w.WriteLine($"family:      {c.Family}");
        w.WriteLine($"layers:      {c.NLayers}   d_model: {c.DModel}   heads: {c.NHeads}" +
                    (c.KvHeads != c.NHeads ? $" (key/value heads: {c.KvHeads})" : "") + $"   d_head: {c.HeadDim}");
        w.WriteLine($"block:       {Block(c)}");
        w.WriteLine($"attention:   {Attention(c)}");
        w.WriteLine($"mlp:         " + (c.AttentionOnly ? "none (attention-only)" : $"{c.Mlp}, d_mlp {c.DMlp}, {c.Act}"));
        w.WriteLine($"norm:        {c.Norm}" + (c.Norm == NormKind.None ? "" : $" (eps {c.NormEps:g})"));
        w.WriteLine($"positions:   {Positions(c)}");
        if (Embedding(c) is { } embedding) w.WriteLine($"embedding:   {embedding}");
        w.WriteLine($"head:        {Head(c)}");
        w.WriteLine($"vocab:       {c.DVocab}   n_ctx: {c.NCtx}   biases: {(c.UseBias ? "yes" : c.QkvBias ? "q/k/v only" : "no")}");
        w.WriteLine($"tokenizer:   {TokenizerKind(tokenizer)}");
        w.WriteLine($"parameters:  {model.ParameterCount:N0}");
        w.WriteLine($"hook points: {model.HookPoints.Count}");
        int width = model.HookPoints.Max(h => h.Name.Length);
        foreach (var hook in model.HookPoints)
        {
            var dims = hook.Axes.Zip(model.HookShape(hook, 1, 1), (axis, size) => axis is "batch" or "pos" or "query_pos" or "key_pos" ? axis : size.ToString(CultureInfo.InvariantCulture));
            w.WriteLine($"  {hook.Name.PadRight(width)}  [{string.Join(", ", dims)}]");
        }
        return w.ToString();
    }

    private static string Block(ModelConfig c) => c.Block switch
    {
        BlockKind.Parallel => "parallel (attention and MLP both read resid_pre; no resid_mid)",
        BlockKind.PostNorm => "post-norm (ln1 after attention's residual sum, ln2 at the block's end)",
        _ => "pre-norm" + (c.NormAfterSublayers ? ", with norms on each sublayer's output (ln1_post, ln2_post)" : ""),
    };

    private static string Attention(ModelConfig c)
    {
        var parts = new List<string> { c.Causal ? "causal" : "bidirectional" };
        if (c.AttnScale != 0) parts.Add($"scores / {c.AttnScale:g6} (not √d_head)");
        if (c.AttnScoresSoftCap > 0) parts.Add($"scores soft-capped at {c.AttnScoresSoftCap:g}");
        if (c.SlidingWindow > 0)
        {
            var layers = c.SlidingWindowLayers;
            parts.Add($"sliding window of {c.SlidingWindow} " +
                      (layers is null ? "on every layer" : layers.Length == 0 ? "on no layer" : $"on layer{(layers.Length == 1 ? "" : "s")} {string.Join(", ", layers)}"));
        }
        if (c.QkNorm) parts.Add("q/k RMSNorm per head");
        return string.Join(", ", parts);
    }

    private static string Positions(ModelConfig c)
    {
        if (c.Positional != PositionalKind.Rotary) return c.Positional.ToString();
        string text = $"Rotary ({c.RotaryStyle}, base {c.RotaryBase:g}, {c.RotaryWidth} of {c.HeadDim} dims)";
        if (c.RopeScaling is { } r)
            text += $", llama3 scaling (factor {r.Factor:g}, low_freq_factor {r.LowFreqFactor:g}, high_freq_factor {r.HighFreqFactor:g}, original context {r.OriginalMaxPositions})";
        return text;
    }

    private static string? Embedding(ModelConfig c)
    {
        var parts = new List<string>();
        if (c.EmbeddingScale != 1) parts.Add($"× {c.EmbeddingScale:g6}");
        if (c.NTokenTypes > 0) parts.Add($"{c.NTokenTypes} token types");
        if (c.EmbeddingNorm && c.Norm != NormKind.None) parts.Add("normed (embed.ln)");
        return parts.Count == 0 ? null : string.Join(", ", parts);
    }

    private static string Head(ModelConfig c)
    {
        string head = c.Head switch
        {
            HeadKind.MaskedLM => "masked-LM (dense, activation, LayerNorm, unembedding)",
            HeadKind.None => "none (the output is the last hidden state)",
            _ => c.Norm == NormKind.None ? "unembedding" : "final norm, unembedding",
        };
        if (c.OutputLogitsSoftCap > 0) head += $", logits soft-capped at {c.OutputLogitsSoftCap:g}";
        if (c.Pooler) head += "; pooler (tanh(dense(h[:, 0])))";
        return head;
    }

    /// <summary>The tokenizer's kind, vocabulary and special ids, e.g. "GPT-2 byte-level BPE, 50257 tokens, BOS 50256, EOS 50256".</summary>
    public static string TokenizerKind(ITokenizer? tokenizer)
    {
        if (tokenizer is null) return "none";
        string kind = tokenizer switch
        {
            Gpt2Tokenizer => "GPT-2 byte-level BPE",
            Llama2CTokenizer => "llama2.c (SentencePiece-style BPE, tokenizer.bin)",
            HuggingFaceTokenizer hf => $"{hf.Kind} ({hf.Path})",
            _ => tokenizer.GetType().Name is var n && n.EndsWith("Tokenizer", StringComparison.Ordinal) && n.Length > 9 ? n[..^9] : tokenizer.GetType().Name,
        };
        string Id(string what, int? id) => id is null ? "" : $", {what} {id}";
        return $"{kind}, {tokenizer.VocabSize} tokens{Id("BOS", tokenizer.BosId)}{Id("EOS", tokenizer.EosId)}{Id("pad", tokenizer.PadId)}";
    }
}

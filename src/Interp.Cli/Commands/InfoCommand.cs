using Interp.Experiments;
using System.CommandLine;
using System.Globalization;
using Interp.Models;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary><c>interp info --model PATH</c>: the architecture, the parameter count and every hook name with its shape.</summary>
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
            await Console.Out.WriteAsync(Describe(loaded.Model, loaded.Format, loaded.Source, TokenizerName(loaded.Tokenizer)));
            return 0;
        }));
        return command;
    }

    /// <summary>How <c>info</c> names a tokenizer: a Hugging Face one by its kind and file, others by their type.</summary>
    public static string? TokenizerName(Interp.Tokenizers.ITokenizer? tokenizer) => tokenizer switch
    {
        null => null,
        Interp.Tokenizers.HuggingFaceTokenizer hf => $"{hf.Kind}, {hf.VocabSize:N0} tokens ({hf.Path})",
        _ => $"{tokenizer.GetType().Name}, {tokenizer.VocabSize:N0} tokens",
    };

    /// <summary>The text <c>info</c> prints.</summary>
    public static string Describe(HookedTransformer model, string format, string source, string? tokenizer)
    {
        var c = model.Config;
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"model:       {c.Name} ({format}, {source})");
        w.WriteLine($"layers:      {c.NLayers}   d_model: {c.DModel}   heads: {c.NHeads}" +
                    (c.KvHeads != c.NHeads ? $" (key/value heads: {c.KvHeads})" : "") + $"   d_head: {c.HeadDim}");
        w.WriteLine($"mlp:         " + (c.AttentionOnly ? "none (attention-only)" : $"{c.Mlp}, d_mlp {c.DMlp}, {c.Act}"));
        w.WriteLine($"norm:        {c.Norm}" + (c.Norm == NormKind.None ? "" : $" (eps {c.NormEps:g})"));
        w.WriteLine($"positions:   {c.Positional}" + (c.Positional == PositionalKind.Rotary ? $" ({c.RotaryStyle}, base {c.RotaryBase:g}, {c.RotaryWidth} dims)" : ""));
        w.WriteLine($"vocab:       {c.DVocab}   n_ctx: {c.NCtx}   biases: {(c.UseBias ? "yes" : "no")}");
        w.WriteLine($"tokenizer:   {tokenizer ?? "none"}");
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
}

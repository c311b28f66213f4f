using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;

namespace Interp.Tests.Analysis;

/// <summary>The models the residual-stream analyses are checked on: random ones of every architecture and the real ones.</summary>
internal static class AnalysisModels
{
    /// <summary>Random models of each architecture, the built-in model, gpt2-tiny-random (LayerNorm, MLP, biases) and stories260K (RMSNorm, GQA, rotary).</summary>
    public static readonly string[] Names = ["gpt2", "llama", "attn-only-sinusoidal", "builtin", "gpt2-tiny-random", "stories260K"];

    public static TheoryData<string, bool> WithProcessing()
    {
        var data = new TheoryData<string, bool>();
        foreach (var name in Names)
            foreach (var processed in new[] { false, true }) data.Add(name, processed);
        return data;
    }

    /// <summary>The named model (the caller disposes it), processed with TransformerLens's defaults when asked.</summary>
    public static HookedTransformer Build(string name, bool processed)
    {
        var model = name switch
        {
            "builtin" => BuiltInModel.Load().Model,
            "gpt2-tiny-random" => ModelLoader.Load(TestModels.Gpt2TinyDir).Model,
            "stories260K" => ModelLoader.Load(TestModels.StoriesBin).Model,
            "gpt2" => TestModels.Random(TestModels.Gpt2Like, seed: 5),
            "llama" => TestModels.Random(TestModels.LlamaLike, seed: 5),
            "attn-only-sinusoidal" => TestModels.Random(TestModels.AttnOnlySinusoidal, seed: 5),
            _ => throw new ArgumentException(name),
        };
        if (processed) model.ProcessWeights(WeightProcessingOptions.Default);
        return model;
    }

    /// <summary>Random tokens [2, 12] (BOS first for the built-in model).</summary>
    public static TorchSharp.torch.Tensor Tokens(HookedTransformer model, int batch = 2, int pos = 12)
    {
        var t = TestModels.RandomTokens(model.Config.DVocab, batch, Math.Min(model.Config.NCtx, pos));
        return t;
    }
}

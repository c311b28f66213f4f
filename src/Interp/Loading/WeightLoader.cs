using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading;

/// <summary>
/// Copies a complete set of weights, keyed by TransformerLens names (<c>blocks.0.attn.W_Q</c>), into a model:
/// every saved tensor of the model must be given once, with its exact shape, and nothing else.
/// </summary>
public static class WeightLoader
{
    /// <summary>The names and shapes of the tensors a model saves and loads (its persistent state).</summary>
    public static IReadOnlyDictionary<string, long[]> ExpectedShapes(HookedTransformer model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

    /// <summary>
    /// Copies <paramref name="weights"/> into <paramref name="model"/>; <paramref name="source"/> names the file in
    /// errors. The model's <see cref="HookedTransformer.Processing"/> record is reset, as the weights are now unprocessed.
    /// </summary>
    public static void Load(HookedTransformer model, IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        var state = model.state_dict();
        foreach (var name in weights.Keys)
            if (!state.ContainsKey(name))
                throw new ModelFileException(source, name, $"the model ({model.Config.Name}) has no such weight; the config disagrees with the weights");
        using var _ = no_grad();
        foreach (var (name, target) in state)
        {
            if (!weights.TryGetValue(name, out var value))
                throw new ModelFileException(source, name, "missing: the model config needs this weight but the file does not provide it");
            if (!value.shape.SequenceEqual(target.shape))
                throw new ModelFileException(source, name,
                    $"has shape [{string.Join(", ", value.shape)}] but the model config expects [{string.Join(", ", target.shape)}]");
            if (is_floating_point(value) && !value.isfinite().all().item<bool>())
                throw new ModelFileException(source, name, "contains NaN or infinite values");
            target.copy_(value);
        }
        model.Processing = WeightProcessingOptions.None; // the weights are now exactly the given ones
    }
}

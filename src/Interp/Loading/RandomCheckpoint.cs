using Interp.Loading.Architectures;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Loading;

/// <summary>
/// Random-weight Hugging Face checkpoints of any supported architecture, from its <c>config.json</c> alone: the
/// adapter that loads the architecture is run on a <see cref="CheckpointTensors.ShapesOnly"/> checkpoint, so the names
/// and shapes written are exactly those the loader reads (one place for an architecture's checkpoint names).
/// </summary>
internal static class RandomCheckpoint
{
    /// <summary>The tensors, names and shapes in the adapter's order, that a checkpoint of the config at <paramref name="configPath"/> must hold.</summary>
    /// <exception cref="ModelFileException">The config is invalid or names an unsupported <c>model_type</c>.</exception>
    public static IReadOnlyList<(string Name, long[] Shape)> Layout(string configPath)
    {
        var hf = HfConfig.Load(configPath);
        string type = hf.ModelType ?? throw hf.Error("model_type", "missing: it names the architecture");
        var architecture = HfArchitecture.For(type)
            ?? throw hf.Error("model_type", $"unsupported model_type '{type}' (supported: {string.Join(", ", HfArchitecture.SupportedModelTypes)})");
        var cfg = architecture.ReadConfig(hf, "layout");
        using var ckpt = CheckpointTensors.ShapesOnly(Path.GetDirectoryName(Path.GetFullPath(configPath))!);
        using var scope = NewDisposeScope();
        architecture.ReadWeights(ckpt, cfg, hf);
        return ckpt.Requested;
    }

    /// <summary>
    /// Writes <c>model.safetensors</c> in <paramref name="dtype"/> beside <paramref name="directory"/>/config.json, one
    /// tensor at a time (a checkpoint larger than memory can be written): every weight and bias N(0, <paramref name="std"/>)
    /// from <paramref name="seed"/>, and every norm's gain (a 1-D <c>…norm….weight</c> or <c>ln_….weight</c>)
    /// <paramref name="gainOffset"/> + N(0, std) — 1 for gains stored as such, 0 for Gemma's, stored as gain − 1.
    /// </summary>
    public static void Write(string directory, SafeTensorsDType dtype, int seed, double gainOffset = 1, double std = 0.02)
    {
        var layout = Layout(Path.Combine(directory, "config.json"));
        var g = new Generator((ulong)seed);
        var entries = layout.Select(t => new SafeTensorsWriter.Entry(t.Name, t.Shape, () =>
        {
            using var scale = std.ToScalar();
            var x = randn(t.Shape, generator: g).mul_(scale);
            if (IsGain(t.Name, t.Shape) && gainOffset != 0)
            {
                using var offset = gainOffset.ToScalar();
                x.add_(offset, Scalars.One);
            }
            return x;
        })).ToList();
        SafeTensorsWriter.WriteEntries(Path.Combine(directory, "model.safetensors"), entries, null, dtype);
    }

    private static bool IsGain(string name, long[] shape)
    {
        if (shape.Length != 1 || !name.EndsWith(".weight", StringComparison.Ordinal)) return false;
        string module = name[..^".weight".Length];
        string last = module[(module.LastIndexOf('.') + 1)..];
        return module.Contains("norm", StringComparison.OrdinalIgnoreCase) || last.StartsWith("ln", StringComparison.Ordinal);
    }
}

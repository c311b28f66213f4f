using System.Reflection;
using Microsoft.Extensions.Logging;

namespace Interp.Loading;

/// <summary>
/// The built-in default model: a 2-layer attention-only transformer trained by the project itself (<c>interp train-default</c>),
/// shipped in <c>artifacts/models/default/</c> and embedded in this assembly, so that it loads anywhere with no
/// download. <c>interp train-default</c> reproduces it.
/// </summary>
public static class BuiltInModel
{
    /// <summary>Where the repository keeps the shipped files, relative to its root.</summary>
    public const string RepositoryPath = "artifacts/models/default";
    private const string ResourcePrefix = "Interp.DefaultModel.";

    /// <summary>True when this build carries the embedded weights.</summary>
    public static bool IsEmbedded => Resources().Length > 0;

    /// <summary>
    /// Loads the embedded model (extracted once into a content-addressed folder under the temp directory, since the
    /// loaders read files).
    /// </summary>
    public static LoadedModel Load(ILogger? logger = null)
    {
        var resources = Resources();
        if (resources.Length == 0)
            throw new InterpException($"this build has no built-in model: run `interp train-default` (it writes {RepositoryPath}/) and rebuild, or pass --model PATH");
        var assembly = typeof(BuiltInModel).Assembly;
        byte[] Read(string name)
        {
            using var stream = assembly.GetManifestResourceStream(name)!;
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            return memory.ToArray();
        }
        var files = resources.ToDictionary(r => r[ResourcePrefix.Length..], Read);
        string hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(files.OrderBy(f => f.Key, StringComparer.Ordinal).SelectMany(f => f.Value).ToArray()))[..16];
        string dir = Path.Combine(Path.GetTempPath(), $"interp-default-model-{hash}");
        if (!File.Exists(Path.Combine(dir, InterpModelFormat.ManifestFile)))
        {
            Directory.CreateDirectory(dir);
            // Weights first, manifest last: the manifest's presence means the folder is complete.
            foreach (var (name, bytes) in files.OrderBy(f => f.Key == InterpModelFormat.ManifestFile ? 1 : 0))
                AtomicFile.Write(Path.Combine(dir, name), tmp => File.WriteAllBytes(tmp, bytes));
        }
        logger?.LogInformation("Using the built-in model ({Directory})", dir);
        return ModelLoader.Load(dir);
    }

    private static string[] Resources() =>
        typeof(BuiltInModel).Assembly.GetManifestResourceNames().Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal)).ToArray();
}

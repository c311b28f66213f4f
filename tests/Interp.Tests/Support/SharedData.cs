namespace Interp.Tests;

/// <summary>
/// Locates the shared data folder (<c>shared/</c>, beside the repository) that holds real model files,
/// by walking up from the test binaries.
/// </summary>
public static class SharedData
{
    private static readonly Lazy<string> LazyRoot = new(FindRoot);

    /// <summary>Full path of the shared folder, the one that contains <c>models/</c>.</summary>
    public static string Root => LazyRoot.Value;

    /// <summary>Full path of a file under <c>shared/models/</c>, e.g. <c>Model("stories260K/tok512.bin")</c>.</summary>
    public static string Model(string relative)
    {
        string path = Path.GetFullPath(Path.Combine(Root, "models", relative));
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"shared model file '{relative}' not found at {path}", path);
        return path;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            // The shared folder sits beside the repository root, or (in some checkouts) inside it.
            foreach (string candidate in new[] { Path.Combine(dir.FullName, "shared"), Path.Combine(dir.FullName, "..", "shared") })
            {
                if (Directory.Exists(Path.Combine(candidate, "models")))
                    return Path.GetFullPath(candidate);
            }
        }
        throw new DirectoryNotFoundException(
            $"no 'shared/models' folder found beside or inside any parent of {AppContext.BaseDirectory}; " +
            "the real-model tests expect it at ../shared/models relative to the repository root");
    }
}

namespace Interp.Tests.Support;

/// <summary>Locates files committed in the repository (e.g. <c>experiments/prompts/…</c>) by walking up from the test binaries.</summary>
public static class RepoFiles
{
    /// <summary>Full path of <paramref name="relative"/> under the repository root.</summary>
    public static string Path(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = System.IO.Path.Combine(dir.FullName, relative);
            if (File.Exists(candidate) && Directory.Exists(System.IO.Path.Combine(dir.FullName, "src"))) return candidate;
        }
        throw new FileNotFoundException($"'{relative}' not found under any parent of {AppContext.BaseDirectory}", relative);
    }
}

namespace Interp.Loading;

/// <summary>Checks of file names that come from data (a model's manifest or index) or from users (artefact names).</summary>
internal static class FileNames
{
    /// <summary>
    /// True when <paramref name="name"/> is a plain file name: not empty, not <c>.</c> or <c>..</c>, no directory part
    /// (no <c>/</c>, nor <c>\</c> on any platform), no NUL or other control character. Such a name, combined with a
    /// folder, can only name a file directly inside that folder.
    /// </summary>
    public static bool IsPlain(string? name) =>
        !string.IsNullOrEmpty(name) && name is not ("." or "..") && name == Path.GetFileName(name)
        && name.IndexOfAny(['/', '\\']) < 0 && name.IndexOfAny(Path.GetInvalidFileNameChars()) < 0 && !name.Any(char.IsControl);
}

using System.Security.Cryptography;

namespace Interp.Loading;

/// <summary>Content hash of a model: the SHA-256 of a file (as <c>sha256sum</c> prints it), or of a directory's files (names and bytes, in name order).</summary>
public static class ModelHash
{
    /// <summary>The lowercase hex SHA-256 of the model at <paramref name="path"/>.</summary>
    public static string Compute(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        bool single = File.Exists(path);
        var files = single
            ? [path]
            : Directory.GetFiles(path).Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal).ToArray();
        var buffer = new byte[1 << 20];
        foreach (var file in files)
        {
            if (!single) sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(file) + "\0"));
            using var stream = File.OpenRead(file);
            int read;
            while ((read = stream.Read(buffer)) > 0) sha.AppendData(buffer, 0, read);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}

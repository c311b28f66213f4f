using System.Text.RegularExpressions;
using Interp.Hooks;

namespace Interp.Cli;

/// <summary>One experiment script: its name (the file name), where it is, its one-line description, and whether it shards (<c>--shard i/n</c>).</summary>
public sealed record ExperimentScript(string Name, string Path, string Description, bool Shards = false);

/// <summary>
/// The experiments <c>interp</c> knows: the scripts in the repository's <c>experiments/</c> folder (found from the current
/// folder, then from the program's own folder upwards), each run as its own program. A path ending in <c>.cs</c> names
/// any script, anywhere.
/// </summary>
public static class ExperimentCatalog
{
    /// <summary>The <c>experiments/</c> folder, or null when neither the current folder nor the program's lies in a checkout.</summary>
    public static string? Folder()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(System.IO.Path.Combine(d.FullName, "Interp.sln")) && Directory.Exists(System.IO.Path.Combine(d.FullName, "experiments")))
                    return System.IO.Path.Combine(d.FullName, "experiments");
        return null;
    }

    /// <summary>Every script of <see cref="Folder"/>, by name.</summary>
    public static IReadOnlyList<ExperimentScript> All() => Folder() is { } folder
        ? Directory.GetFiles(folder, "*.cs").Order(StringComparer.Ordinal).Select(Describe).ToArray()
        : [];

    /// <summary>The script called <paramref name="nameOrPath"/>; an unknown name lists the closest.</summary>
    /// <exception cref="InterpException">No such script.</exception>
    public static ExperimentScript Find(string nameOrPath)
    {
        if (nameOrPath.EndsWith(".cs", StringComparison.Ordinal))
            return File.Exists(nameOrPath) ? Describe(System.IO.Path.GetFullPath(nameOrPath)) : throw new InterpException($"no script {nameOrPath}");
        var all = All();
        if (all.Count == 0)
            throw new InterpException($"no experiments folder found (looked for Interp.sln + experiments/ above {Environment.CurrentDirectory} and {AppContext.BaseDirectory}); run a script by path: interp run path/to/script.cs");
        return all.FirstOrDefault(e => e.Name == nameOrPath)
            ?? throw new InterpException($"no experiment '{nameOrPath}'. Did you mean: {string.Join(", ", NameSuggestions.Closest(nameOrPath, all.Select(e => e.Name)))}? (`interp list` shows them all)");
    }

    /// <summary>The description is the one the script gives <c>Experiment.RunAsync</c>, else its first comment line.</summary>
    private static ExperimentScript Describe(string path)
    {
        string text = File.ReadAllText(path);
        var declared = Declaration.Match(text);
        string description = declared.Success ? Regex.Unescape(declared.Groups[1].Value)
            : text.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("// ", StringComparison.Ordinal))?[3..] ?? "";
        bool shards = declared.Success && Shardable.IsMatch(text[declared.Index..]);
        return new ExperimentScript(System.IO.Path.GetFileNameWithoutExtension(path), path, description, shards);
    }

    // The ExperimentInfo's initializer right after its description: new("name", "description") { Shards = true }.
    private static readonly Regex Shardable = new(@"^[^\n]*?""\)\s*\{\s*Shards\s*=\s*true", RegexOptions.Singleline);

    private static readonly Regex Declaration = new(@"Experiment\.RunAsync<\w+>\(args, new\(""[^""]*"", ""((?:[^""\\]|\\.)*)""", RegexOptions.Singleline);
}

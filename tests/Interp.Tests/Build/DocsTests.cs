using System.Text.RegularExpressions;
using Interp.Tests.Experiments;
using Interp.Tests.Support;

namespace Interp.Tests.Build;

/// <summary>The documentation: its links lead somewhere, and the numbers it quotes are the ones fresh runs give.</summary>
public sealed partial class DocsTests
{
    private static readonly string Root = ExperimentScriptTests.RepoRoot();

    [GeneratedRegex(@"\]\((?!https?:|#)([^)#\s]+)")]
    private static partial Regex RelativeLink();

    [Fact]
    public void Every_relative_link_of_the_readme_and_docs_names_an_existing_file()
    {
        var pages = Directory.GetFiles(Path.Combine(Root, "docs"), "*.md").Append(Path.Combine(Root, "README.md")).ToArray();
        Assert.True(pages.Length >= 8);
        var broken = pages.SelectMany(page => RelativeLink().Matches(File.ReadAllText(page)).Select(m => m.Groups[1].Value)
            .Where(link => !File.Exists(Path.Combine(Path.GetDirectoryName(page)!, link)) && !Directory.Exists(Path.Combine(Path.GetDirectoryName(page)!, link)))
            .Select(link => $"{Path.GetRelativePath(Root, page)}: {link}")).ToArray();
        Assert.True(broken.Length == 0, string.Join("\n", broken));
    }

    [Fact]
    public async Task The_numbers_the_docs_quote_are_those_of_fresh_runs()
    {
        var run = await DotnetScripts.Run(Path.Combine(Root, "docs", "regenerate.cs"), ["--check"], TimeSpan.FromMinutes(10), workingDirectory: Root);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("3 run(s) quoted, 0 block(s) out of date", run.Output);
    }
}

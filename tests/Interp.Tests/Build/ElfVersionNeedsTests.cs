using System.Diagnostics;
using Interp.Models;
using Interp.Tests.Support;

namespace Interp.Tests.Build;

/// <summary>
/// The native fix (NativeLoader, ElfVersionNeeds) on TorchSharp's real libLibTorchSharp.so: which symbols are
/// bound to GLIBCXX_3.4.32 (checked against readelf), and that it refuses to weaken the need once any other symbol is.
/// </summary>
public sealed class ElfVersionNeedsTests
{
    private const string Version = "GLIBCXX_3.4.32", Allowed = "_ZSt21ios_base_library_initv";

    private static byte[] Library() => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"));

    [LinuxFact]
    public void Only_ios_base_library_init_is_bound_to_the_version_as_readelf_says()
    {
        var bound = ElfVersionNeeds.SymbolsBoundTo(Library(), Version, out string detail);
        Assert.True(bound is not null, detail);
        Assert.Equal([Allowed], bound);
        // readelf (binutils) prints each dynamic symbol as name@version: an independent reading of the same tables.
        var readelf = new ProcessStartInfo("readelf", ["--dyn-syms", "--wide", Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so")]) { RedirectStandardOutput = true };
        using var process = Process.Start(readelf)!;
        var names = process.StandardOutput.ReadToEnd().Split('\n')
            .SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))   // "name@GLIBCXX_3.4.32 (18)"
            .Where(n => n.EndsWith($"@{Version}", StringComparison.Ordinal))
            .Select(n => n[..n.IndexOf('@', StringComparison.Ordinal)]).ToArray();
        process.WaitForExit();
        Assert.Equal([Allowed], names);
    }

    [LinuxFact]
    public void Weakening_is_idempotent_and_changes_only_the_flag()
    {
        var original = Library();
        var bytes = (byte[])original.Clone();
        var allowed = new HashSet<string> { Allowed };
        var first = ElfVersionNeeds.Weaken(bytes, Version, allowed, out string detail);
        Assert.True(first is ElfVersionNeeds.Outcome.Patched or ElfVersionNeeds.Outcome.AlreadyWeak, $"{first}: {detail}");
        Assert.Contains(Allowed, detail);
        Assert.Equal(ElfVersionNeeds.Outcome.AlreadyWeak, ElfVersionNeeds.Weaken(bytes, Version, allowed, out _));
        Assert.True(original.Zip(bytes).Count(p => p.First != p.Second) <= 1, "more than the flags' byte changed");
        Assert.Equal(ElfVersionNeeds.Outcome.NotNeeded, ElfVersionNeeds.Weaken(bytes, "GLIBCXX_9.9.99", allowed, out _));
    }

    [LinuxFact]
    public void A_library_with_another_symbol_on_the_version_is_refused_naming_it()
    {
        var bytes = Library();
        // Rebind the first symbol of GLIBCXX_3.4.18 to GLIBCXX_3.4.32, as a future TorchSharp might need it.
        string moved = ElfVersionNeeds.SymbolsBoundTo(bytes, "GLIBCXX_3.4.18", out _)![0];
        int from = ElfVersionNeeds.VersionIndex(bytes, "GLIBCXX_3.4.18", out _)!.Value, to = ElfVersionNeeds.VersionIndex(bytes, Version, out _)!.Value;
        var (offset, count) = ElfVersionNeeds.VersymTable(bytes)!.Value;
        long entry = Enumerable.Range(1, (int)count - 1).Select(i => offset + 2L * i).First(at => (BitConverter.ToUInt16(bytes, (int)at) & 0x7fff) == from);
        BitConverter.GetBytes((ushort)to).CopyTo(bytes, entry);
        var before = (byte[])bytes.Clone();

        var outcome = ElfVersionNeeds.Weaken(bytes, Version, new HashSet<string> { Allowed }, out string detail);
        Assert.Equal(ElfVersionNeeds.Outcome.Refused, outcome);
        Assert.Contains(moved, detail);
        Assert.DoesNotContain(Allowed, detail);
        Assert.Equal(before, bytes);   // nothing patched
    }
}

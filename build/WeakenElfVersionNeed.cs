#nullable enable
// MSBuild inline task: marks one GLIBCXX version need of an ELF64 little-endian shared library as weak,
// only when the system's libstdc++ does not provide that version. See TorchSharpNativeFix.targets.
using System;
using System.Diagnostics;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class WeakenElfVersionNeed : Task
{
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string VersionName { get; set; } = "";

    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        string? provider = FindSystemLibraryProviding(VersionName, out string searched);
        if (provider != null)
        {
            Log.LogMessage(MessageImportance.Low, $"{VersionName} is provided by {provider}; no patch needed.");
            return true;
        }
        foreach (var item in Files)
        {
            string path = item.ItemSpec;
            try
            {
                byte[] elf = File.ReadAllBytes(path);
                switch (Weaken(elf, VersionName, out string detail))
                {
                    case Outcome.Patched:
                        string tmp = path + ".interp-tmp";
                        File.WriteAllBytes(tmp, elf);
                        File.Replace(tmp, path, null); // new inode: never writes through a hard link
                        Log.LogMessage(MessageImportance.High, $"Interp: marked {VersionName} weak in {path} (system libstdc++ lacks it; searched {searched}).");
                        break;
                    case Outcome.AlreadyWeak:
                        Log.LogMessage(MessageImportance.Low, $"{path}: {VersionName} already weak.");
                        break;
                    case Outcome.NotNeeded:
                        Log.LogMessage(MessageImportance.Low, $"{path}: no need for {VersionName}.");
                        break;
                    default:
                        Log.LogWarning($"{path}: cannot patch version need {VersionName}: {detail}");
                        break;
                }
            }
            catch (Exception e)
            {
                Log.LogError($"Interp: failed to patch {path}: {e.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    enum Outcome { Patched, AlreadyWeak, NotNeeded, Unsupported }

    static Outcome Weaken(byte[] b, string version, out string detail)
    {
        detail = "";
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
        { detail = "not an ELF file"; return Outcome.Unsupported; }
        if (b[4] != 2 || b[5] != 1) { detail = "not ELF64 little-endian"; return Outcome.Unsupported; }
        ulong shoff = U64(b, 0x28);
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        if (shoff == 0 || shentsize < 64 || shoff + (ulong)(shentsize * shnum) > (ulong)b.Length)
        { detail = "section headers missing or out of range"; return Outcome.Unsupported; }
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (U32(b, sh + 4) != ShtGnuVerneed) continue;
            long off = checked((long)U64(b, sh + 24));
            long size = checked((long)U64(b, sh + 32));
            int link = (int)U32(b, sh + 40);
            int count = (int)U32(b, sh + 44);
            if (off + size > b.Length || link >= shnum) { detail = ".gnu.version_r out of range"; return Outcome.Unsupported; }
            int strsh = checked((int)shoff + link * shentsize);
            long stroff = checked((long)U64(b, strsh + 24)), strsize = checked((long)U64(b, strsh + 32));
            if (stroff + strsize > b.Length) { detail = ".dynstr out of range"; return Outcome.Unsupported; }
            long vn = off;
            for (int n = 0; n < count; n++)
            {
                if (vn < off || vn + 16 > off + size) { detail = "Verneed chain out of range"; return Outcome.Unsupported; }
                int auxCount = U16(b, (int)vn + 2);
                long aux = vn + U32(b, (int)vn + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    if (aux < off || aux + 16 > off + size) { detail = "Vernaux chain out of range"; return Outcome.Unsupported; }
                    long nameOff = stroff + U32(b, (int)aux + 8);
                    if (CStringEquals(b, nameOff, stroff + strsize, version))
                    {
                        int flagsAt = (int)aux + 4;
                        ushort flags = (ushort)U16(b, flagsAt);
                        if ((flags & VerFlgWeak) != 0) return Outcome.AlreadyWeak;
                        flags |= VerFlgWeak;
                        b[flagsAt] = (byte)flags;
                        b[flagsAt + 1] = (byte)(flags >> 8);
                        return Outcome.Patched;
                    }
                    uint next = U32(b, (int)aux + 12);
                    if (next == 0) break;
                    aux += next;
                }
                uint vnNext = U32(b, (int)vn + 12);
                if (vnNext == 0) break;
                vn += vnNext;
            }
            return Outcome.NotNeeded;
        }
        return Outcome.NotNeeded;
    }

    static bool CStringEquals(byte[] b, long at, long end, string s)
    {
        if (at < 0 || at + s.Length >= end) return false;
        for (int i = 0; i < s.Length; i++) if (b[at + i] != (byte)s[i]) return false;
        return b[at + s.Length] == 0;
    }

    static int U16(byte[] b, int at) => b[at] | (b[at + 1] << 8);
    static uint U32(byte[] b, int at) => BitConverter.ToUInt32(b, at);
    static ulong U64(byte[] b, int at) => BitConverter.ToUInt64(b, at);

    // Returns the path of a system libstdc++ that defines the version, or null when none does.
    static string? FindSystemLibraryProviding(string version, out string searched)
    {
        var candidates = new System.Collections.Generic.List<string>();
        try
        {
            foreach (var ldconfig in new[] { "/sbin/ldconfig", "/usr/sbin/ldconfig" })
            {
                if (!File.Exists(ldconfig)) continue;
                var psi = new ProcessStartInfo(ldconfig, "-p") { RedirectStandardOutput = true, UseShellExecute = false };
                using var p = Process.Start(psi)!;
                string output = p.StandardOutput.ReadToEnd();
                p.WaitForExit(10000);
                foreach (var line in output.Split('\n'))
                {
                    int arrow = line.IndexOf("=>", StringComparison.Ordinal);
                    if (line.TrimStart().StartsWith("libstdc++.so.6", StringComparison.Ordinal) && arrow > 0)
                        candidates.Add(line.Substring(arrow + 2).Trim());
                }
                break;
            }
        }
        catch (Exception) { /* fall back to the usual locations */ }
        if (candidates.Count == 0)
            candidates.AddRange(new[] { "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
                                        "/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" });
        searched = string.Join(", ", candidates);
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        foreach (var c in candidates)
        {
            if (!File.Exists(c)) continue;
            byte[] lib = File.ReadAllBytes(c);
            if (IndexOf(lib, needle) >= 0) return c;
        }
        return null;
    }

    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }
}

using System.Text;

namespace Interp.Models;

/// <summary>
/// The version needs of an ELF64 little-endian shared library (.gnu.version_r), the dynamic symbols bound to each
/// (.gnu.version entries of .dynsym), and marking one need weak (VER_FLG_WEAK in its Vernaux entry).
/// </summary>
internal static class ElfVersionNeeds
{
    const uint ShtDynsym = 11, ShtGnuVerneed = 0x6ffffffe, ShtGnuVersym = 0x6fffffff;
    const ushort VerFlgWeak = 0x2;

    public enum Outcome { Patched, AlreadyWeak, NotNeeded, Unsupported, Refused }

    /// <summary>
    /// Marks <paramref name="version"/> weak in <paramref name="b"/> (in place) when every dynamic symbol bound to it is in
    /// <paramref name="allowed"/>; otherwise <see cref="Outcome.Refused"/> with the other symbols named in <paramref name="detail"/>.
    /// </summary>
    public static Outcome Weaken(byte[] b, string version, ISet<string> allowed, out string detail)
    {
        var need = Find(b, version, out detail);
        if (need is null) return detail.Length > 0 ? Outcome.Unsupported : Outcome.NotNeeded;
        var bound = Bound(b, need.Value.Index, out detail);
        if (bound is null) return Outcome.Unsupported;
        var others = bound.FindAll(name => !allowed.Contains(name));
        if (others.Count > 0)
        {
            detail = $"{others.Count} other symbol(s) are bound to it: {string.Join(", ", others)}";
            return Outcome.Refused;
        }
        detail = $"bound to it: {string.Join(", ", bound)}";
        int flagsAt = need.Value.FlagsAt;
        ushort flags = (ushort)U16(b, flagsAt);
        if ((flags & VerFlgWeak) != 0) return Outcome.AlreadyWeak;
        flags |= VerFlgWeak;
        b[flagsAt] = (byte)flags;
        b[flagsAt + 1] = (byte)(flags >> 8);
        return Outcome.Patched;
    }

    /// <summary>The dynamic symbols bound to <paramref name="version"/>; null when the file does not need it or cannot be read (then see detail).</summary>
    public static List<string>? SymbolsBoundTo(byte[] b, string version, out string detail)
    {
        var need = Find(b, version, out detail);
        return need is null ? null : Bound(b, need.Value.Index, out detail);
    }

    /// <summary>The version index (vna_other) the need of <paramref name="version"/> has; for tests that rebind a symbol.</summary>
    public static int? VersionIndex(byte[] b, string version, out string detail) => Find(b, version, out detail)?.Index;

    /// <summary>Where the symbol table's version entries are: offset of .gnu.version and its entry count.</summary>
    public static (long Offset, long Count)? VersymTable(byte[] b)
    {
        var sections = Sections(b, out _);
        if (sections is null) return null;
        foreach (var s in sections)
            if (s.Type == ShtGnuVersym && s.Offset + s.Size <= b.Length) return (s.Offset, s.Size / 2);
        return null;
    }

    /// <summary>The Vernaux entry of <paramref name="version"/>: where its flags are and its version index (null with empty detail when not needed).</summary>
    static (int FlagsAt, int Index)? Find(byte[] b, string version, out string detail)
    {
        var sections = Sections(b, out detail);
        if (sections is null) return null;
        foreach (var s in sections)
        {
            if (s.Type != ShtGnuVerneed) continue;
            if (s.Offset + s.Size > b.Length || s.Link >= sections.Count) { detail = ".gnu.version_r out of range"; return null; }
            var str = sections[s.Link];
            if (str.Offset + str.Size > b.Length) { detail = ".dynstr out of range"; return null; }
            long vn = s.Offset;
            for (int n = 0; n < s.Info; n++)
            {
                if (vn < s.Offset || vn + 16 > s.Offset + s.Size) { detail = "Verneed chain out of range"; return null; }
                int auxCount = U16(b, (int)vn + 2);
                long aux = vn + U32(b, (int)vn + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    if (aux < s.Offset || aux + 16 > s.Offset + s.Size) { detail = "Vernaux chain out of range"; return null; }
                    if (CStringEquals(b, str.Offset + U32(b, (int)aux + 8), str.Offset + str.Size, version))
                        return ((int)aux + 4, U16(b, (int)aux + 6) & 0x7fff);
                    uint next = U32(b, (int)aux + 12);
                    if (next == 0) break;
                    aux += next;
                }
                uint vnNext = U32(b, (int)vn + 12);
                if (vnNext == 0) break;
                vn += vnNext;
            }
            return null;
        }
        return null;
    }

    /// <summary>Names of the .dynsym entries whose .gnu.version entry is <paramref name="index"/> (hidden bit ignored).</summary>
    static List<string>? Bound(byte[] b, int index, out string detail)
    {
        detail = "";
        var sections = Sections(b, out detail);
        if (sections is null) return null;
        Section? dynsym = null, versym = null;
        foreach (var s in sections)
        {
            if (s.Type == ShtDynsym) dynsym = s;
            if (s.Type == ShtGnuVersym) versym = s;
        }
        if (dynsym is null || versym is null) { detail = "no .dynsym or .gnu.version section"; return null; }
        var sym = dynsym.Value;
        var ver = versym.Value;
        if (sym.Link >= sections.Count || sym.EntrySize < 24 || sym.Offset + sym.Size > b.Length || ver.Offset + ver.Size > b.Length)
        { detail = ".dynsym or .gnu.version out of range"; return null; }
        var str = sections[sym.Link];
        if (str.Offset + str.Size > b.Length) { detail = ".dynstr out of range"; return null; }
        long count = Math.Min(sym.Size / sym.EntrySize, ver.Size / 2);
        var names = new List<string>();
        for (long i = 1; i < count; i++)
        {
            if ((U16(b, (int)(ver.Offset + 2 * i)) & 0x7fff) != index) continue;
            long nameAt = str.Offset + U32(b, (int)(sym.Offset + i * sym.EntrySize));
            names.Add(CString(b, nameAt, str.Offset + str.Size));
        }
        return names;
    }

    struct Section
    {
        public uint Type;
        public long Offset, Size, EntrySize;
        public int Link, Info;
    }

    static List<Section>? Sections(byte[] b, out string detail)
    {
        detail = "";
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F') { detail = "not an ELF file"; return null; }
        if (b[4] != 2 || b[5] != 1) { detail = "not ELF64 little-endian"; return null; }
        ulong shoff = U64(b, 0x28);
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        if (shoff == 0 || shentsize < 64 || shoff + (ulong)(shentsize * shnum) > (ulong)b.Length) { detail = "section headers missing or out of range"; return null; }
        var sections = new List<Section>(shnum);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            sections.Add(new Section
            {
                Type = U32(b, sh + 4),
                Offset = checked((long)U64(b, sh + 24)),
                Size = checked((long)U64(b, sh + 32)),
                Link = (int)U32(b, sh + 40),
                Info = (int)U32(b, sh + 44),
                EntrySize = checked((long)U64(b, sh + 56)),
            });
        }
        return sections;
    }

    static bool CStringEquals(byte[] b, long at, long end, string s)
    {
        if (at < 0 || at + s.Length >= end) return false;
        for (int i = 0; i < s.Length; i++) if (b[at + i] != (byte)s[i]) return false;
        return b[at + s.Length] == 0;
    }

    static string CString(byte[] b, long at, long end)
    {
        long stop = at;
        while (stop < end && b[stop] != 0) stop++;
        return at >= end ? "?" : Encoding.ASCII.GetString(b, (int)at, (int)(stop - at));
    }

    static int U16(byte[] b, int at) => b[at] | (b[at + 1] << 8);
    static uint U32(byte[] b, int at) => BitConverter.ToUInt32(b, at);
    static ulong U64(byte[] b, int at) => BitConverter.ToUInt64(b, at);
}

using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using System.Security.Cryptography;
using Interp.Loading;
using TorchSharp;

namespace Interp.Models;

/// <summary>
/// Loads TorchSharp's native library for every program that uses Interp — this repository's, a script anywhere with
/// <c>#:project</c>, or a project referencing the package — with no build step of its own.
/// <para>
/// TorchSharp 0.107.0's <c>libLibTorchSharp.so</c> is linked against GCC 13 and records a version need for
/// <c>GLIBCXX_3.4.32</c>, which older libstdc++ builds (Debian 12 stops at 3.4.30) lack, so it fails to load. The only
/// symbol behind that version is <c>std::ios_base_library_init()</c>, an iostream marker referenced with no relocation:
/// the library works once that one version need is marked weak (VER_FLG_WEAK). When Interp's assembly is first used,
/// this subscribes to <see cref="AssemblyLoadContext.ResolvingUnmanagedDll"/>, which the runtime raises only after its
/// own search failed, for TorchSharp's <c>DllImport</c>s and for its own <c>NativeLibrary.TryLoad</c> at start-up. So the
/// library loads as shipped wherever it can (a new enough libstdc++, every platform but Linux). Otherwise it writes a copy
/// with that need weakened into a content-addressed folder under the temp directory (never the package cache or the
/// program's folder), loads its dependencies (libtorch) from the original folder, and hands TorchSharp the copy.
/// It refuses — naming them — if any symbol other than <c>std::ios_base_library_init()</c> is bound to the version,
/// since such a symbol would fail only when called.
/// </para>
/// A program that calls TorchSharp before anything of Interp runs <see cref="Register"/> itself first.
/// </summary>
public static class NativeLoader
{
    internal const string WeakVersion = "GLIBCXX_3.4.32";
    internal const string WeakVersionSymbol = "_ZSt21ios_base_library_initv";
    private const string LibraryFile = "libLibTorchSharp.so";

    private static readonly Lock Gate = new();
    private static bool _registered;
    private static IntPtr _handle;
    private static bool _resolved;

    /// <summary>How the native library was loaded ("as shipped", "patched copy …"), or null before TorchSharp asked for it.</summary>
    public static string? Outcome { get; private set; }

    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries",
        Justification = "TorchSharp's native library must be resolvable before any Interp code reaches TorchSharp, in programs that never call Interp's set-up.")]
    internal static void Initialize() => Register();

    /// <summary>Subscribes the handler (once per process; later calls do nothing). Runs by itself when Interp is first used.</summary>
    public static void Register()
    {
        lock (Gate)
        {
            if (_registered) return;
            _registered = true;
            AssemblyLoadContext.Default.ResolvingUnmanagedDll += Resolve;
        }
    }

    private static IntPtr Resolve(Assembly assembly, string name)
    {
        if (!OperatingSystem.IsLinux() || assembly != typeof(torch).Assembly || name is not ("LibTorchSharp" or LibraryFile)) return IntPtr.Zero;
        lock (Gate)
        {
            if (!_resolved)
            {
                _handle = Load();
                _resolved = true;
            }
            return _handle;
        }
    }

    /// <summary>The library's handle, or zero to let the runtime's own search run (and report) as usual.</summary>
    private static IntPtr Load()
    {
        string? original = Find();
        if (original is null) return IntPtr.Zero;
        if (NativeLibrary.TryLoad(original, out var handle))
        {
            Outcome = $"as shipped ({original})";
            return handle;
        }
        byte[] elf = File.ReadAllBytes(original);
        var outcome = ElfVersionNeeds.Weaken(elf, WeakVersion, new HashSet<string>(StringComparer.Ordinal) { WeakVersionSymbol }, out string detail);
        if (outcome == ElfVersionNeeds.Outcome.Refused)
            throw new DllNotFoundException($"{original} does not load and cannot be fixed: {detail}. Marking {WeakVersion} weak is safe only for " +
                $"{WeakVersionSymbol}; the others would fail when called with this system's libstdc++. Install a libstdc++ that provides {WeakVersion}, " +
                "or use a TorchSharp whose native library does not need it.");
        if (outcome != ElfVersionNeeds.Outcome.Patched) return IntPtr.Zero;   // it fails for another reason: let the runtime say which

        string hash = Convert.ToHexStringLower(SHA256.HashData(elf))[..16];
        string copy = Path.Combine(Path.GetTempPath(), $"interp-native-{hash}", LibraryFile);
        if (!File.Exists(copy))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
            AtomicFile.Write(copy, tmp => File.WriteAllBytes(tmp, elf));
        }
        // The copy's own folder has none of its dependencies ($ORIGIN); loaded from the original folder first, they
        // satisfy its DT_NEEDED entries by soname.
        string dir = Path.GetDirectoryName(original)!;
        foreach (var dependency in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
            if (File.Exists(Path.Combine(dir, dependency))) NativeLibrary.Load(Path.Combine(dir, dependency));
        handle = NativeLibrary.Load(copy);
        Outcome = $"patched copy {copy} ({WeakVersion} weak; the system libstdc++ lacks it)";
        return handle;
    }

    /// <summary>Where the runtime would look: the app's native search folders (its own folder, runtimes/RID/native).</summary>
    private static string? Find()
    {
        var dirs = (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Append(AppContext.BaseDirectory)
            .Append(Path.Combine(AppContext.BaseDirectory, "runtimes", RuntimeInformation.RuntimeIdentifier, "native"));
        return dirs.Select(d => Path.Combine(d, LibraryFile)).FirstOrDefault(File.Exists);
    }
}

using System.Runtime.CompilerServices;

namespace Interp.Tests.Support;

/// <summary>
/// Runs Interp's module initializer (<see cref="Interp.Models.NativeEnvironment"/>) when the test assembly loads, before
/// any test can load libtorch through TorchSharp directly: libtorch reads its settings once, when it loads or first allocates.
/// </summary>
internal static class LoadInterpFirst
{
    [ModuleInitializer]
    internal static void Run() => RuntimeHelpers.RunModuleConstructor(typeof(Interp.Models.NativeEnvironment).Module.ModuleHandle);
}

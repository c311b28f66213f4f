using System.Runtime.CompilerServices;

namespace Interp.Tests.Support;

/// <summary>
/// The test program's start-up, as the <c>interp</c> command's: applies Interp's native settings
/// (<see cref="Interp.Models.NativeEnvironment.Apply"/>) when the test assembly loads, before any test loads libtorch
/// (which reads them once, when it loads or first allocates).
/// </summary>
internal static class LoadInterpFirst
{
    [ModuleInitializer]
    internal static void Run() => Interp.Models.NativeEnvironment.Apply();
}

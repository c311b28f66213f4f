using System.Runtime.InteropServices;

namespace Interp.Experiments;

/// <summary>
/// SIGINT (Ctrl+C) and SIGTERM cancel a token instead of ending the process, for as long as the returned handle lives:
/// what <c>interp run</c> and every script install first thing, so that no moment of a run is left to the default
/// (a process ended under a run whose manifest still says "running").
/// </summary>
internal static class InterruptSignals
{
    /// <summary>Cancels <paramref name="source"/> on SIGINT or SIGTERM until disposed.</summary>
    public static IDisposable Cancel(CancellationTokenSource source)
    {
        void Handle(PosixSignalContext context)
        {
            context.Cancel = true;
            source.Cancel();
        }
        return new Registrations(PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle));
    }

    private sealed class Registrations(params PosixSignalRegistration[] registrations) : IDisposable
    {
        public void Dispose()
        {
            foreach (var r in registrations) r.Dispose();
        }
    }
}

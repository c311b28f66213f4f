namespace Interp.Experiments;

/// <summary>Stops this process when the <c>interp run</c> that launched it has died (Unix: its parent process changes).</summary>
internal static class LauncherWatch
{
    private static int _started;

    public static void Start()
    {
        if (OperatingSystem.IsWindows() || Interlocked.Exchange(ref _started, 1) == 1) return;
        if (!int.TryParse(Environment.GetEnvironmentVariable(Experiment.LauncherVariable), out int launcher)) return;
        if (getppid() != launcher) return;   // started some other way (the variable leaked from a shell): nothing to watch
        var thread = new Thread(() =>
        {
            while (getppid() == launcher) Thread.Sleep(50);
            _ = kill(Environment.ProcessId, 9);
        }) { IsBackground = true, Name = "interp launcher watch" };
        thread.Start();
    }

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int getppid();

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int kill(int pid, int signal);
}

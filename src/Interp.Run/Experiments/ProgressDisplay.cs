

namespace Interp.Experiments;

/// <summary>
/// Shows progress on stderr: a redrawn bar on a terminal, a line per 10 % otherwise (logs, CI), so long work is
/// never silent and never floods the output.
/// </summary>
public sealed class ProgressDisplay(TextWriter error, bool interactive) : IProgress<ExperimentProgress>
{
    private readonly object _gate = new();
    private int _lastDecile = -1;
    private string _lastStage = "";

    /// <summary>A display for the process console (interactive when stderr is a terminal).</summary>
    public static ProgressDisplay ForConsole(TextWriter error) => new(error, !Console.IsErrorRedirected && ReferenceEquals(error, Console.Error));

    /// <inheritdoc />
    public void Report(ExperimentProgress value)
    {
        lock (_gate)
        {
            if (interactive)
            {
                string bar = value.Fraction is double f ? $"[{new string('#', (int)(f * 30)).PadRight(30)}] {f,5:P0} " : "";
                error.Write($"\r{bar}{value.Stage}".PadRight(100)[..100]);
                if (value.Fraction >= 1) error.WriteLine();
                return;
            }
            // Without a terminal: one line per new stage name (the text before ':') and per 10 % of progress.
            int decile = value.Fraction is double g ? (int)(g * 10) : -1;
            string stage = value.Stage.Split(':')[0];
            if (decile == _lastDecile && (value.Fraction is not null || stage == _lastStage)) return;
            _lastDecile = decile;
            _lastStage = stage;
            error.WriteLine(value.Fraction is double h ? $"{h,5:P0} {value.Stage}" : value.Stage);
        }
    }
}

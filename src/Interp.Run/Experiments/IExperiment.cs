namespace Interp.Experiments;

/// <summary>
/// One experiment: a named piece of analysis that writes Parquet tables, figures and report lines through its
/// <see cref="ExperimentContext"/>. <c>interp run NAME</c> and the scripts in <c>experiments/</c> both run it
/// through <see cref="ExperimentRunner"/>.
/// </summary>
public interface IExperiment
{
    /// <summary>The name used on the command line, e.g. <c>induction_heads</c>.</summary>
    string Name { get; }

    /// <summary>One line saying what the experiment shows.</summary>
    string Description { get; }

    /// <summary>True when the experiment analyses a model (the built-in default unless <c>--model</c> names one).</summary>
    bool UsesModel { get; }

    /// <summary>Runs the experiment; long work checks <paramref name="cancellationToken"/>.</summary>
    Task RunAsync(ExperimentContext context, CancellationToken cancellationToken);
}

using Interp.Experiments;

namespace Interp.Tests.Support;

/// <summary>An experiment whose body is the test's lambda (no model), for tests of the runner, the context and the report.</summary>
internal sealed class Scripted(Func<ExperimentContext, CancellationToken, Task> body) : IExperiment
{
    public string Name => "scripted";
    public string Description => "test";
    public bool UsesModel => false;
    public Task RunAsync(ExperimentContext context, CancellationToken cancellationToken) => body(context, cancellationToken);
}

using System.Reflection;
using Interp.Experiments;
using Interp.Hooks;

namespace Interp.Cli;

/// <summary>The experiments <c>interp</c> knows: every <see cref="IExperiment"/> compiled into it (the scripts in <c>experiments/</c>).</summary>
public static class ExperimentCatalog
{
    /// <summary>All experiments, by name.</summary>
    public static IReadOnlyList<IExperiment> All { get; } = typeof(ExperimentCatalog).Assembly.GetTypes()
        .Where(t => typeof(IExperiment).IsAssignableFrom(t) && !t.IsAbstract && t.GetConstructor(Type.EmptyTypes) is not null)
        .Select(t => (IExperiment)Activator.CreateInstance(t)!)
        .OrderBy(e => e.Name, StringComparer.Ordinal)
        .ToArray();

    /// <summary>The experiment called <paramref name="name"/>; an unknown name lists the closest.</summary>
    public static IExperiment Find(string name) =>
        All.FirstOrDefault(e => e.Name == name)
        ?? throw new InterpException($"no experiment '{name}'. Did you mean: {string.Join(", ", NameSuggestions.Closest(name, All.Select(e => e.Name)))}? (`interp list` shows them all)");
}

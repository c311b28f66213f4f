namespace Interp.Hooks;

/// <summary>
/// Hooks attached for as long as the scope lives: <c>using (model.Hooks(("blocks.0.attn.hook_z", fn))) { ... }</c>.
/// Disposing it detaches every hook it attached, also when the code inside threw.
/// </summary>
public sealed class HookScope : IDisposable
{
    private readonly List<IDisposable> _handles = new();

    internal void Add(IDisposable handle) => _handles.Add(handle);

    /// <summary>Attaches each hook at the point <paramref name="find"/> names; an unknown name fails before anything is attached.</summary>
    internal static HookScope Attach(Func<string, HookPoint> find, (string Name, HookFunction Hook)[] hooks)
    {
        var points = hooks.Select(h => find(h.Name)).ToArray();
        var scope = new HookScope();
        for (int i = 0; i < hooks.Length; i++) scope.Add(points[i].Add(hooks[i].Hook));
        return scope;
    }

    /// <summary>Detaches the scope's hooks, in reverse order.</summary>
    public void Dispose()
    {
        for (int i = _handles.Count - 1; i >= 0; i--) _handles[i].Dispose();
        _handles.Clear();
    }
}

using Interp.Hooks;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>The hook points inside one spliced SAE, named <c>&lt;hook_name&gt;.hook_sae_*</c>.</summary>
internal sealed class SaeHookPoints
{
    public SaeHookPoints(string site, IReadOnlyList<string> hostAxes, Sae sae, bool errorTerm)
    {
        var c = sae.Config;
        string Name(string leaf) => HookNames.SaeLeaf.Of(site, leaf);
        // The SAE's axes: the host's leading axes (batch, pos, …) then the SAE's own width.
        var lead = hostAxes.Take(hostAxes.Count - (c.ReshapeHookZ ? 2 : 1)).ToArray();
        var sizes = new Dictionary<string, long> { ["d_in"] = c.DIn, ["d_sae"] = c.DSae, ["d_out"] = c.DOut };
        HookPoint Point(string leaf, string width) => new(Name(leaf), [.. lead, width]) { AxisSizes = sizes };
        Input = Point(HookNames.SaeLeaf.Input, "d_in");
        ActsPre = Point(HookNames.SaeLeaf.ActsPre, "d_sae");
        ActsPost = Point(HookNames.SaeLeaf.ActsPost, "d_sae");
        Recons = Point(HookNames.SaeLeaf.Recons, "d_out");
        // Error and output have the shape of the activation they replace.
        var outAxes = c.IsTranscoder ? [.. lead, "d_out"] : hostAxes.ToArray();
        Error = new HookPoint(Name(HookNames.SaeLeaf.Error), outAxes) { AxisSizes = sizes };
        Output = new HookPoint(Name(HookNames.SaeLeaf.Output), outAxes) { AxisSizes = sizes };
        All = errorTerm ? [Input, ActsPre, ActsPost, Recons, Error, Output] : [Input, ActsPre, ActsPost, Recons, Output];
    }

    public HookPoint Input { get; }
    public HookPoint ActsPre { get; }
    public HookPoint ActsPost { get; }
    public HookPoint Recons { get; }
    public HookPoint Error { get; }
    public HookPoint Output { get; }
    public IReadOnlyList<HookPoint> All { get; }

    /// <summary>A hook before the output is attached: the clean reconstruction must be recomputed for the error term.</summary>
    public bool AnyInnerActive => Input.IsActive || ActsPre.IsActive || ActsPost.IsActive || Recons.IsActive;
}

/// <summary>
/// SAEs spliced into a model for as long as the scope lives (SAELens's <c>HookedSAETransformer.saes(...)</c>): at each
/// SAE's hook point the model continues from the SAE's output, its reconstruction, or with the error term
/// reconstruction + (input − reconstruction computed without edits), so that with no edit the model computes exactly
/// what it computes alone and an edit to the features moves the activation by exactly the change it makes to the
/// reconstruction. The SAE's stages are hook points of the model while the scope lives, named
/// <c>blocks.1.hook_resid_pre.hook_sae_acts_post</c> and so on: <c>RunWithCache</c> caches them, <c>Hooks</c> and the
/// analysis passes take them. Hooks on the SAE's own hook point run first and edit what the SAE reads.
/// A transcoder reads its <c>hook_name</c> and replaces its <c>hook_name_out</c> (its hook points are named after the
/// input). Disposing the scope removes the SAEs and their hook points.
/// </summary>
public sealed class SaeSplice : IDisposable
{
    private readonly HookedTransformer _model;
    private readonly List<Action> _undo = new();

    internal SaeSplice(HookedTransformer model, IReadOnlyList<Sae> saes, bool useErrorTerm)
    {
        _model = model;
        UseErrorTerm = useErrorTerm;
        Saes = saes;
        try
        {
            foreach (var sae in saes) Attach(sae);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The spliced SAEs.</summary>
    public IReadOnlyList<Sae> Saes { get; }

    /// <summary>Whether the error term is on.</summary>
    public bool UseErrorTerm { get; }

    private void Attach(Sae sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        var c = sae.Config;
        var host = _model.GetHookPoint(c.HookName);
        CheckWidth(host, c.DIn, c.ReshapeHookZ, "d_in");
        var outHost = c.IsTranscoder ? _model.GetHookPoint(c.HookNameOut!) : host;
        if (c.IsTranscoder)
        {
            CheckWidth(outHost, c.DOut, false, "d_out");
            int inAt = IndexOf(host), outAt = IndexOf(outHost);
            if (outAt <= inAt)
                throw new HookException(c.HookNameOut!, $"a transcoder must write a hook point the forward pass reaches after the one it reads ('{c.HookName}')");
        }
        foreach (var point in new[] { host, outHost }.Distinct())
            if (point.Splice is not null) throw new HookException(point.Name, "already has an SAE spliced in");

        var points = new SaeHookPoints(c.HookName, host.Axes, sae, UseErrorTerm);
        _model.Graft(outHost, points.All);
        _undo.Add(() => _model.Ungraft(points.All));
        if (!c.IsTranscoder)
        {
            host.Splice = x => sae.RunHooked(x, points, UseErrorTerm ? x : null);
            _undo.Add(() => host.Splice = null);
            return;
        }
        // A transcoder: remember what it reads, replace what it writes.
        Tensor? read = null;
        host.Splice = x =>
        {
            read = x;
            return x;
        };
        outHost.Splice = y =>
        {
            var x = read ?? throw new HookException(outHost.Name, $"the transcoder's input '{host.Name}' was not reached in this pass");
            read = null;
            return sae.RunHooked(x, points, UseErrorTerm ? y : null);
        };
        _undo.Add(() => host.Splice = null);
        _undo.Add(() => outHost.Splice = null);
    }

    private int IndexOf(HookPoint h)
    {
        for (int i = 0; i < _model.HookPoints.Count; i++) if (ReferenceEquals(_model.HookPoints[i], h)) return i;
        return -1;
    }

    private void CheckWidth(HookPoint host, int width, bool hookZ, string what)
    {
        long[] shape;
        try { shape = _model.HookShape(host, 1, 1); }
        catch (InvalidOperationException e) { throw new HookException(host.Name, $"an SAE cannot be spliced here: {e.Message}"); }
        long have = hookZ ? shape[^2] * shape[^1] : shape[^1];
        if (have != width)
            throw new HookException(host.Name,
                $"the SAE's {what} is {width}, but this hook point's activation is [{string.Join(", ", host.Axes)}] with {(hookZ ? "n_heads × d_head" : host.Axes[^1])} = {have}");
    }

    /// <summary>Removes the SAEs and their hook points (the SAEs themselves are the caller's to dispose).</summary>
    public void Dispose()
    {
        for (int i = _undo.Count - 1; i >= 0; i--) _undo[i]();
        _undo.Clear();
    }
}

/// <summary>Splicing SAEs into a model.</summary>
public static class SaeModelExtensions
{
    /// <summary>
    /// Splices <paramref name="saes"/> into <paramref name="model"/> until the returned scope is disposed (see
    /// <see cref="SaeSplice"/>); with <paramref name="useErrorTerm"/> the model continues from reconstruction + error.
    /// Everything is checked before anything is attached.
    /// </summary>
    /// <exception cref="HookException">A hook point is unknown, has another width, or already has an SAE.</exception>
    public static SaeSplice WithSaes(this HookedTransformer model, IEnumerable<Sae> saes, bool useErrorTerm = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(saes);
        return new SaeSplice(model, saes.ToArray(), useErrorTerm);
    }

    /// <summary>Splices one SAE (see <see cref="WithSaes(HookedTransformer, IEnumerable{Sae}, bool)"/>).</summary>
    public static SaeSplice WithSaes(this HookedTransformer model, Sae sae, bool useErrorTerm = false) =>
        model.WithSaes([sae], useErrorTerm);
}

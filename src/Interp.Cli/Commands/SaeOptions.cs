using System.CommandLine;
using System.Globalization;
using Interp.Loading;
using Interp.Models;
using Interp.Saes;

namespace Interp.Cli.Commands;

/// <summary>The verbs' SAE options: <c>--sae DIR</c> (repeatable), <c>--sae-error-term</c>, <c>--steer</c> and <c>--clamp</c>.</summary>
public static class SaeOptions
{
    /// <summary><c>--sae DIR</c>, repeatable: SAELens-format SAE folders to splice in.</summary>
    public static Option<string[]> Sae() => new("--sae")
    {
        Description = "An SAE folder in SAELens's format (cfg.json + sae_weights.safetensors) to splice in at its hook point; repeat for several",
    };

    /// <summary><c>--sae-error-term</c>.</summary>
    public static Option<bool> ErrorTerm() => new("--sae-error-term")
    {
        Description = "Splice the SAEs with the error term: the model continues from reconstruction + (input − reconstruction), so its output is unchanged unless a feature is edited",
    };

    /// <summary><c>--steer SAE:FEATURE:ALPHA</c>, repeatable.</summary>
    public static Option<string[]> Steer() => new("--steer")
    {
        Description = "Add ALPHA × the decoder direction of FEATURE of the SAE in folder SAE at its hook point, at every position: SAE:FEATURE:ALPHA, e.g. saes/l1:123:8; repeatable",
    };

    /// <summary><c>--clamp SAE:FEATURE:VALUE</c>, repeatable.</summary>
    public static Option<string[]> Clamp() => new("--clamp")
    {
        Description = "Splice the SAE in folder SAE (with the error term) and set FEATURE's activation to VALUE at every position (0 zero-ablates it): SAE:FEATURE:VALUE; repeatable",
    };

    /// <summary>A parsed <c>SAE:FEATURE:NUMBER</c>.</summary>
    public readonly record struct FeatureSpec(string Folder, int Feature, double Value);

    /// <summary>Parses <c>SAE:FEATURE:NUMBER</c>: the folder is everything before the last two colons (it may hold colons itself).</summary>
    /// <exception cref="InterpException">Not three parts, a feature that is not a non-negative integer, or a number that is not finite; names the option and value.</exception>
    public static FeatureSpec Parse(string option, string value)
    {
        int last = value.LastIndexOf(':');
        int middle = last > 0 ? value.LastIndexOf(':', last - 1) : -1;
        if (middle <= 0)
            throw new InterpException($"{option} '{value}': expected SAE:FEATURE:NUMBER, e.g. saes/l1:123:8");
        string folder = value[..middle], feature = value[(middle + 1)..last], number = value[(last + 1)..];
        if (!int.TryParse(feature, NumberStyles.None, CultureInfo.InvariantCulture, out int f))
            throw new InterpException($"{option} '{value}': the feature '{feature}' is not a non-negative integer");
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double x) || !double.IsFinite(x))
            throw new InterpException($"{option} '{value}': '{number}' is not a finite number");
        return new FeatureSpec(folder, f, x);
    }

    /// <summary>
    /// Loads the SAEs named by <c>--sae</c> and by the <c>--steer</c>/<c>--clamp</c> specs (each folder once), splices
    /// in those of <c>--sae</c> and <c>--clamp</c>, and builds the steering hooks. Everything is checked before the first pass.
    /// </summary>
    public static SaeSession Open(HookedTransformer model, string[]? saes, bool errorTerm, string[]? steer = null, string[]? clamp = null)
    {
        var session = new SaeSession();
        try
        {
            var steers = (steer ?? []).Select(s => Parse("--steer", s)).ToArray();
            var clamps = (clamp ?? []).Select(s => Parse("--clamp", s)).ToArray();
            var spliced = new List<Sae>();
            foreach (var folder in saes ?? []) AddOnce(spliced, session.Load(folder, "--sae"));
            foreach (var c in clamps) AddOnce(spliced, session.Load(c.Folder, "--clamp"));
            // Clamping edits features: the error term keeps everything else as the model computes it.
            if (spliced.Count > 0) session.Splice = model.WithSaes(spliced, errorTerm || clamps.Length > 0);
            foreach (var s in steers) session.Add(Hook(() => SteeringHook.Steer(session.Load(s.Folder, "--steer"), s.Feature, s.Value), "--steer", s));
            foreach (var c in clamps) session.Add(Hook(() => SteeringHook.Clamp(session.Load(c.Folder, "--clamp"), c.Feature, c.Value), "--clamp", c));
            foreach (var h in session.Hooks) model.GetHookPoint(h.Name);   // an SAE whose hook the model lacks fails here
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    private static void AddOnce(List<Sae> list, Sae sae)
    {
        if (!list.Contains(sae)) list.Add(sae);
    }

    private static SteeringHook Hook(Func<SteeringHook> make, string option, FeatureSpec spec)
    {
        try { return make(); }
        catch (ArgumentOutOfRangeException ex) { throw new InterpException($"{option} {spec.Folder}:{spec.Feature}:{spec.Value}: {ex.Message.Split(" (Parameter")[0]}"); }
    }
}

/// <summary>The SAEs one command loaded, its splice and its steering hooks; disposing frees them all.</summary>
public sealed class SaeSession : IDisposable
{
    private readonly Dictionary<string, Sae> _byFolder = new(StringComparer.Ordinal);
    private readonly List<SteeringHook> _hooks = new();

    /// <summary>The splice of <c>--sae</c> and <c>--clamp</c> SAEs, when there is one.</summary>
    public SaeSplice? Splice { get; internal set; }

    /// <summary>The steering and clamping hooks, to attach for the pass.</summary>
    public IReadOnlyList<SteeringHook> Hooks => _hooks;

    /// <summary>What the session does, one line per SAE or hook, for the log.</summary>
    public IEnumerable<string> Describe() =>
        (Splice?.Saes.Select(s => $"SAE spliced at {s.Config.HookName} ({s.Config.ArchitectureName}, d_sae {s.Config.DSae}{(Splice.UseErrorTerm ? ", error term" : "")})") ?? [])
        .Concat(_hooks.Select(h => h.Description));

    internal Sae Load(string folder, string option)
    {
        string key = Path.GetFullPath(folder);
        if (_byFolder.TryGetValue(key, out var sae)) return sae;
        try { sae = Sae.Load(folder); }
        catch (ModelFileException ex) { throw new InterpException($"{option} {folder}: {ex.Message}", ex); }
        return _byFolder[key] = sae;
    }

    internal void Add(SteeringHook hook) => _hooks.Add(hook);

    /// <summary>Removes the splice and frees the hooks and SAEs.</summary>
    public void Dispose()
    {
        Splice?.Dispose();
        foreach (var h in _hooks) h.Dispose();
        foreach (var s in _byFolder.Values) s.Dispose();
        _hooks.Clear();
        _byFolder.Clear();
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Hooks;

/// <summary>
/// An opt-in guard against NaN and ±Inf: while it is attached, every hook point checks its activation, and the first
/// one (in forward order) that holds a non-finite value stops the pass with a <see cref="NonFiniteActivationException"/>
/// naming that hook, how many values are bad and where the first one is.
/// <code>
/// using (model.GuardFinite()) logits = model.forward(tokens);   // or: model.RunChecked(tokens), which checks the logits too
/// </code>
/// </summary>
public static class FiniteCheck
{
    /// <summary>
    /// Attaches the check to every hook point that <paramref name="namesFilter"/> accepts; by default all of them except
    /// the per-head <c>hook_result</c> (computed only when hooked; its input <c>hook_z</c> is checked anyway). Dispose
    /// the returned scope to detach it. The check only reads: activations are left as they are. The −Inf that the causal
    /// mask puts in <c>hook_attn_scores</c> above the diagonal, and the padding mask in a padded key's column, is allowed;
    /// anywhere else it is an error.
    /// </summary>
    public static HookScope GuardFinite(this HookedTransformer model, Func<string, bool>? namesFilter = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        namesFilter ??= name => !HookNames.Is(name, HookNames.Result);
        var hooks = model.HookPoints.Where(h => namesFilter(h.Name))
            .Select(h => (h.Name, (HookFunction)((activation, point) =>
            {
                Ensure(activation, point.Name, point.Axes);
                return null;
            })))
            .ToArray();
        return model.Hooks(hooks);
    }

    /// <summary>
    /// The forward pass with <see cref="GuardFinite"/> attached, then a check of the logits (a NaN in the unembedding
    /// shows up only there): tokens [batch, pos] → logits [batch, pos, d_vocab], all finite.
    /// </summary>
    /// <exception cref="NonFiniteActivationException">An activation or the logits hold NaN or ±Inf.</exception>
    public static Tensor RunChecked(this HookedTransformer model, Tensor tokens)
    {
        ArgumentNullException.ThrowIfNull(model);
        Tensor logits;
        using (model.GuardFinite()) logits = model.forward(tokens);
        try
        {
            Ensure(logits, NonFiniteActivationException.Logits, ["batch", "pos", "d_vocab"]);
        }
        catch
        {
            logits.Dispose();
            throw;
        }
        return logits;
    }

    /// <summary>Throws <see cref="NonFiniteActivationException"/> when <paramref name="activation"/> holds NaN or ±Inf.</summary>
    /// <param name="activation">The tensor to check.</param>
    /// <param name="location">The hook name (or <see cref="NonFiniteActivationException.Logits"/>) for the message.</param>
    /// <param name="axes">The axis names, used to say where the first bad value is.</param>
    public static void Ensure(Tensor activation, string location, IReadOnlyList<string> axes)
    {
        ArgumentNullException.ThrowIfNull(activation);
        if (!is_floating_point(activation)) return;
        using var scope = NewDisposeScope();
        var finite = activation.isfinite();
        // Attention scores carry the causal mask as −Inf above the diagonal (key after query), and the padding mask as
        // −Inf in a padded key's whole column: neither is an error.
        if (HookNames.Is(location, HookNames.AttnScores) && activation.dim() >= 2)
        {
            long q = activation.shape[^2], k = activation.shape[^1];
            var masked = ones(q, k, dtype: ScalarType.Bool, device: activation.device).triu(1);
            var negInf = activation.isneginf();
            var padded = negInf.all(-2, keepdim: true);                                    // [..., 1, key]: −Inf for every query
            finite = finite.logical_or(masked.logical_or(padded).logical_and(negInf));
        }
        if (finite.all().item<bool>()) return;
        long nan = activation.isnan().sum().item<long>();
        long total = activation.NumberOfElements;
        long inf = total - finite.sum().item<long>() - nan;   // non-finite, not NaN, not a mask entry
        var flatActivation = activation.reshape(-1);
        long flat = finite.logical_not().reshape(-1).to(ScalarType.Int32).argmax().item<long>();
        double first = flatActivation[flat].to(ScalarType.Float64).item<double>();
        var index = new long[activation.dim()];
        for (int i = index.Length - 1; i >= 0; i--)
        {
            index[i] = flat % activation.shape[i];
            flat /= activation.shape[i];
        }
        throw new NonFiniteActivationException(location, axes, index, nan, inf, total, first);
    }
}

/// <summary>
/// An activation holds NaN or ±Inf. Raised by <see cref="FiniteCheck"/> at the first hook point (in forward order)
/// where that happens, so <see cref="Location"/> is where the values first appear, not where they end up.
/// </summary>
public sealed class NonFiniteActivationException : InterpException
{
    /// <summary>The <see cref="Location"/> of a check of the logits, after the last hook point.</summary>
    public const string Logits = "logits";

    /// <summary>Creates the exception.</summary>
    public NonFiniteActivationException(string location, IReadOnlyList<string> axes, long[] firstIndex, long nanCount, long infCount, long total, double firstValue)
        : base(Format(location, axes, firstIndex, nanCount, infCount, total, firstValue))
    {
        Location = location;
        FirstIndex = firstIndex;
        NaNCount = nanCount;
        InfCount = infCount;
    }

    /// <summary>The hook name where the values first appear, or <see cref="Logits"/>.</summary>
    public string Location { get; }
    /// <summary>Index of the first non-finite value (row-major order).</summary>
    public IReadOnlyList<long> FirstIndex { get; }
    /// <summary>Number of NaN values.</summary>
    public long NaNCount { get; }
    /// <summary>Number of +Inf and −Inf values.</summary>
    public long InfCount { get; }

    private static string Format(string location, IReadOnlyList<string> axes, long[] index, long nan, long inf, long total, double first)
    {
        string at = string.Join(", ", index.Select((v, i) => (i < axes.Count ? axes[i] + " " : "") + v));
        string where = location == Logits
            ? "the logits (after the last hook point: the final norm or the unembedding)"
            : $"hook '{location}' (the first hook in forward order where they appear)";
        return $"non-finite activation at {where}: {nan} NaN and {inf} ±Inf of {total} values; the first is {first.ToString(System.Globalization.CultureInfo.InvariantCulture)} at [{at}]";
    }
}

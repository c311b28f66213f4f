namespace Interp.Analysis;

/// <summary>The positions of a repeated sequence: residual positions whose next token is in the first copy, and in the repeated copy.</summary>
/// <param name="First">Positions prefix … prefix + half − 2: they predict the first copy's r[1 …] (unpredictable).</param>
/// <param name="Repeated">Positions prefix + half … prefix + 2·half − 2: they read r[i] of the second copy and predict r[i + 1], predictable by induction.</param>
public sealed record RepeatedHalves(int[] First, int[] Repeated)
{
    /// <summary>The halves of <paramref name="input"/>.</summary>
    public static RepeatedHalves Of(RepeatedTokens input) => new(
        Enumerable.Range(input.Prefix, input.Half - 1).ToArray(),
        Enumerable.Range(input.Prefix + input.Half, input.Half - 1).ToArray());
}

namespace Interp.Hooks;

/// <summary>Finds the valid names closest to a misspelt one, for error messages.</summary>
public static class NameSuggestions
{
    /// <summary>The <paramref name="count"/> candidates with the smallest edit distance to <paramref name="name"/>.</summary>
    public static IReadOnlyList<string> Closest(string name, IEnumerable<string> candidates, int count = 3) =>
        candidates.Select(c => (c, d: Distance(name, c)))
                  .OrderBy(x => x.d).ThenBy(x => x.c, StringComparer.Ordinal)
                  .Take(count).Select(x => x.c).ToArray();

    /// <summary>Levenshtein distance (insertions, deletions and substitutions each cost 1).</summary>
    public static int Distance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) previous[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitute, Math.Min(previous[j], current[j - 1]) + 1);
            }
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}

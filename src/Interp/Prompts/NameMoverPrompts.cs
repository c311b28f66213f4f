using Interp.Tokenizers;

namespace Interp.Prompts;

/// <summary>
/// Indirect-object-identification (name-mover) prompts from templates: in "When [A] and [B] went to the store, [B] gave a
/// drink to", [A] is the indirect object (the answer, " A") and [B] the subject (the wrong answer, " B"). The corrupted
/// prompt replaces the last [B] with a third name C, so that nothing in it says which of A and B is the answer. Names
/// are kept only when " name" is one continuation token of the tokenizer, and a line is kept only when its clean and
/// corrupted prompts tokenise to the same length.
/// </summary>
public static class NameMoverPrompts
{
    /// <summary>The placeholder of the indirect object.</summary>
    public const string A = "[A]";
    /// <summary>The placeholder of the subject; its last occurrence is the one the corrupted prompt changes.</summary>
    public const string B = "[B]";

    /// <summary>Templates in the style of the IOI paper's (Wang et al. 2022) BABA templates, for web-text models such as GPT-2.</summary>
    public static IReadOnlyList<string> IoiTemplates { get; } =
    [
        "When [A] and [B] went to the store, [B] gave a drink to",
        "When [A] and [B] went to the park, [B] gave a ball to",
        "Then, [A] and [B] had a long argument. Afterwards [B] said to",
        "After [A] and [B] went to the office, [B] gave a book to",
        "While [A] and [B] were working at the hospital, [B] gave a snack to",
        "Then, [A] and [B] went to the market. [B] bought a drink for",
        "Friends [A] and [B] found a bone at the garden. [B] gave it to",
        "The local big [A] and [B] went to the school. [B] gave a kiss to",
    ];

    /// <summary>Templates a children's-story model (TinyStories, stories260K) completes: <c>experiments/prompts/stories_names.jsonl</c> comes from these.</summary>
    public static IReadOnlyList<string> StoryTemplates { get; } =
    [
        "[A] and [B] went to the park. [B] gave the ball to",
        "[A] and [B] were playing with a toy. [B] gave the toy to",
        "One day, [A] and [B] found a big apple. [B] gave the apple to",
        "[A] and [B] went to the shop. [B] gave a flower to",
        "[A] and [B] had a cake. [B] gave the cake to",
    ];

    /// <summary>Common first names; <see cref="Generate"/> keeps those that are one token of the tokenizer at hand.</summary>
    public static IReadOnlyList<string> DefaultNames { get; } =
    [
        "Lily", "Tim", "Timmy", "Tom", "Ben", "Max", "Sue", "Anna", "Sam", "Mia", "Lucy", "Jack",
        "Mary", "John", "James", "Michael", "David", "Sarah", "Emma", "Paul", "Mark", "Kate", "Laura", "Daniel",
        "Alice", "Bob", "Peter", "Susan", "Robert", "Lisa", "Chris", "Jane",
    ];

    /// <summary>The names of <paramref name="names"/> whose " name" is one continuation token of <paramref name="tokenizer"/>, in order.</summary>
    public static IReadOnlyList<string> SingleTokenNames(ITokenizer tokenizer, IEnumerable<string> names) =>
        names.Distinct(StringComparer.Ordinal).Where(n => SingleTokens.TryOf(tokenizer, " " + n, out _)).ToArray();

    /// <summary>
    /// <paramref name="count"/> distinct lines (template, A, B, C all drawn with a generator seeded by
    /// <paramref name="seed"/>, so the same arguments give the same lines): prompt = the template with A and B filled in,
    /// answer " A", wrong " B", corrupted = the prompt with its last B replaced by C. A, B and C are different names.
    /// </summary>
    /// <exception cref="InterpException">A template lacks [A] or a second [B]; fewer than three names are single tokens (the message shows how the others split); or fewer than <paramref name="count"/> distinct lines tokenise to equal lengths.</exception>
    public static IReadOnlyList<PromptLine> Generate(ITokenizer tokenizer, IReadOnlyList<string> templates, IReadOnlyList<string> names, int count, long seed)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(templates);
        ArgumentNullException.ThrowIfNull(names);
        if (count < 1) throw new InterpException($"name-mover prompts: count must be at least 1, got {count}");
        if (templates.Count == 0) throw new InterpException("name-mover prompts: no templates");
        foreach (var t in templates)
            if (!t.Contains(A, StringComparison.Ordinal) || Occurrences(t, B) < 2)
                throw new InterpException($"name-mover template \"{t}\" needs {A} (the indirect object) and {B} at least twice (the subject, then the subject again where the corrupted prompt puts a third name)");
        var usable = SingleTokenNames(tokenizer, names);
        if (usable.Count < 3)
        {
            var rejected = names.Except(usable).Select(n => SingleTokens.DescribeSplit(tokenizer, " " + n, tokenizer.EncodeContinuation(" " + n)));
            throw new InterpException($"name-mover prompts need at least 3 names that are one token with a leading space; {usable.Count} are ({string.Join(", ", usable)}). The others: {string.Join("; ", rejected)}");
        }

        bool bos = tokenizer.BosId is not null;
        long n = usable.Count;
        long total = templates.Count * n * (n - 1) * (n - 2);
        var random = new Random((int)(seed ^ (seed >> 32)));
        var tried = new HashSet<long>();
        var lines = new List<PromptLine>();
        while (lines.Count < count && tried.Count < total)
        {
            int t = random.Next(templates.Count), a = random.Next((int)n), b = random.Next((int)n), c = random.Next((int)n);
            if (a == b || a == c || b == c || !tried.Add(((t * n + a) * n + b) * n + c)) continue;
            var line = Fill(templates[t], usable[a], usable[b], usable[c]);
            if (tokenizer.Encode(line.Prompt, bos).Length == tokenizer.Encode(line.Corrupted!, bos).Length) lines.Add(line);
        }
        if (lines.Count < count)
            throw new InterpException($"name-mover prompts: only {lines.Count} distinct lines (of {total} combinations of {templates.Count} templates and {n} names) tokenise to equal clean and corrupted lengths; {count} were asked for");
        return lines;
    }

    /// <summary>One line from <paramref name="template"/>: answer " a", wrong " b", corrupted with the last [B] as <paramref name="c"/>.</summary>
    public static PromptLine Fill(string template, string a, string b, string c)
    {
        int last = template.LastIndexOf(B, StringComparison.Ordinal);
        string Names(string s) => s.Replace(A, a, StringComparison.Ordinal).Replace(B, b, StringComparison.Ordinal);
        string prompt = Names(template);
        string corrupted = Names(template[..last]) + c + Names(template[(last + B.Length)..]);
        return new PromptLine(prompt, " " + a, " " + b, corrupted);
    }

    private static int Occurrences(string s, string part)
    {
        int n = 0;
        for (int i = s.IndexOf(part, StringComparison.Ordinal); i >= 0; i = s.IndexOf(part, i + part.Length, StringComparison.Ordinal)) n++;
        return n;
    }
}

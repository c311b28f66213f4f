using Interp.Prompts;
using Interp.Tests.Support;
using Interp.Tokenizers;

namespace Interp.Tests.Prompts;

public class PromptSetTests
{
    private static readonly Llama2CTokenizer Stories = Llama2CTokenizer.Load(TestModels.StoriesTokenizer, 512);
    private static readonly Gpt2Tokenizer Gpt2 = new();

    /// <summary>The templates and names <c>experiments/prompts/stories_names.jsonl</c> was generated from (24 lines, seed 0).</summary>
    public static readonly IReadOnlyList<string> StoriesTemplates = NameMoverPrompts.StoryTemplates;
    public static readonly string[] StoriesNames = ["Lily", "Tim", "Timmy", "Tom", "Ben", "Max", "Sue", "Anna", "Sam", "Mia", "Lucy", "Jack"];
    public const int StoriesCount = 24;
    public const long StoriesSeed = 0;

    private static string Write(TempDir dir, params string[] lines)
    {
        string path = dir.File("prompts.jsonl");
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void Load_TokenisesPromptsAnswersAndTheCorruptedBatch()
    {
        using var dir = new TempDir();
        string path = Write(dir,
            """{"prompt": "When Mary and John went to the store, John gave a drink to", "answer": " Mary", "wrong": " John", "corrupted": "When Mary and John went to the store, Anne gave a drink to"}""",
            "",
            """{"prompt": "Then, Tom and Sue had a long day. Sue gave a book to", "answer": " Tom", "wrong": " Sue", "corrupted": "Then, Tom and Sue had a long day. Bob gave a book to"}""");
        using var set = PromptSet.Load(path, Gpt2);
        Assert.Equal(2, set.Count);
        Assert.Equal(new[] { Gpt2.Encode(" Mary").Single(), Gpt2.Encode(" Tom").Single() }, set.AnswerIds);
        Assert.Equal(new[] { Gpt2.Encode(" John").Single(), Gpt2.Encode(" Sue").Single() }, set.WrongIds);
        int[] lengths = set.Lines.Select(l => Gpt2.Encode(l.Prompt, prependBos: true).Length).ToArray();
        Assert.Equal(lengths, set.Clean.Lengths);
        Assert.Equal(lengths.Select(n => n - 1).ToArray(), set.LastPositions);
        Assert.NotNull(set.Corrupted);
        Assert.Equal(set.Clean.Lengths, set.Corrupted!.Lengths);
        Assert.Equal(Gpt2.Encode(set.Lines[1].Corrupted!, true).Select(i => (long)i).ToArray(),
            set.Corrupted.Tokens[1].narrow(0, 0, lengths[1]).data<long>().ToArray());
        Assert.Equal(50256L, set.Clean.Tokens[0, 0].item<long>());   // BOS first
    }

    [Fact]
    public void Write_ThenLoad_RoundTrips()
    {
        using var dir = new TempDir();
        var lines = new[] { new PromptLine("A \"quoted\" prompt, é to", " Mary", " John"), new PromptLine("x to", " a", " b") };
        string path = dir.File("out/set.jsonl");
        PromptSet.Write(path, lines);
        using var set = PromptSet.Load(path, Gpt2);
        Assert.Equal(lines, set.Lines);
        Assert.Null(set.Corrupted);
    }

    [Theory]
    [InlineData("""{"prompt": "a to", "answer": " Mary", "wrong": " John", "extra": "x"}""", ":1: key 'extra': unknown key")]
    [InlineData("""{"prompt": "a to", "answer": " Mary"}""", ":1: key 'wrong': missing")]
    [InlineData("""{"prompt": "a to", "answer": 3, "wrong": " John"}""", ":1: key 'answer': must be a string, got Number 3")]
    [InlineData("""{"prompt": "a to", "answer": " Mary", "wrong": " John" """, ":1: not valid JSON")]
    [InlineData("""["a to", " Mary", " John"]""", ":1: expected a JSON object")]
    [InlineData("""{"prompt": "a to", "answer": " Maryland-ish", "wrong": " John"}""", ":1: key 'answer': must be one token (as a continuation): \" Maryland-ish\" is ")]
    [InlineData("""{"prompt": "", "answer": " Mary", "wrong": " John"}""", ":1: key 'prompt': is empty")]
    public void Malformed_Lines_AreNamedByFileLineAndKey(string line, string expected)
    {
        using var dir = new TempDir();
        string path = Write(dir, line);
        var e = Assert.Throws<PromptFileException>(() => PromptSet.Load(path, Gpt2));
        Assert.Contains(path + expected, e.Message);
    }

    [Fact]
    public void EmptyFile_AndCorruptedOnSomeLines_AndLengthMismatch_AreErrors()
    {
        using var dir = new TempDir();
        string empty = Write(dir, "", "  ");
        Assert.Contains("holds no prompts", Assert.Throws<PromptFileException>(() => PromptSet.Load(empty, Gpt2)).Message);

        string some = Write(dir,
            """{"prompt": "Mary and John. John gave it to", "answer": " Mary", "wrong": " John", "corrupted": "Mary and John. Anne gave it to"}""",
            """{"prompt": "Mary and John. John gave it to", "answer": " Mary", "wrong": " John"}""");
        var e = Assert.Throws<PromptFileException>(() => PromptSet.Load(some, Gpt2));
        Assert.Contains(some + ":2: key 'corrupted': missing, but 1 of the 2 lines have one", e.Message);

        string longer = Write(dir,
            """{"prompt": "Mary and John. John gave it to", "answer": " Mary", "wrong": " John", "corrupted": "Mary and John. Maximiliano gave it to"}""");
        e = Assert.Throws<PromptFileException>(() => PromptSet.Load(longer, Gpt2));
        Assert.Contains(longer + ":1: key 'corrupted': tokenises to", e.Message);

        Assert.Throws<PromptFileException>(() => PromptSet.Load(dir.File("missing.jsonl"), Gpt2));
    }

    [Fact]
    public void Stories_AnswersAreContinuationTokens()
    {
        using var dir = new TempDir();
        string path = Write(dir, """{"prompt": "Lily and Tim went to the park. Tim gave the ball to", "answer": " Lily", "wrong": " Tim"}""");
        using var set = PromptSet.Load(path, Stories);
        Assert.Equal(317, set.AnswerIds[0]);
        Assert.Equal(326, set.WrongIds[0]);
        string bad = Write(dir, """{"prompt": "Mary went to", "answer": " Mary", "wrong": " Tim"}""");
        var e = Assert.Throws<PromptFileException>(() => PromptSet.Load(bad, Stories));
        Assert.Contains(bad + ":1: key 'answer': must be one token (as a continuation): \" Mary\" is ", e.Message);
        Assert.Contains("\" M\" (392)", e.Message);
    }

    [Fact]
    public void NameMover_KeepsSingleTokenNames_IsSeeded_AndCorruptsTheLastSubject()
    {
        Assert.Equal(new[] { "Lily", "Tim", "Timmy" }, NameMoverPrompts.SingleTokenNames(Stories, StoriesNames));
        var lines = NameMoverPrompts.Generate(Stories, StoriesTemplates, StoriesNames, StoriesCount, StoriesSeed);
        Assert.Equal(StoriesCount, lines.Count);
        Assert.Equal(lines, NameMoverPrompts.Generate(Stories, StoriesTemplates, StoriesNames, StoriesCount, StoriesSeed));
        Assert.NotEqual(lines, NameMoverPrompts.Generate(Stories, StoriesTemplates, StoriesNames, StoriesCount, 1));
        Assert.Equal(lines.Count, lines.Distinct().Count());
        foreach (var line in lines)
        {
            string a = line.Answer[1..], b = line.Wrong[1..];
            Assert.NotEqual(a, b);
            Assert.Contains(StoriesTemplates, t => NameMoverPrompts.Fill(t, a, b, "X").Prompt == line.Prompt);
            Assert.Equal(Stories.Encode(line.Prompt, true).Length, Stories.Encode(line.Corrupted!, true).Length);
        }
        var fill = NameMoverPrompts.Fill("When [A] and [B] went to the store, [B] gave a drink to", "Mary", "John", "Anne");
        Assert.Equal(new PromptLine("When Mary and John went to the store, John gave a drink to", " Mary", " John",
            "When Mary and John went to the store, Anne gave a drink to"), fill);
        Assert.Contains("at least 3 names", Assert.Throws<InterpException>(() =>
            NameMoverPrompts.Generate(Stories, StoriesTemplates, ["Lily", "Tim", "Mary"], 2, 0)).Message);
        Assert.Throws<InterpException>(() => NameMoverPrompts.Generate(Stories, ["[A] and [B] to"], StoriesNames, 2, 0));
    }

    [Fact]
    public void StoriesNamesFile_IsTheGeneratorsOutput_AndLoads()
    {
        string path = RepoFiles.Path("experiments/prompts/stories_names.jsonl");
        using var set = PromptSet.Load(path, Stories);
        Assert.Equal(NameMoverPrompts.Generate(Stories, StoriesTemplates, StoriesNames, StoriesCount, StoriesSeed), set.Lines);
        Assert.NotNull(set.Corrupted);
    }
}

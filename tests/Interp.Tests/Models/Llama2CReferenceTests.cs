using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>stories260K (a real pretrained TinyStories LLaMA in llama2.c format) against a plain per-position implementation.</summary>
public sealed class Llama2CReferenceTests
{
    [Fact]
    public void Logits_match_a_plain_per_position_implementation()
    {
        var reference = new Llama2CReference(TestModels.StoriesBin);
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var tokenizer = loaded.RequireTokenizer();
        var ids = tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside.", prependBos: true).ToList();
        // A stretch of arbitrary ids too, so that positions well past the prompt are compared.
        var rng = new Random(3);
        ids.AddRange(Enumerable.Range(0, 40).Select(_ => rng.Next(reference.Vocab)));
        var expected = reference.Forward(ids);

        using var scope = NewDisposeScope();
        var logits = loaded.Model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Count]))[0];
        var expectedTensor = tensor(expected.SelectMany(r => r).ToArray(), [ids.Count, reference.Vocab]);
        TensorAssert.Close(expectedTensor, logits, 2e-4, "stories260K logits");
    }

    [Fact]
    public void Greedy_generation_is_fluent_english()
    {
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var tok = loaded.RequireTokenizer();
        var prompt = tok.Encode("Once upon a time", prependBos: true);
        var generated = Interp.Models.Generation.GenerateGreedy(loaded.Model, prompt, 60);
        string text = tok.Decode(generated);
        // Fluent English here means: real words, most of them from a child's basic vocabulary, in sentences.
        var words = text.Split([' ', '.', ',', '!', '?', '"', '\n'], StringSplitOptions.RemoveEmptyEntries);
        Assert.True(words.Length >= 25, $"too few words: '{text}'");
        Assert.All(words, w => Assert.Matches("^[A-Za-z']+$", w));
        string[] common = ["a", "the", "was", "and", "to", "she", "he", "her", "his", "they", "it", "little", "girl", "boy", "named", "day", "there", "with", "in", "of", "play", "big", "saw", "wanted", "very", "one", "time", "lily", "tim", "ben", "mom", "happy", "loved", "had", "went", "said", "you", "i", "is", "not", "so", "on", "up", "park", "ball", "toy", "tree", "friend", "friends", "fun", "liked", "could"];
        double share = words.Count(w => common.Contains(w.ToLowerInvariant())) / (double)words.Length;
        Assert.True(share >= 0.4, $"only {share:P0} common words: '{text}'");
        Assert.Contains('.', text);
    }
}

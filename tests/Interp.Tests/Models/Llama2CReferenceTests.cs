using Interp.Models;
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
    public void Greedy_generation_is_the_references_token_for_token()
    {
        var reference = new Llama2CReference(TestModels.StoriesBin);
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var tok = loaded.RequireTokenizer();
        var prompt = tok.Encode("Once upon a time", prependBos: true);
        using var result = loaded.Model.Generate(prompt, new GenerationOptions { MaxNewTokens = 60 });
        var generated = result.Tokens[0];

        // The reference's own greedy decoding: the argmax of its last position, appended, 60 times.
        var tokens = prompt.ToList();
        for (int step = 0; step < 60; step++)
        {
            var last = reference.Forward(tokens)[^1];
            int best = Array.IndexOf(last, last.Max());
            double runnerUp = last.Where((_, i) => i != best).Max();
            Assert.True(generated[step] == best,
                $"step {step}: generated token {generated[step]} ('{tok.Decode([generated[step]])}'), the reference's argmax is {best} ('{tok.Decode([best])}', " +
                $"ahead of the next by {last[best] - runnerUp:g3}); text so far: '{tok.Decode(tokens.Skip(prompt.Length).ToArray())}'");
            tokens.Add(best);
        }
        Assert.Equal(60, generated.Length);
        Assert.Contains("Once upon a time", tok.Decode([.. prompt, .. generated]));
    }
}

#:project ../src/Interp.Run/Interp.Run.csproj
// The classic teaching example of self-attention: with Q = K = V = the input embeddings (no learned weights),
// the same word "mouse" comes out different in two sentences, because it averages in its context.
// Run: dotnet run experiments/mouse_context.cs [-- --out DIR]

using System.ComponentModel;
using Interp;
using Interp.Experiments;
using Interp.Plots;
using Interp.Results;
using ScottPlot;
using TorchSharp;
using static TorchSharp.torch;

return await Experiment.RunAsync<MouseContextSettings>(args, new("mouse_context", "Self-attention with Q = K = V = embeddings moves 'mouse' toward animal or tech by context", UsesModel: false),
    (context, settings, ct) => new MouseContextExperiment().RunAsync(context, ct));

/// <summary>Self-attention with Q = K = V = X on two sentences that share the word "mouse".</summary>
sealed class MouseContextExperiment
{
    // Hand-built embeddings: dimension 0 = animal, 1 = tech, 2 = everything else (function words).
    private static readonly Dictionary<string, float[]> Embeddings = new()
    {
        ["the"] = [0.0f, 0.0f, 1.0f],
        ["mouse"] = [1.0f, 1.0f, 0.2f],
        ["chased"] = [0.6f, 0.0f, 0.5f],
        ["cat"] = [2.0f, 0.0f, 0.2f],
        ["and"] = [0.0f, 0.0f, 1.0f],
        ["its"] = [0.0f, 0.0f, 1.0f],
        ["friends"] = [1.6f, 0.1f, 0.3f],
        ["keyboard"] = [0.0f, 2.0f, 0.2f],
        ["are"] = [0.0f, 0.0f, 1.0f],
        ["useful"] = [0.1f, 1.6f, 0.3f],
    };

    private static readonly string[][] Sentences =
    [
        ["the", "cat", "chased", "the", "mouse", "and", "its", "friends"],
        ["the", "mouse", "and", "keyboard", "are", "useful"],
    ];

    public async Task RunAsync(ExperimentContext context, CancellationToken cancellationToken)
    {
        using var scope = NewDisposeScope();
        var attention = new ParquetColumns();
        var embeddings = new ParquetColumns();
        var mouseVectors = new List<(string, double, double, Color)>();
        for (int s = 0; s < Sentences.Length; s++)
        {
            var words = Sentences[s];
            var x = stack(words.Select(w => tensor(Embeddings[w])).ToArray());   // [pos, d]
            using var sqrtD = Math.Sqrt(x.shape[1]).ToScalar();                  // owned: see Interp.Scalars
            var scores = x.matmul(x.t()).div(sqrtD);                             // Q·Kᵀ/√d with Q = K = X
            var weights = scores.softmax(-1);                                    // every word attends to every word
            var output = weights.matmul(x);                                      // weighted average of V = X
            var w = TensorData.ToMatrix(weights);
            var i = TensorData.ToMatrix(x);
            var o = TensorData.ToMatrix(output);
            for (int q = 0; q < words.Length; q++)
                for (int k = 0; k < words.Length; k++)
                    attention.Row(("sentence", s + 1), ("query", q), ("key", k), ("query_token", words[q]), ("key_token", words[k]), ("weight", (float)w[q, k]));
            for (int p = 0; p < words.Length; p++)
                foreach (var (stage, m) in new[] { ("input", i), ("output", o) })
                    embeddings.Row(("sentence", s + 1), ("position", p), ("token", words[p]), ("stage", stage), ("animal", (float)m[p, 0]), ("tech", (float)m[p, 1]));

            string label = string.Join(' ', words);
            context.SaveFigure($"attention_sentence{s + 1}.png", Figures.AttentionPattern(w, words, $"Self-attention weights: \"{label}\""),
                $"Sentence {s + 1}: softmax(X·Xᵀ/√d); row = the attending word, column = the word it attends to.", 700, 600);

            int mouse = Array.IndexOf(words, "mouse");
            double shift = (o[mouse, 0] - o[mouse, 1]) - (i[mouse, 0] - i[mouse, 1]);
            context.AddNumber($"mouse_shift_sentence{s + 1}", shift,
                $"change of mouse's (animal − tech) coordinate from input to output in \"{label}\" (> 0: toward animal, < 0: toward tech)");
            mouseVectors.Add(($"mouse out, sentence {s + 1}", o[mouse, 0], o[mouse, 1], s == 0 ? Colors.OrangeRed : Colors.RoyalBlue));
            if (s == 0) mouseVectors.Add(("mouse in", i[mouse, 0], i[mouse, 1], Colors.Gray));
            cancellationToken.ThrowIfCancellationRequested();
        }

        context.SaveFigure("mouse_animal_tech_plane.png",
            Figures.Vectors("\"mouse\" before and after self-attention", "animal dimension", "tech dimension", mouseVectors.ToArray()),
            "Mouse in the animal/tech plane: the same input moves toward animal beside cat/friends and toward tech beside keyboard/useful.", 700, 600);
        await context.WriteTableAsync("attention.parquet", attention.ToTable(),
            "attention weight of every (query, key) pair in both sentences", cancellationToken);
        await context.WriteTableAsync("embeddings.parquet", embeddings.ToTable(),
            "animal and tech coordinates of every word before (input) and after (output) self-attention", cancellationToken);
        context.AddText("Self-attention with no learned weights is a similarity-weighted average: each word's output is the mean of " +
                        "all words, weighted by the softmax of their dot products with it. 'mouse' is as much animal as tech on input; " +
                        "its neighbours decide which way its output leans.");
    }
}

/// <summary>Settings of mouse_context (--set key=value).</summary>
sealed record MouseContextSettings
{

}

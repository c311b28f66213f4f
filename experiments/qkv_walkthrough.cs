#:project ../src/Interp.Run/Interp.Run.csproj
// Attention step by step on "The car is red": learn small W_Q, W_K, W_V (AdamW, ~100 steps) so that
// "is" and "red" look at "car" and read its embedding, then print and plot every stage: Q, K, V, scores, scaled scores, softmax weights,
// and the weighted values.
// Run: dotnet run experiments/qkv_walkthrough.cs [-- --set steps=300]

using System.Globalization;
using System.Text;
using System.ComponentModel;
using Interp.Experiments;
using Interp.Plots;
using Interp.Results;
using Interp.Training;
using Interp;
using TorchSharp;
using static TorchSharp.torch;

return await Experiment.RunAsync<QkvWalkthroughSettings>(args, new("qkv_walkthrough", "\"The car is red\": learned W_Q, W_K, W_V and every stage of attention, step by step", UsesModel: false),
    (context, settings, ct) => new QkvWalkthroughExperiment(settings).RunAsync(context, ct));

/// <summary>One causal attention head on "The car is red", learned and then taken apart stage by stage.</summary>
sealed class QkvWalkthroughExperiment(QkvWalkthroughSettings settings)
{
    private static readonly string[] Words = ["The", "car", "is", "red"];
    // Which earlier word each word should read (a causal head can only look back): the noun, once there is one.
    private static readonly int[] Target = [0, 0, 1, 1];
    private const int DModel = 4, DHead = 4;

    public async Task RunAsync(ExperimentContext context, CancellationToken cancellationToken)
    {
        int steps = settings.Steps;
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)context.Seed);
        // Hand-picked embeddings: determiner, noun, verb, adjective; a little overlap so the task is not trivial.
        var x = tensor(new float[] { 1.0f, 0.1f, 0.0f, 0.2f,   0.1f, 1.0f, 0.2f, 0.0f,   0.0f, 0.2f, 1.0f, 0.1f,   0.2f, 0.0f, 0.1f, 1.0f }, [4, DModel]);
        // Every number libtorch reads is an owned Scalar (see Interp.Scalars): an implicit one can be freed mid-call.
        using Scalar initScale = 0.5.ToScalar(), sqrtDHead = Math.Sqrt(DHead).ToScalar();
        var wQ = new TorchSharp.Modules.Parameter(randn(DModel, DHead, generator: generator).mul(initScale));
        var wK = new TorchSharp.Modules.Parameter(randn(DModel, DHead, generator: generator).mul(initScale));
        var wV = new TorchSharp.Modules.Parameter(randn(DModel, DHead, generator: generator).mul(initScale));
        var target = tensor(Target.Select(t => (long)t).ToArray());
        var mask = ones(4, 4, dtype: ScalarType.Bool).triu(1);
        using var optimizer = new AdamWOptimizer([wQ, wK, wV], lr: 0.01, beta1: 0.9, beta2: 0.999);
        var losses = new double[steps];
        for (int step = 0; step < steps; step++)
        {
            using var stepScope = NewDisposeScope();
            cancellationToken.ThrowIfCancellationRequested();
            optimizer.ZeroGrad();
            var scores = x.matmul(wQ).matmul(x.matmul(wK).t()).div(sqrtDHead).masked_fill(mask, Scalars.NegativeInfinity);
            // Loss: each word's attention should land on its target word (pattern), and what it reads should be that
            // word's embedding (message).
            var output = scores.softmax(-1).matmul(x.matmul(wV));
            var loss = nn.functional.cross_entropy(scores, target).add(nn.functional.mse_loss(output, x.index_select(0, target)), Scalars.One);
            loss.backward();
            optimizer.Step();
            losses[step] = loss.item<float>();
            context.ReportProgress($"learning W_Q, W_K, W_V: loss {losses[step]:F3}", (step + 1.0) / steps);
        }

        using var _ = no_grad();
        var q = x.matmul(wQ);                                     // [4, d_head]
        var k = x.matmul(wK);
        var v = x.matmul(wV);
        var raw = q.matmul(k.t());                                // Q·Kᵀ
        var scaled = raw.div(sqrtDHead);                          // ÷ √d_head
        var masked = scaled.masked_fill(mask, Scalars.NegativeInfinity);
        var weights = masked.softmax(-1);                         // each row sums to 1
        var z = weights.matmul(v);                                // weighted values

        var stages = new (string Name, Tensor T, string Caption)[]
        {
            ("queries", q, "Q = X·W_Q: what each word is looking for."),
            ("keys", k, "K = X·W_K: what each word offers to be found by."),
            ("values", v, "V = X·W_V: what each word passes on when attended to."),
            ("scores", raw, "Q·Kᵀ: raw match between every query and every key."),
            ("scaled_scores", scaled, "Q·Kᵀ/√d_head: scaled so that the softmax does not saturate as d_head grows."),
            ("weights", weights, "softmax over keys of the masked, scaled scores (a word sees only itself and earlier words): each row sums to 1."),
            ("output", z, "weights·V: each word's output is the weighted average of the values it attends to."),
        };
        context.AddText("Step by step, on \"The car is red\" (rows are words; a word sees only itself and earlier words).");
        var rows = new ParquetColumns();
        foreach (var (name, t, caption) in stages)
        {
            var m = TensorData.ToMatrix(t);
            bool square = name is "scores" or "scaled_scores" or "weights"; // [word, word]; the others are [word, dimension]
            string[] columns = square ? Words : Enumerable.Range(0, m.GetLength(1)).Select(i => $"d{i}").ToArray();
            context.AddText($"**{name}** — {caption}\n\n{MarkdownMatrix(m, Words, columns)}");
            context.Logger.LogStage(name, m);
            for (int r = 0; r < m.GetLength(0); r++)
                for (int c = 0; c < m.GetLength(1); c++)
                    rows.Row(("stage", name), ("row_token", Words[r]), ("column", columns[c]), ("value", double.IsFinite(m[r, c]) ? (float)m[r, c] : float.NaN));
            context.SaveFigure($"{name}.png",
                Figures.Matrix(m, $"{name}", square ? "key word" : "dimension", "word", Words, columns, name, annotate: true), caption, 600, 500);
        }
        context.SaveFigure("training_loss.png",
            Figures.Lines("Learning W_Q, W_K and W_V", "step", "loss (attention cross-entropy + output MSE)", Enumerable.Range(0, steps).Select(i => (double)i).ToArray(), ("loss", losses)),
            "The head learns to send 'is' and 'red' to 'car' and to copy its embedding.", 800, 450);
        await context.WriteTableAsync("stages.parquet", rows.ToTable(), "every stage of the head, one row per (stage, word, column)", cancellationToken);
        var w = TensorData.ToMatrix(weights);
        context.AddNumber("red_to_car", w[3, 1], "attention weight from 'red' to 'car' after learning");
        context.AddNumber("final_loss", losses[^1], "training loss at the last step");
    }

    private static string MarkdownMatrix(double[,] m, string[] rows, string[] columns)
    {
        var sb = new StringBuilder("| | " + string.Join(" | ", columns) + " |\n|---|" + string.Concat(Enumerable.Repeat("---|", columns.Length)) + "\n");
        for (int r = 0; r < m.GetLength(0); r++)
            sb.Append($"| {rows[r]} | ").AppendJoin(" | ", Enumerable.Range(0, m.GetLength(1)).Select(c => double.IsFinite(m[r, c]) ? m[r, c].ToString("0.000", CultureInfo.InvariantCulture) : "−∞")).AppendLine(" |");
        return sb.ToString();
    }
}

static class StageLog
{
    /// <summary>Prints a stage to the log, as the walkthrough's "printing" part.</summary>
    public static void LogStage(this Microsoft.Extensions.Logging.ILogger logger, string name, double[,] m)
    {
        var lines = Enumerable.Range(0, m.GetLength(0)).Select(r =>
            string.Join("  ", Enumerable.Range(0, m.GetLength(1)).Select(c => double.IsFinite(m[r, c]) ? m[r, c].ToString("+0.000;-0.000", CultureInfo.InvariantCulture) : "  -inf")));
        Microsoft.Extensions.Logging.LoggerExtensions.LogInformation(logger, "{Stage}:\n  {Rows}", name, string.Join("\n  ", lines));
    }
}

/// <summary>Settings of qkv_walkthrough (--set key=value).</summary>
sealed record QkvWalkthroughSettings
{
    [Description("training steps of the one-head model")]
    public int Steps { get; init; } = 100;
}

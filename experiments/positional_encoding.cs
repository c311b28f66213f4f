#:project ../src/Interp.Run/Interp.Run.csproj
// The original Transformer's sinusoidal position table, PE(pos, 2i) = sin(pos/10000^(2i/D)),
// PE(pos, 2i+1) = cos(pos/10000^(2i/D)), and how similar positions are to each other under it.
// Run: dotnet run experiments/positional_encoding.cs [-- --set positions=64 --set d_model=128]

using System.ComponentModel;
using Interp;
using Interp.Experiments;
using Interp.Models;
using Interp.Plots;
using Interp.Results;
using TorchSharp;
using static TorchSharp.torch;

return await Experiment.RunAsync<PositionalEncodingSettings>(args, new("positional_encoding", "The sinusoidal position table and the similarity between positions", UsesModel: false),
    (context, settings, ct) => new PositionalEncodingExperiment(settings).RunAsync(context, ct));

/// <summary>The sinusoidal position table as a heatmap, and the dot-product similarity between positions.</summary>
sealed class PositionalEncodingExperiment(PositionalEncodingSettings settings)
{
    public async Task RunAsync(ExperimentContext context, CancellationToken cancellationToken)
    {
        int positions = settings.Positions, dModel = settings.DModel;
        if (positions < 2 || dModel < 2 || dModel % 2 != 0 || positions * dModel > 1 << 24)
            throw new Interp.InterpException($"positions ({positions}) must be ≥ 2 and d_model ({dModel}) even and ≥ 2, at most 16 M entries in all");
        using var scope = NewDisposeScope();
        // The table the model itself uses for PositionalKind.Sinusoidal.
        using var embed = new PosEmbed(new ModelConfig { DModel = dModel, NLayers = 0, NHeads = 1, DVocab = 1, NCtx = positions, Positional = PositionalKind.Sinusoidal });
        var pe = embed.W_pos;                                            // [pos, d_model]
        using var halfD = (dModel / 2.0).ToScalar();                     // owned: see Interp.Scalars
        var similarity = pe.matmul(pe.t()).div(halfD);                   // each row has squared norm d_model/2
        var table = TensorData.ToMatrix(pe);
        var sim = TensorData.ToMatrix(similarity);

        context.SaveFigure("sinusoidal_table.png",
            Figures.Matrix(table, $"Sinusoidal positional encoding ({positions} positions × {dModel} dims)", "dimension", "position", colorbarLabel: "PE(pos, dim)"),
            "PE(pos, 2i) = sin(pos/10000^(2i/D)), PE(pos, 2i+1) = cos(…): low dimensions oscillate fast, high ones slowly.", 900, 700);
        context.SaveFigure("position_similarity.png",
            Figures.Matrix(sim, "Similarity between positions (PE·PEᵀ, normalised)", "position", "position", colorbarLabel: "cosine similarity"),
            "Cosine similarity between position codes: it depends only on the distance between positions and falls off with it.", 800, 700);
        var distances = Enumerable.Range(0, positions).Select(d => (double)d).ToArray();
        var byDistance = distances.Select(d => Enumerable.Range(0, positions - (int)d).Average(p => sim[p, p + (int)d])).ToArray();
        context.SaveFigure("similarity_by_distance.png",
            Figures.Lines("Mean similarity vs distance", "distance |p − q|", "mean cosine similarity", distances, ("PE", byDistance)),
            "Averaged over all pairs at each distance: near positions look alike, far ones less so.", 800, 500);

        var rows = new ParquetColumns();
        for (int p = 0; p < positions; p++)
            for (int d = 0; d < dModel; d++)
                rows.Row(("position", p), ("dimension", d), ("value", (float)table[p, d]));
        await context.WriteTableAsync("positional_encoding.parquet", rows.ToTable(), "the sinusoidal table, one row per (position, dimension)", cancellationToken);
        context.AddNumber("similarity_distance_1", byDistance[1], "mean cosine similarity of neighbouring positions");
        context.AddNumber($"similarity_distance_{positions - 1}", byDistance[^1], "cosine similarity of the first and last positions");
        // Shift invariance: PE(p+k) is a fixed rotation of PE(p), so similarity depends only on p − q.
        double spread = Enumerable.Range(0, positions - 1).Max(p => Math.Abs(sim[p, p + 1] - byDistance[1]));
        context.AddNumber("shift_invariance_error", spread, "largest deviation of sim(p, p+1) from its mean over p (0 = depends only on distance)", "0.0e0");
    }
}

/// <summary>Settings of positional_encoding (--set key=value).</summary>
sealed record PositionalEncodingSettings
{
    [Description("positions in the table")]
    public int Positions { get; init; } = 64;
    [Description("dimensions of the table (even)")]
    public int DModel { get; init; } = 128;
}

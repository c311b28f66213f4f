#:project ../src/Interp.Run/Interp.Run.csproj
// Every head split into its pattern circuit W_Q·W_Kᵀ (where a token looks) and its message circuit W_V·W_O (what it
// moves), compared side by side: spectra, copying scores, Q/K/V composition against a random baseline, the strongest
// token → token and token → logit entries, and how the weights line up with what the heads do.
// Run: dotnet run experiments/pattern_vs_message.cs [-- --model PATH] [--set top_k=20] [--set process_weights=false]

using System.ComponentModel;
using System.Globalization;
using Interp;
using Interp.Analysis;
using Interp.Circuits;
using Interp.Experiments;
using Interp.Loading;
using Interp.Models;
using Interp.Plots;
using Interp.Results;
using static TorchSharp.torch;

return await Experiment.RunAsync<PatternVsMessageSettings>(args, new("pattern_vs_message", "Split every head into its pattern (QK) and message (OV) circuits: spectra, copying and composition scores, top token entries"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var model = loaded.Model;
    var cfg = model.Config;
    using var scope = NewDisposeScope();
    using var _ = no_grad();
    if (settings.ProcessWeights)
        context.ProcessWeights(model, "the circuits below include the norms' gains.");

    context.ReportProgress("scoring head behaviour", 0.05);
    var input = settings.Input(cfg).Draw(loaded, context.Seed);
    var behaviour = HeadDetection.Score(model, input.Tokens, input.Half, ct);
    await context.WriteTableAsync("head_scores.parquet", behaviour.ToTable(),
        "previous-token, duplicate-token and induction score of every head on repeated random sequences", ct);

    context.ReportProgress("spectra and scores", 0.15);
    var circuits = HeadCircuitSummary.Compute(model);
    await context.WriteTableAsync("head_circuits.parquet", circuits.ToTable(),
        "every head's pattern (QK) and message (OV) circuit: singular values, norms, effective rank, and the full circuit through tokens", ct);
    ct.ThrowIfCancellationRequested();

    context.ReportProgress("composition", 0.3);
    var baseline = Composition.Baseline(cfg, settings.BaselineSamples, context.Seed);
    var composition = Enum.GetValues<CompositionKind>().ToDictionary(k => k, k => Composition.Scores(model, k));
    await context.WriteTableAsync("composition.parquet", CompositionTable(composition, baseline),
        $"Q-, K- and V-composition score of every earlier head → later head pair, with the mean (and std) over {settings.BaselineSamples} random matrix pairs of the same shapes", ct);

    if (cfg.NLayers > 1)
        await context.AddViewAsync(new HeatmapView("Composition scores", "How much each earlier head's message feeds each later head's query, key or value (from head × to head); choose Q, K or V.",
            "composition.parquet", ["from_layer", "from_head"], ["to_layer", "to_head"], "score", "kind"), ct);

    context.ReportProgress("top entries", 0.4);
    var top = await TopEntriesAsync(context, loaded, settings.TopK, ct);

    context.ReportProgress("figures", 0.85);
    Summarise(context, loaded, circuits, behaviour, composition, baseline, top);
    DrawFigures(context, model, circuits, behaviour, composition, baseline);
    context.ReportProgress("done", 1.0);
});

static ParquetTable CompositionTable(Dictionary<CompositionKind, Tensor> composition, (double Mean, double Std) baseline)
{
    var rows = new ParquetColumns();
    foreach (var (kind, scores) in composition)
    {
        var v = Values4(scores);
        for (int l1 = 0; l1 < v.GetLength(0); l1++)
            for (int h1 = 0; h1 < v.GetLength(1); h1++)
                for (int l2 = l1 + 1; l2 < v.GetLength(2); l2++)
                    for (int h2 = 0; h2 < v.GetLength(3); h2++)
                        rows.Row(("kind", kind.ToString()), ("from_layer", l1), ("from_head", h1), ("to_layer", l2), ("to_head", h2),
                            ("score", v[l1, h1, l2, h2]), ("baseline", baseline.Mean), ("baseline_std", baseline.Std));
    }
    // A one-layer model has no pairs; an empty table with the same columns still says so.
    return rows.RowCount > 0 ? rows.ToTable() : new ParquetTable()
        .Add("kind", Array.Empty<string>()).Add("from_layer", Array.Empty<int>()).Add("from_head", Array.Empty<int>())
        .Add("to_layer", Array.Empty<int>()).Add("to_head", Array.Empty<int>()).Add("score", Array.Empty<double>())
        .Add("baseline", Array.Empty<double>()).Add("baseline_std", Array.Empty<double>());
}

// <summary>The top-k entries of every head's full pattern (query token → key token) and full message
// (attended token → logit) circuits, streamed per head so that no d_vocab × d_vocab matrix is held.</summary>
static async Task<Dictionary<(int, int, Circuit), MatrixEntry[]>> TopEntriesAsync(ExperimentContext context, LoadedModel loaded, int k, CancellationToken ct)
{
    var model = loaded.Model;
    var cfg = model.Config;
    var result = new Dictionary<(int, int, Circuit), MatrixEntry[]>();
    var rows = new ParquetColumns();
    var we = model.Embed.W_E.detach();
    var wu = model.Unembed.W_U.detach();
    using var qk = HeadCircuits.Pattern(model);
    using var ov = HeadCircuits.Message(model);
    for (int l = 0; l < cfg.NLayers; l++)
        for (int h = 0; h < cfg.NHeads; h++)
        {
            ct.ThrowIfCancellationRequested();
            foreach (var circuit in new[] { Circuit.Pattern, Circuit.Message })
            {
                using var step = NewDisposeScope();
                using var head = (circuit == Circuit.Pattern ? qk : ov)[l, h];
                using var withLeft = head.LeftMatmul(we);
                using var full = withLeft.Matmul(circuit == Circuit.Pattern ? we.mT : wu);
                var entries = full.TopEntries(k);
                result[(l, h, circuit)] = entries;
                for (int r = 0; r < entries.Length; r++)
                    rows.Row(("layer", l), ("head", h), ("circuit", Name(circuit)), ("rank", r + 1),
                        ("source_id", (int)entries[r].Row), ("target_id", (int)entries[r].Column),
                        ("source_token", TokenText(loaded, (int)entries[r].Row)), ("target_token", TokenText(loaded, (int)entries[r].Column)),
                        ("value", entries[r].Value));
            }
            context.ReportProgress($"top entries: head {l}.{h}", 0.4 + 0.45 * (l * cfg.NHeads + h + 1) / (cfg.NLayers * cfg.NHeads));
        }
    await context.WriteTableAsync("top_entries.parquet", rows.ToTable(),
        $"the {k} largest entries of every head's full pattern circuit W_E·QK·W_Eᵀ (source = query token, target = key token) and full message circuit W_E·OV·W_U (source = attended token, target = logit)", ct);
    return result;
}

static void DrawFigures(ExperimentContext context, HookedTransformer model, HeadCircuitSummary circuits, HeadScores behaviour,
    Dictionary<CompositionKind, Tensor> composition, (double Mean, double Std) baseline)
{
    var cfg = model.Config;
    int layerHeadWidth = Math.Max(500, 90 * cfg.NHeads + 200), layerHeadHeight = Math.Max(300, 70 * cfg.NLayers + 150);
    for (int l = 0; l < cfg.NLayers; l++)
    {
        var pairs = Enumerable.Range(0, cfg.NHeads)
            .Select(h => ($"{l}.{h}", circuits.Spectrum(l, h, Circuit.Pattern).SingularValues, circuits.Spectrum(l, h, Circuit.Message).SingularValues))
            .ToArray();
        context.SaveFigure($"spectra_layer_{l}.png", Figures.Spectra($"Layer {l}: singular values of pattern (QK) and message (OV) circuits", "pattern", "message", pairs),
            $"Layer {l}: each head's pattern spectrum (solid) and message spectrum (dashed), normalised by the largest value; a fast fall-off means the circuit uses few directions.", 1000, 550);
    }

    var maps = new (string File, double[,] Values, string Title, string Caption)[]
    {
        ("copying_score.png", circuits.Map(Circuit.Message, s => s.EigenScore), "Copying score of the message circuit",
            "Copying score Σλ/Σ|λ| of each head's full message circuit W_E·OV·W_U: 1 = attending to a token raises that token's logit."),
        ("same_token_score.png", circuits.Map(Circuit.Pattern, s => s.EigenScore), "Same-token score of the pattern circuit",
            "The same eigenvalue score of each head's full pattern circuit W_E·QK·W_Eᵀ: 1 = tokens attend to copies of themselves, −1 = they avoid them."),
        ("pattern_effective_rank.png", circuits.Map(Circuit.Pattern, s => s.Spectrum.EffectiveRank), "Effective rank of the pattern circuit",
            $"Effective rank (exp of the entropy of normalised singular values) of each head's QK, out of at most {cfg.HeadDim}."),
        ("message_effective_rank.png", circuits.Map(Circuit.Message, s => s.Spectrum.EffectiveRank), "Effective rank of the message circuit",
            $"Effective rank of each head's OV, out of at most {cfg.HeadDim}."),
        ("pattern_norm.png", circuits.Map(Circuit.Pattern, s => s.Spectrum.FrobeniusNorm), "‖QK‖_F per head", "Frobenius norm of each head's pattern circuit W_Q·W_Kᵀ."),
        ("message_norm.png", circuits.Map(Circuit.Message, s => s.Spectrum.FrobeniusNorm), "‖OV‖_F per head", "Frobenius norm of each head's message circuit W_V·W_O."),
        ("induction_score.png", behaviour.Values[HeadScoreKind.Induction], "Induction score per head", "Induction score of each head on repeated random sequences (what the head does, for comparison)."),
        ("previous_token_score.png", behaviour.Values[HeadScoreKind.PreviousToken], "Previous-token score per head", "Previous-token score of each head on repeated random sequences."),
    };
    foreach (var (file, values, title, caption) in maps)
        context.SaveFigure(file, Figures.LayerHead(values, title, ""), caption, layerHeadWidth, layerHeadHeight);

    if (cfg.NLayers > 1)
    {
        var from = Enumerable.Range(0, cfg.NLayers - 1).SelectMany(l => Enumerable.Range(0, cfg.NHeads).Select(h => (l, h))).ToArray();
        var to = Enumerable.Range(1, cfg.NLayers - 1).SelectMany(l => Enumerable.Range(0, cfg.NHeads).Select(h => (l, h))).ToArray();
        foreach (var (kind, scores) in composition)
        {
            var v = Values4(scores);
            var matrix = new double[from.Length, to.Length];
            for (int i = 0; i < from.Length; i++)
                for (int j = 0; j < to.Length; j++) matrix[i, j] = v[from[i].l, from[i].h, to[j].l, to[j].h];
            int size = Math.Max(600, 40 * Math.Max(from.Length, to.Length) + 250);
            context.SaveFigure($"composition_{kind.ToString().ToLowerInvariant()}.png",
                Figures.Matrix(matrix, $"{kind}-composition (random baseline {baseline.Mean:0.000} ± {baseline.Std:0.000})", "later head (reads)", "earlier head (writes)",
                    from.Select(p => $"{p.l}.{p.h}").ToArray(), to.Select(p => $"{p.l}.{p.h}").ToArray(), "score", annotate: true),
                $"{kind}-composition of each earlier head's message with each later head's {(kind == CompositionKind.V ? "message" : kind == CompositionKind.Q ? "queries" : "keys")}; blank = not an earlier → later pair.",
                size, size - 100);
        }
    }

    var heads = Enumerable.Range(0, cfg.NLayers).SelectMany(l => Enumerable.Range(0, cfg.NHeads).Select(h => (l, h))).ToArray();
    var copying = circuits.Map(Circuit.Message, s => s.EigenScore);
    foreach (var kind in new[] { HeadScoreKind.Induction, HeadScoreKind.PreviousToken })
    {
        string name = HeadScores.Name(kind).Replace('_', '-');
        context.SaveFigure($"copying_vs_{HeadScores.Name(kind)}.png",
            Figures.Scatter($"Copying score vs {name} score", $"{name} score (behaviour)", "copying score (message circuit)",
                heads.Select(p => ($"{p.l}.{p.h}", behaviour.Values[kind][p.l, p.h], copying[p.l, p.h])).ToArray(), (-0.05, 1.05), (-1.05, 1.05), yLine: 0),
            $"Each head's copying score (from its weights) against its {name} score (from its attention on repeated sequences).", 800, 600);
    }
    context.SaveFigure("pattern_vs_message_strength.png",
        Figures.Scatter("Pattern strength vs message strength", "‖QK‖_F (pattern)", "‖OV‖_F (message)",
            heads.Select(p => ($"{p.l}.{p.h}", circuits.Spectrum(p.l, p.h, Circuit.Pattern).FrobeniusNorm, circuits.Spectrum(p.l, p.h, Circuit.Message).FrobeniusNorm)).ToArray()),
        "Each head's pattern circuit norm against its message circuit norm.", 800, 600);

    if (model.PosEmbed is not null)
    {
        var prev = behaviour.Best(HeadScoreKind.PreviousToken);
        int n = Math.Min(cfg.NCtx, 32);
        using var step = NewDisposeScope();
        using var positional = FullCircuits.PositionalPattern(model);
        using var head = positional[prev.Layer, prev.Head];
        var dense = TensorData.ToMatrix(head.AB()[..n, ..n]);
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) dense[i, j] = double.NaN;    // keys after the query are masked
        var labels = Enumerable.Range(0, n).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        context.SaveFigure("positional_pattern.png",
            Figures.Matrix(dense, $"Positional pattern W_pos·QK·W_pos^T of head {prev.Layer}.{prev.Head} (best previous-token head)", "key position", "query position", labels, labels, "score"),
            $"How much the position embeddings alone make query position i attend to key position j in head {prev.Layer}.{prev.Head}; a bright sub-diagonal is a previous-token head.", 900, 800);
    }
}

static void Summarise(ExperimentContext context, LoadedModel loaded, HeadCircuitSummary circuits, HeadScores behaviour,
    Dictionary<CompositionKind, Tensor> composition, (double Mean, double Std) baseline, Dictionary<(int, int, Circuit), MatrixEntry[]> top)
{
    var cfg = loaded.Model.Config;
    // Induction heads: every head after layer 0 with an induction score of at least 0.5 (the best one if none is).
    var induction = behaviour.Values[HeadScoreKind.Induction];
    var candidates = Enumerable.Range(Math.Min(1, cfg.NLayers - 1), cfg.NLayers - Math.Min(1, cfg.NLayers - 1))
        .SelectMany(l => Enumerable.Range(0, cfg.NHeads).Select(h => (Layer: l, Head: h, Score: induction[l, h])))
        .OrderByDescending(c => c.Score).ToArray();
    var inductionHeads = candidates.Where(c => c.Score >= 0.5).DefaultIfEmpty(candidates[0]).ToArray();
    var ind = inductionHeads[0];
    var prev = Enumerable.Range(0, Math.Max(1, ind.Layer)).Select(l => behaviour.Best(HeadScoreKind.PreviousToken, l)).MaxBy(b => b.Score);
    double copying = circuits.Get(ind.Layer, ind.Head, Circuit.Message).EigenScore;
    context.AddNumber("induction_head_layer", ind.Layer, "layer of the strongest induction head (by behaviour)", "0");
    context.AddNumber("induction_head", ind.Head, "index of the strongest induction head", "0");
    context.AddNumber("induction_head_copying_score", copying, $"copying score of head {ind.Layer}.{ind.Head}'s message circuit");
    context.AddNumber("composition_baseline", baseline.Mean, "mean composition score of random matrices of the same shapes");
    if (cfg.NLayers > 1 && prev.Layer < ind.Layer)
    {
        var k = Values4(composition[CompositionKind.K]);
        var all = k.Cast<double>().Where(double.IsFinite).OrderDescending().ToArray();
        var best = MaxPair(k);
        context.AddNumber("largest_k_composition", best.Value, $"the largest K-composition of any pair: {best.From} → {best.To}");
        context.AddNumber("k_composition_previous_token_to_induction", k[prev.Layer, prev.Head, ind.Layer, ind.Head],
            $"K-composition of previous-token head {prev.Layer}.{prev.Head} → induction head {ind.Layer}.{ind.Head}");
        var lines = inductionHeads.Select(i =>
        {
            double score = k[prev.Layer, prev.Head, i.Layer, i.Head];
            int rank = Array.IndexOf(all, score) + 1;
            return $"head **{i.Layer}.{i.Head}** (induction score {i.Score:0.00}, copying score {circuits.Get(i.Layer, i.Head, Circuit.Message).EigenScore:0.00}): " +
                   $"K-composition with {prev.Layer}.{prev.Head} **{score:0.000}**, rank {rank} of {all.Length} pairs";
        });
        context.AddText($"**Pattern vs message.** Previous-token head **{prev.Layer}.{prev.Head}** (score {prev.Score:0.00}); induction heads " +
                        $"(induction score ≥ 0.5, or the best one): {string.Join("; ", lines)}. Random baseline {baseline.Mean:0.000} ± {baseline.Std:0.000}; " +
                        $"the largest K-composition of any pair is {best.Value:0.000} ({best.From} → {best.To}).");
    }
    foreach (var (role, l, h) in new[] { ("induction", ind.Layer, ind.Head), ("previous-token", prev.Layer, prev.Head) })
    {
        var lines = new List<string>
        {
            $"**Head {l}.{h} ({role})**: strongest entries of its full pattern circuit (query → key token) and full message circuit (attended token → logit).",
            "",
            "| rank | pattern: query → key | value | message: attended → logit | value |",
            "|---:|---|---:|---|---:|",
        };
        var p = top[(l, h, Circuit.Pattern)];
        var m = top[(l, h, Circuit.Message)];
        for (int r = 0; r < Math.Min(Math.Min(p.Length, m.Length), 8); r++)
            lines.Add($"| {r + 1} | {Md(TokenText(loaded, (int)p[r].Row))} → {Md(TokenText(loaded, (int)p[r].Column))} | {p[r].Value:0.00} " +
                      $"| {Md(TokenText(loaded, (int)m[r].Row))} → {Md(TokenText(loaded, (int)m[r].Column))} | {m[r].Value:0.00} |");
        context.AddText(string.Join("\n", lines));
    }
}

static (double Value, string From, string To) MaxPair(double[,,,] v)
{
    var best = (Value: double.NegativeInfinity, From: "", To: "");
    for (int l1 = 0; l1 < v.GetLength(0); l1++)
        for (int h1 = 0; h1 < v.GetLength(1); h1++)
            for (int l2 = 0; l2 < v.GetLength(2); l2++)
                for (int h2 = 0; h2 < v.GetLength(3); h2++)
                    if (v[l1, h1, l2, h2] > best.Value) best = (v[l1, h1, l2, h2], $"{l1}.{h1}", $"{l2}.{h2}");
    return best;
}

static double[,,,] Values4(Tensor scores)
{
    var s = scores.shape;
    var flat = scores.to(ScalarType.Float64).cpu().data<double>().ToArray();
    var v = new double[s[0], s[1], s[2], s[3]];
    Buffer.BlockCopy(flat, 0, v, 0, flat.Length * sizeof(double));
    return v;
}

static string Name(Circuit circuit) => circuit == Circuit.Pattern ? "pattern" : "message";

static string TokenText(LoadedModel loaded, int id) => loaded.Tokenizer?.ToStrTokens([id])[0] ?? id.ToString(CultureInfo.InvariantCulture);

static string Md(string token) => "`" + token.Replace("`", "'").Replace("|", "\\|").Replace("\n", "\\n") + "`";

/// <summary>Settings of pattern_vs_message (--set key=value).</summary>
sealed record PatternVsMessageSettings : RepeatedInputSettings
{
    [Description("Entries kept per head and circuit in top_entries.parquet.")]
    public int TopK { get; init; } = 10;
    [Description("Random matrix pairs drawn for the composition baseline.")]
    public int BaselineSamples { get; init; } = 256;
    [Description("Process the weights first (fold LN, centre writing weights and unembedding, fold value biases), as TransformerLens's from_pretrained does, so that circuits include the norms' gains.")]
    public bool ProcessWeights { get; init; } = true;
}

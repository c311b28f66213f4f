#:project ../src/Interp.Run/Interp.Run.csproj
// The residual stream explained through an LSTM, measured: the LSTM's cell state is memory updated a little at each
// step as the residual stream is memory every head adds to; the input gate plays the pattern (what is relevant now),
// the output gate the message (what is passed on). An LSTM of the built-in transformer's size is trained on the
// built-in model's recipe (same data, vocabulary, seeds and steps), and both models are run on the same [BOS] r r:
// loss per position, the writes (‖c_t − c_{t−1}‖ beside each component's residual write), the memory (a least-squares
// probe from the state to the token k back), and the gates beside the induction head's attention.
// With --prompts FILE (JSON Lines {"tokens": [ids]} in the built-in vocabulary) the same measurements run on those sequences.
// Run: dotnet run experiments/lstm_analogy.cs [-- --set lstm_steps=3000] [--set lstm=RUN/lstm] [--prompts FILE]

using System.ComponentModel;
using System.Globalization;
using Interp;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Plots;
using Interp.Prompts;
using Interp.Results;
using Interp.Training;
using static TorchSharp.torch;

return await Experiment.RunAsync<LstmAnalogySettings>(args, new("lstm_analogy", "The LSTM analogy measured: an LSTM of the built-in model's size and recipe beside the transformer (loss, cell-state vs residual writes, probes of memory, gates vs attention)"), async (context, settings, ct) =>
{
    var loaded = context.Model;
    var transformer = loaded.Model;
    var cfg = transformer.Config;
    if (cfg.DVocab != LstmRecipe.Data.VocabSize || !cfg.Causal)
        throw new InterpException($"lstm_analogy compares a causal transformer with an LSTM trained on the built-in model's recipe (vocabulary {LstmRecipe.Data.VocabSize}); " +
                                  $"{cfg.Name} has d_vocab {cfg.DVocab}{(cfg.Causal ? "" : " and is not causal")}. Run it on the built-in model or one of the same vocabulary.");
    foreach (var (key, value, least) in new[] { ("lstm_steps", settings.LstmSteps, 1), ("lstm_hidden", settings.LstmHidden, 1), ("lstm_layers", settings.LstmLayers, 1), ("probe_batch", settings.ProbeBatch, 1), ("batch", settings.Batch, 1) })
        if (value < least) throw new InterpException($"setting '{key}' must be at least {least}, got {value}");
    using var scope = NewDisposeScope();

    // 1. The LSTM: trained here by the built-in model's recipe, or loaded from an earlier run.
    var (lstm, training) = await GetLstmAsync(context, settings, ct);
    using var lstmOwner = lstm;
    using var _ = no_grad();

    // 2. The input: repeated random sequences, or the researcher's token sequences.
    context.ReportProgress("running both models", 0.6);
    Tensor tokens;
    Tensor? mask = null;
    RepeatedHalves? halves = null;
    int half = 0;
    string inputLabel;
    if (settings.Prompts is { } file)
    {
        var padded = TokenSequences.Load(file, cfg.DVocab, cfg.NCtx);
        (tokens, mask) = (padded.Tokens, padded.AttentionMask);
        inputLabel = $"the {padded.Count} sequences of {Path.GetFileName(file)} ({padded.Lengths.Min()}–{padded.MaxLength} tokens)";
    }
    else
    {
        var input = settings.Input(cfg).Draw(loaded, context.Seed);
        (tokens, halves, half) = (input.Tokens, RepeatedHalves.Of(input), input.Half);
        inputLabel = $"{tokens.shape[0]} sequences [BOS] r r with r {half} random tokens";
    }
    int batch = (int)tokens.shape[0], positions = (int)tokens.shape[1];
    var real = (mask ?? ones_like(tokens)).to(ScalarType.Float64);                                  // [batch, pos]

    var (tLogits, tCache) = transformer.RunWithCache(tokens, mask, n => ResidualWrites.CacheFilter(n) || HookNames.Is(n, HookNames.Pattern) || HookNames.Is(n, HookNames.ResidPost));
    var (lLogits, lCache) = lstm.RunWithCache(tokens);
    using var tCacheOwner = tCache;
    using var lCacheOwner = lCache;
    var scores = halves is not null ? HeadDetection.Score(transformer, tokens, half, ct) : null;
    ct.ThrowIfCancellationRequested();

    // 3. Loss per position: position t predicts token t + 1.
    var models = new (string Name, Tensor Logits)[] { ("transformer", tLogits), ("lstm", lLogits) };
    var lossRows = new ParquetColumns();
    var loss = new Dictionary<string, Tensor>();
    var predicts = real[.., 1..];                                                                   // [batch, pos − 1]: the target is real
    var predictsMatrix = TensorData.ToMatrix(predicts);
    foreach (var (name, logits) in models)
    {
        loss[name] = nn.functional.cross_entropy(logits[.., ..^1].permute(0, 2, 1), tokens[.., 1..], reduction: nn.Reduction.None).to(ScalarType.Float64);   // [batch, pos − 1]
        var values = TensorData.ToMatrix(loss[name]);
        for (int b = 0; b < batch; b++)
            for (int p = 0; p < positions - 1; p++)
                if (predictsMatrix[b, p] > 0) lossRows.Row(("model", name), (Columns.Sequence, b), (Columns.Position, p), ("segment", Segment(halves, p)), ("loss", values[b, p]));
    }
    await context.WriteTableAsync("lstm_analogy_loss.parquet", lossRows.ToTable(),
        $"per sequence and position: each model's next-token loss at position (predicting position + 1) on {inputLabel}; " +
        "segment: first (the first copy, unpredictable), repeated (the second copy, predictable by copying), other (BOS and each copy's first token; all positions of --prompts sequences)", ct);

    // 4. The writes: ‖c_t − c_{t−1}‖ and its cosine with c_{t−1} (c_{−1} = 0) beside each transformer component's write.
    context.ReportProgress("writes", 0.7);
    var writeRows = new ParquetColumns();
    var realMatrix = TensorData.ToMatrix(real);                                                     // [batch, pos]
    void AddWrites(string model, string component, int layer, int head, string metric, Tensor values, int from = 0)
    {
        var m = TensorData.ToMatrix(values);                                                        // [batch, pos]
        for (int b = 0; b < batch; b++)
            for (int p = from; p < positions; p++)
                if (realMatrix[b, p] > 0 && double.IsFinite(m[b, p]))
                    writeRows.Row(("model", model), ("component", component), (Columns.Layer, layer), (Columns.Head, head), (Columns.Sequence, b), (Columns.Position, p), (Columns.Metric, metric), ("value", m[b, p]));
    }
    var cellUpdates = new List<(int Layer, Tensor Relative, Tensor Cosine)>();
    for (int l = 0; l < lstm.Config.NLayers; l++)
    {
        var c = lCache[HookNames.Lstm.Cell(l)].to(ScalarType.Float64);                             // [batch, pos, d_hidden]
        var previous = cat([zeros_like(c[.., ..1]), c[.., ..^1]], 1);                              // c_{t−1}
        var delta = c.sub(previous);
        var norm = delta.norm(-1);                                                            // [batch, pos]
        var previousNorm = previous.norm(-1);
        var cosine = nn.functional.cosine_similarity(delta, previous, 2, 1e-12);
        cosine[.., 0].fill_(Scalars.NaN);                                                                     // c_{−1} = 0: no direction
        var relative = norm.div(previousNorm);                                                     // inf at t = 0, dropped below
        AddWrites("lstm", "cell_update", l, -1, "norm", norm);
        AddWrites("lstm", "cell_update", l, -1, "cosine", cosine, from: 1);
        AddWrites("lstm", "cell_update", l, -1, "relative_norm", relative, from: 1);
        AddWrites("lstm", "cell", l, -1, "norm", c.norm(-1));
        cellUpdates.Add((l, relative, cosine));
    }
    var writes = ResidualWrites.Measure(transformer, tCache, null, mask);
    var streamWrites = new List<(string Label, Tensor Relative, Tensor Cosine)>();
    foreach (var w in writes)
    {
        if (w.Component.Kind is not (ComponentKind.Head or ComponentKind.AttnOut or ComponentKind.MlpOut or ComponentKind.PosEmbed or ComponentKind.Embed)) continue;
        AddWrites("transformer", w.Component.Name, w.Component.Layer, w.Component.Head, "norm", w.Norm);
        if (w.Cosine is null) continue;
        AddWrites("transformer", w.Component.Name, w.Component.Layer, w.Component.Head, "cosine", w.Cosine);
        // The stream the write joins: the embedding for the position embedding, resid_pre for heads and attn_out, resid_mid for the MLP.
        var joined = w.Component.Kind switch
        {
            ComponentKind.PosEmbed => tCache[HookNames.Embed],
            ComponentKind.MlpOut => tCache[HookNames.ResidMid(w.Component.Layer)],
            _ => tCache[HookNames.ResidPre(w.Component.Layer)],
        };
        var relative = w.Norm.div(joined.to(ScalarType.Float64).norm(-1));
        AddWrites("transformer", w.Component.Name, w.Component.Layer, w.Component.Head, "relative_norm", relative);
        if (w.Component.Kind is ComponentKind.AttnOut or ComponentKind.MlpOut) streamWrites.Add((w.Component.Label, relative, w.Cosine));
    }
    await context.WriteTableAsync("lstm_analogy_writes.parquet", writeRows.ToTable(),
        "per sequence and position, what each model writes into its memory: the LSTM's cell update c_t − c_{t−1} (component cell_update; c_{−1} = 0) " +
        "and the cell state itself (cell); the transformer's writes into the residual stream (embed, pos_embed, each head without b_O, attn_out, mlp_out). " +
        "metric: norm (L2), cosine (with c_{t−1}, or with the stream the write is added to), relative_norm (norm ÷ ‖c_{t−1}‖, or ÷ ‖the stream it joins‖)", ct);

    // 5. The memory: a least-squares probe from each state to the token k positions back, fitted on fresh sequences.
    context.ReportProgress("probes", 0.8);
    // On [BOS] r r the token half positions back is the current one, so the probes read i.i.d. random sequences instead
    // (fitted on one draw, scored on another, or on the --prompts sequences).
    int probeLength = 2 * (halves is not null ? half : Math.Min(settings.Half, (cfg.NCtx - 1) / 2)) + 1;   // half capped by the context, as the input's
    int maxLag = settings.MaxLag;
    if (maxLag < 0 || probeLength < maxLag + 2)
        throw new InterpException($"setting 'max_lag': a probe at lag {maxLag} needs sequences of at least {maxLag + 2} tokens, but half = {settings.Half} gives {probeLength} (BOS + 2 · half, capped by n_ctx {cfg.NCtx})");
    var fitTokens = RandomSequences(settings.ProbeBatch, probeLength, cfg.DVocab, context.Seed + 1);
    var probeTokens = mask is null ? RandomSequences(batch, probeLength, cfg.DVocab, context.Seed + 2) : tokens;
    if (mask is not null && positions < maxLag + 2)
        throw new InterpException($"setting 'max_lag': a probe at lag {maxLag} needs sequences of at least {maxLag + 2} tokens; the longest of {inputLabel} has {positions}");
    string probeLabel = mask is null ? $"{batch} other i.i.d. random sequences (seed + 2)" : inputLabel;
    var streams = new List<(string Model, string State, int Layer)>();
    for (int l = 0; l < lstm.Config.NLayers; l++)
    {
        streams.Add(("lstm", HookNames.Lstm.Cell(l), l));
        streams.Add(("lstm", HookNames.Lstm.Hidden(l), l));
    }
    for (int l = 0; l < cfg.NLayers; l++) streams.Add(("transformer", HookNames.ResidPre(l), l));
    streams.Add(("transformer", HookNames.ResidPost(cfg.NLayers - 1), cfg.NLayers));
    var fitT = transformer.RunWithCache(fitTokens, n => streams.Any(s => s.State == n)).Cache;
    var fitL = lstm.RunWithCache(fitTokens, n => streams.Any(s => s.State == n)).Cache;
    var testT = mask is null ? transformer.RunWithCache(probeTokens, n => streams.Any(s => s.State == n)).Cache : null;
    // The gates too: on sequences without a repeat they are the control for the gates on the second copy.
    var testL = mask is null ? lstm.RunWithCache(probeTokens, n => streams.Any(s => s.State == n) || n.EndsWith("_gate", StringComparison.Ordinal)).Cache : null;
    var controlGates = new Dictionary<string, double[]>();
    if (testL is not null)
        for (int l = 0; l < lstm.Config.NLayers; l++)
            foreach (var (quantity, name) in new[] { ("input_gate", HookNames.Lstm.InputGate(l)), ("forget_gate", HookNames.Lstm.ForgetGate(l)), ("output_gate", HookNames.Lstm.OutputGate(l)) })
                controlGates[$"{quantity}_no_repeat/{l}"] = TensorData.ToVector(testL[name].to(ScalarType.Float64).mean([0, 2]));   // [pos]
    var probe = new Dictionary<string, IReadOnlyList<ProbeAccuracy>>();
    var probeRows = new ParquetColumns();
    using (fitT)
    using (fitL)
    using (testT)
    using (testL)
        foreach (var (model, state, layer) in streams)
        {
            var (fit, test) = model == "lstm" ? (fitL, testL ?? lCache) : (fitT, testT ?? tCache);
            var accuracies = TokenProbe.Lagged(fit[state], fitTokens, test[state], probeTokens, cfg.DVocab, maxLag, firstPosition: 1, testMask: mask);
            probe[state] = accuracies;
            foreach (var a in accuracies)
                probeRows.Row(("model", model), ("state", state), (Columns.Layer, layer), ("lag", a.Lag), ("accuracy", a.Accuracy), ("train_accuracy", a.TrainAccuracy),
                    ("test_positions", a.TestPositions), ("train_positions", a.TrainPositions));
        }
    await context.WriteTableAsync("lstm_analogy_probe.parquet", probeRows.ToTable(),
        $"the memory: accuracy of an ordinary least-squares linear probe (with bias, arg-max) from the state at position t to the token at t − lag, " +
        $"fitted on {settings.ProbeBatch} sequences of BOS + {probeLength - 1} i.i.d. random tokens (seed + 1; not [BOS] r r, where the token half back is the current one) " +
        $"and scored on {probeLabel} (positions with t − lag ≥ 1); " +
        $"states: the LSTM's cell and hidden state per layer, the transformer's residual stream entering each layer and after the last (layer = n_layers); chance ≈ 1/{cfg.DVocab - 1}", ct);

    // 6. The gates beside attention: per position, the mean gate over units and sequences; the induction head's attention
    //    on the token after the query's earlier occurrence, and the previous-token head's on the previous token.
    context.ReportProgress("gates", 0.9);
    var gateRows = new ParquetColumns();
    var gateMeans = new Dictionary<string, double[]>();
    void AddCurve(string model, string quantity, int layer, int head, double[] values)
    {
        gateMeans[$"{model}/{quantity}/{layer}"] = values;
        for (int p = 0; p < values.Length; p++)
            if (double.IsFinite(values[p])) gateRows.Row(("model", model), ("quantity", quantity), (Columns.Layer, layer), (Columns.Head, head), (Columns.Position, p), ("value", values[p]));
    }
    var realCount = real.sum([0]);                                                                  // [pos]
    double[] MeanOver(Tensor perPosition) => TensorData.ToVector(perPosition.mul(real).sum([0]).div(realCount));   // [batch, pos] → [pos]
    for (int l = 0; l < lstm.Config.NLayers; l++)
        foreach (var (quantity, name) in new[] { ("input_gate", HookNames.Lstm.InputGate(l)), ("forget_gate", HookNames.Lstm.ForgetGate(l)), ("output_gate", HookNames.Lstm.OutputGate(l)) })
            AddCurve("lstm", quantity, l, -1, MeanOver(lCache[name].to(ScalarType.Float64).mean([-1])));
    foreach (var (key, curve) in controlGates) AddCurve("lstm", key.Split('/')[0], int.Parse(key.Split('/')[1], CultureInfo.InvariantCulture), -1, curve);
    var induction = DetectionPatterns.Induction(tokens).to(ScalarType.Float64);                     // [batch, q, k]
    var previousToken = DetectionPatterns.PreviousToken(positions).to(ScalarType.Float64);          // [q, k]
    var inductionHead = BestHead(transformer, tCache, induction, real);
    var previousHead = BestHead(transformer, tCache, previousToken.unsqueeze(0).expand(batch, -1, -1), real);
    (int Layer, int Head, double[] Curve) HeadCurve((int Layer, int Head) head, Tensor marks)
    {
        var pattern = tCache[HookNames.Pattern(head.Layer)][.., head.Head].to(ScalarType.Float64);     // [batch, q, k]
        var onMarks = pattern.mul(marks).sum([-1]);                                                    // [batch, q]
        var hasMark = marks.sum([-1]).gt(Scalars.Zero).to(ScalarType.Float64).mul(real);
        var curve = TensorData.ToVector(onMarks.mul(hasMark).sum([0]).div(hasMark.sum([0])));          // NaN where no query has a mark
        return (head.Layer, head.Head, curve);
    }
    var inductionCurve = HeadCurve(inductionHead, induction);
    var previousCurve = HeadCurve(previousHead, previousToken.unsqueeze(0).expand(batch, -1, -1));
    AddCurve("transformer", "induction_attention", inductionCurve.Layer, inductionCurve.Head, inductionCurve.Curve);
    AddCurve("transformer", "previous_token_attention", previousCurve.Layer, previousCurve.Head, previousCurve.Curve);
    await context.WriteTableAsync("lstm_analogy_gates.parquet", gateRows.ToTable(),
        "per position, mean over the sequences: each LSTM layer's input, forget and output gates (mean over units), and the same on the probes' i.i.d. random sequences " +
        "(quantity input_gate_no_repeat etc.: the control, the same positions without a repeat); the transformer's strongest induction head's attention " +
        "on the induction target (the token after an earlier occurrence of the query's token; positions with none are left out) and its strongest previous-token head's attention on position − 1", ct);

    // 7. The views.
    int shown = Math.Min(4, batch);
    await context.WriteTableAsync("tokens.parquet", TokenTable.From(tokens[..shown], loaded.Tokenizer), "the tokens of the sequences the report's views show", ct);
    var tokenLoss = new TokenValuesTable.Builder();
    for (int b = 0; b < shown; b++)
        foreach (var (name, _) in models)
            tokenLoss.Add($"{name} loss", b, TensorData.ToVector(loss[name][b]), firstPosition: 1);
    await context.WriteTableAsync("token_loss.parquet", tokenLoss.ToTable(), "per token of the first sequences: the loss of predicting it, under each model", ct);
    await context.AddViewAsync(new TokenValuesView("Loss per token", "Each token coloured by how surprised each model is by it; choose the model. The transformer copies the second copy, the LSTM does not.",
        "token_loss.parquet", "tokens.parquet"), ct);
    await context.AddViewAsync(new HeatmapView("Probe accuracy", "How well a linear probe reads the token lag positions back from each state.",
        "lstm_analogy_probe.parquet", ["state"], ["lag"], Value: "accuracy"), ct);

    // 8. The numbers, the figures, and what they say about the analogy.
    context.ReportProgress("figures", 0.95);
    Summarise(context, cfg, lstm, training, halves, half, inputLabel, loss, predicts, probe, streams, cellUpdates, streamWrites, gateMeans,
        inductionCurve, real, scores);
    DrawFigures(context, halves, positions, loss, predicts, probe, streams, cellUpdates, streamWrites, gateMeans, inductionCurve, real);
    context.ReportProgress("done", 1.0);
});

// Sequences of BOS (0) + i.i.d. uniform content tokens 1 … vocab − 1, seeded: [batch, length].
static Tensor RandomSequences(int batch, int length, int vocab, long seed)
{
    var generator = new Generator((ulong)seed);
    var tokens = randint(1, vocab, [batch, length], generator: generator, dtype: ScalarType.Int64);
    tokens[.., 0].fill_(Scalars.Zero);
    return tokens;
}

static string Segment(RepeatedHalves? halves, int position) =>
    halves is null ? "other" : halves.First.Contains(position) ? "first" : halves.Repeated.Contains(position) ? "repeated" : "other";

// The trained LSTM: loaded (setting lstm), or trained now by the recipe and saved into the run (lstm/).
static async Task<(HookedLstm Model, TrainingResult? Training)> GetLstmAsync(ExperimentContext context, LstmAnalogySettings settings, CancellationToken ct)
{
    if (settings.Lstm is { } directory)
    {
        var model = LstmModelFormat.Load(directory);
        if (model.Config.DVocab != LstmRecipe.Data.VocabSize)
        {
            model.Dispose();
            throw new InterpException($"setting 'lstm': {directory} holds an LSTM of vocabulary {model.Config.DVocab}, not the built-in recipe's {LstmRecipe.Data.VocabSize}");
        }
        context.AddText($"The LSTM was loaded from `{directory}` ({model.Config.NLayers} layer(s), d_hidden {model.Config.DHidden}, {model.Config.ParameterCount:N0} parameters).");
        return (model, null);
    }
    var config = LstmRecipe.ModelConfig with { DHidden = settings.LstmHidden, NLayers = settings.LstmLayers };
    context.ReportProgress("training the LSTM", 0.0);
    var (lstm, result) = LstmRecipe.Train(config, settings.LstmSteps, settings.LstmSeed,
        p => context.ReportProgress($"training the LSTM: step {p.Step}/{p.Steps}, loss {p.Loss:F3}", 0.55 * p.Step / p.Steps), ct);
    try
    {
        string Fmt(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        LstmModelFormat.Save(lstm, Path.Combine(context.OutputDirectory, "lstm"), new Dictionary<string, string>
        {
            ["recipe"] = nameof(LstmRecipe), ["seed"] = settings.LstmSeed.ToString(CultureInfo.InvariantCulture), ["steps"] = settings.LstmSteps.ToString(CultureInfo.InvariantCulture),
            ["final_loss_first_half"] = Fmt(result.FirstHalfLoss[^1]), ["final_loss_repeated_half"] = Fmt(result.RepeatedHalfLoss[^1]),
            ["training_seconds"] = Fmt(result.Elapsed.TotalSeconds),
        });
        await context.WriteTableAsync("lstm_training.parquet", result.ToTable(),
            "the LSTM's training (the built-in model's recipe): the batch loss and the fixed evaluation batch's first- and repeated-half losses at every 25th step", ct);
        context.SaveFigure("lstm_training.png", result.Figure("Training the LSTM on the built-in model's recipe"),
            "The LSTM's training curve on the built-in model's data: the evaluation batch's first copy (unpredictable) and repeated copy.", 1000, 500);
        context.AddText($"The LSTM ({config.NLayers} layer(s), d_hidden {config.DHidden}, {config.ParameterCount:N0} parameters) was trained here for {settings.LstmSteps:N0} steps " +
                        $"in {result.Elapsed.TotalSeconds:F1} s on one thread by the built-in model's recipe, and saved in `lstm/` (pass `--set lstm=RUN/lstm` to reuse it).");
        return (lstm, result);
    }
    catch
    {
        lstm.Dispose();
        throw;
    }
}

// The head whose attention falls most on the marks [batch, q, k], over the real query rows that have a mark.
static (int Layer, int Head) BestHead(HookedTransformer model, ActivationCache cache, Tensor marks, Tensor real)
{
    var rows = marks.sum([-1]).gt(Scalars.Zero).to(ScalarType.Float64).mul(real);                     // [batch, q]
    (int, int) best = (0, 0);
    double bestScore = double.NegativeInfinity;
    for (int l = 0; l < model.Config.NLayers; l++)
    {
        var onMarks = cache[HookNames.Pattern(l)].to(ScalarType.Float64).mul(marks.unsqueeze(1)).sum([-1]);   // [batch, head, q]
        var score = TensorData.ToVector(onMarks.mul(rows.unsqueeze(1)).sum([0, 2]).div(rows.sum()));          // [head]
        for (int h = 0; h < score.Length; h++)
            if (score[h] > bestScore) (best, bestScore) = ((l, h), score[h]);
    }
    return best;
}

static double MeanAt(Tensor values, Tensor real, IEnumerable<int>? positions = null)
{
    // Mean of values [batch, pos] over the real entries at the given positions (all when null), NaNs left out.
    var keep = real.clone();
    if (positions is not null)
    {
        var select = zeros(keep.shape[1], dtype: ScalarType.Float64);
        foreach (var p in positions) select[p].fill_(Scalars.One);
        keep = keep.mul(select);
    }
    keep = keep.mul(values.isfinite().to(ScalarType.Float64));
    return values.nan_to_num(0, 0, 0).mul(keep).sum().div(keep.sum()).item<double>();
}

static void Summarise(ExperimentContext context, ModelConfig cfg, HookedLstm lstm, TrainingResult? training, RepeatedHalves? halves, int half,
    string inputLabel, Dictionary<string, Tensor> loss, Tensor predicts, Dictionary<string, IReadOnlyList<ProbeAccuracy>> probe,
    List<(string Model, string State, int Layer)> streams, List<(int Layer, Tensor Relative, Tensor Cosine)> cellUpdates,
    List<(string Label, Tensor Relative, Tensor Cosine)> streamWrites, Dictionary<string, double[]> gates,
    (int Layer, int Head, double[] Curve) induction, Tensor real, HeadScores? scores)
{
    var lines = new List<string>();
    string F(double v) => double.IsFinite(v) ? v.ToString("0.000", CultureInfo.InvariantCulture) : "n/a";

    // Loss: can each model copy?
    double tFirst = double.NaN, tRepeated, lFirst = double.NaN, lRepeated;
    if (halves is not null)
    {
        (tFirst, tRepeated) = (MeanAt(loss["transformer"], predicts, halves.First), MeanAt(loss["transformer"], predicts, halves.Repeated));
        (lFirst, lRepeated) = (MeanAt(loss["lstm"], predicts, halves.First), MeanAt(loss["lstm"], predicts, halves.Repeated));
        context.AddNumber("transformer_repeated_half_loss", tRepeated, $"the transformer's mean loss on the second copy of {inputLabel}");
        context.AddNumber("lstm_repeated_half_loss", lRepeated, "the LSTM's mean loss on the second copy");
        context.AddNumber("transformer_first_half_loss", tFirst, "the transformer's mean loss on the first copy (random: ≈ ln 63 = 4.143)");
        context.AddNumber("lstm_first_half_loss", lFirst, "the LSTM's mean loss on the first copy");
        double tGain = 1 - tRepeated / tFirst, lGain = 1 - lRepeated / lFirst;
        lines.Add($"**Copying.** On the second copy the transformer's loss falls from {F(tFirst)} (first copy) to {F(tRepeated)} ({tGain:P0} lower); the LSTM's from {F(lFirst)} to {F(lRepeated)} ({lGain:P0} lower). " +
                  (lGain > 0.5 ? "Both copy the span: here the analogy holds." :
                   lGain > 0.05 ? $"The LSTM recalls only part of a {half}-token span: its one cell state of {lstm.Config.DHidden} numbers must carry every token it may need, where the transformer looks back at the tokens themselves. The analogy breaks here." :
                   $"The LSTM does not copy a {half}-token span at all. The analogy breaks here."));
    }
    else
    {
        (tRepeated, lRepeated) = (MeanAt(loss["transformer"], predicts), MeanAt(loss["lstm"], predicts));
        context.AddNumber("transformer_mean_loss", tRepeated, $"the transformer's mean next-token loss on {inputLabel}");
        context.AddNumber("lstm_mean_loss", lRepeated, "the LSTM's mean next-token loss on the same sequences");
        lines.Add($"**Loss** on {inputLabel}: transformer {F(tRepeated)}, LSTM {F(lRepeated)} (mean next-token loss over the real positions).");
    }

    // Writes: is the memory updated a little at each step?
    var (cellLayer, cellRelative, cellCosine) = cellUpdates[^1];
    double cellRel = MeanAt(cellRelative, real, Enumerable.Range(1, (int)real.shape[1] - 1)), cellCos = MeanAt(cellCosine, real, Enumerable.Range(1, (int)real.shape[1] - 1));
    context.AddNumber("lstm_cell_update_relative_norm", cellRel, $"mean ‖c_t − c_(t−1)‖ ÷ ‖c_(t−1)‖ of LSTM layer {cellLayer} (t ≥ 1)");
    context.AddNumber("lstm_cell_update_cosine", cellCos, "mean cosine of the cell update with c_(t−1)");
    var writeText = streamWrites.Select(w => $"{w.Label} {F(MeanAt(w.Relative, real))} (cosine {F(MeanAt(w.Cosine, real))})");
    double meanStream = streamWrites.Count == 0 ? double.NaN : streamWrites.Average(w => MeanAt(w.Relative, real));
    context.AddNumber("transformer_write_relative_norm", meanStream, "mean ‖write‖ ÷ ‖stream it joins‖ over the transformer's attention (and MLP) outputs");
    double largestWrite = streamWrites.Count == 0 ? double.NaN : streamWrites.Max(w => MeanAt(w.Relative, real));
    bool lstmSmall = cellRel < 0.5, transformerSmall = largestWrite < 0.5;
    lines.Add($"**Writes.** Each step the LSTM changes its cell state by {F(cellRel)} of its norm (‖c_t − c_(t−1)‖ ÷ ‖c_(t−1)‖; cosine with c_(t−1) {F(cellCos)}); " +
              $"each transformer layer adds {string.Join(", ", writeText)} of the norm of the stream it joins. " +
              (lstmSmall && transformerSmall ? "Both nudge a running memory a little at each step: the analogy holds." :
               lstmSmall ? "The LSTM nudges its memory a little at each step, but the transformer's layers write more than the stream already holds (its stream after the embeddings is small): " +
                           "both memories are sums of updates, but only the LSTM's updates are small. The analogy holds in form, not in size." :
               transformerSmall ? "The transformer nudges its stream, while the LSTM rewrites much of its cell at each step: the analogy holds only loosely." :
               "Neither memory is nudged a little: each update is as large as what it is added to."));

    // Memory: how far back can a token be read from the state?
    var lagsShown = new[] { 1, 8, 24 }.Where(k => probe.Values.First().Any(a => a.Lag == k)).ToArray();
    string cellState = HookNames.Lstm.Cell(lstm.Config.NLayers - 1);
    var transformerStates = streams.Where(s => s.Model == "transformer").Select(s => s.State).ToArray();
    var parts = new List<string>();
    foreach (int k in lagsShown)
    {
        double cellAccuracy = probe[cellState].First(a => a.Lag == k).Accuracy;
        var (bestState, bestAccuracy) = transformerStates.Select(s => (s, probe[s].First(a => a.Lag == k).Accuracy)).MaxBy(x => x.Accuracy);
        context.AddNumber($"lstm_probe_accuracy_k{k}", cellAccuracy, $"accuracy of the least-squares probe from the LSTM's cell state ({cellState}) to the token {k} back");
        context.AddNumber($"transformer_probe_accuracy_k{k}", bestAccuracy, $"the same from the transformer's residual stream, at its best stream for this lag ({bestState})");
        parts.Add($"k = {k}: LSTM cell {cellAccuracy:P0}, transformer residual {bestAccuracy:P0} ({bestState})");
    }
    double chance = 1.0 / (cfg.DVocab - 1);
    double Cell(int k) => probe[cellState].First(a => a.Lag == k).Accuracy;
    double Stream(int k) => transformerStates.Max(st => probe[st].First(a => a.Lag == k).Accuracy);
    var far = lagsShown.Where(k => k > 1).ToArray();
    bool streamForgets = far.Length > 0 && far.All(k => Stream(k) < 2 * chance);
    bool cellKeeps = far.Length > 0 && far.All(k => Cell(k) > 2 * chance);
    lines.Add($"**Memory** (a linear probe reading the token k back, on random sequences; chance ≈ {chance:P1}): {string.Join("; ", parts)}. " +
              (streamForgets && cellKeeps
                  ? $"The LSTM's cell keeps a little of every earlier token ({string.Join(", ", far.Select(k => $"{Cell(k) / chance:0.0}× chance at k = {k}"))}), as long-term memory must; " +
                    "the transformer's stream at a position holds the token one back (its previous-token head's write) and nothing further, yet the transformer copies far better. " +
                    "Its long-term memory is the context — every earlier position's stream, read by attention — not the stream at one position. This is where the analogy breaks most."
                  : streamForgets
                  ? "The transformer's stream at a position holds nothing of tokens further back, and neither does the LSTM's cell beyond chance: neither state is long-term memory of these tokens."
                  : "The transformer's stream holds earlier tokens too: here both states act as memory."));

    // Gates vs attention.
    int last = lstm.Config.NLayers - 1;
    var input = gates[$"lstm/input_gate/{last}"];
    var forget = gates[$"lstm/forget_gate/{last}"];
    var output = gates[$"lstm/output_gate/{last}"];
    if (halves is not null)
    {
        double MeanOf(double[] curve, int[] positions) => positions.Select(p => curve[p]).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Average();
        double inputFirst = MeanOf(input, halves.First), inputRepeated = MeanOf(input, halves.Repeated);
        var second = Enumerable.Range(halves.Repeated[0], halves.Repeated.Length).ToArray();
        double inductionRepeated = MeanOf(induction.Curve, second);
        int repeatStart = halves.Repeated[0];                                                          // holds the second copy's first token
        double forgetStart = forget[repeatStart], forgetFirst = MeanOf(forget, halves.First);
        double correlation = Correlation(second.Select(p => input[p]).ToArray(), second.Select(p => induction.Curve[p]).ToArray());
        context.AddNumber("lstm_input_gate_first_half", inputFirst, "mean input gate (over units, sequences and first-copy positions)");
        context.AddNumber("lstm_input_gate_repeated_half", inputRepeated, "mean input gate on the second copy");
        context.AddNumber("induction_head_attention_repeated_half", inductionRepeated, $"attention of the strongest induction head ({induction.Layer}.{induction.Head}) on the induction target, second copy");
        context.AddNumber("lstm_forget_gate_at_repeat_start", forgetStart, $"mean forget gate at position {repeatStart}, where the second copy starts");
        context.AddNumber("lstm_forget_gate_first_half", forgetFirst, "mean forget gate on the first copy");
        double controlInput = gates.TryGetValue($"lstm/input_gate_no_repeat/{last}", out var ci) ? MeanOf(ci, halves.Repeated) : double.NaN;
        double controlForget = gates.TryGetValue($"lstm/forget_gate_no_repeat/{last}", out var cf) && repeatStart < cf.Length ? cf[repeatStart] : double.NaN;
        context.AddNumber("lstm_input_gate_repeated_half_control", controlInput, "mean input gate at the same positions of i.i.d. random sequences (no repeat)");
        context.AddNumber("lstm_forget_gate_at_repeat_start_control", controlForget, $"mean forget gate at position {repeatStart} of i.i.d. random sequences (no repeat)");
        double inputEffect = inputRepeated - controlInput, forgetEffect = forgetStart - controlForget;
        lines.Add($"**Gates vs patterns.** Head {induction.Layer}.{induction.Head} puts {inductionRepeated:P0} of its attention on the right earlier token on the second copy: its pattern picks what is relevant now. " +
                  $"The LSTM's input gate averages {F(inputFirst)} on the first copy and {F(inputRepeated)} on the second, against {F(controlInput)} at the same positions of sequences without a repeat " +
                  $"(correlation with the head's attention across second-copy positions {F(correlation)}). " +
                  (Math.Abs(inputEffect) < 0.02 ? "The repeat barely moves it: unlike a pattern, the gate cannot look up the earlier occurrence, only weigh the token in front of it and what the cell holds. The analogy breaks here." :
                   inputEffect > 0 ? $"The repeat opens it by {F(inputEffect)}: it lets more in when the input is relevant, as a pattern would. The analogy holds here." :
                   $"The repeat closes it by {F(-inputEffect)}: it lets less in once the input is familiar — the opposite of an induction head, which attends most when it has seen the token before. The analogy breaks here.") +
                  $" Its forget gate is {F(forgetStart)} at position {repeatStart}, where the second copy starts, against {F(controlForget)} without a repeat " +
                  (forgetEffect < -0.02 ? "(it clears memory when the repeat starts)." : "(it does not clear its memory when the repeat starts).") +
                  $" The output gate averages {F(MeanOf(output, halves.First))} / {F(MeanOf(output, halves.Repeated))} (first / second copy): it scales what leaves the cell, unit by unit and step by step, where a head's message is one fixed linear map (W_V·W_O) of whatever its pattern picked.");
    }
    if (scores is not null)
        lines.Add($"Head scores on the same sequences: best previous-token head {scores.Best(HeadScoreKind.PreviousToken).Layer}.{scores.Best(HeadScoreKind.PreviousToken).Head} ({F(scores.Best(HeadScoreKind.PreviousToken).Score)}), " +
                  $"best induction head {scores.Best(HeadScoreKind.Induction).Layer}.{scores.Best(HeadScoreKind.Induction).Head} ({F(scores.Best(HeadScoreKind.Induction).Score)}).");
    if (training is not null)
        context.AddNumber("lstm_training_seconds", training.Elapsed.TotalSeconds, $"wall time of the LSTM's {training.Loss.Length} training steps (one thread)", "0.0");
    context.AddText(string.Join("\n\n", lines));
}

static double Correlation(double[] x, double[] y)
{
    var pairs = x.Zip(y).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second)).ToArray();
    if (pairs.Length < 3) return double.NaN;
    double mx = pairs.Average(p => p.First), my = pairs.Average(p => p.Second);
    double sxy = pairs.Sum(p => (p.First - mx) * (p.Second - my)), sxx = pairs.Sum(p => (p.First - mx) * (p.First - mx)), syy = pairs.Sum(p => (p.Second - my) * (p.Second - my));
    return sxx > 0 && syy > 0 ? sxy / Math.Sqrt(sxx * syy) : double.NaN;
}

static void DrawFigures(ExperimentContext context, RepeatedHalves? halves, int positions, Dictionary<string, Tensor> loss, Tensor predicts,
    Dictionary<string, IReadOnlyList<ProbeAccuracy>> probe, List<(string Model, string State, int Layer)> streams,
    List<(int Layer, Tensor Relative, Tensor Cosine)> cellUpdates, List<(string Label, Tensor Relative, Tensor Cosine)> streamWrites,
    Dictionary<string, double[]> gates, (int Layer, int Head, double[] Curve) induction, Tensor real)
{
    double[] PerPosition(Tensor values, Tensor keep)
    {
        var ok = keep.mul(values.isfinite().to(ScalarType.Float64));
        return TensorData.ToVector(values.nan_to_num(0, 0, 0).mul(ok).sum([0]).div(ok.sum([0])));
    }
    var xsLoss = Enumerable.Range(0, positions - 1).Select(p => (double)p).ToArray();
    context.SaveFigure("loss_by_position.png", Figures.Lines("Loss per position: transformer vs LSTM", "position (predicts position + 1)", "mean loss", xsLoss,
            ("transformer", PerPosition(loss["transformer"], predicts)), ("LSTM", PerPosition(loss["lstm"], predicts))),
        halves is null ? "Mean next-token loss of each model per position." : "Mean next-token loss per position on [BOS] r r: both models are at chance on the first copy; on the second, the transformer's induction head copies.",
        1000, 500);

    var xs = Enumerable.Range(0, positions).Select(p => (double)p).ToArray();
    var writeSeries = new List<(string, double[])>();
    foreach (var (layer, relative, _) in cellUpdates) writeSeries.Add(($"LSTM {layer}: ‖c_t − c_(t−1)‖ ÷ ‖c_(t−1)‖", PerPosition(relative, real)));
    foreach (var (label, relative, _) in streamWrites) writeSeries.Add(($"transformer {label}: ‖write‖ ÷ ‖stream‖", PerPosition(relative, real)));
    var writesPlot = Figures.Lines("How much each step rewrites the memory", "position", "relative update norm", xs, writeSeries.ToArray());
    context.SaveFigure("writes.png", writesPlot, "Per position: the LSTM's cell update relative to the cell state it changes, beside each transformer layer's write relative to the residual stream it joins.", 1000, 500);
    var cosineSeries = new List<(string, double[])>();
    foreach (var (layer, _, cosine) in cellUpdates) cosineSeries.Add(($"LSTM {layer}: cos(c_t − c_(t−1), c_(t−1))", PerPosition(cosine, real)));
    foreach (var (label, _, cosine) in streamWrites) cosineSeries.Add(($"transformer {label}: cos(write, stream)", PerPosition(cosine, real)));
    context.SaveFigure("write_cosines.png", Figures.Lines("Does an update reinforce or erase the memory?", "position", "cosine", xs, cosineSeries.ToArray()),
        "Per position: cosine of the LSTM's cell update with the cell state before it, and of each transformer layer's write with the stream it joins (negative = erasing).", 1000, 500);

    var lags = probe.Values.First().Select(a => (double)a.Lag).ToArray();
    context.SaveFigure("probe_accuracy.png", Figures.Lines("Memory: reading the token k back from the state", "k (tokens back)", "probe accuracy", lags,
            streams.Select(s => ($"{s.Model} {s.State}", probe[s.State].Select(a => a.Accuracy).ToArray())).ToArray()),
        "Accuracy of a least-squares linear probe from each state at position t to the token at t − k (scored on held-out sequences).", 1000, 550);

    var gateSeries = gates.Where(g => g.Key.StartsWith("lstm/", StringComparison.Ordinal))
        .Select(g => ($"LSTM {g.Key.Split('/')[2]} {g.Key.Split('/')[1].Replace('_', ' ')}", g.Value)).ToList();
    gateSeries.Add(($"transformer head {induction.Layer}.{induction.Head}: attention on the induction target", induction.Curve));
    context.SaveFigure("gates_vs_attention.png", Figures.Lines("Gates vs the induction head's pattern", "position", "mean gate / attention", xs, gateSeries.ToArray()),
        "Per position: the LSTM's mean input, forget and output gates, and the strongest induction head's attention on the token after the query's earlier occurrence.", 1000, 550);
}

/// <summary>Settings of lstm_analogy (--set key=value).</summary>
sealed record LstmAnalogySettings : RepeatedInputSettings
{
    public LstmAnalogySettings() => Batch = 64;
    [Description("a trained LSTM to load (a folder with interp-lstm.json, e.g. an earlier run's lstm/) instead of training one")]
    public string? Lstm { get; init; }
    [Description("training steps of the LSTM (the built-in model's recipe: 3000)")]
    public int LstmSteps { get; init; } = LstmRecipe.Training.Steps;
    [Description("the LSTM's hidden (and embedding) width; 68 matches the built-in transformer's parameter count")]
    public int LstmHidden { get; init; } = LstmRecipe.ModelConfig.DHidden;
    [Description("the LSTM's layers")]
    public int LstmLayers { get; init; } = LstmRecipe.ModelConfig.NLayers;
    [Description("seed of the LSTM's initialisation and training data (the built-in model's: 0)")]
    public int LstmSeed { get; init; }
    [Description("sequences of BOS + 2·half i.i.d. random tokens the probes are fitted on")]
    public int ProbeBatch { get; init; } = 256;
    [Description("largest lag k probed (token at t − k)")]
    public int MaxLag { get; init; } = 24;
    [Description("JSON Lines of token sequences {\"tokens\": [ids]} in the built-in vocabulary to run on instead of repeated random sequences")]
    public string? Prompts { get; init; }
}

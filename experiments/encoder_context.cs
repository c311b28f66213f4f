#:project ../src/Interp.Run/Interp.Run.csproj
// "The encoder understands": sentences through a real pretrained encoder (all-MiniLM-L6-v2, a BERT). Does the contextual
// embedding of "mouse" move toward "cat" beside cat and cheese, and toward "keyboard" beside keyboard and screen? At every
// layer, the cosine of mouse's vector in each sentence with the vectors of "cat" and of "keyboard" on their own (each word
// alone between [CLS] and [SEP]), against mouse on its own; plus the sentence embeddings (mean-pooled, normalised) of the
// seeds' sentences and the attention patterns of the heads, with token labels. It reports what the model does, whatever it is.
// Run: dotnet run --project src/Interp.Cli -- run encoder_context --model ../shared/models/all-MiniLM-L6-v2

using System.ComponentModel;
using Interp;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Models;
using Interp.Plots;
using Interp.Results;
using ScottPlot;
using static TorchSharp.torch;

return await Experiment.RunAsync<EncoderContextSettings>(args, new("encoder_context", "A real encoder (BERT): does contextual 'mouse' move toward 'cat' or 'keyboard'? Cosines per layer, sentence embeddings, attention patterns"), async (context, settings, ct) =>
{
    var model = context.Model.Model;
    var cfg = model.Config;
    if (cfg.Causal)
        throw new InterpException($"encoder_context needs a bidirectional encoder (a BERT); {cfg.Name} is a causal {cfg.Family} model: pass e.g. --model ../shared/models/all-MiniLM-L6-v2");
    var tokenizer = model.RequireTokenizer();
    using var scope = NewDisposeScope();
    using var _ = no_grad();

    string[] sentences = [settings.AnimalContext, settings.TechContext, .. settings.Sentences];
    string[] words = [settings.Word, settings.AnimalWord, settings.TechWord];
    context.ReportProgress("encoding", 0.1);
    var runs = sentences.Concat(words).Select(text => Encode(model, text)).ToArray();   // the words alone come last
    var alone = words.Select((w, i) => runs[sentences.Length + i].WordVectors(WordIds(tokenizer, w), w)).ToArray(); // [layers + 1, d] each
    var mouseIn = new[] { runs[0], runs[1] }.Select(r => r.WordVectors(WordIds(tokenizer, settings.Word), settings.Word)).ToArray();
    int stages = cfg.NLayers + 1;

    // Cosines per layer: mouse (in each context, and alone) against cat and keyboard alone.
    var cosines = new ParquetColumns();
    var lean = new Dictionary<string, double[]>();
    var series = new (string Name, Tensor Vectors)[] { ("alone", alone[0]), ("animal context", mouseIn[0]), ("tech context", mouseIn[1]) };
    foreach (var (name, vectors) in series)
    {
        lean[name] = new double[stages];
        for (int s = 0; s < stages; s++)
        {
            double toAnimal = Cosine(vectors[s], alone[1][s]), toTech = Cosine(vectors[s], alone[2][s]);
            lean[name][s] = toAnimal - toTech;
            cosines.Row(("mouse", name), ("stage", s), ("stage_name", StageName(s, cfg.NLayers)),
                ("cos_" + settings.AnimalWord, toAnimal), ("cos_" + settings.TechWord, toTech), ("lean", toAnimal - toTech));
        }
    }
    await context.WriteTableAsync("mouse_cosines.parquet", cosines.ToTable(),
        $"cosine of '{settings.Word}' (alone, in \"{settings.AnimalContext}\", in \"{settings.TechContext}\") with '{settings.AnimalWord}' and '{settings.TechWord}' alone, " +
        $"at every stage (0 = embeddings after their LayerNorm, l = output of layer l − 1); lean = cos({settings.AnimalWord}) − cos({settings.TechWord})", ct);
    double[] xs = Enumerable.Range(0, stages).Select(s => (double)s).ToArray();
    var leanPlot = Figures.Lines($"'{settings.Word}': cos({settings.AnimalWord}) − cos({settings.TechWord}) by layer", "stage (0 = embeddings, l = after layer l − 1)", "lean toward " + settings.AnimalWord,
            xs, series.Select(sr => (sr.Name, lean[sr.Name])).ToArray());
    leanPlot.Legend.Alignment = Alignment.LowerLeft;
    leanPlot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericFixedInterval(1);
    context.SaveFigure("mouse_lean_by_layer.png", leanPlot,
        $"Above zero: '{settings.Word}' is closer to '{settings.AnimalWord}' than to '{settings.TechWord}' (both alone). The gap between the context lines and 'alone' is what the context did.", 850, 550);

    // Sentence embeddings: the mean of the last hidden state over the tokens, normalised (the model's own embedding).
    var pooled = stack(sentences.Select((_, i) => runs[i].Hidden[^1].mean([0])).ToArray());          // [sentence, d]
    pooled = pooled / pooled.norm(1, keepdim: true);
    var similarity = TensorData.ToMatrix(pooled.matmul(pooled.t()));
    var sentenceRows = new ParquetColumns();
    for (int a = 0; a < sentences.Length; a++)
        for (int b = 0; b < sentences.Length; b++)
            sentenceRows.Row(("sentence_a", sentences[a]), ("sentence_b", sentences[b]), ("cosine", similarity[a, b]));
    await context.WriteTableAsync("sentence_similarity.parquet", sentenceRows.ToTable(), "cosine of the sentence embeddings (mean-pooled last hidden state, normalised)", ct);
    string[] shortNames = sentences.Select(s => s.Length > 28 ? s[..26] + "…" : s).ToArray();
    var simPlot = new Plot();
    simPlot.Add.LabelledMatrix(similarity, shortNames, shortNames);
    simPlot.Title("Sentence embeddings: cosine similarity");
    context.SaveFigure("sentence_similarity.png", simPlot, "Cosine of the mean-pooled, normalised sentence embeddings.", 900, 800);

    // Attention: how much 'mouse' attends to the context word, per layer and head; and the patterns with token labels.
    context.ReportProgress("attention", 0.6);
    var patterns = new AttentionTable.Builder(causal: false);
    for (int i = 0; i < sentences.Length; i++) patterns.Add(i, runs[i].Patterns);
    await context.WriteTableAsync("tokens.parquet", TokenTable.From(runs[..sentences.Length].Select(r => (IReadOnlyList<int>)r.Ids).ToArray(),
        runs[..sentences.Length].Select(r => (IReadOnlyList<string>)r.Tokens).ToArray()), "the tokens of every sentence (sequence = the sentence's index in the settings)", ct);
    await context.WriteTableAsync("attention_patterns.parquet", patterns.ToTable(),
        "every head's attention pattern on every sentence: every (query, key) entry, as the encoder is bidirectional; tokens.parquet labels the positions", ct);

    var (animalSpan, techSpan) = (runs[0].Span(WordIds(tokenizer, settings.AnimalWord), settings.AnimalWord), runs[1].Span(WordIds(tokenizer, settings.TechWord), settings.TechWord));
    var mouseSpans = new[] { runs[0].Span(WordIds(tokenizer, settings.Word), settings.Word), runs[1].Span(WordIds(tokenizer, settings.Word), settings.Word) };
    for (int c = 0; c < 2; c++)
    {
        var run = runs[c];
        var target = c == 0 ? animalSpan : techSpan;
        string targetWord = c == 0 ? settings.AnimalWord : settings.TechWord;
        var toTarget = new double[cfg.NLayers, cfg.NHeads];
        (int Layer, int Head, double Weight) best = (0, 0, -1);
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < cfg.NHeads; h++)
            {
                // Attention from the word's pieces (mean over them) to the context word's pieces (sum over them).
                var rows = run.Patterns[l][h].narrow(0, mouseSpans[c].Start, mouseSpans[c].Length).narrow(1, target.Start, target.Length);
                toTarget[l, h] = rows.sum(1).mean().item<float>();
                if (toTarget[l, h] > best.Weight) best = (l, h, toTarget[l, h]);
            }
        var heat = new Plot();
        heat.Add.LayerHeadHeatmap(toTarget, $"attention {settings.Word} → {targetWord}");
        heat.Title($"\"{sentences[c]}\": attention from '{settings.Word}' to '{targetWord}'");
        context.SaveFigure($"attention_to_{targetWord}.png", heat, $"Attention weight from '{settings.Word}' to '{targetWord}', every layer (row) and head (column).", 800, 600);
        context.SaveFigure($"pattern_{targetWord}_context_L{best.Layer}H{best.Head}.png",
            Figures.AttentionPattern(TensorData.ToMatrix(run.Patterns[best.Layer][best.Head]), run.Tokens, $"Head {best.Layer}.{best.Head} on \"{sentences[c]}\""),
            $"The head where '{settings.Word}' attends most to '{targetWord}' ({best.Weight:0.00}): row = query token, column = key token.", 750, 650);
        context.AddNumber($"attention_{settings.Word}_to_{targetWord}_max", best.Weight, $"largest attention from '{settings.Word}' to '{targetWord}' over all heads (head {best.Layer}.{best.Head})");
        if (c == 0)
            await context.AddViewAsync(new AttentionView("Attention explorer", $"Every head on every sentence (bidirectional: each token attends to all); head {best.Layer}.{best.Head}, where '{settings.Word}' attends most to '{targetWord}', is selected.",
                "attention_patterns.parquet", "tokens.parquet", best.Layer, best.Head), ct);
    }
    for (int i = 2; i < sentences.Length; i++)
    {
        var mean = runs[i].Patterns[^1].mean([0]);
        context.SaveFigure($"pattern_sentence{i + 1}_last_layer.png",
            Figures.AttentionPattern(TensorData.ToMatrix(mean), runs[i].Tokens, $"Last layer, mean over heads: \"{sentences[i]}\""),
            "Row = query token, column = key token: the last layer's attention, averaged over its heads.", 650, 550);
    }

    int last = stages - 1;
    double shiftAnimal = lean["animal context"][last] - lean["alone"][last], shiftTech = lean["tech context"][last] - lean["alone"][last];
    context.AddNumber("lean_alone", lean["alone"][last], $"output: cos({settings.Word}, {settings.AnimalWord}) − cos({settings.Word}, {settings.TechWord}), '{settings.Word}' alone");
    context.AddNumber("shift_animal_context", shiftAnimal, $"change of that lean in \"{settings.AnimalContext}\" (> 0: toward {settings.AnimalWord})");
    context.AddNumber("shift_tech_context", shiftTech, $"change of that lean in \"{settings.TechContext}\" (< 0: toward {settings.TechWord})");
    context.AddNumber("mouse_cosine_across_contexts", Cosine(mouseIn[0][last], mouseIn[1][last]), $"cosine of '{settings.Word}' in the two sentences (output)");
    string Toward(double shift) => shift > 0 ? $"toward '{settings.AnimalWord}'" : $"toward '{settings.TechWord}'";
    context.AddText($"**What the model does.** At its output, '{settings.Word}' beside {settings.AnimalWord} moves {Toward(shiftAnimal)} (lean {lean["alone"][last]:+0.000;-0.000} alone → " +
                    $"{lean["animal context"][last]:+0.000;-0.000}), and beside {settings.TechWord} it moves {Toward(shiftTech)} (→ {lean["tech context"][last]:+0.000;-0.000}); " +
                    $"the two '{settings.Word}' vectors have cosine {Cosine(mouseIn[0][last], mouseIn[1][last]):0.000}. " +
                    $"Sentence embeddings: \"{sentences[0]}\" vs \"{sentences[1]}\" {similarity[0, 1]:0.000}" +
                    (sentences.Length > 3 ? $"; \"{sentences[2]}\" vs \"{sentences[3]}\" {similarity[2, 3]:0.000}." : "."));
    context.ReportProgress("done", 1.0);
});

static double Cosine(Tensor a, Tensor b) => (a.dot(b) / (a.norm() * b.norm())).item<float>();

static string StageName(int stage, int layers) => stage == 0 ? "embeddings" : $"after layer {stage - 1}" + (stage == layers ? " (output)" : "");

// The word's token ids as they appear inside a sentence (WordPiece: the word's pieces with no special tokens).
static int[] WordIds(Interp.Tokenizers.ITokenizer tokenizer, string word) => tokenizer.Encode(word);

static EncodedRun Encode(HookedTransformer model, string text)
{
    var tokens = model.ToTokens(text);                                    // [CLS] … [SEP], the encoder's default
    int layers = model.Config.NLayers;
    bool Wanted(string name) => name == HookNames.ResidPre(0) || HookNames.Is(name, HookNames.NormalizedResidPost) || HookNames.Is(name, HookNames.Pattern);
    var (_, cache) = model.RunWithCache(tokens, Wanted);
    using (cache)
    {
        var hidden = new Tensor[layers + 1];
        hidden[0] = cache[HookNames.ResidPre(0)][0].clone().DetachFromDisposeScope();
        for (int l = 0; l < layers; l++) hidden[l + 1] = cache[HookNames.NormalizedResidPost(l)][0].clone().DetachFromDisposeScope();
        var patterns = Enumerable.Range(0, layers).Select(l => cache[HookNames.Pattern(l)][0].clone().DetachFromDisposeScope()).ToArray();
        var ids = tokens[0].data<long>().Select(i => (int)i).ToArray();
        return new EncodedRun(text, ids, model.ToStrTokens(tokens), hidden, patterns);
    }
}

/// <summary>One sentence through the encoder: its ids and tokens, the hidden state at every stage [pos, d], the patterns [head, q, k].</summary>
sealed record EncodedRun(string Text, int[] Ids, string[] Tokens, Tensor[] Hidden, Tensor[] Patterns)
{
    public int Length => Ids.Length;

    /// <summary>Where the pieces <paramref name="wordIds"/> first occur.</summary>
    public (int Start, int Length) Span(int[] wordIds, string word)
    {
        for (int s = 0; s + wordIds.Length <= Ids.Length; s++)
            if (Ids.AsSpan(s, wordIds.Length).SequenceEqual(wordIds)) return (s, wordIds.Length);
        throw new InterpException($"the word '{word}' (tokens {string.Join(" ", wordIds)}) does not occur in \"{Text}\" ({string.Join(" ", Tokens)}); set the sentences and words to match");
    }

    /// <summary>The word's vector at every stage: the mean over its pieces, [stages, d].</summary>
    public Tensor WordVectors(int[] wordIds, string word)
    {
        var (start, length) = Span(wordIds, word);
        return stack(Hidden.Select(h => h.narrow(0, start, length).mean([0])).ToArray());
    }
}

/// <summary>Settings of encoder_context (--set key=value).</summary>
sealed record EncoderContextSettings
{
    [Description("the sentence that puts the word beside animal words")]
    public string AnimalContext { get; init; } = "The cat chased the mouse and ate the cheese.";
    [Description("the sentence that puts the word beside computer words")]
    public string TechContext { get; init; } = "I moved the mouse next to the keyboard and the screen.";
    [Description("further sentences whose embeddings and attention patterns are shown")]
    public string[] Sentences { get; init; } = ["The car is red.", "Python executes quickly."];
    [Description("the ambiguous word")]
    public string Word { get; init; } = "mouse";
    [Description("the animal anchor word (must occur in animal_context)")]
    public string AnimalWord { get; init; } = "cat";
    [Description("the computer anchor word (must occur in tech_context)")]
    public string TechWord { get; init; } = "keyboard";
}

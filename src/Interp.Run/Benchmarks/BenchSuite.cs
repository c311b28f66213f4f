using System.Diagnostics;
using System.Globalization;
using Interp.Analysis;
using Interp.Circuits;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Results;
using Interp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Benchmarks;

/// <summary>
/// The benchmark suite (<c>interp bench</c>): the toolkit against its own plain forward pass and against PyTorch eager
/// (<c>benchmarks/peer.py</c>, the engine TransformerLens runs on) on the same weights, every comparison a ratio of
/// medians measured side by side in one run (<see cref="Interleaved"/>). Models: a GPT-2-small-shaped model with random
/// weights (written once in the Hugging Face format under <see cref="BenchOptions.ModelsDir"/>), stories260K, and the
/// built-in model. All forwards run under <c>no_grad</c>, as the peer's do.
/// </summary>
public static class BenchSuite
{
    /// <summary>Runs every benchmark and returns its rows (writing nothing; see <see cref="WriteAsync"/>).</summary>
    public static async Task<IReadOnlyList<BenchRow>> RunAsync(BenchOptions options, Action<string>? log = null, CancellationToken ct = default)
    {
        log ??= _ => { };
        var rows = new List<BenchRow>();
        void Add(BenchRow row)
        {
            rows.Add(row);
            log($"{row.Benchmark,-28} {row.Model,-18} {row.Input,-10} {Fmt(row.Value)} {row.Unit} (target {row.Comparison} {Fmt(row.Target)}: {(row.Met ? "met" : "NOT met")}; a = {Fmt(row.A)}, b = {Fmt(row.B)})");
        }
        using var _ = no_grad();
        int reps = options.Repetitions, warm = options.Warmup;
        var shape = options.Quick ? Gpt2Shape.Tiny : Gpt2Shape.Small;
        // The GPT-2 model is written (~0.5 GB at full size) and loaded only when a section measures it.
        using var gpt = new[] { "gpt2", "sweep", "copying", "memory", "generation", "eap" }.Any(options.Runs) ? LoadGpt2(shape, options.ModelsDir, log) : null;
        long batch = options.Quick ? 2 : 4, pos = options.Quick ? 32 : 128;

        var (peer, peerProblem) = options.Runs("gpt2") ? StartPeer(options, gpt!.Source, log) : (null, "peer disabled (--no-peer)");
        if (options.Runs("gpt2"))
        try
        {
            // 1. Matmul peak of both engines, interleaved.
            long n = options.Quick ? 256 : 2048;
            double flopsMm = 2.0 * n * n * n;
            var mm = new Interleaved().Add("ours", () => { using var s = NewDisposeScope(); var a = randn(n, n); var b = randn(n, n); var sw = Stopwatch.StartNew(); a.matmul(b); return sw.Elapsed.TotalSeconds; });
            if (peer is not null) mm.Add("peer", () => peer.Seconds($"matmul {n}"));
            var mmT = mm.Medians(warm, reps, ct);
            double oursPeak = flopsMm / mmT["ours"] / 1e9, peerPeak = peer is null ? double.NaN : flopsMm / mmT["peer"] / 1e9;
            Add(new("matmul_gflops_torchsharp", "machine", $"{n}^3", oursPeak, "GFLOP/s", double.NaN, "report", mmT["ours"], double.NaN, $"TorchSharp (libtorch) float32 matmul, {get_num_threads()} threads"));
            Add(new("matmul_gflops_peer", "machine", $"{n}^3", peerPeak, "GFLOP/s", double.NaN, "report", peer is null ? double.NaN : mmT["peer"], double.NaN, peer?.Info ?? peerProblem));

            // 2. GPT-2: plain, cached, no-op hooks and the peer's plain and cached, interleaved.
            var model = gpt!.Model;
            foreach (var (b, p) in options.Quick ? [(batch, pos)] : new[] { (batch, pos), (1L, 1024L) })
            {
                ForwardVariants(model, shape.Name, b, p, peer, peerProblem, reps, warm, ct, b == batch, Add, throughput: b == batch, weightProducts: b == batch);
            }
        }
        finally
        {
            peer?.Dispose();
        }

        // 3. Other models: hook overheads.
        string? stories = options.StoriesPath ?? FindUpward("shared/models/stories260K/stories260K.bin") ?? FindUpward("../shared/models/stories260K/stories260K.bin");
        if (!options.Runs("models")) { }
        else if (stories is not null && File.Exists(stories))
        {
            using var st = ModelLoader.Load(stories);
            ForwardVariants(st.Model, "stories260K", batch, Math.Min(pos, st.Model.Config.NCtx), null, "", reps, warm, ct, true, Add);
        }
        else log("stories260K not found: skipped");
        if (options.Runs("models"))
        using (var builtIn = BuiltInModel.Load())
            ForwardVariants(builtIn.Model, "builtin", batch, Math.Min(pos, builtIn.Model.Config.NCtx), null, "", reps, warm, ct, true, Add);

        // 4. Zero-ablation sweep of every head vs one plain forward per head.
        if (options.Runs("sweep"))
        {
            var model = gpt!.Model;
            var tokens = Tokens(model.Config, batch, pos);
            int heads = model.Config.NLayers * model.Config.NHeads;
            // Plain forwards timed both before and after the (minute-long) sweep, so that drift in the machine's speed
            // during the run weighs on both sides of the ratio.
            var plainTimes = new List<double>();
            void TimePlain(int warmup)
            {
                for (int r = -warmup; r < reps; r++)
                {
                    ct.ThrowIfCancellationRequested();
                    var t = Stopwatch.StartNew();
                    using (NewDisposeScope()) model.forward(tokens);
                    if (r >= 0) plainTimes.Add(t.Elapsed.TotalSeconds);
                }
            }
            TimePlain(warm);
            var sw = Stopwatch.StartNew();
            AblationSweep.Heads(model, tokens, AblationKind.Zero, Metrics.Loss(), cancellationToken: ct);
            double sweep = sw.Elapsed.TotalSeconds;
            TimePlain(0);
            // A last-token logit difference declares what it reads: the sweep unembeds one position and two columns.
            sw.Restart();
            AblationSweep.Heads(model, tokens, AblationKind.Zero, Metrics.LogitDiff(11, 13), cancellationToken: ct);
            double lastToken = sw.Elapsed.TotalSeconds;
            TimePlain(0);
            double plain = Interleaved.Median(plainTimes);
            Add(new("ablation_sweep_vs_forwards", shape.Name, $"{batch}x{pos}", sweep / (heads * plain), "ratio", 0.6, "<=", sweep, heads * plain,
                $"AblationSweep.Heads (zero, loss over all positions) of all {heads} heads ÷ {heads} × median plain forward ({3 * reps} timed, before, between and after the sweeps)"));
            Add(new("ablation_sweep_last_token_vs_forwards", shape.Name, $"{batch}x{pos}", lastToken / (heads * plain), "ratio", 0.4, "<=", lastToken, heads * plain,
                $"AblationSweep.Heads (zero, logit difference at the last position: LogitReads, one position and two columns unembedded) of all {heads} heads ÷ {heads} × median plain forward"));
            tokens.Dispose();
        }

        // 5. Copying scores of every full message circuit W_E·OV·W_U.
        if (options.Runs("copying"))
        {
            var model = gpt!.Model;
            long before = ProcessMemory.Available ? ProcessMemory.ResetPeak() : 0;
            var sw = Stopwatch.StartNew();
            var scores = CircuitScores.Copying(model);
            double seconds = sw.Elapsed.TotalSeconds;
            long extra = ProcessMemory.Available ? ProcessMemory.Peak() - before : 0;
            long modelBytes = ModelBytes(model);
            Add(new("copying_scores_seconds", shape.Name, $"{scores.Length} heads, vocab {model.Config.DVocab}", seconds, "s", 60, "<=", seconds, double.NaN, "CircuitScores.Copying of every head's W_E·OV·W_U"));
            Add(new("copying_scores_peak_memory", shape.Name, $"{scores.Length} heads", (extra + modelBytes) / (double)(1L << 30), "GiB", 2, "<=", extra, modelBytes,
                "peak RSS above the loaded model during the computation + the model's bytes"));
        }

        // 6. Peak memory of a full cache.
        if (ProcessMemory.Available && options.Runs("memory"))
        {
            var model = gpt!.Model;
            var tokens = Tokens(model.Config, batch, pos);
            long before = ProcessMemory.ResetPeak();
            var (logits, cache) = model.RunWithCache(tokens);
            long peak = ProcessMemory.Peak();
            long cacheBytes = cache.Bytes + logits.NumberOfElements * logits.ElementSize;
            int cached = cache.Count;
            cache.Dispose();
            logits.Dispose();
            tokens.Dispose();
            long modelBytes = ModelBytes(model);
            double ratio = (peak - before + modelBytes) / (double)(modelBytes + cacheBytes);
            Add(new("cache_peak_memory_ratio", shape.Name, $"{batch}x{pos}", ratio, "ratio", 1.3, "<=", peak - before + modelBytes, modelBytes + cacheBytes,
                $"(peak RSS above the loaded model + model bytes) ÷ (model bytes + cached activations + logits); {cached} hook points"));
        }

        // 7. Parquet write speed vs the disk's raw sequential write speed.
        if (options.Runs("parquet")) Add(await ParquetVsDisk(options, options.Quick ? 200_000 : 10_000_000, Math.Min(reps, 3), ct));

        // 8. Memory growth over consecutive cached forwards with disposal.
        if (options.Runs("leak"))
        using (var builtIn = BuiltInModel.Load())
            Add(CacheLeak(builtIn.Model, options.Quick ? 120 : 1000, options.Quick ? 20 : 50, batch, Math.Min(pos, builtIn.Model.Config.NCtx), ct));

        // 9. Generation with the key/value cache vs one forward over as many positions, and the cache-less loop.
        if (options.Runs("generation"))
            foreach (var row in GenerationVsForward(gpt!.Model, shape.Name, options.Quick ? 32 : 256, reps, warm, ct)) Add(row);

        // 10. SAE training throughput vs the model's forward rate.
        if (options.Runs("sae"))
        using (var builtIn = BuiltInModel.Load())
            foreach (var row in SaeTrainingThroughput(builtIn.Model, options, reps, warm, ct)) Add(row);

        // 10b. Training the LSTM of lstm_analogy vs training the built-in transformer, by the same recipe.
        if (options.Runs("lstm")) Add(LstmVsTransformerTraining(options.Quick ? 20 : 300, Math.Min(reps, 3), ct));

        // 11. Edge attribution patching (EAP, EAP-IG with 30 steps) over every edge vs one forward.
        if (options.Runs("eap"))
            foreach (var row in EdgeAttributionCost(gpt!.Model, shape.Name, options.Quick, reps, warm, ct)) Add(row);

        // 12. Today's families at their released shapes (random weights; not in a quick run unless named).
        if (options.Quick ? options.Only?.Contains("archs") == true : options.Runs("archs"))
            Architectures(options, reps, warm, log, Add, ct);

        // 13. The soak under garbage-collection pressure (only when asked for: --only soak).
        if (options.Only?.Contains("soak") == true)
        {
            var soak = Soak.Run(new SoakOptions { Calls = options.SoakCalls }, ct);
            log(soak.Summary);
            foreach (var failure in soak.Failures.Take(20)) log(failure);
            Add(new("soak_failures", "builtin+gpt2-like+llama-like", $"{soak.TotalCalls} calls", soak.Failures.Count, "calls", 0, "<=",
                soak.TotalCalls, soak.Elapsed.TotalSeconds, soak.Summary));
        }
        return rows;
    }

    /// <summary>
    /// Plain, cached and no-op-hooked forwards (and the peer's when given) interleaved; adds the ratio rows. With
    /// <paramref name="throughput"/> the matmul probes (<see cref="ProductProbe"/>, and the peer's same product) are
    /// timed in a second interleaved set and the throughput rows are added; with <paramref name="weightProducts"/> as
    /// well, the forward's bare weight products join that set (<c>forward_weight_products_share</c>).
    /// </summary>
    private static void ForwardVariants(HookedTransformer model, string name, long batch, long pos, PeerProcess? peer, string peerProblem,
        int reps, int warm, CancellationToken ct, bool overheads, Action<BenchRow> add, bool throughput = false, bool weightProducts = false)
    {
        var tokens = Tokens(model.Config, batch, pos);
        var noOps = model.HookPoints.Where(h => !HookNames.Is(h.Name, HookNames.Result))
            .Select(h => (h.Name, (HookFunction)((_, _) => null))).ToArray();
        // Small models run in microseconds: each timed repetition repeats the call until it takes ≥ 0.1 s.
        int inner = Repeats(() => { using var s = NewDisposeScope(); model.forward(tokens); });
        // The overhead ratios compare variants of a few milliseconds: warmed for 2 s, so that every one runs JIT-optimised code.
        var v = new Interleaved { MinWarmupSeconds = 2 }
            .Add("plain", Loop(inner, () => { using var s = NewDisposeScope(); model.forward(tokens); }))
            .Add("cached", Loop(inner, () => { using var s = NewDisposeScope(); var (l, c) = model.RunWithCache(tokens); c.Dispose(); }));
        if (overheads) v.Add("hooks", Loop(inner, () => { using var s = NewDisposeScope(); model.RunWithHooks(tokens, noOps); }));
        if (peer is not null)
        {
            v.Add("peer_plain", () => peer.Seconds($"plain {batch} {pos}"));
            v.Add("peer_cached", () => peer.Seconds($"cached {batch} {pos}"));
        }
        // A forward of milliseconds is timed three times as often: its ratios sit near the noise of shared cores.
        var t = v.Medians(warm, inner > 1 ? 3 * reps : reps, ct);
        // The throughput probes are timed in a second interleaved set, with the plain forward again: a 2048² product
        // between the timings above would disturb the small models' overhead ratios and the peer's timings.
        var tp = new Dictionary<string, double>();
        using var probe = throughput ? new ProductProbe() : null;
        weightProducts &= throughput;   // the products are timed in the throughput set only
        using var held = weightProducts ? NewDisposeScope() : null;
        var weights = weightProducts ? WeightMatrices(model) : [];
        var inputs = weights.Select(w => randn(batch * pos, w.shape[0])).ToArray();
        if (probe is not null)
        {
            var pv = new Interleaved().Add("plain", Loop(inner, () => { using var s = NewDisposeScope(); model.forward(tokens); })).Add("product", probe.Seconds);
            if (peer is not null) pv.Add("peer_product", () => peer.Seconds($"matmul {ProductProbe.Size}"));
            // The forward's weight products alone, bare, on inputs of its rows: what the forward would take if it were only its GEMMs.
            if (weightProducts) pv.Add("products", Loop(inner, () => { using var s = NewDisposeScope(); for (int i = 0; i < weights.Length; i++) Gemm.MatMul(inputs[i], weights[i]); }));
            tp = pv.Medians(1, reps, ct);
        }
        if (probe is not null)
            Throughput(model.Config, name, batch, pos, tp["plain"], probe.Gflops(tp["product"]), peer is null ? double.NaN : probe.Gflops(tp["peer_product"]), add);
        if (probe is not null && weightProducts)
        {
            double flops = 2.0 * batch * pos * weights.Sum(w => (double)w.shape[0] * w.shape[1]);
            double peak = Math.Max(probe.Gflops(tp["product"]), peer is null ? 0 : probe.Gflops(tp["peer_product"]));
            add(new("forward_weight_products_share", name, $"{batch}x{pos}", tp["products"] / tp["plain"], "ratio", double.NaN, "report", tp["products"], tp["plain"],
                $"the forward's {weights.Length} weight products alone, bare ({flops / 1e9:F1} GFLOP at {flops / tp["products"] / 1e9:F0} GFLOP/s, {flops / tp["products"] / 1e9 / peak:F2} of the peak), ÷ the plain forward"));
        }
        string input = $"{batch}x{pos}";
        int points = noOps.Length;
        var (tensors, bytes) = PerCall(() => { using var s = NewDisposeScope(); model.forward(tokens); });
        var (cachedTensors, cachedBytes) = PerCall(() => { using var s = NewDisposeScope(); var (l, c) = model.RunWithCache(tokens); c.Dispose(); });
        add(new("forward_tensors_per_call", name, input, tensors, "tensors", double.NaN, "report", cachedTensors, double.NaN,
            $"tensors created per plain forward (each a native call returning a tensor; a = the same for RunWithCache of all {points} points)"));
        add(new("forward_managed_bytes_per_call", name, input, bytes, "bytes", double.NaN, "report", cachedBytes, double.NaN,
            "managed bytes allocated per plain forward on the calling thread (a = the same for RunWithCache)"));
        add(new("cache_overhead", name, input, t["cached"] / t["plain"], "ratio", 1.15, "<=", t["cached"], t["plain"], $"RunWithCache of all {points} hook points ÷ plain forward"));
        if (overheads) add(new("hooks_overhead", name, input, t["hooks"] / t["plain"], "ratio", 1.10, "<=", t["hooks"], t["plain"], $"RunWithHooks with a no-op hook on all {points} points ÷ plain forward"));
        if (model.Config.Name.StartsWith("gpt2", StringComparison.Ordinal) || peer is not null || peerProblem.Length > 0)
        {
            if (peer is not null)
            {
                string check = LogitCheck(model, tokens, peer, batch, pos);
                add(new("plain_vs_pytorch", name, input, t["plain"] / t["peer_plain"], "ratio", 1.0, "<=", t["plain"], t["peer_plain"], $"plain forward ÷ PyTorch eager forward; {check}"));
                add(new("cached_vs_pytorch", name, input, t["cached"] / t["peer_cached"], "ratio", 1.0, "<=", t["cached"], t["peer_cached"], "RunWithCache ÷ PyTorch eager with caching forward hooks on the same points"));
            }
            else if (peerProblem.Length > 0)
            {
                add(new("plain_vs_pytorch", name, input, double.NaN, "ratio", 1.0, "<=", t["plain"], double.NaN, peerProblem));
                add(new("cached_vs_pytorch", name, input, double.NaN, "ratio", 1.0, "<=", t["cached"], double.NaN, peerProblem));
            }
        }
        tokens.Dispose();
    }

    /// <summary>
    /// Greedy generation of <paramref name="count"/> tokens from a one-token prompt with the key/value cache (so the model
    /// reads <paramref name="count"/> positions, as one forward over [1, count] does), that forward, forwards over a few
    /// lengths for the cache-less loop, and the bare weight products of one decode step, interleaved.
    /// </summary>
    private static BenchRow[] GenerationVsForward(HookedTransformer model, string name, int count, int reps, int warm, CancellationToken ct)
    {
        using var scope = NewDisposeScope(); // the tokens, the flattened weights and the rows below
        var tokens = Tokens(model.Config, 1, count);
        int[] prompt = [(int)tokens[0, 0].item<long>()];
        var options = new GenerationOptions { MaxNewTokens = count };
        // The cache-less loop runs forwards over 1, 2, …, count positions: timed at five lengths, summed by linear interpolation.
        int[] lengths = [1, count / 4, count / 2, 3 * count / 4, count];
        // A decode step multiplies one row by every block weight and the unembedding: those bare products are its floor.
        var products = WeightMatrices(model);
        var rows = products.Select(w => randn(1, w.shape[0])).ToArray();
        long productBytes = products.Sum(p => p.NumberOfElements * p.ElementSize);
        var v = new Interleaved()
            .Add("generate", () => { using var s = NewDisposeScope(); using var r = model.Generate(prompt, options, ct); })
            .Add("products", () => { using var s = NewDisposeScope(); for (int i = 0; i < products.Length; i++) rows[i].matmul(products[i]); });
        foreach (int n in lengths.Distinct())
        {
            var t = tokens.narrow(1, 0, n);
            v.Add($"forward{n}", () => { using var s = NewDisposeScope(); model.forward(t); });
        }
        var m = v.Medians(warm, reps, ct);
        double generate = m["generate"], forward = m[$"forward{count}"];
        double cacheless = 0;
        for (int n = 1; n <= count; n++)
        {
            int hi = Array.FindIndex(lengths, l => l >= n), lo = Math.Max(0, hi - 1);
            double a = m[$"forward{lengths[lo]}"], b = m[$"forward{lengths[hi]}"];
            cacheless += lengths[hi] == lengths[lo] ? b : a + (b - a) * (n - lengths[lo]) / (lengths[hi] - lengths[lo]);
        }
        string input = $"1+{count} tokens";
        return
        [
            new("generation_vs_forward", name, input, generate / forward, "ratio", 2, "<=", generate, forward,
                $"Generate {count} new tokens (greedy, key/value cache, 1-token prompt: {count} positions read) ÷ one forward over 1x{count} tokens"),
            new("generation_cacheless_vs_forward", name, input, cacheless / forward, "ratio", double.NaN, "report", cacheless, forward,
                $"the cache-less loop (a forward over 1, 2, …, {count} positions), estimated from forwards timed at {string.Join(", ", lengths)} positions and interpolated linearly, ÷ one forward over 1x{count}"),
            new("generation_cache_speedup", name, input, cacheless / generate, "ratio", double.NaN, "report", cacheless, generate,
                "the cache-less loop (estimated as above) ÷ generation with the key/value cache"),
            new("generation_step_vs_weight_products", name, input, generate / count / m["products"], "ratio", double.NaN, "report", generate / count, m["products"],
                $"one decode step (generation ÷ {count}) ÷ the bare products of one row with every weight a step multiplies by ({productBytes / 1e6:F0} MB: Q, K, V flattened, W_O, the MLP's, W_U)"),
        ];
    }

    /// <summary>
    /// One SAE training run on the built-in model (TopK, k 16, d_sae 512 at <c>blocks.1.hook_resid_pre</c>, batch 4096,
    /// context 64, buffer 16,384; quick: batch 1024, buffer 4096), timed whole — buffer filling (the model's forwards)
    /// included, the corpus generated beforehand — as activations trained on per second, against the model's plain forward
    /// rate over the windows the buffer runs ([32, 64] tokens per forward), timed before and after the run.
    /// </summary>
    /// <summary>
    /// Seconds of <paramref name="steps"/> steps of the built-in model's recipe for the LSTM (<see cref="LstmRecipe"/>)
    /// and for the transformer (<see cref="InductionRecipe"/>, head dropout included), each from a fresh model on one
    /// thread as both are trained, interleaved; the row is the LSTM's time ÷ the transformer's (target ≤ 1).
    /// </summary>
    private static BenchRow LstmVsTransformerTraining(int steps, int reps, CancellationToken ct)
    {
        int threads = get_num_threads();
        set_num_threads(1);
        try
        {
            var timing = new Interleaved()
                .Add("lstm", () =>
                {
                    using var model = LstmRecipe.CreateModel();
                    return InductionTrainer.Train(model, LstmRecipe.Data, LstmRecipe.Training with { Steps = steps, LogInterval = 0 }, cancellationToken: ct).Elapsed.TotalSeconds;
                })
                .Add("transformer", () =>
                {
                    using var model = InductionRecipe.CreateModel();
                    return InductionTrainer.Train(model, InductionRecipe.Data, InductionRecipe.Training with { Steps = steps, LogInterval = 0 }, cancellationToken: ct).Elapsed.TotalSeconds;
                })
                .Medians(0, reps, ct);
            double lstm = timing["lstm"], transformer = timing["transformer"];
            return new BenchRow("lstm_training_vs_transformer", $"{LstmRecipe.ModelConfig.Name} vs builtin", $"{steps} steps", lstm / transformer, "x", 1.0, "<=", lstm, transformer,
                $"median seconds of {steps} training steps (batch {LstmRecipe.Training.BatchSize}, one thread): LSTM {lstm:F2} s, transformer {transformer:F2} s; " +
                $"full run {LstmRecipe.Training.Steps} steps ≈ {lstm / steps * LstmRecipe.Training.Steps:F0} s vs {transformer / steps * InductionRecipe.Training.Steps:F0} s");
        }
        finally { set_num_threads(threads); }
    }

    private static BenchRow[] SaeTrainingThroughput(HookedTransformer model, BenchOptions options, int reps, int warm, CancellationToken ct)
    {
        const int context = 64, prompts = 32;
        int batch = options.Quick ? 1024 : 4096, steps = options.Quick ? 8 : 60;
        var corpus = new Training.Saes.GeneratedTokenSource(model, 0, options.Quick ? 40 : 200, context - 1, seed: 1, batchSize: 40);
        corpus.Documents(ct).Count();   // generate before timing
        var sae = new Training.Saes.SaeTrainingOptions
        {
            Architecture = Saes.SaeArchitecture.TopK, K = 16, DSae = 512, ContextSize = context, StoreBatchSizePrompts = prompts,
            BatchSizeTokens = batch, BufferTokens = 4 * batch, TrainingTokens = (long)batch * steps, LogEverySteps = steps,
        };
        string dir = Path.Combine(options.OutDir, "tmp-sae");
        var tokens = Tokens(model.Config, prompts, context);
        int inner = Repeats(() => { using var s = NewDisposeScope(); model.forward(tokens); });
        var time = Loop(inner, () => { using var s = NewDisposeScope(); model.forward(tokens); });
        var forwards = new List<double>();
        for (int r = -warm; r < reps; r++) { double t = time(); if (r >= 0) forwards.Add(t); }
        Training.Saes.SaeTrainingResult result;
        try { result = new Training.Saes.SaeTrainer(sae).TrainOnModel(model, HookNames.ResidPre(1), corpus, dir, bos: 0, cancellationToken: ct); }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        for (int r = 0; r < reps; r++) forwards.Add(time());
        tokens.Dispose();
        double trainRate = result.Tokens / result.Elapsed.TotalSeconds;
        double forwardRate = prompts * context / Interleaved.Median(forwards);
        string input = $"{steps} x {batch} acts";
        return
        [
            new("sae_training_activations_per_s", "builtin", input, trainRate, "acts/s", double.NaN, "report", result.Tokens, result.Elapsed.TotalSeconds,
                $"TopK SAE (d_sae 512, k 16) at {HookNames.ResidPre(1)}: {result.Tokens:N0} activations trained on in {result.Elapsed.TotalSeconds:F2} s, buffer filling included"),
            new("sae_training_vs_forward", "builtin", input, trainRate / forwardRate, "ratio", double.NaN, "report", trainRate, forwardRate,
                $"activations trained on per second ÷ tokens per second of plain forwards over [{prompts}, {context}] (median of {2 * reps}, half before and half after the run)"),
        ];
    }

    /// <summary>
    /// Edge attribution patching over every edge of the GPT-2 model (144 heads' q, k, v inputs, 12 MLPs, the logits;
    /// quick: the tiny shape) on one sequence of 128 random tokens (quick: 16) against random corrupted tokens, metric the
    /// mean next-token log-probability: EAP (the whole <see cref="EdgeAttribution"/> construction: one clean forward, one
    /// corrupted forward and backward, every edge's score) and EAP-IG with 30 steps (construction and 29 more forward and
    /// backward passes), each ÷ one plain forward of the same input, medians of interleaved repetitions (EAP-IG: one run
    /// unless quick, it takes tens of seconds).
    /// </summary>
    private static BenchRow[] EdgeAttributionCost(HookedTransformer model, string name, bool quick, int reps, int warm, CancellationToken ct)
    {
        const int steps = 30;
        long pos = quick ? 16 : 128;
        var clean = Tokens(model.Config, 1, pos);
        using var corrupted = randint(0, model.Config.DVocab, [1, pos], generator: new Generator(99), dtype: ScalarType.Int64);
        var loss = Metrics.Loss();
        Metric metric = (logits, tokens) =>
        {
            using var scope = NewDisposeScope();
            return (-loss(logits, tokens)).MoveToOuterDisposeScope();
        };
        int edges = EdgeGraph.For(model.Config).Edges.Count;
        int inner = Repeats(() => { using var s = NewDisposeScope(); model.forward(clean); });
        var t = new Interleaved()
            .Add("forward", Loop(inner, () => { using var s = NewDisposeScope(); model.forward(clean); }))
            .Add("eap", () => { using var s = NewDisposeScope(); using var e = new EdgeAttribution(model, clean, corrupted, metric, cancellationToken: ct); e.Scores(EdgeMethod.Eap); })
            .Medians(warm, reps, ct);
        var ig = new Interleaved()
            .Add("eap_ig", () => { using var s = NewDisposeScope(); using var e = new EdgeAttribution(model, clean, corrupted, metric, cancellationToken: ct); e.Scores(EdgeMethod.EapIg, steps, ct); })
            .Medians(0, quick ? reps : 1, ct);
        clean.Dispose();
        string input = $"1x{pos}";
        return
        [
            new("eap_vs_forward", name, input, t["eap"] / t["forward"], "ratio", 4, "<=", t["eap"], t["forward"],
                $"EAP over all {edges:N0} edges (clean forward, corrupted forward + backward through the split q/k/v/MLP inputs, every score) ÷ one plain forward"),
            new("eap_ig_vs_forward", name, input, ig["eap_ig"] / t["forward"], "ratio", 40, "<=", ig["eap_ig"], t["forward"],
                $"EAP-IG with {steps} steps over all {edges:N0} edges (clean forward, {steps} forward + backward passes on interpolated embeddings) ÷ one plain forward{(quick ? "" : " (one run)")}"),
        ];
    }

    /// <summary>
    /// Pythia-160m (float32, widened from its float16 checkpoint; 4×128), Llama-3.2-1B (float32 from bfloat16, 1×128,
    /// against the peer's LLaMA block on the same file) and Gemma-2-2B held in bfloat16 as it ships (a float32 load
    /// needs more than a 24 GiB machine has): its copying scores at a 256,000-token vocabulary, and its forward
    /// computed in float32 (bfloat16 products run far slower on a CPU without bfloat16 matrix instructions: the row
    /// <c>matmul_gflops_bf16</c>). Checkpoints are written once under <see cref="BenchOptions.ModelsDir"/> (0.3, 2.5 and 5.2 GB).
    /// </summary>
    private static void Architectures(BenchOptions options, int reps, int warm, Action<string> log, Action<BenchRow> add, CancellationToken ct)
    {
        string Ensure(ArchShape shape)
        {
            var sw = Stopwatch.StartNew();
            var (dir, written) = shape.EnsureWritten(options.ModelsDir);
            log(written ? $"wrote {shape.Name} ({shape.Ships}) in {sw.Elapsed.TotalSeconds:F0} s" : $"reusing {dir}");
            return dir;
        }

        using (var pythia = ModelLoader.Load(Ensure(ArchShape.Pythia160m)))
        {
            ct.ThrowIfCancellationRequested();
            ForwardVariants(pythia.Model, ArchShape.Pythia160m.Name, 4, 128, null, "", reps, warm, ct, true, add, throughput: true);
        }

        string llamaDir = Ensure(ArchShape.Llama32_1B);
        using (var llama = ModelLoader.Load(llamaDir))
        {
            var (peer, problem) = StartPeer(options, llamaDir, log);
            try
            {
                ForwardVariants(llama.Model, ArchShape.Llama32_1B.Name, 1, 128, peer, problem, reps, warm, ct, true, add, throughput: true);
            }
            finally { peer?.Dispose(); }
        }

        string gemmaDir = Ensure(ArchShape.Gemma2_2B);
        {
            // bfloat16 products on this CPU, against float32's, on a Gemma MLP's shape (one token block of 128).
            using var s = NewDisposeScope();
            var x = randn(128, 2304); var w = randn(2304, 9216);
            var xb = x.to(ScalarType.BFloat16); var wb = w.to(ScalarType.BFloat16);
            var m = new Interleaved().Add("f32", () => { using var t = NewDisposeScope(); x.matmul(w); }).Add("bf16", () => { using var t = NewDisposeScope(); xb.matmul(wb); }).Medians(1, 3, ct);
            double f = 2.0 * 128 * 2304 * 9216;
            add(new("matmul_gflops_bf16", "machine", "128x2304x9216", f / m["bf16"] / 1e9, "GFLOP/s", double.NaN, "report", m["bf16"], m["f32"],
                $"TorchSharp bfloat16 matmul (b = float32's seconds: {f / m["f32"] / 1e9:F1} GFLOP/s); why the bfloat16 model computes in float32 here"));
        }
        long before = ProcessMemory.Available ? ProcessMemory.ResetPeak() : 0;
        var load = Stopwatch.StartNew();
        using (var gemma = ModelLoader.Load(gemmaDir, new ModelLoadOptions { DType = ScalarType.BFloat16 }))
        {
            double loadSeconds = load.Elapsed.TotalSeconds;
            long loadPeak = ProcessMemory.Available ? ProcessMemory.Peak() - before : 0;
            var model = gemma.Model;
            long modelBytes = ModelBytes(model);
            string name = ArchShape.Gemma2_2B.Name;
            add(new("load_peak_memory_vs_model", name, "bf16 file → bf16", loadPeak / (double)modelBytes, "ratio", double.NaN, "report", loadPeak, modelBytes,
                $"peak RSS growth while loading ÷ the loaded model's bytes ({modelBytes / (double)(1L << 30):F2} GiB in bfloat16; float32 would be twice); {loadSeconds:F0} s"));
            // Each measure starts from memory the allocator has given back, so that what loading freed is not counted as room.
            NativeEnvironment.ReleaseFreedMemory();
            long start = ProcessMemory.Available ? ProcessMemory.ResetPeak() : 0;
            var sw = Stopwatch.StartNew();
            var scores = CircuitScores.Copying(model);
            double seconds = sw.Elapsed.TotalSeconds;
            long extra = ProcessMemory.Available ? ProcessMemory.Peak() - start : 0;
            add(new("copying_scores_seconds", name, $"{scores.Length} heads, vocab {model.Config.DVocab}", seconds, "s", 60, "<=", seconds, double.NaN,
                "CircuitScores.Copying of every head's W_E·OV·W_U (weights in bfloat16; products over vocabulary chunks in float32, summed in float64)"));
            add(new("copying_scores_extra_memory", name, $"{scores.Length} heads", extra / (double)(1L << 30), "GiB", 2, "<=", extra, modelBytes,
                "peak RSS above the loaded model during the computation (b = the model's bytes)"));

            // The forward with the weights kept in bfloat16 and computed in float32, each widened where it is used.
            ct.ThrowIfCancellationRequested();
            model.ComputeDType = ScalarType.Float32;
            var tokens = Tokens(model.Config, 1, 128);
            using var probe = new ProductProbe();
            NativeEnvironment.ReleaseFreedMemory();
            long forwardStart = ProcessMemory.Available ? ProcessMemory.ResetPeak() : 0;
            using (NewDisposeScope()) model.forward(tokens);
            long forwardExtra = ProcessMemory.Available ? ProcessMemory.Peak() - forwardStart : 0;
            // The widening alone: every weight converted to float32 once, as one forward does, product by product.
            var weights = model.parameters().ToArray();
            var times = new Interleaved().Add("plain", () => { using var t = NewDisposeScope(); model.forward(tokens); })
                .Add("widen", () => { foreach (var p in weights) { using var t = NewDisposeScope(); p.detach().to(ScalarType.Float32); } })
                .Add("product", probe.Seconds).Medians(1, Math.Min(reps, 3), ct);
            tokens.Dispose();
            add(new("forward_seconds", name, "1x128", times["plain"], "s", double.NaN, "report", times["widen"], double.NaN,
                $"plain forward, bfloat16 weights computed in float32 (ModelLoadOptions.ComputeDType); a = converting every weight to float32 once ({times["widen"] / times["plain"]:P0} of the forward)"));
            Throughput(model.Config, name, 1, 128, times["plain"], probe.Gflops(times["product"]), double.NaN, add);
            add(new("forward_extra_memory", name, "1x128", forwardExtra / (double)(1L << 30), "GiB", double.NaN, "report", forwardExtra, modelBytes,
                "peak RSS above the bfloat16 model during one forward: the widened weights of one product at a time and the activations (b = the model's bytes)"));
        }
    }

    /// <summary>
    /// Every weight a forward pass (or a decode step) multiplies by, as [in, out] matrices in contiguous layouts, made
    /// before timing: W_Q, W_K and W_V flattened to [d_model, head·d_head] (copies), W_O, the MLP's, W_U.
    /// </summary>
    private static Tensor[] WeightMatrices(HookedTransformer model) =>
        model.Blocks.SelectMany(b => new[] { b.Attn.W_Q, b.Attn.W_K, b.Attn.W_V }
                .Select(w => w.detach().permute(1, 0, 2).reshape(w.shape[1], -1).contiguous())
                .Append(b.Attn.W_O.detach().reshape(-1, model.Config.DModel))
                .Concat(b.Mlp is null ? [] : new[] { b.Mlp.W_in.detach() }.Concat(b.Mlp.W_gate is null ? [] : [b.Mlp.W_gate.detach()]).Append(b.Mlp.W_out.detach())))
            .Append(model.Unembed.W_U.detach()).ToArray();

    /// <summary>
    /// The rows <c>forward_gflops</c> and <c>forward_fraction_of_peak</c>: the plain forward's GFLOP/s against the larger
    /// of the matmul probes timed between its runs, ours (<paramref name="probeGflops"/>) and the peer's
    /// (<paramref name="peerGflops"/>; NaN without a peer).
    /// </summary>
    private static void Throughput(ModelConfig cfg, string name, long batch, long pos, double plain, double probeGflops, double peerGflops, Action<BenchRow> add)
    {
        double flops = Gpt2Shape.ForwardFlops(cfg, batch, pos), gflops = flops / plain / 1e9;
        double peak = double.IsNaN(peerGflops) ? probeGflops : Math.Max(probeGflops, peerGflops);
        add(new("forward_gflops", name, $"{batch}x{pos}", gflops, "GFLOP/s", double.NaN, "report", plain, flops, $"plain forward, {flops / 1e9:F1} GFLOP counted"));
        add(new("forward_fraction_of_peak", name, $"{batch}x{pos}", gflops / peak, "fraction", double.NaN, "report", gflops, peak,
            $"plain forward GFLOP/s ÷ the matmul peak timed between its runs: the larger of a {ProductProbe.Size}² product on the forward's own path ({probeGflops:F0} GFLOP/s) and the peer's ({(double.IsNaN(peerGflops) ? "no peer" : $"{peerGflops:F0} GFLOP/s")})"));
    }

    /// <summary>
    /// One float32 product of two <see cref="Size"/>² matrices through <see cref="Gemm.MatMul"/>, the path the forward's
    /// weight products take (OpenBLAS where it is found): the machine's matmul peak, timed between the forward's runs so
    /// that both see the same state of the shared cores.
    /// </summary>
    private sealed class ProductProbe : IDisposable
    {
        public const long Size = 2048;
        private readonly Tensor _a = randn(Size, Size).DetachFromDisposeScope(), _b = randn(Size, Size).DetachFromDisposeScope();

        public double Seconds()
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var sw = Stopwatch.StartNew();
            Gemm.MatMul(_a, _b);
            return sw.Elapsed.TotalSeconds;
        }

        public double Gflops(double seconds) => 2.0 * Size * Size * Size / seconds / 1e9;

        public void Dispose()
        {
            _a.Dispose();
            _b.Dispose();
        }
    }

    /// <summary>
    /// The PyTorch peer (<c>benchmarks/peer.py</c>) serving the model at <paramref name="modelDir"/>, or null with the
    /// reason when it is disabled or cannot start (the rows that need it then say why).
    /// </summary>
    private static (PeerProcess? Peer, string Problem) StartPeer(BenchOptions options, string modelDir, Action<string> log)
    {
        if (!options.Peer) return (null, "peer disabled (--no-peer)");
        try
        {
            string scripts = options.ScriptsDir ?? Path.GetDirectoryName(FindUpward("benchmarks/peer.py")
                ?? throw new InterpException("bench: benchmarks/peer.py not found; pass the scripts folder"))!;
            var peer = PeerProcess.Start(options.Python, scripts, Path.GetFullPath(modelDir), get_num_threads(), options.InstallPeer);
            log($"peer: {peer.Info}");
            return (peer, "");
        }
        catch (InterpException ex)
        {
            log(ex.Message);
            return (null, ex.Message);
        }
    }

    /// <summary>
    /// Tensors created (TorchSharp's dispose-scope statistics: every native call that returns a tensor, views included)
    /// and managed bytes allocated on this thread, per call of <paramref name="run"/>: the mean of 10 calls after 2.
    /// </summary>
    internal static (double Tensors, double Bytes) PerCall(Action run)
    {
        run();
        run();
        var stats = DisposeScopeManager.Statistics;
        long tensors = stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount;
        long bytes = GC.GetAllocatedBytesForCurrentThread();
        const int calls = 10;
        for (int i = 0; i < calls; i++) run();
        return ((stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount - tensors) / (double)calls,
            (GC.GetAllocatedBytesForCurrentThread() - bytes) / (double)calls);
    }

    /// <summary>How many calls of <paramref name="run"/> take about 0.1 s (at least 1), after two warm-up calls.</summary>
    private static int Repeats(Action run)
    {
        run();
        var sw = Stopwatch.StartNew();
        run();
        return (int)Math.Clamp(Math.Ceiling(0.1 / Math.Max(sw.Elapsed.TotalSeconds, 1e-6)), 1, 10_000);
    }

    /// <summary>A variant that runs <paramref name="run"/> <paramref name="inner"/> times and returns the seconds per call.</summary>
    private static Func<double> Loop(int inner, Action run) => () =>
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < inner; i++) run();
        return sw.Elapsed.TotalSeconds / inner;
    };

    /// <summary>Compares logits[0, −1, :8] of both engines: they must compute the same function for the timings to compare.</summary>
    private static string LogitCheck(HookedTransformer model, Tensor tokens, PeerProcess peer, long batch, long pos)
    {
        using var s = NewDisposeScope();
        var ours = model.forward(tokens)[0, -1, ..8].data<float>().ToArray();
        var theirs = peer.Ask($"logits {batch} {pos}").Split(' ').Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        double diff = ours.Zip(theirs, (a, b) => Math.Abs(a - b)).Max();
        if (diff > 1e-3) throw new InterpException($"bench: the peer's logits differ from ours by {diff:g3}: the benchmark would compare different functions");
        return $"logits agree to {diff:g2}";
    }

    /// <summary>Deterministic tokens shared with the peer: (i·7919 + 13) mod vocab.</summary>
    private static Tensor Tokens(ModelConfig c, long batch, long pos)
    {
        using Scalar count = (batch * pos).ToScalar(), factor = 7919.ToScalar(), offset = 13.ToScalar(), vocab = c.DVocab.ToScalar();
        using var scope = NewDisposeScope();
        return arange(Scalars.Zero, count, Scalars.One, dtype: ScalarType.Int64).mul(factor).add(offset, Scalars.One).remainder(vocab)
            .view(batch, pos).DetachFromDisposeScope();
    }

    /// <summary>Writes (or reuses) the random GPT-2 of <paramref name="shape"/> under <paramref name="modelsDir"/> and loads it.</summary>
    private static LoadedModel LoadGpt2(Gpt2Shape shape, string modelsDir, Action<string> log)
    {
        log($"writing/reusing {shape.Name} under {modelsDir}");
        return ModelLoader.Load(shape.EnsureWritten(modelsDir));
    }

    private static long ModelBytes(HookedTransformer model) =>
        model.parameters().Sum(p => p.NumberOfElements * p.ElementSize) + model.buffers().Sum(b => b.NumberOfElements * b.ElementSize);

    /// <summary>Writes a results-shaped table (layer, head, position int32, value double) and the same bytes raw, interleaved.</summary>
    private static async Task<BenchRow> ParquetVsDisk(BenchOptions options, int rowsCount, int reps, CancellationToken ct)
    {
        string dir = Path.Combine(options.OutDir, "tmp-write");
        Directory.CreateDirectory(dir);
        var layer = new int[rowsCount];
        var head = new int[rowsCount];
        var position = new int[rowsCount];
        var value = new double[rowsCount];
        var rng = new Random(0);
        for (int i = 0; i < rowsCount; i++)
        {
            layer[i] = i / 1_000_000;
            head[i] = i / 1000 % 12;
            position[i] = i % 1000;
            value[i] = rng.NextDouble();
        }
        var table = new ParquetTable().Add("layer", layer).Add("head", head).Add("position", position).Add("value", value);
        string pq = Path.Combine(dir, "rows.parquet"), raw = Path.Combine(dir, "raw.bin");
        var parquetTimes = new List<double>();
        var rawTimes = new List<double>();
        long bytes = 0;
        try
        {
            for (int r = 0; r < reps + 1; r++)
            {
                ct.ThrowIfCancellationRequested();
                var sw = Stopwatch.StartNew();
                await table.WriteAsync(pq, ct);
                Fsync(pq);
                double tp = sw.Elapsed.TotalSeconds;
                bytes = new FileInfo(pq).Length;
                sw.Restart();
                WriteRaw(raw, bytes);
                double tr = sw.Elapsed.TotalSeconds;
                if (r == 0) continue; // warm-up
                parquetTimes.Add(tp);
                rawTimes.Add(tr);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        double p = Interleaved.Median(parquetTimes), w = Interleaved.Median(rawTimes);
        double mbP = bytes / p / 1e6, mbW = bytes / w / 1e6;
        return new BenchRow("parquet_write_vs_disk", "table", $"{rowsCount:N0} rows", mbP / mbW, "fraction", 0.5, ">=", p, w,
            $"ParquetTable.WriteAsync {bytes / 1e6:F0} MB at {mbP:F0} MB/s ÷ raw sequential write of the same bytes at {mbW:F0} MB/s (both fsynced)");
    }

    private static void Fsync(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Flush(flushToDisk: true);
    }

    private static void WriteRaw(string path, long bytes)
    {
        var buffer = new byte[4 << 20];
        new Random(1).NextBytes(buffer);
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.SequentialScan);
        for (long done = 0; done < bytes; done += buffer.Length) f.Write(buffer, 0, (int)Math.Min(buffer.Length, bytes - done));
        f.Flush(flushToDisk: true);
    }

    /// <summary><paramref name="count"/> cached forwards, each disposed; resident growth after the first <paramref name="settle"/>.</summary>
    private static BenchRow CacheLeak(HookedTransformer model, int count, int settle, long batch, long pos, CancellationToken ct)
    {
        var tokens = Tokens(model.Config, batch, pos);
        long after = 0;
        for (int i = 0; i < count; i++)
        {
            ct.ThrowIfCancellationRequested();
            var (logits, cache) = model.RunWithCache(tokens);
            cache.Dispose();
            logits.Dispose();
            if (i + 1 == settle)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                after = ProcessMemory.Resident();
            }
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long end = ProcessMemory.Resident();
        tokens.Dispose();
        double growth = 100.0 * (end - after) / after;
        return new BenchRow("cache_loop_rss_growth", "builtin", $"{count} x {batch}x{pos}", growth, "%", 5, "<", end, after,
            $"resident memory after {count} RunWithCache + Dispose vs after the first {settle}");
    }

    /// <summary>
    /// Writes <c>bench.parquet</c> (benchmark, model, input, value, unit, target, comparison, met, a, b, detail, machine)
    /// and <c>bench.md</c> into <see cref="BenchOptions.OutDir"/>; returns the markdown.
    /// </summary>
    public static async Task<string> WriteAsync(IReadOnlyList<BenchRow> rows, string outDir, CancellationToken ct = default)
    {
        Directory.CreateDirectory(outDir);
        string machine = Machine();
        var table = new ParquetTable()
            .Add("benchmark", rows.Select(r => r.Benchmark).ToArray())
            .Add("model", rows.Select(r => r.Model).ToArray())
            .Add("input", rows.Select(r => r.Input).ToArray())
            .Add("value", rows.Select(r => r.Value).ToArray())
            .Add("unit", rows.Select(r => r.Unit).ToArray())
            .Add("target", rows.Select(r => r.Target).ToArray())
            .Add("comparison", rows.Select(r => r.Comparison).ToArray())
            .Add("met", rows.Select(r => r.Met).ToArray())
            .Add("a", rows.Select(r => r.A).ToArray())
            .Add("b", rows.Select(r => r.B).ToArray())
            .Add("detail", rows.Select(r => r.Detail).ToArray())
            .Add("machine", rows.Select(_ => machine).ToArray());
        await table.WriteAsync(Path.Combine(outDir, "bench.parquet"), ct);
        string md = Markdown(rows, machine);
        await File.WriteAllTextAsync(Path.Combine(outDir, "bench.md"), md, ct);
        return md;
    }

    /// <summary>The rows as a markdown table headed by the machine.</summary>
    public static string Markdown(IReadOnlyList<BenchRow> rows, string? machine = null)
    {
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"Machine: {machine ?? Machine()}; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
        w.WriteLine();
        w.WriteLine("| benchmark | model | input | value | unit | target | met | detail |");
        w.WriteLine("|---|---|---|---:|---|---|---|---|");
        foreach (var r in rows)
            w.WriteLine($"| {r.Benchmark} | {r.Model} | {r.Input} | {Fmt(r.Value)} | {r.Unit} | {(r.Comparison == "report" ? "—" : $"{r.Comparison} {Fmt(r.Target)}")} | {(r.Comparison == "report" ? "" : r.Met ? "yes" : "**no**")} | {r.Detail.Replace("|", "/", StringComparison.Ordinal)} |");
        return w.ToString();
    }

    /// <summary>CPU model, core count and torch threads.</summary>
    public static string Machine()
    {
        string cpu = "unknown CPU";
        if (File.Exists("/proc/cpuinfo"))
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        bool avx512 = File.Exists("/proc/cpuinfo") && File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Contains(" avx512f", StringComparison.Ordinal));
        return $"{cpu}{(avx512 ? " (AVX-512)" : "")}, {Environment.ProcessorCount} cores, torch threads {get_num_threads()}, weight products on {Gemm.Describe()}, {NativeEnvironment.Describe()}, {NativeEnvironment.DescribeAllocator()}";
    }

    private static string Fmt(double x) => double.IsNaN(x) ? "n/a" : Math.Abs(x) >= 100 ? x.ToString("F0", CultureInfo.InvariantCulture) : x.ToString("G3", CultureInfo.InvariantCulture);

    /// <summary>The first existing <paramref name="relative"/> path found walking up from the current folder, then from the program's.</summary>
    private static string? FindUpward(string relative)
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.GetFullPath(Path.Combine(dir.FullName, relative));
                if (File.Exists(candidate)) return candidate;
            }
        return null;
    }
}

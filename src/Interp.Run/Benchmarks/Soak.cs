using Interp.Loading;
using System.Diagnostics;
using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Benchmarks;

/// <summary>What <see cref="Soak.Run"/> does.</summary>
public sealed record SoakOptions
{
    /// <summary>Calls in all, spread over the workers, the models and the kinds of call.</summary>
    public int Calls { get; init; } = 20_000;
    /// <summary>Threads making calls at once, each on its own copies of the models.</summary>
    public int Workers { get; init; } = 2;
    /// <summary>Run a thread that allocates and forces a garbage collection about every millisecond.</summary>
    public bool AllocationPressure { get; init; } = true;
}

/// <summary>What one soak did: calls and time per kind, the collections during the run, and every failure.</summary>
/// <param name="Calls">Calls made, by kind (<c>forward</c>, <c>run_with_cache</c>, <c>run_with_hooks</c>, <c>ablation_sweep</c>, <c>process_weights</c>).</param>
/// <param name="Time">Wall time spent in those calls, by kind, summed over the workers.</param>
/// <param name="Collections">Garbage collections during the run (all generations).</param>
/// <param name="FullCollections">Full (generation 2) collections among them.</param>
/// <param name="Elapsed">Wall time of the run.</param>
/// <param name="Failures">One line per failed call: an exception, or a result that differs from the same call made before the run.</param>
public sealed record SoakResult(IReadOnlyDictionary<string, int> Calls, IReadOnlyDictionary<string, TimeSpan> Time, int Collections,
    int FullCollections, TimeSpan Elapsed, IReadOnlyList<string> Failures)
{
    /// <summary>All calls made.</summary>
    public int TotalCalls => Calls.Values.Sum();

    /// <summary>One line: calls, failures, collections, time.</summary>
    public string Summary =>
        $"{TotalCalls:N0} calls ({string.Join(", ", Calls.Select(c => $"{c.Value:N0} {c.Key} ({Time[c.Key].TotalSeconds:F1} s)"))}) on the built-in, a GPT-2-like and a " +
        $"LLaMA-like (GQA, rotary) model under allocation pressure ({Collections:N0} collections, {FullCollections:N0} full): " +
        $"{Failures.Count} failures; {Elapsed.TotalSeconds:F1} s";
}

/// <summary>
/// A soak of the forward pass under the garbage collector's pressure, for the failure mode of native objects that the
/// collector frees while libtorch still reads them (TorchSharp's implicitly converted scalars: README, "Forward passes
/// that never fail"). Worker threads mix plain forwards, <c>RunWithCache</c>, <c>RunWithHooks</c> with a replacing
/// hook, ablation sweeps and weight processing on the built-in model, a GPT-2-like and a LLaMA-like model
/// (grouped-query attention, rotary), half of them inside a dispose scope and half outside any (where every temporary
/// tensor is the finalizer's to free), while another thread allocates and forces collections. Every call's result is
/// compared with the same call made before the pressure starts: a call fails when it throws or when its numbers
/// differ, so memory read after it was freed shows up even where libtorch raises no error. Before every scalar of
/// the library was owned, this failed about 3 calls in 1,000.
/// </summary>
public static class Soak
{
    private static readonly string[] Kinds = ["forward", "run_with_cache", "run_with_hooks", "ablation_sweep", "process_weights"];

    /// <summary>
    /// Runs the soak and returns what happened. The models are tiny, so libtorch's per-operation overhead dominates:
    /// each worker runs one intra-op thread (restored afterwards), and the workers run side by side.
    /// </summary>
    /// <exception cref="InterpException">Calls or workers are below one.</exception>
    public static SoakResult Run(SoakOptions options, CancellationToken cancellationToken = default)
    {
        if (options.Calls < 1) throw new InterpException($"soak: calls must be at least 1, got {options.Calls}");
        if (options.Workers < 1) throw new InterpException($"soak: workers must be at least 1, got {options.Workers}");
        int threads = get_num_threads();
        set_num_threads(1);
        try
        {
            var workers = Enumerable.Range(0, options.Workers)
                .Select(w => new Worker(options.Calls / options.Workers + (w < options.Calls % options.Workers ? 1 : 0), cancellationToken))
                .ToArray();
            RunAll(workers, w => w.Prepare());
            int collections = GC.CollectionCount(0), full = GC.CollectionCount(2);
            var clock = Stopwatch.StartNew();
            using (options.AllocationPressure ? new AllocationPressure() : null)
                RunAll(workers, w => w.Run());
            clock.Stop();
            cancellationToken.ThrowIfCancellationRequested();
            return new SoakResult(
                Kinds.ToDictionary(k => k, k => workers.Sum(w => w.Calls[k])),
                Kinds.ToDictionary(k => k, k => TimeSpan.FromTicks(workers.Sum(w => w.Time[k].Ticks))),
                GC.CollectionCount(0) - collections, GC.CollectionCount(2) - full, clock.Elapsed,
                workers.SelectMany((w, i) => w.Failures.Select(f => $"worker {i}, {f}")).ToArray());
        }
        finally
        {
            set_num_threads(threads);
        }
    }

    /// <summary>Runs <paramref name="step"/> on every worker, each on its own thread (torch state is per thread), and rethrows the first error.</summary>
    private static void RunAll(Worker[] workers, Action<Worker> step)
    {
        var errors = new Exception?[workers.Length];
        var threads = workers.Select((w, i) => new Thread(() =>
        {
            try { step(w); }
            catch (Exception ex) { errors[i] = ex; }
        }) { IsBackground = true, Name = $"soak worker {i}" }).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        if (errors.FirstOrDefault(e => e is not null) is { } error)
        {
            foreach (var w in workers) w.Dispose();
            throw error is OperationCanceledException ? error : new InterpException($"soak: a worker failed outside the measured calls: {error.Message}", error);
        }
    }

    /// <summary>The GPT-2-like soak model: LayerNorm, learned positions, gelu_new MLP, biases.</summary>
    public static ModelConfig Gpt2Like => new()
    {
        Name = "soak-gpt2-like", DModel = 32, NLayers = 2, NHeads = 4, DMlp = 64, DVocab = 64, NCtx = 16,
        Norm = NormKind.LayerNorm, Positional = PositionalKind.Learned, Mlp = MlpKind.Standard, Act = Activation.GeluTanh,
    };

    /// <summary>The LLaMA-like soak model: RMSNorm, rotary, grouped-query attention (4 heads, 2 key/value heads), SwiGLU.</summary>
    public static ModelConfig LlamaLike => new()
    {
        Name = "soak-llama-like", DModel = 32, NLayers = 2, NHeads = 4, NKvHeads = 2, DMlp = 48, DVocab = 64, NCtx = 16,
        Norm = NormKind.RMSNorm, Positional = PositionalKind.Rotary, Mlp = MlpKind.Gated, Act = Activation.Silu, UseBias = false,
    };

    private static HookedTransformer RandomModel(ModelConfig config)
    {
        var model = new HookedTransformer(config);
        model.InitWeights(seed: 3);
        return model;
    }

    /// <summary>One thread's share of the calls, on its own three models.</summary>
    private sealed class Worker(int calls, CancellationToken cancellationToken) : IDisposable
    {
        private Subject[] _subjects = [];

        public Dictionary<string, int> Calls { get; } = Kinds.ToDictionary(k => k, _ => 0);
        public Dictionary<string, TimeSpan> Time { get; } = Kinds.ToDictionary(k => k, _ => TimeSpan.Zero);
        public List<string> Failures { get; } = [];

        public void Prepare()
        {
            using var noGrad = no_grad();
            _subjects =
            [
                new Subject("builtin", () => BuiltInModel.Load().Model),
                new Subject("gpt2-like", () => RandomModel(Gpt2Like)),
                new Subject("llama-like", () => RandomModel(LlamaLike)),
            ];
            foreach (var s in _subjects) s.Prepare();
        }

        public void Run()
        {
            using var noGrad = no_grad();
            var clock = new Stopwatch();
            try
            {
                for (int i = 0; i < calls; i++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var subject = _subjects[i % _subjects.Length];
                    // Sweeps and weight processing are several forwards each: one call in eight each.
                    string kind = ((i / _subjects.Length) % 8) switch
                    {
                        0 or 1 => "forward", 2 or 3 => "run_with_cache", 4 or 5 => "run_with_hooks", 6 => "ablation_sweep", _ => "process_weights",
                    };
                    bool scoped = (i / (8 * _subjects.Length)) % 2 == 0;
                    string where = $"call {i} ({kind}, {subject.Name}{(scoped ? "" : ", no dispose scope")})";
                    Calls[kind]++;
                    clock.Restart();
                    try
                    {
                        if (subject.Check(kind, scoped) is { } wrong) Failures.Add($"{where}: {wrong}");
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        Failures.Add($"{where}: {ex.GetType().Name}: {ex.Message.Split('\n')[0]}");
                    }
                    Time[kind] += clock.Elapsed;
                }
            }
            finally
            {
                Dispose();
            }
        }

        public void Dispose()
        {
            foreach (var s in _subjects) s.Dispose();
            _subjects = [];
        }
    }

    /// <summary>One model, its input, a second copy for weight processing, and every call's result before the run.</summary>
    private sealed class Subject(string name, Func<HookedTransformer> build) : IDisposable
    {
        private HookedTransformer? _model, _processed;
        private Tensor? _tokens;
        private readonly Dictionary<string, double[]> _expected = [];

        public string Name { get; } = name;

        public void Prepare()
        {
            _model = build();
            _processed = build();
            var cfg = _model.Config;
            _tokens = randint(0, cfg.DVocab, [2, Math.Min(8, cfg.NCtx)], generator: new Generator(11), dtype: ScalarType.Int64);
            foreach (var kind in Kinds) _expected[kind] = Compute(kind);
        }

        /// <summary>Makes the call; null when it gives what it gave before the run, else what differs.</summary>
        public string? Check(string kind, bool scoped)
        {
            var got = Compute(kind, scoped);
            var want = _expected[kind];
            if (got.Length != want.Length) return $"{got.Length} values, expected {want.Length}";
            for (int i = 0; i < got.Length; i++)
                if (!(Math.Abs(got[i] - want[i]) <= 1e-5 * (1 + Math.Abs(want[i]))))
                    return $"value {i} is {got[i]:R}, expected {want[i]:R}";
            return null;
        }

        private double[] Compute(string kind, bool scoped = true)
        {
            var model = _model!;
            var tokens = _tokens!;
            // Half the calls run inside a dispose scope, half outside any, as a script that never opens one makes them.
            using var scope = scoped ? NewDisposeScope() : null;
            switch (kind)
            {
                case "forward":
                    return Values(model.forward(tokens));
                case "run_with_cache":
                {
                    var (logits, cache) = model.RunWithCache(tokens);
                    using (cache)
                        return [.. Values(logits), cache.Count, .. Values(cache[HookNames.ResidPost(model.Config.NLayers - 1)].detach())];
                }
                case "run_with_hooks":
                {
                    // Head 0 of layer 0 replaced by zeros, as an ablation's hook does.
                    HookFunction zeroHead = (z, _) =>
                    {
                        var replaced = z.clone();
                        replaced.select(2, 0).zero_();
                        return replaced;
                    };
                    return Values(model.RunWithHooks(tokens, (HookNames.Z(0), zeroHead)));
                }
                case "ablation_sweep":
                    return AblationSweep.Run(model, tokens, AblationTarget.AllHeads(model.Config), AblationKind.Zero, Metrics.Loss())
                        .Select(r => r.MetricAblated).ToArray();
                case "process_weights":
                {
                    // The original weights copied in, then processed: the same result every time.
                    var processed = _processed!;
                    var source = Weights(model).ToDictionary(w => w.Name, w => w.Tensor);
                    foreach (var (key, value) in Weights(processed)) value.copy_(source[key]);
                    processed.ProcessWeights(WeightProcessingOptions.Default);
                    return Values(processed.forward(tokens));
                }
                default:
                    throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown soak call");
            }
        }

        private static IEnumerable<(string Name, Tensor Tensor)> Weights(HookedTransformer m) =>
            m.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(m.named_buffers().Select(b => (b.name, b.buffer)));

        /// <summary>
        /// The values of <paramref name="t"/>, which this takes over: outside a dispose scope nothing else references the
        /// tensor, and TorchSharp's finalizer would be free to release it while libtorch copies it.
        /// </summary>
        private static double[] Values(Tensor t)
        {
            using (t)
            using (var scope = NewDisposeScope())
                return t.detach().to(ScalarType.Float64).cpu().reshape(-1).data<double>().ToArray();
        }

        public void Dispose()
        {
            _tokens?.Dispose();
            _model?.Dispose();
            _processed?.Dispose();
            _tokens = null;
            _model = _processed = null;
        }
    }

    /// <summary>
    /// A thread that, about every millisecond, allocates 1 MiB in 64 KiB arrays (a ring of 64 stays alive, so each
    /// collection has live objects to trace and move) and forces a collection — of the youngest generation, where a
    /// just-made scalar lives, and a full one every fiftieth (full collections cost the most in a large heap, and the youngest generation is where the hazard is) — then sleeps, leaving the cores to the calls.
    /// </summary>
    private sealed class AllocationPressure : IDisposable
    {
        private readonly Thread _thread;
        private volatile bool _stop;

        public AllocationPressure()
        {
            _thread = new Thread(() =>
            {
                var ring = new byte[64][];
                for (int round = 0, next = 0; !_stop; round++)
                {
                    for (int j = 0; j < 16; j++, next++) ring[next % ring.Length] = new byte[64 * 1024];
                    GC.Collect(round % 50 == 49 ? 2 : 0);
                    Thread.Sleep(1);
                }
            }) { IsBackground = true, Name = "soak allocation pressure" };
            _thread.Start();
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
        }
    }
}

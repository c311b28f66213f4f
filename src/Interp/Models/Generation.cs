using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// How <see cref="Generation.Generate(HookedTransformer, IReadOnlyList{IReadOnlyList{int}}, GenerationOptions, CancellationToken)"/>
/// continues prompts. The defaults are greedy decoding of 50 tokens with the key/value cache.
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate per prompt (at most; a row ends early at a stop token). Prompt + new tokens must fit n_ctx.</summary>
    public int MaxNewTokens { get; init; } = 50;

    /// <summary>
    /// Softmax temperature. 0 (the default): greedy decoding, the argmax of the logits, exactly; no random number is
    /// drawn. Positive: sampling from softmax(logits / temperature), after <see cref="TopK"/> and <see cref="TopP"/>;
    /// as it approaches 0 the samples approach the greedy tokens.
    /// </summary>
    public double Temperature { get; init; }

    /// <summary>Sampling only: keep the k most likely tokens (ties with the k-th kept too); 0 (the default) keeps all.</summary>
    public int TopK { get; init; }

    /// <summary>
    /// Sampling only (nucleus sampling): keep the most likely tokens up to and including the first at which their
    /// probability reaches p (after <see cref="TopK"/>), in (0, 1]; 1 (the default) keeps all. A tiny p keeps only the
    /// most likely token.
    /// </summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>
    /// Seed of the sampler (null: a fresh one, reported in <see cref="GenerationResult.Seed"/>). Sampling draws its
    /// uniform numbers from <see cref="Random"/>(seed), one per row per step in row order, on the host, and picks
    /// the first token whose cumulative probability exceeds the number (inverse CDF, in float64): the same seed gives
    /// the same tokens on every device, and torch's generators are not involved.
    /// </summary>
    public int? Seed { get; init; }

    /// <summary>
    /// Tokens that end a row: the row's output stops with the first one it generates (the stop token is included as
    /// its last token); the other rows continue. Empty (the default): every row runs to <see cref="MaxNewTokens"/>.
    /// </summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];

    /// <summary>
    /// Hooks attached for the whole generation, in every step's pass (e.g. a zero-ablated head). With the key/value cache
    /// a hook sees only the positions new in that pass: the prompt in the first, then one token per row.
    /// </summary>
    public IReadOnlyList<(string Name, HookFunction Hook)> Hooks { get; init; } = [];

    /// <summary>
    /// Record the activations of every position the model read, prompt and generated tokens together, into
    /// <see cref="GenerationResult.Activations"/> (recorded after <see cref="Hooks"/> acted). With the key/value cache
    /// one extra pass runs over the last generated tokens so that they are covered too.
    /// </summary>
    public bool CacheActivations { get; init; }

    /// <summary>The hook names to record when <see cref="CacheActivations"/> (null: every hook point but <c>hook_result</c>, as RunWithCache).</summary>
    public Func<string, bool>? ActivationFilter { get; init; }

    /// <summary>
    /// Use a <see cref="KeyValueCache"/> (the default): each step runs the model on the new token only. Off, each step
    /// re-runs the whole sequence so far (the reference the cache is tested against, ~n/2 times the work).
    /// </summary>
    public bool UseKeyValueCache { get; init; } = true;

    /// <summary>True when tokens are sampled rather than chosen greedily (<see cref="Temperature"/> &gt; 0).</summary>
    public bool Sampling => Temperature > 0;

    /// <summary>Checks the options against <paramref name="config"/> and returns them.</summary>
    /// <exception cref="InterpException">A value is out of range; the message names it.</exception>
    public GenerationOptions Validate(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (MaxNewTokens < 0) throw new InterpException($"generation: MaxNewTokens must not be negative, got {MaxNewTokens}");
        if (!double.IsFinite(Temperature) || Temperature < 0)
            throw new InterpException($"generation: Temperature must be 0 (greedy) or a positive number, got {Temperature}");
        if (TopK < 0) throw new InterpException($"generation: TopK must be 0 (off) or positive, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new InterpException($"generation: TopP must lie in (0, 1] (1: off), got {TopP}");
        if (!Sampling && (TopK > 0 || TopP < 1))
            throw new InterpException($"generation: TopK ({TopK}) and TopP ({TopP}) shape sampling, but Temperature 0 is greedy decoding: set Temperature > 0 (1: the model's own distribution)");
        ArgumentNullException.ThrowIfNull(StopTokens);
        ArgumentNullException.ThrowIfNull(Hooks);
        foreach (int t in StopTokens)
            if (t < 0 || t >= config.DVocab)
                throw new InterpException($"generation: stop token {t} is outside the vocabulary [0, {config.DVocab})");
        return this;
    }
}

/// <summary>
/// What <see cref="Generation.Generate(HookedTransformer, IReadOnlyList{IReadOnlyList{int}}, GenerationOptions, CancellationToken)"/>
/// produced: each row's new tokens, and the whole batch as one padded sequence (left-padded prompts, then the
/// generated tokens, then padding after a row's stop token). It owns its tensors: dispose it to free them.
/// </summary>
public sealed class GenerationResult : IDisposable
{
    internal GenerationResult(int[][] tokens, bool[] stopped, int promptLength, Tensor sequences, Tensor attentionMask, ActivationCache? activations, int? seed)
    {
        Tokens = tokens;
        Stopped = stopped;
        PromptLength = promptLength;
        Sequences = sequences;
        AttentionMask = attentionMask;
        Activations = activations;
        Seed = seed;
    }

    /// <summary>Each prompt's generated tokens, in order; a row that met a stop token ends with it.</summary>
    public IReadOnlyList<int[]> Tokens { get; }

    /// <summary>Per row: true when a stop token ended it, false when it reached <see cref="GenerationOptions.MaxNewTokens"/>.</summary>
    public IReadOnlyList<bool> Stopped { get; }

    /// <summary>The longest prompt's length: column <see cref="PromptLength"/> of <see cref="Sequences"/> is the first generated one.</summary>
    public int PromptLength { get; }

    /// <summary>
    /// int64 [batch, PromptLength + steps] on the CPU: each prompt left-padded, then its generated tokens, then padding
    /// where the row stopped before the others; padded positions hold 0. <c>model.forward(Sequences, AttentionMask)</c>
    /// is one pass over everything generated.
    /// </summary>
    public Tensor Sequences { get; }

    /// <summary>int64 [batch, PromptLength + steps] on the CPU: 1 at real tokens, 0 at padding.</summary>
    public Tensor AttentionMask { get; }

    /// <summary>
    /// With <see cref="GenerationOptions.CacheActivations"/>: the activations over every position of
    /// <see cref="Sequences"/>, concatenated along <c>pos</c> (and <c>query_pos</c>; <c>key_pos</c> spans the whole
    /// sequence, keys a query could not see holding what one forward pass gives them: 0 in the pattern, −∞ in the
    /// scores). At real positions they equal <c>RunWithCache(Sequences, AttentionMask)</c> with the same hooks; at
    /// padded positions they are meaningless. Null otherwise.
    /// </summary>
    public ActivationCache? Activations { get; }

    /// <summary>The seed the sampler used (null for greedy decoding).</summary>
    public int? Seed { get; }

    /// <summary>Frees the tensors and the activations.</summary>
    public void Dispose()
    {
        Sequences.Dispose();
        AttentionMask.Dispose();
        Activations?.Dispose();
    }
}

/// <summary>
/// Text continuation with a <see cref="HookedTransformer"/> (TransformerLens's <c>generate</c>): batched prompts of
/// different lengths, left-padded; greedy decoding or sampling with temperature, top-k and top-p; stop tokens; hooks
/// that act at every step; the activations over the generated tokens. Decoding uses a <see cref="KeyValueCache"/>.
/// </summary>
public static class Generation
{
    /// <summary>Continues one prompt; see <see cref="Generate(HookedTransformer, IReadOnlyList{IReadOnlyList{int}}, GenerationOptions, CancellationToken)"/>.</summary>
    public static GenerationResult Generate(this HookedTransformer model, IReadOnlyList<int> prompt, GenerationOptions options,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return model.Generate([prompt], options, cancellationToken);
    }

    /// <summary>
    /// Continues each of <paramref name="prompts"/>. They run as one batch, left-padded to the longest, so that every
    /// row's new tokens sit in the same column; positions count from each row's first real token, so each row's tokens
    /// (greedy) are those of the prompt run alone, up to float rounding. Each step runs the model on the new tokens with
    /// <see cref="GenerationOptions.Hooks"/> attached, then picks the next token of every row that has not stopped.
    /// </summary>
    /// <exception cref="InterpException">
    /// The model is an encoder or has no unembedding, an option is invalid, a prompt is empty or holds an id outside the
    /// vocabulary, a hook name is unknown, or the longest prompt + <see cref="GenerationOptions.MaxNewTokens"/> exceeds n_ctx.
    /// </exception>
    /// <exception cref="OperationCanceledException">Cancelled (checked before every step).</exception>
    public static GenerationResult Generate(this HookedTransformer model, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        model.EnsureCausal("generation");
        model.EnsureUnembed("generation");
        options.Validate(model.Config);
        if (prompts.Count == 0) throw new InvalidTokensException("generation needs at least one prompt");
        for (int b = 0; b < prompts.Count; b++)
        {
            if (prompts[b] is null || prompts[b].Count == 0) throw new InvalidTokensException($"generation: prompt {b} has no tokens (each prompt needs at least one)");
            for (int i = 0; i < prompts[b].Count; i++)
                if (prompts[b][i] < 0 || prompts[b][i] >= model.Config.DVocab)
                    throw new InvalidTokensException($"generation: token id {prompts[b][i]} at [prompt {b}, pos {i}] is outside the vocabulary [0, {model.Config.DVocab})");
        }
        int longest = prompts.Max(p => p.Count);
        if (longest + options.MaxNewTokens > model.Config.NCtx)
            throw new InterpException($"generation: the longest prompt ({longest} tokens) + MaxNewTokens ({options.MaxNewTokens}) = {longest + options.MaxNewTokens} exceeds the model's context n_ctx = {model.Config.NCtx}");

        int? seed = options.Sampling ? options.Seed ?? Random.Shared.Next() : null;
        var run = new Run(model, prompts, options, seed, cancellationToken);
        using var _ = no_grad();
        using var hooks = model.Hooks([.. options.Hooks]);
        return options.UseKeyValueCache ? run.WithCache() : run.WithoutCache();
    }

    /// <summary>
    /// The next token of every row: the argmax of <paramref name="logits"/> [batch, d_vocab] (greedy), or a sample (see
    /// <see cref="GenerationOptions"/>) drawn with <paramref name="rng"/>.
    /// </summary>
    internal static long[] Choose(Tensor logits, GenerationOptions options, Random? rng)
    {
        using var scope = NewDisposeScope();
        if (!options.Sampling) return logits.argmax(-1).cpu().data<long>().ToArray();
        long batch = logits.shape[0], vocab = logits.shape[1];
        using var temperature = options.Temperature.ToScalar();
        var x = logits.to(ScalarType.Float64).div(temperature);
        if (options.TopK > 0 && options.TopK < vocab)
        {
            var kth = x.topk(options.TopK, dim: -1).values.narrow(-1, options.TopK - 1, 1); // [batch, 1]
            x = x.masked_fill(x.lt(kth), Scalars.NegativeInfinity);
        }
        if (options.TopP < 1)
        {
            // Keep the most likely tokens while the probability before each is still below p.
            var (sorted, _) = x.sort(-1, descending: true);
            var probs = sorted.softmax(-1);
            using var p = options.TopP.ToScalar();
            var kept = probs.cumsum(-1).sub(probs).lt(p).sum(-1, keepdim: true); // [batch, 1], ≥ 1
            var cutoff = sorted.gather(-1, kept.sub(Scalars.One));
            x = x.masked_fill(x.lt(cutoff), Scalars.NegativeInfinity);
        }
        var cdf = x.softmax(-1).cumsum(-1); // [batch, vocab]
        var u = new double[batch];
        for (int b = 0; b < batch; b++) u[b] = rng!.NextDouble();
        var threshold = tensor(u, [batch, 1]).to(cdf.device).mul(cdf.narrow(-1, vocab - 1, 1));
        using var last = (vocab - 1).ToScalar();
        return cdf.le(threshold).sum(-1).clamp_max(last).cpu().data<long>().ToArray();
    }

    /// <summary>One generation: the rows' state, and the two decoding loops.</summary>
    private sealed class Run
    {
        private readonly HookedTransformer _model;
        private readonly GenerationOptions _options;
        private readonly Random? _rng;
        private readonly CancellationToken _ct;
        private readonly HashSet<int> _stop;
        private readonly int _batch, _promptLength;
        private readonly List<long[]> _columns = new();   // the sequence, column by column: [batch] ids
        private readonly List<bool[]> _real = new();       // and its mask
        private readonly List<int>[] _generated;
        private readonly bool[] _running, _stopped;
        private readonly int? _seed;

        public Run(HookedTransformer model, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options, int? seed, CancellationToken ct)
        {
            _model = model;
            _options = options;
            _seed = seed;
            _rng = seed is null ? null : new Random(seed.Value);
            _ct = ct;
            _stop = options.StopTokens.ToHashSet();
            _batch = prompts.Count;
            _promptLength = prompts.Max(p => p.Count);
            for (int i = 0; i < _promptLength; i++)
            {
                var ids = new long[_batch];
                var real = new bool[_batch];
                for (int b = 0; b < _batch; b++)
                {
                    int j = i - (_promptLength - prompts[b].Count); // left padding
                    if (j >= 0) (ids[b], real[b]) = (prompts[b][j], true);
                }
                _columns.Add(ids);
                _real.Add(real);
            }
            _generated = Enumerable.Range(0, _batch).Select(_ => new List<int>()).ToArray();
            _running = Enumerable.Repeat(true, _batch).ToArray();
            _stopped = new bool[_batch];
        }

        private int Width => _columns.Count;

        /// <summary>Columns <paramref name="from"/>… as tokens [batch, n] and mask [batch, n] (null when all real).</summary>
        private (Tensor Tokens, Tensor? Mask) Slice(int from)
        {
            int n = Width - from;
            var ids = new long[_batch * n];
            var mask = new long[_batch * n];
            bool padded = false;
            for (int i = 0; i < n; i++)
                for (int b = 0; b < _batch; b++)
                {
                    ids[b * n + i] = _columns[from + i][b];
                    mask[b * n + i] = _real[from + i][b] ? 1 : 0;
                    padded |= !_real[from + i][b];
                }
            return (tensor(ids, [_batch, n]), padded ? tensor(mask, [_batch, n]) : null);
        }

        /// <summary>Picks the next token of every running row from the last position's logits [batch, d_vocab]; false when every row has ended.</summary>
        private bool Step(Tensor last)
        {
            var next = Choose(last, _options, _rng);
            var real = new bool[_batch];
            for (int b = 0; b < _batch; b++)
            {
                if (!_running[b])
                {
                    next[b] = 0;
                    continue;
                }
                real[b] = true;
                _generated[b].Add((int)next[b]);
                if (_stop.Contains((int)next[b])) (_running[b], _stopped[b]) = (false, true);
            }
            _columns.Add(next);
            _real.Add(real);
            return _running.Any(r => r);
        }

        /// <summary>Decoding with a key/value cache: the prompt once, then one pass per new token.</summary>
        public GenerationResult WithCache()
        {
            using var recorder = _options.CacheActivations ? new Recorder(_model, _options.ActivationFilter) : null;
            using var attached = recorder?.Attach();
            if (_options.MaxNewTokens == 0 && recorder is null) return Result(null);
            using var cache = new KeyValueCache(_model, _promptLength + _options.MaxNewTokens);
            int fed = 0;
            Tensor? last = null;
            // The columns not yet fed → the logits of the last one, [batch, d_vocab] (every row's last column is real or finished).
            void Feed()
            {
                _ct.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var (tokens, mask) = Slice(fed);
                var logits = _model.ForwardWithCache(tokens, cache, mask);
                fed = Width;
                last?.Dispose();
                last = logits.select(1, -1).clone().MoveToOuterDisposeScope();
            }
            try
            {
                Feed();
                for (int step = 0; step < _options.MaxNewTokens; step++)
                {
                    bool more = Step(last!) && step + 1 < _options.MaxNewTokens;
                    // After the last step the new tokens need a pass only to be recorded.
                    if (more || recorder is not null) Feed();
                    if (!more) break;
                }
            }
            finally
            {
                last?.Dispose();
            }
            return Result(recorder?.Collect(Width));
        }

        /// <summary>Decoding without a cache: each step re-runs the whole sequence so far.</summary>
        public GenerationResult WithoutCache()
        {
            for (int step = 0; step < _options.MaxNewTokens; step++)
            {
                _ct.ThrowIfCancellationRequested();
                Tensor last;
                using (var scope = NewDisposeScope())
                {
                    var (tokens, mask) = Slice(0);
                    last = _model.forward(tokens, mask).select(1, -1).MoveToOuterDisposeScope();
                }
                using (last)
                    if (!Step(last)) break;
            }
            ActivationCache? activations = null;
            if (_options.CacheActivations)
            {
                _ct.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var (tokens, mask) = Slice(0);
                var (_, cache) = _model.RunWithCache(tokens, mask, _options.ActivationFilter);
                activations = cache;
            }
            return Result(activations);
        }

        private GenerationResult Result(ActivationCache? activations)
        {
            var (tokens, mask) = Slice(0);
            mask ??= ones_like(tokens);
            return new GenerationResult(_generated.Select(g => g.ToArray()).ToArray(), _stopped, _promptLength,
                tokens.DetachFromDisposeScope(), mask.DetachFromDisposeScope(), activations, _seed);
        }
    }

    /// <summary>Records every pass's activations at the chosen hook points and joins them along the position axis.</summary>
    private sealed class Recorder : IDisposable
    {
        private readonly HookedTransformer _model;
        private readonly HookPoint[] _points;
        private readonly Dictionary<string, List<Tensor>> _parts = new(StringComparer.Ordinal);

        public Recorder(HookedTransformer model, Func<string, bool>? filter)
        {
            _model = model;
            filter ??= name => !HookNames.Is(name, HookNames.Result);
            _points = model.HookPoints.Where(h => filter(h.Name)).ToArray();
            foreach (var h in _points) _parts[h.Name] = new List<Tensor>();
        }

        /// <summary>Attaches the recording hooks (after the caller's, so that they see what those hooks left).</summary>
        public HookScope Attach() => _model.Hooks(_points.Select(h => (h.Name, (HookFunction)((act, _) =>
        {
            _parts[h.Name].Add(act.detach().DetachFromDisposeScope());
            return null;
        }))).ToArray());

        /// <summary>The recorded passes of each hook as one tensor over <paramref name="length"/> positions.</summary>
        public ActivationCache Collect(int length)
        {
            var cache = new ActivationCache();
            try
            {
                foreach (var h in _points)
                {
                    var parts = _parts[h.Name];
                    if (parts.Count == 0) continue;
                    int posAxis = IndexOf(h.Axes, "pos", "query_pos"), keyAxis = IndexOf(h.Axes, "key_pos", "key_pos");
                    if (posAxis < 0) throw new InvalidOperationException($"hook {h.Name} has no position axis");
                    var shape = parts[0].shape.ToArray();
                    shape[posAxis] = length;
                    if (keyAxis >= 0) shape[keyAxis] = length;
                    using var scope = NewDisposeScope();
                    var whole = HookNames.Is(h.Name, HookNames.AttnScores)
                        ? full(shape, Scalars.NegativeInfinity, parts[0].dtype, parts[0].device)
                        : zeros(shape, parts[0].dtype, parts[0].device);
                    long offset = 0;
                    foreach (var part in parts)
                    {
                        long n = part.shape[posAxis];
                        var target = whole.narrow(posAxis, offset, n);
                        if (keyAxis >= 0) target = target.narrow(keyAxis, 0, part.shape[keyAxis]);
                        target.copy_(part);
                        offset += n;
                    }
                    if (offset != length) throw new InvalidOperationException($"hook {h.Name}: recorded {offset} positions, expected {length}");
                    cache.Add(h.Name, whole.DetachFromDisposeScope());
                }
                return cache;
            }
            catch
            {
                cache.Dispose();
                throw;
            }
        }

        private static int IndexOf(IReadOnlyList<string> axes, string a, string b)
        {
            for (int i = 0; i < axes.Count; i++) if (axes[i] == a || axes[i] == b) return i;
            return -1;
        }

        public void Dispose()
        {
            foreach (var t in _parts.Values.SelectMany(p => p)) t.Dispose();
            _parts.Clear();
        }
    }
}

using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Multi-head (optionally grouped-query) self-attention, written as explicit stages so that each is a hook:
/// q, k, v → (q/k norms) → (rotary) → scores → pattern → z → per-head result → attn_out. Causal unless the config
/// says otherwise, with an optional sliding window and attention-score soft cap.
/// Weights: W_Q [head, d_model, d_head], W_K and W_V [kv_head, d_model, d_head], W_O [head, d_head, d_model].
/// Query head h reads key/value head h / (n_heads / n_kv_heads).
/// </summary>
public sealed class Attention : Component
{
    private readonly ModelConfig _cfg;
    private readonly Rotary? _rotary;
    private readonly int _window, _layer;
    private readonly Scalar _scale, _softCap;   // owned: see Scalars
    private readonly HookPoint _q, _k, _v, _rotQ, _rotK, _scores, _pattern, _z, _result;

    /// <summary>Query weights [head, d_model, d_head].</summary>
    public Tensor W_Q { get; }
    /// <summary>Key weights [kv_head, d_model, d_head].</summary>
    public Tensor W_K { get; }
    /// <summary>Value weights [kv_head, d_model, d_head].</summary>
    public Tensor W_V { get; }
    /// <summary>Output weights [head, d_head, d_model].</summary>
    public Tensor W_O { get; }
    /// <summary>Query bias [head, d_head].</summary>
    public Tensor b_Q { get; }
    /// <summary>Key bias [kv_head, d_head].</summary>
    public Tensor b_K { get; }
    /// <summary>Value bias [kv_head, d_head].</summary>
    public Tensor b_V { get; }
    /// <summary>Output bias [d_model].</summary>
    public Tensor b_O { get; }
    /// <summary>Qwen 3's RMSNorm over each query head, before rotary (null unless <see cref="ModelConfig.QkNorm"/>).</summary>
    public Norm? QNorm { get; }
    /// <summary>Qwen 3's RMSNorm over each key head, before rotary (null unless <see cref="ModelConfig.QkNorm"/>).</summary>
    public Norm? KNorm { get; }

    /// <summary>Up to this many rows (batch × pos), q, k and v are projected head by head (<see cref="Project"/>).</summary>
    private const long SmallRows = 16;

    /// <summary>The sliding window of this layer (0: the whole prefix, or every key in an encoder).</summary>
    public int Window => _window;

    /// <summary>Creates the attention layer of block <paramref name="layer"/>.</summary>
    public Attention(ModelConfig cfg, int layer) : base("attn", HookNames.Block(layer) + "attn.")
    {
        _cfg = cfg;
        _window = cfg.WindowOf(layer);
        _layer = layer;
        _scale = cfg.AttnScaleOrDefault.ToScalar();
        _softCap = cfg.AttnScoresSoftCap.ToScalar();
        int h = cfg.NHeads, kv = cfg.KvHeads, d = cfg.DModel, e = cfg.HeadDim;
        bool qkvBias = cfg.UseBias || cfg.QkvBias;
        W_Q = Weight("W_Q", h, d, e);
        W_K = Weight("W_K", kv, d, e);
        W_V = Weight("W_V", kv, d, e);
        W_O = Weight("W_O", h, e, d);
        b_Q = Bias("b_Q", qkvBias, h, e);
        b_K = Bias("b_K", qkvBias, kv, e);
        b_V = Bias("b_V", qkvBias, kv, e);
        b_O = Bias("b_O", cfg.UseBias, d);

        _q = Declare(HookNames.Q(layer), "batch", "pos", "head_index", "d_head");
        _k = Declare(HookNames.K(layer), "batch", "pos", "kv_head_index", "d_head");
        _v = Declare(HookNames.V(layer), "batch", "pos", "kv_head_index", "d_head");
        if (cfg.QkNorm)
        {
            var headNorm = cfg with { Norm = NormKind.RMSNorm };
            register_module("q_norm", QNorm = new Norm(headNorm, Prefix + "q_norm.", cfg.HeadDim, "head_index"));
            register_module("k_norm", KNorm = new Norm(headNorm, Prefix + "k_norm.", cfg.HeadDim, "kv_head_index"));
        }
        if (cfg.Positional == PositionalKind.Rotary)
        {
            _rotary = new Rotary(cfg);
            register_module("rotary", _rotary);
        }
        _rotQ = _rotary is null ? null! : Declare(HookNames.RotQ(layer), "batch", "pos", "head_index", "d_head");
        _rotK = _rotary is null ? null! : Declare(HookNames.RotK(layer), "batch", "pos", "kv_head_index", "d_head");
        _scores = Declare(HookNames.AttnScores(layer), "batch", "head_index", "query_pos", "key_pos");
        _pattern = Declare(HookNames.Pattern(layer), "batch", "head_index", "query_pos", "key_pos");
        _z = Declare(HookNames.Z(layer), "batch", "pos", "head_index", "d_head");
        _result = Declare(HookNames.Result(layer), "batch", "pos", "head_index", "d_model");
    }

    /// <inheritdoc />
    public override IEnumerable<HookPoint> HookPoints
    {
        get
        {
            var own = base.HookPoints.ToList();
            // Forward order: q, k, v, then the q/k norms, then the rest.
            foreach (var h in own.Take(3)) yield return h;
            if (QNorm is not null) foreach (var h in QNorm.HookPoints) yield return h;
            if (KNorm is not null) foreach (var h in KNorm.HookPoints) yield return h;
            foreach (var h in own.Skip(3)) yield return h;
        }
    }

    /// <summary>x [batch, pos, d_model] (already normalised) → attn_out [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor x) => forward(x, AttentionContext.None);

    /// <summary>
    /// x [batch, pos, d_model] (already normalised) → attn_out [batch, pos, d_model]. No query attends to a padded key of
    /// <paramref name="context"/>; a query left with no key at all (a padded query of a left-padded row) attends nowhere,
    /// its pattern row 0. Rotary angles follow the context's positions. With a key/value cache
    /// (<see cref="AttentionContext.Cache"/>) the new keys and values (after rotary, before grouped-query heads are
    /// repeated) are appended to it and the queries attend to every cached key too: the hooks up to <c>hook_rot_k</c>,
    /// <c>hook_z</c> and <c>hook_result</c> see the new positions only, <c>hook_attn_scores</c> and <c>hook_pattern</c>
    /// are [batch, head_index, new query_pos, cached + new key_pos].
    /// </summary>
    public Tensor forward(Tensor x, AttentionContext context)
    {
        // Decode steps (a cache, a few rows) project head by head; every other pass keeps the one-GEMM path's numerics.
        bool decode = context.Cache is not null;
        return Attend(Project(x, W_Q, b_Q, decode), Project(x, W_K, b_K, decode), Project(x, W_V, b_V, decode), context);
    }

    /// <summary>
    /// The forward pass with split inputs (TransformerLens's <c>use_split_qkv_input</c>): every query, key and value head
    /// reads its own copy of <paramref name="residPre"/> [batch, pos, d_model] (before the norm), which passes
    /// <paramref name="qInput"/>, <paramref name="kInput"/> or <paramref name="vInput"/> ([batch, pos, head, d_model])
    /// and is normalised by <paramref name="norm"/> on its own. Where no hook replaced the copies of an input, its
    /// values are exactly those of <see cref="forward(Tensor, AttentionContext)"/> (the standard projection of the
    /// normalised stream) and, while gradients are recorded, its gradient flows to <paramref name="residPre"/> through
    /// each head's copy, so that each copy's gradient is ∂/∂(that head's input); where a hook replaced them, the
    /// projection of each head's own normalised copy is used.
    /// </summary>
    internal Tensor ForwardSplit(Tensor residPre, Norm? norm, HookPoint qInput, HookPoint kInput, HookPoint vInput, AttentionContext context)
    {
        bool decode = context.Cache is not null;
        long batch = residPre.shape[0], pos = residPre.shape[1], dModel = residPre.shape[2];
        Tensor? normalised = null;
        Tensor Norm(Tensor x) => norm is null ? x : norm.forward(x);
        Tensor Input(HookPoint hook, Tensor w, Tensor b)
        {
            long heads = w.shape[0];
            var copies = hook.Run(residPre.unsqueeze(2).expand(batch, pos, heads, dModel), out bool replaced); // [batch, pos, head, d_model]
            if (!replaced && !copies.requires_grad) return Project(normalised ??= Norm(residPre), w, b, decode);
            if (replaced) return einsum("bphd,hde->bphe", Norm(copies), w).add(b, Scalars.One); // [batch, pos, head, d_head]
            // The copies are residPre's: the standard values (exactly), with each head's gradient sent to its own copy.
            var standard = Project(normalised ??= Norm(residPre.detach()), w, b, decode).detach();
            return SplitInputGradient.apply(copies, standard, residPre.detach(), w, norm);
        }
        return Attend(Input(qInput, W_Q, b_Q), Input(kInput, W_K, b_K), Input(vInput, W_V, b_V), context);
    }

    /// <summary>
    /// The split inputs' straight-through step: forward, the standard projection of the shared normalised stream
    /// [batch, pos, head, d_head]; backward, each head's gradient taken through its own weights and the norm's Jacobian
    /// at the shared stream to its own copy [batch, pos, head, d_model]. The same gradients as projecting each head's
    /// normalised copy, without projecting or normalising the copies in the forward pass (which would double the
    /// projections' cost).
    /// </summary>
    private sealed class SplitInputGradient : autograd.SingleTensorFunction<SplitInputGradient>
    {
        public override string Name => nameof(SplitInputGradient);

        /// <summary>vars: copies [batch, pos, head, d_model], standard [batch, pos, head, d_head], the stream [batch, pos, d_model], w [head, d_model, d_head], the norm (or null).</summary>
        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            ctx.save_for_backward([(Tensor)vars[2], (Tensor)vars[3]]);
            ctx.save_data("norm", vars[4]);
            return ((Tensor)vars[1]).clone();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
        {
            var saved = ctx.get_saved_variables();
            var (stream, w) = (saved[0], saved[1]);
            var norm = (Norm?)ctx.get_data("norm");
            using var scope = NewDisposeScope();
            var normalised = einsum("bphe,hde->bphd", grad_output, w);             // ∂/∂(each head's normalised copy)
            var copies = norm is null ? normalised : norm.InputGradient(stream, normalised); // [batch, pos, head, d_model]
            return [copies.MoveToOuterDisposeScope(), null!, null!, null!, null!];
        }
    }

    /// <summary>Projected q [batch, pos, head, d_head] and k, v [batch, pos, kv_head, d_head] → attn_out [batch, pos, d_model].</summary>
    private Tensor Attend(Tensor q, Tensor k, Tensor v, AttentionContext context)
    {
        long pos = q.shape[1];
        q = _q.Run(q);
        k = _k.Run(k);
        v = _v.Run(v);
        if (QNorm is not null) q = QNorm.forward(q);
        if (KNorm is not null) k = KNorm.forward(k);
        if (_rotary is not null)
        {
            var (cos, sin) = _rotary.Angles(context.Positions, pos, q.dtype);
            q = _rotQ.Run(_rotary.Apply(q, cos, sin));
            k = _rotK.Run(_rotary.Apply(k, cos, sin));
        }
        if (context.Cache is { } cache) (k, v) = cache.Append(_layer, k, v); // [batch, cached + pos, kv_head, d_head]
        k = RepeatKv(k);
        v = RepeatKv(v);
        long keys = k.shape[1];

        // Scaled and masked in place, on the fresh einsum output before any hook sees it: at long context the scores are
        // the largest tensors of the pass (n_heads·pos² floats, 50 MB for GPT-2 at 1,024 positions), and every new one is
        // a fresh mmap that the kernel faults in page by page (measured: ~300,000 faults per 1 × 1024 forward).
        // While gradients are recorded, the steps whose backward reads their own output (tanh, softmax) are followed
        // by out-of-place operations: writing over that output would invalidate the backward pass.
        bool recording = q.requires_grad || k.requires_grad;
        var scores = einsum("bqhe,bkhe->bhqk", q, k).div_(_scale);
        if (_cfg.AttnScoresSoftCap > 0)
            scores = recording ? scores.div(_softCap).tanh().mul(_softCap) : scores.div_(_softCap).tanh_().mul_(_softCap);
        var (blocked, keyless) = Blocked(pos, keys, keys - pos, context.KeyPadding, q.device);
        if (blocked is not null) scores = recording ? scores.masked_fill(blocked, Scalars.NegativeInfinity) : scores.masked_fill_(blocked, Scalars.NegativeInfinity);
        scores = _scores.Run(scores);
        var pattern = scores.softmax(-1);
        if (keyless is not null) // 0/0 rows: attend nowhere
            pattern = pattern.requires_grad ? pattern.masked_fill(keyless, Scalars.Zero) : pattern.masked_fill_(keyless, Scalars.Zero);
        pattern = _pattern.Run(pattern);
        var z = _z.Run(einsum("bhqk,bkhe->bqhe", pattern, v)); // [batch, pos, head, d_head]

        if (_result.IsActive)
        {
            // Per-head writes are materialised only when someone hooks them: [batch, pos, head, d_model].
            var result = _result.Run(einsum("bqhe,hed->bqhd", z, W_O));
            return result.sum(2).add(b_O, Scalars.One);
        }
        long batch = z.shape[0];
        return Gemm.MatMul(z.reshape(batch, pos, -1), W_O.reshape(-1, _cfg.DModel), b_O);
    }

    /// <summary>
    /// Which keys each query may not see: bool [batch or 1, 1, query_pos, key_pos], true where blocked, or null when
    /// nothing is; and the queries left with no key at all ([batch, 1, query_pos, 1], or null when there are none): a
    /// padded query before its row's first real token, or one whose window holds only padding. Their pattern rows are
    /// set to 0 (they attend nowhere and give no weight to padding). Query i sits at index
    /// <paramref name="queryOffset"/> + i of the key axis. Built per call rather than stored: an n_ctx² table is
    /// prohibitive for long-context checkpoints.
    /// </summary>
    internal (Tensor? Blocked, Tensor? Keyless) Blocked(long queries, long keys, long queryOffset, Tensor? keyPadding, Device device)
    {
        Tensor? blocked = null;
        // One query at the end of the key axis (a decode step) sees every key, unless a window cuts some off.
        bool seesAll = queries == 1 && queryOffset == keys - 1 && (_window == 0 || keys <= _window);
        if (_cfg.Causal && !seesAll)
        {
            using var first = queryOffset.ToScalar();
            using var end = (queryOffset + queries).ToScalar();
            using var keyCount = keys.ToScalar();
            var qi = arange(first, end, Scalars.One, ScalarType.Int64, device).unsqueeze(1);        // [query_pos, 1]
            var ki = arange(Scalars.Zero, keyCount, Scalars.One, ScalarType.Int64, device).unsqueeze(0); // [1, key_pos]
            blocked = ki.gt(qi);
            if (_window > 0)
            {
                using var w = ((long)_window).ToScalar();
                blocked = blocked.logical_or(qi.sub(ki).ge(w)); // sees keys q − W < k ≤ q: W keys, itself included
            }
            blocked = blocked.view(1, 1, queries, keys);
        }
        if (keyPadding is null) return (blocked, null);
        var padded = keyPadding.view(keyPadding.shape[0], 1, 1, keys);
        blocked = blocked is null ? padded : blocked.logical_or(padded);
        var keyless = blocked.all(-1, keepdim: true); // [batch, 1, query_pos, 1]
        return (blocked, keyless.any().item<bool>() ? keyless : null);
    }

    /// <summary>
    /// x [batch, pos, d_model] · W [head, d_model, d_head] + b [head, d_head] → [batch, pos, head, d_head]: one GEMM
    /// over W flattened to [d_model, head·d_head], or for a few rows of a decode step one product per head.
    /// </summary>
    private static Tensor Project(Tensor x, Tensor w, Tensor b, bool decode)
    {
        long heads = w.shape[0], dHead = w.shape[2], rows = x.shape[0] * x.shape[1];
        if (decode && rows <= SmallRows)
        {
            // Flattening W copies all of it (its head axis moves inside); with one row per sequence that copy would cost
            // more than the product. Here each head's [d_model, d_head] block is read where it lies.
            // bmm, not matmul: matmul's broadcasting takes another route with gradients on, so that the two modes would round differently.
            var perHead = x.reshape(1, rows, w.shape[1]).expand(heads, rows, w.shape[1]).bmm(w); // [head, rows, d_head]
            return perHead.permute(1, 0, 2).reshape(x.shape[0], x.shape[1], heads, dHead).add(b, Scalars.One);
        }
        var flat = w.permute(1, 0, 2).reshape(w.shape[1], heads * dHead); // [d_model, head·d_head]
        return Gemm.MatMul(x, flat, b.reshape(-1)).view(x.shape[0], x.shape[1], heads, dHead);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _scale.Dispose();
            _softCap.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>Grouped-query attention: repeats each key/value head for the query heads that share it.</summary>
    private Tensor RepeatKv(Tensor t)
    {
        int group = _cfg.NHeads / _cfg.KvHeads;
        return group == 1 ? t : t.repeat_interleave(group, dim: 2);
    }
}

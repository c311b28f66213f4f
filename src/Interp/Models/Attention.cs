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
    private readonly Tensor _qkv;          // [d_model, (head + 2 kv_head)·d_head]: W_Q, W_K and W_V are views of it
    private readonly Tensor? _qkvBias;     // [(head + 2 kv_head)·d_head]: b_Q, b_K, b_V (null: no q/k/v biases)

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
        // W_Q, W_K and W_V are views of one [d_model, (head + 2 kv_head)·d_head] matrix, so that q, k and v are one
        // product (one GEMM, no copy of the weights per pass) while each stays a parameter of its TransformerLens shape.
        long qCols = (long)h * e, kvCols = (long)kv * e;
        _qkv = Storage(d, qCols + 2 * kvCols);
        W_Q = WeightView("W_Q", () => InHeads(_qkv.narrow(1, 0, qCols), h, e), h, d, e);
        W_K = WeightView("W_K", () => InHeads(_qkv.narrow(1, qCols, kvCols), kv, e), kv, d, e);
        W_V = WeightView("W_V", () => InHeads(_qkv.narrow(1, qCols + kvCols, kvCols), kv, e), kv, d, e);
        W_O = Weight("W_O", h, e, d);
        if (qkvBias)
        {
            _qkvBias = Storage(qCols + 2 * kvCols);
            b_Q = WeightView("b_Q", () => _qkvBias.narrow(0, 0, qCols).view(h, e), h, e);
            b_K = WeightView("b_K", () => _qkvBias.narrow(0, qCols, kvCols).view(kv, e), kv, e);
            b_V = WeightView("b_V", () => _qkvBias.narrow(0, qCols + kvCols, kvCols).view(kv, e), kv, e);
        }
        else
        {
            b_Q = Bias("b_Q", false, h, e);
            b_K = Bias("b_K", false, kv, e);
            b_V = Bias("b_V", false, kv, e);
        }
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
        var (q, k, v) = ProjectQkv(x, context.Cache is not null);
        return Attend(q, k, v, context);
    }

    /// <summary>A [d_model, head·d_head] block of the fused matrix as [head, d_model, d_head] (a view).</summary>
    private static Tensor InHeads(Tensor block, long heads, long dHead) => block.view(block.shape[0], heads, dHead).permute(1, 0, 2);

    /// <summary>
    /// x [batch, pos, d_model] → q [batch, pos, head, d_head], k and v [batch, pos, kv_head, d_head]. One product with
    /// the fused matrix, unless a weight or bias records a gradient in this pass (training: each parameter's own product,
    /// so that its gradient flows) or a decode step has a few rows (each head's block read where it lies).
    /// </summary>
    private (Tensor Q, Tensor K, Tensor V) ProjectQkv(Tensor x, bool decode)
    {
        long rows = x.shape[0] * x.shape[1];
        bool trains = is_grad_enabled() && (W_Q.requires_grad || W_K.requires_grad || W_V.requires_grad || (_qkvBias is not null && (b_Q.requires_grad || b_K.requires_grad || b_V.requires_grad)));
        if (trains || (decode && rows <= SmallRows))
            return (Project(x, W_Q, b_Q, decode), Project(x, W_K, b_K, decode), Project(x, W_V, b_V, decode));
        int h = _cfg.NHeads, kv = _cfg.KvHeads;
        var qkv = Gemm.MatMul(x, _qkv, _qkvBias).view(x.shape[0], x.shape[1], h + 2 * kv, _cfg.HeadDim); // [batch, pos, head + 2 kv_head, d_head]
        return (qkv.narrow(2, 0, h), qkv.narrow(2, h, kv), qkv.narrow(2, h + kv, kv));
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
        (Tensor Q, Tensor K, Tensor V)? standard = null;   // the standard projections of the normalised stream, once
        Tensor Norm(Tensor x) => norm is null ? x : norm.forward(x);
        Tensor Standard(int which)
        {
            var s = standard ??= ProjectQkv(Norm(residPre.detach()), decode);
            return which == 0 ? s.Q : which == 1 ? s.K : s.V;
        }
        Tensor Input(HookPoint hook, Tensor w, Tensor b, int which)
        {
            long heads = w.shape[0];
            var copies = hook.Run(residPre.unsqueeze(2).expand(batch, pos, heads, dModel), out bool replaced); // [batch, pos, head, d_model]
            if (replaced) return einsum("bphd,hde->bphe", Norm(copies), Gemm.Like(w, copies)).add(b, Scalars.One); // [batch, pos, head, d_head]
            if (!copies.requires_grad) return Standard(which);
            // The copies are residPre's: the standard values (exactly), with each head's gradient sent to its own copy.
            return SplitInputGradient.apply(copies, Standard(which).detach(), residPre.detach(), w, norm);
        }
        return Attend(Input(qInput, W_Q, b_Q, 0), Input(kInput, W_K, b_K, 1), Input(vInput, W_V, b_V, 2), context);
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
            var normalised = einsum("bphe,hde->bphd", grad_output, Gemm.Like(w, grad_output));             // ∂/∂(each head's normalised copy)
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
            var tables = _rotary.RotationTables(context.Positions, pos, q.dtype);
            q = _rotQ.Run(_rotary.Rotate(q, tables));
            k = _rotK.Run(_rotary.Rotate(k, tables));
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
        // Batched products written out rather than einsum: the same bmm, without parsing an equation and permuting per call.
        var scores = q.transpose(1, 2).matmul(k.permute(0, 2, 3, 1)).div_(_scale);   // [batch, head, query_pos, key_pos]
        if (_cfg.AttnScoresSoftCap > 0)
            scores = recording ? scores.div(_softCap).tanh().mul(_softCap) : scores.div_(_softCap).tanh_().mul_(_softCap);
        var (blocked, keyless) = Blocked(pos, keys, keys - pos, context.KeyPadding, q.device);
        if (blocked is not null) scores = recording ? scores.masked_fill(blocked, Scalars.NegativeInfinity) : scores.masked_fill_(blocked, Scalars.NegativeInfinity);
        scores = _scores.Run(scores);
        var pattern = scores.softmax(-1);
        if (keyless is not null) // 0/0 rows: attend nowhere
            pattern = pattern.requires_grad ? pattern.masked_fill(keyless, Scalars.Zero) : pattern.masked_fill_(keyless, Scalars.Zero);
        pattern = _pattern.Run(pattern);
        var z = _z.Run(pattern.matmul(v.transpose(1, 2)).transpose(1, 2)); // [batch, pos, head, d_head]

        if (_result.IsActive)
        {
            // Per-head writes are materialised only when someone hooks them: [batch, pos, head, d_model].
            var result = _result.Run(einsum("bqhe,hed->bqhd", z, Gemm.Like(W_O, z)));
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
    /// <paramref name="queryOffset"/> + i of the key axis. The causal part comes from <see cref="CausalMasks"/> (built
    /// once per shape, not an n_ctx² table: that is prohibitive for long-context checkpoints).
    /// </summary>
    internal (Tensor? Blocked, Tensor? Keyless) Blocked(long queries, long keys, long queryOffset, Tensor? keyPadding, Device device)
    {
        Tensor? blocked = null;
        // One query at the end of the key axis (a decode step) sees every key, unless a window cuts some off.
        bool seesAll = queries == 1 && queryOffset == keys - 1 && (_window == 0 || keys <= _window);
        if (_cfg.Causal && !seesAll) blocked = CausalMasks.Get(queries, keys, queryOffset, _window, device);
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
            var perHead = x.reshape(1, rows, w.shape[1]).expand(heads, rows, w.shape[1]).bmm(Gemm.Like(w, x)); // [head, rows, d_head]
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
            _qkv.Dispose();
            _qkvBias?.Dispose();
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

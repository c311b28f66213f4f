using Interp.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// Multi-head (optionally grouped-query) causal self-attention, written as explicit stages so that each is a hook:
/// q, k, v → (rotary) → scores → pattern → z → per-head result → attn_out.
/// Weights: W_Q [head, d_model, d_head], W_K and W_V [kv_head, d_model, d_head], W_O [head, d_head, d_model].
/// Query head h reads key/value head h / (n_heads / n_kv_heads).
/// </summary>
public sealed class Attention : Component
{
    private readonly ModelConfig _cfg;
    private readonly Rotary? _rotary;
    private readonly Scalar _sqrtHeadDim;   // owned: see Scalars
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

    /// <summary>Creates the attention layer of block <paramref name="layer"/>.</summary>
    public Attention(ModelConfig cfg, int layer) : base("attn", HookNames.Block(layer) + "attn.")
    {
        _cfg = cfg;
        _sqrtHeadDim = Math.Sqrt(cfg.HeadDim).ToScalar();
        int h = cfg.NHeads, kv = cfg.KvHeads, d = cfg.DModel, e = cfg.HeadDim;
        W_Q = Weight("W_Q", h, d, e);
        W_K = Weight("W_K", kv, d, e);
        W_V = Weight("W_V", kv, d, e);
        W_O = Weight("W_O", h, e, d);
        b_Q = Bias("b_Q", cfg.UseBias, h, e);
        b_K = Bias("b_K", cfg.UseBias, kv, e);
        b_V = Bias("b_V", cfg.UseBias, kv, e);
        b_O = Bias("b_O", cfg.UseBias, d);

        _q = Declare(HookNames.Q(layer), "batch", "pos", "head_index", "d_head");
        _k = Declare(HookNames.K(layer), "batch", "pos", "kv_head_index", "d_head");
        _v = Declare(HookNames.V(layer), "batch", "pos", "kv_head_index", "d_head");
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

    /// <summary>x [batch, pos, d_model] (already normalised) → attn_out [batch, pos, d_model].</summary>
    public override Tensor forward(Tensor x) => forward(x, null);

    /// <summary>
    /// x [batch, pos, d_model] (already normalised) → attn_out [batch, pos, d_model], where no query attends to a key
    /// that <paramref name="keyPadding"/> (bool [batch, pos], true at padding; null: none) marks. With right padding
    /// and the causal mask a real query sees only real keys anyway, so real positions are unchanged; the padding mask
    /// keeps padded queries (and any non-causal use) off the padding too.
    /// </summary>
    public Tensor forward(Tensor x, Tensor? keyPadding)
    {
        long pos = x.shape[1];
        var q = _q.Run(Project(x, W_Q, b_Q));
        var k = _k.Run(Project(x, W_K, b_K));
        var v = _v.Run(Project(x, W_V, b_V));
        if (_rotary is not null)
        {
            q = _rotQ.Run(_rotary.forward(q));
            k = _rotK.Run(_rotary.forward(k));
        }
        k = RepeatKv(k);
        v = RepeatKv(v);

        // Scaled and masked in place, on the fresh einsum output before any hook sees it: at long context the scores are
        // the largest tensors of the pass (n_heads·pos² floats, 50 MB for GPT-2 at 1,024 positions), and every new one is
        // a fresh mmap that the kernel faults in page by page (measured: ~300,000 faults per 1 × 1024 forward).
        var scores = einsum("bqhe,bkhe->bhqk", q, k).div_(_sqrtHeadDim);
        // Built per call rather than stored: an n_ctx² table is prohibitive for long-context checkpoints.
        var mask = ones(pos, pos, dtype: ScalarType.Bool, device: x.device).triu(1); // true above the diagonal
        scores = scores.masked_fill_(mask, Scalars.NegativeInfinity);
        if (keyPadding is not null) scores = scores.masked_fill_(keyPadding.view(keyPadding.shape[0], 1, 1, pos), Scalars.NegativeInfinity);
        scores = _scores.Run(scores);
        var pattern = _pattern.Run(scores.softmax(-1));
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

    /// <summary>x [batch, pos, d_model] · W [head, d_model, d_head] + b [head, d_head] → [batch, pos, head, d_head], as one GEMM.</summary>
    private static Tensor Project(Tensor x, Tensor w, Tensor b)
    {
        long heads = w.shape[0], dHead = w.shape[2];
        var flat = w.permute(1, 0, 2).reshape(w.shape[1], heads * dHead); // [d_model, head·d_head]
        return Gemm.MatMul(x, flat, b.reshape(-1)).view(x.shape[0], x.shape[1], heads, dHead);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing) _sqrtHeadDim.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>Grouped-query attention: repeats each key/value head for the query heads that share it.</summary>
    private Tensor RepeatKv(Tensor t)
    {
        int group = _cfg.NHeads / _cfg.KvHeads;
        return group == 1 ? t : t.repeat_interleave(group, dim: 2);
    }
}

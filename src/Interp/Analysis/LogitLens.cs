using Interp.Hooks;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// What the logit lens predicts for a target token after each layer, each [layer, batch, position] (float64):
/// <see cref="Probability"/> of the target, its <see cref="Rank"/> (1 = the top prediction; 1 + the number of tokens
/// with a strictly larger logit) and its <see cref="Logit"/>. Entry l is the stream entering block l (<c>{l}_pre</c>,
/// after l blocks); the last entry, l = n_layers, is the final stream (<c>final_post</c>), where the lens is the model.
/// </summary>
/// <param name="Layers">The stream read at each entry.</param>
/// <param name="Probability">Probability of the target, [layer, batch, position].</param>
/// <param name="Rank">Rank of the target, [layer, batch, position].</param>
/// <param name="Logit">Logit of the target, [layer, batch, position].</param>
public sealed record LogitLensResult(IReadOnlyList<ResidualComponent> Layers, Tensor Probability, Tensor Rank, Tensor Logit);

/// <summary>The logit lens's top predictions (<see cref="LogitLens.Top"/>): after each layer, the k most probable tokens.</summary>
/// <param name="Layers">The stream read at each entry (as <see cref="LogitLensResult.Layers"/>).</param>
/// <param name="Ids">Token ids, [layer, batch, position, k] (int64), most probable first.</param>
/// <param name="Probability">Their probabilities, [layer, batch, position, k] (float64).</param>
public sealed record LogitLensTop(IReadOnlyList<ResidualComponent> Layers, Tensor Ids, Tensor Probability);

/// <summary>
/// The logit lens: decode the residual stream after every layer as if it were the final one — the model's own head:
/// the final norm, the unembedding (W_U and b_U) and, where the model has them, its masked-LM head (BERT) and logit
/// soft cap (Gemma 2) — <see cref="HookedTransformer.ForwardFrom(int, Tensor, Tensor?)"/> at n_layers. As TransformerLens's
/// <c>accumulated_resid(apply_ln=True)</c> (and nostalgebraist's lens), each stream is normalised with its own
/// statistics (ln_final recomputed on it, gain and shift included), not with the final stream's cached scale: a stream
/// of another size is read as the final norm would read it. At the last layer the lens runs exactly the model's own
/// computation, so its logits and probabilities equal the model's. A post-norm model (BERT) has no final norm: each
/// block's output is already normalised (its ln2), and the lens reads it through the masked-LM head.
/// </summary>
public static class LogitLens
{
    /// <summary>
    /// The hooks the lens reads: each block's <c>hook_resid_pre</c> and <c>hook_resid_post</c> (post-norm blocks:
    /// <c>hook_normalized_resid_post</c>, the block's output).
    /// </summary>
    public static bool CacheFilter(string name) =>
        HookNames.Is(name, HookNames.ResidPre) || HookNames.Is(name, HookNames.ResidPost) || HookNames.Is(name, HookNames.NormalizedResidPost);

    /// <summary>
    /// The lens's logits after every layer, [n_layers + 1, batch, pos, d_vocab] (float32, the model's dtype), with
    /// what each entry reads. Memory grows with d_vocab: use <see cref="Target"/> for large vocabularies.
    /// </summary>
    /// <exception cref="InterpException">The model has no unembedding (a base encoder).</exception>
    public static (Tensor Logits, IReadOnlyList<ResidualComponent> Layers) Logits(HookedTransformer model, ActivationCache cache)
    {
        model.EnsureUnembed("the logit lens");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var stream = cache.AccumulatedResid(model);
        var logits = Enumerable.Range(0, stream.Components.Count).Select(i => Decode(model, stream.Values[i])).ToArray();
        return (stack(logits).MoveToOuterDisposeScope(), stream.Components);
    }

    /// <summary>Entry <paramref name="l"/> of the lens: the stream entering block l, or at l = n_layers the final stream.</summary>
    private static (ResidualComponent Component, Tensor Resid) Stream(ModelConfig cfg, ActivationCache cache, int l) => l < cfg.NLayers
        ? (new ResidualComponent(ComponentKind.ResidPre, l), cache[HookNames.ResidPre(l)])
        : (new ResidualComponent(ComponentKind.FinalPost, l), cache[ResidualStacks.FinalStreamHook(cfg)]);

    /// <summary>A stream [batch, pos, d_model] through the model's head, as the forward pass ends: its logits [batch, pos, d_vocab].</summary>
    private static Tensor Decode(HookedTransformer model, Tensor resid) => model.ForwardFrom(model.Config.NLayers, resid);

    /// <summary>
    /// The lens at the first n positions for <paramref name="targets"/> [batch, n] (n ≤ pos): probability, rank and
    /// logit of each target after every layer. One layer's logits are held at a time.
    /// </summary>
    /// <exception cref="InterpException">The targets' shape does not fit the cached run, an id is outside the vocabulary, or the model has no unembedding.</exception>
    public static LogitLensResult Target(HookedTransformer model, ActivationCache cache, Tensor targets)
    {
        model.EnsureUnembed("the logit lens");
        var cfg = model.Config;
        var first = cache[HookNames.ResidPre(0)];
        long batch = first.shape[0], pos = first.shape[1];
        if (targets.dim() != 2 || targets.shape[0] != batch || targets.shape[1] < 1 || targets.shape[1] > pos)
            throw new InterpException($"logit lens: targets must be [batch {batch}, n ≤ {pos}]; got [{string.Join(", ", targets.shape)}]");
        long n = targets.shape[1];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = model.ValidateTokens(targets).unsqueeze(-1);                              // [batch, n, 1]
        var layers = new List<ResidualComponent>();
        var probability = new List<Tensor>();
        var rank = new List<Tensor>();
        var logit = new List<Tensor>();
        for (int l = 0; l <= cfg.NLayers; l++)
        {
            using var step = NewDisposeScope();
            // One stream at a time: the same computation as Logits, without holding every layer.
            var (component, resid) = Stream(cfg, cache, l);
            var all = Decode(model, resid).narrow(1, 0, n);                                 // [batch, n, d_vocab]
            var own = all.gather(-1, ids);                                                  // [batch, n, 1]
            layers.Add(component);
            logit.Add(own.squeeze(-1).to(ScalarType.Float64).MoveToOuterDisposeScope());
            probability.Add(all.softmax(-1).gather(-1, ids).squeeze(-1).to(ScalarType.Float64).MoveToOuterDisposeScope());
            rank.Add((all > own).sum(-1).add(Scalars.One, Scalars.One).to(ScalarType.Float64).MoveToOuterDisposeScope());
        }
        return new LogitLensResult(layers, stack(probability).MoveToOuterDisposeScope(), stack(rank).MoveToOuterDisposeScope(), stack(logit).MoveToOuterDisposeScope());
    }

    /// <summary>The lens for the next token: at each position p &lt; pos − 1, the token at p + 1 of <paramref name="tokens"/>.</summary>
    /// <exception cref="InterpException">Fewer than two positions, or a bidirectional encoder (its logit at p does not predict token p + 1).</exception>
    public static LogitLensResult NextToken(HookedTransformer model, ActivationCache cache, Tensor tokens)
    {
        model.EnsureCausal("the next-token logit lens (LogitLens.NextToken)");
        if (tokens.dim() != 2 || tokens.shape[1] < 2)
            throw new InterpException($"next-token logit lens needs tokens [batch, pos] with pos ≥ 2; got [{string.Join(", ", tokens.shape)}]");
        using var scope = NewDisposeScope();
        var r = Target(model, cache, tokens[.., 1..]);
        return new LogitLensResult(r.Layers, r.Probability.MoveToOuterDisposeScope(), r.Rank.MoveToOuterDisposeScope(), r.Logit.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The lens's top <paramref name="k"/> predictions after every layer: token ids [n_layers + 1, batch, pos, k] (int64) and
    /// their probabilities (float64), largest first — the logit lens table researchers read. One layer's logits are held at a time.
    /// </summary>
    /// <exception cref="InterpException"><paramref name="k"/> is outside [1, d_vocab], or the model has no unembedding.</exception>
    public static LogitLensTop Top(HookedTransformer model, ActivationCache cache, int k)
    {
        model.EnsureUnembed("the logit lens");
        var cfg = model.Config;
        if (k < 1 || k > cfg.DVocab) throw new InterpException($"logit lens: top k must be in [1, d_vocab {cfg.DVocab}], got {k}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var layers = new List<ResidualComponent>();
        var ids = new List<Tensor>();
        var probability = new List<Tensor>();
        for (int l = 0; l <= cfg.NLayers; l++)
        {
            using var step = NewDisposeScope();
            var (component, resid) = Stream(cfg, cache, l);
            var (values, indices) = Decode(model, resid).to(ScalarType.Float64).softmax(-1).topk(k, -1);   // each [batch, pos, k]
            layers.Add(component);
            ids.Add(indices.MoveToOuterDisposeScope());
            probability.Add(values.MoveToOuterDisposeScope());
        }
        return new LogitLensTop(layers, stack(ids).MoveToOuterDisposeScope(), stack(probability).MoveToOuterDisposeScope());
    }
}

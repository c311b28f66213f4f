using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>
/// A logit split into the direct contributions of the residual stream's components: <see cref="Values"/>
/// [component, batch, position] and the model's own logit (or logit difference) <see cref="Logit"/> [batch, position],
/// both float64; the components sum to the logit (up to float rounding). Position p is the residual position read: it
/// predicts the token at p + 1 for a next-token attribution.
/// </summary>
/// <param name="Values">Direct contribution of each component, [component, batch, position].</param>
/// <param name="Components">What each entry along the first axis is.</param>
/// <param name="Logit">The model's logit of the target (or the logit difference), [batch, position]; under a logit soft cap the logit before the cap.</param>
public sealed record LogitAttribution(Tensor Values, IReadOnlyList<ResidualComponent> Components, Tensor Logit)
{
    /// <summary>The index of <paramref name="component"/> in <see cref="Components"/>.</summary>
    /// <exception cref="InterpException">The attribution has no such component.</exception>
    public int IndexOf(ResidualComponent component)
    {
        for (int i = 0; i < Components.Count; i++)
            if (Components[i] == component) return i;
        throw new InterpException($"logit attribution has no component {component.Label}");
    }

    /// <summary>The sum of every component, [batch, position]: equal to <see cref="Logit"/> up to float rounding.</summary>
    public Tensor Total() => Values.sum([0]);   // not sum(0): a literal 0 binds to sum(ScalarType), the sum of all elements

    /// <summary>Mean over the batch and over <paramref name="positions"/> of every component's contribution, by component.</summary>
    public double[] Mean(IEnumerable<int> positions)
    {
        using var scope = NewDisposeScope();
        var index = tensor(positions.Select(p => (long)p).ToArray(), device: Values.device);
        if (index.NumberOfElements == 0) throw new InterpException("logit attribution: no positions to average over");
        return Values.index_select(2, index).mean([1, 2]).cpu().data<double>().ToArray();
    }
}

/// <summary>
/// Direct logit attribution (TransformerLens's <c>logit_attrs</c> over a full decomposition): the logit of a target
/// token — the correct next token, or a logit difference W_U[:, a] − W_U[:, b] — split into the direct contributions
/// of the token and position embeddings, every attention head, each layer's attention bias b_O, every MLP (its biases
/// inside its output), the final LayerNorm's shift and the unembedding bias b_U. With the final norm's cached scale
/// s (and, for LayerNorm, each component centred), a component x contributes ((x − mean x)/s ⊙ w)·u, where w is the
/// norm's gain and u the target direction; the shift contributes b·u and the unembedding bias b_U[a] (− b_U[b]). The
/// components sum to the model's own logit up to float rounding, with raw or processed weights alike (after
/// <see cref="WeightProcessing.ProcessWeights"/> the gain is one, the shift zero, and the logit the centred one).
/// <para>Architectures: parallel blocks (GPT-NeoX) decompose as sequential ones do (both sublayers' writes are added
/// to the stream). Where attention's output is normalised before it joins the stream (Gemma 2's ln1_post) no head
/// writes on its own, so the attention components are whole layers (<c>{l}_attn_out</c>, after that norm). Under a
/// logit soft cap (Gemma 2: the model outputs c·tanh(l/c)) the components sum to the logit l before the cap, which
/// <see cref="LogitAttribution.Logit"/> then holds (the cap is monotone: it keeps every ranking). Refused, because the
/// logits are not linear in the stream's components: post-norm blocks (BERT: every block ends with a LayerNorm), a
/// masked-LM head (a dense layer and an activation before W_U), and a base encoder without logits.</para>
/// </summary>
public static class HeadAttribution
{
    /// <summary>
    /// The hooks an attribution reads: embeddings, every head's result, attention and MLP outputs, the final norm's
    /// scale, and each block's resid_post (the final one gives the pre-cap logit under a logit soft cap).
    /// </summary>
    public static bool CacheFilter(string name) =>
        name is HookNames.Embed or HookNames.PosEmbed or HookNames.LnFinalScale
        || HookNames.Is(name, HookNames.Result)
        || HookNames.Is(name, HookNames.AttnOut)
        || HookNames.Is(name, HookNames.MlpOut)
        || HookNames.Is(name, HookNames.ResidPost);

    /// <summary>
    /// The direct components of the final residual stream, [component, batch, pos, d_model]: <c>embed</c>,
    /// <c>pos_embed</c>, then per layer every head (<c>L{l}H{h}</c>), the attention bias (<c>{l}_attn_bias</c>, models
    /// with biases) and the MLP output (<c>{l}_mlp_out</c>). They sum to the final <c>hook_resid_post</c>. A model that
    /// normalises attention's output before it joins the stream (Gemma 2's ln1_post) has each layer's whole
    /// <c>{l}_attn_out</c> in place of its heads and bias.
    /// </summary>
    /// <exception cref="InterpException">The stream is not a sum of writes (post-norm blocks, normalised embeddings), or a hook is not cached.</exception>
    public static ResidualStack DirectComponents(this ActivationCache cache, HookedTransformer model)
    {
        PassChecks.SummedStream(model, "the direct components of the residual stream (HeadAttribution.DirectComponents)");
        var cfg = model.Config;
        using var scope = NewDisposeScope();
        var parts = new List<(ResidualComponent, Tensor)> { (new(ComponentKind.Embed), cache[HookNames.Embed]) };
        if (model.PosEmbed is not null) parts.Add((new(ComponentKind.PosEmbed), cache[HookNames.PosEmbed]));
        bool perHead = !PassChecks.NormalisesAttentionOutput(cfg);
        var heads = perHead ? cache.StackHeadResults(model) : null;                  // every head, each layer followed by its b_O
        int next = 0;
        for (int l = 0; l < cfg.NLayers; l++)
        {
            if (heads is null) parts.Add((new(ComponentKind.AttnOut, l), cache[HookNames.AttnOut(l)]));
            else
                for (; next < heads.Components.Count && heads.Components[next].Layer == l; next++)
                    parts.Add((heads.Components[next], heads.Values[next]));
            if (!cfg.AttentionOnly) parts.Add((new(ComponentKind.MlpOut, l), cache[HookNames.MlpOut(l)]));
        }
        var values = stack(parts.Select(p => p.Item2).ToArray());
        return new ResidualStack(values.MoveToOuterDisposeScope(), parts.Select(p => p.Item1).ToArray());
    }

    /// <summary>
    /// Attributes, at the first n positions, the logit of <paramref name="correct"/> [batch, n] (or, with
    /// <paramref name="wrong"/> [batch, n], the difference logit(correct) − logit(wrong)) to every direct component.
    /// <paramref name="logits"/> [batch, pos, d_vocab] are the model's output of the run that filled
    /// <paramref name="cache"/>, which must hold <see cref="CacheFilter"/>'s hooks. Under a logit soft cap the
    /// components sum to the logit before the cap, recomputed from the cached final stream.
    /// </summary>
    /// <exception cref="InterpException">Shapes disagree, n exceeds the positions, a token id is outside the vocabulary, or
    /// the model's logits are not linear in the stream's components (post-norm blocks, a masked-LM head, no unembedding).</exception>
    public static LogitAttribution Attribute(HookedTransformer model, ActivationCache cache, Tensor logits, Tensor correct, Tensor? wrong = null)
    {
        PassChecks.LinearReadout(model, "direct logit attribution (HeadAttribution)");
        var cfg = model.Config;
        var embed = cache[HookNames.Embed];
        long batch = embed.shape[0], pos = embed.shape[1];
        CheckTargets(correct, "correct", batch, pos, cfg.DVocab);
        if (wrong is not null)
        {
            CheckTargets(wrong, "wrong", batch, pos, cfg.DVocab);
            if (!wrong.shape.SequenceEqual(correct.shape))
                throw new InterpException($"logit attribution: wrong tokens [{string.Join(", ", wrong.shape)}] must have the shape of the correct ones [{string.Join(", ", correct.shape)}]");
        }
        if (logits.dim() != 3 || logits.shape[0] != batch || logits.shape[1] != pos || logits.shape[2] != cfg.DVocab)
            throw new InterpException($"logit attribution: logits must be [{batch}, {pos}, {cfg.DVocab}] like the cached run; got [{string.Join(", ", logits.shape)}]");
        long n = correct.shape[1];

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var device = embed.device;
        var a = correct.to(ScalarType.Int64, device);
        var b = wrong?.to(ScalarType.Int64, device);
        var wU = model.Unembed.W_U.detach().to(ScalarType.Float64);                        // [d_model, d_vocab]
        Tensor Columns(Tensor ids) => wU.T.index_select(0, ids.reshape(-1)).view(batch, n, cfg.DModel);
        var direction = b is null ? Columns(a) : Columns(a) - Columns(b);                  // [batch, n, d_model]

        var components = cache.DirectComponents(model);
        var normed = cache.ApplyLnToStack(model, components.Values).narrow(2, 0, n).to(ScalarType.Float64);
        var gain = model.LnFinal?.W.detach().to(ScalarType.Float64);
        var read = gain is null ? direction : direction * gain;                            // w ⊙ u: the norm's gain goes with the direction
        var parts = new List<Tensor> { einsum("cbpd,bpd->cbp", normed, read) };
        var labels = new List<ResidualComponent>(components.Components);
        if (cfg.Norm == NormKind.LayerNorm && model.LnFinal is { } ln)
        {
            parts.Add((direction * ln.B.detach().to(ScalarType.Float64)).sum(-1).unsqueeze(0));
            labels.Add(new ResidualComponent(ComponentKind.LnFinalBias));
        }
        if (cfg.UseBias)
        {
            var bU = model.Unembed.b_U.detach().to(ScalarType.Float64);
            var term = bU.index_select(0, a.reshape(-1)).view(batch, n);
            if (b is not null) term = term - bU.index_select(0, b.reshape(-1)).view(batch, n);
            parts.Add(term.unsqueeze(0));
            labels.Add(new ResidualComponent(ComponentKind.UnembedBias));
        }
        var values = cat(parts, 0);

        var at = (cfg.OutputLogitsSoftCap > 0 ? PreCapLogits(model, cache, n) : logits.detach().narrow(1, 0, n)).to(ScalarType.Float64);   // [batch, n, d_vocab]
        var logit = at.gather(-1, a.unsqueeze(-1)).squeeze(-1);
        if (b is not null) logit = logit - at.gather(-1, b.unsqueeze(-1)).squeeze(-1);
        return new LogitAttribution(values.MoveToOuterDisposeScope(), labels, logit.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Attributes, at every position, the logit of token <paramref name="correct"/> (or, with <paramref name="wrong"/>,
    /// the logit difference along W_U[:, correct] − W_U[:, wrong]): the same pair of tokens everywhere.
    /// </summary>
    /// <exception cref="InterpException">A token id is outside the vocabulary.</exception>
    public static LogitAttribution Attribute(HookedTransformer model, ActivationCache cache, Tensor logits, int correct, int? wrong = null)
    {
        var shape = cache[HookNames.Embed].shape[..2];
        using var scope = NewDisposeScope();
        Tensor Everywhere(long id)
        {
            using var value = id.ToScalar();
            return full(shape, value, ScalarType.Int64);
        }
        return Keep(Attribute(model, cache, logits, Everywhere(correct), wrong is int w ? Everywhere(w) : null));
    }

    /// <summary>
    /// The next-token attribution of a run on <paramref name="tokens"/> [batch, pos]: at each position p &lt; pos − 1,
    /// the logit of the token at p + 1 (minus, with <paramref name="wrong"/> [batch, pos − 1], the logit of that
    /// alternative token), over positions 0 … pos − 2.
    /// </summary>
    /// <exception cref="InterpException">Fewer than two positions, the shapes disagree, or the model is a bidirectional encoder (its logit at p does not predict token p + 1).</exception>
    public static LogitAttribution NextToken(HookedTransformer model, ActivationCache cache, Tensor logits, Tensor tokens, Tensor? wrong = null)
    {
        model.EnsureCausal("next-token logit attribution (HeadAttribution.NextToken)");
        if (tokens.dim() != 2 || tokens.shape[1] < 2)
            throw new InterpException($"next-token attribution needs tokens [batch, pos] with pos ≥ 2; got [{string.Join(", ", tokens.shape)}]");
        using var scope = NewDisposeScope();
        return Keep(Attribute(model, cache, logits, tokens[.., 1..], wrong));
    }

    /// <summary>
    /// Runs <paramref name="model"/> on <paramref name="tokens"/> with the hooks an attribution needs and returns the
    /// next-token attribution (<see cref="NextToken"/>).
    /// </summary>
    public static LogitAttribution Run(HookedTransformer model, Tensor tokens, Tensor? wrong = null)
    {
        model.EnsureCausal("next-token logit attribution (HeadAttribution.Run)");
        PassChecks.LinearReadout(model, "direct logit attribution (HeadAttribution.Run)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        tokens = model.ValidateTokens(tokens);
        var (logits, cache) = model.RunWithCache(tokens, CacheFilter);
        using (cache) return Keep(NextToken(model, cache, logits, tokens, wrong));
    }

    /// <summary>
    /// Attributes, at one position per sequence — <paramref name="positions"/>[b] of sequence b, e.g. each prompt's last
    /// real token in a right-padded batch — the logit of <paramref name="correct"/>[b] (or, with
    /// <paramref name="wrong"/>, the difference along W_U[:, correct[b]] − W_U[:, wrong[b]]). The result has one
    /// position: <see cref="LogitAttribution.Values"/> [component, batch, 1], <see cref="LogitAttribution.Logit"/> [batch, 1].
    /// </summary>
    /// <exception cref="InterpException">The lists do not have one entry per sequence, a position is outside the sequence, or a token id is outside the vocabulary.</exception>
    public static LogitAttribution AtPositions(HookedTransformer model, ActivationCache cache, Tensor logits, IReadOnlyList<int> positions, IReadOnlyList<int> correct, IReadOnlyList<int>? wrong = null)
    {
        var embed = cache[HookNames.Embed];
        long batch = embed.shape[0], pos = embed.shape[1];
        if (positions.Count != batch || correct.Count != batch || (wrong is not null && wrong.Count != batch))
            throw new InterpException($"logit attribution at one position per sequence: need {batch} positions, correct and wrong tokens (one per sequence), got {positions.Count}, {correct.Count} and {wrong?.Count ?? 0}");
        for (int b = 0; b < batch; b++)
            if (positions[b] < 0 || positions[b] >= pos)
                throw new InterpException($"logit attribution: sequence {b}'s position {positions[b]} is outside the cached run's positions [0, {pos})");
        int n = positions.Max() + 1;
        using var scope = NewDisposeScope();
        Tensor Ids(IReadOnlyList<int> ids) => tensor(ids.Select(i => (long)i).ToArray()).view(batch, 1).expand(batch, n).contiguous();
        var all = Attribute(model, cache, logits, Ids(correct), wrong is null ? null : Ids(wrong));
        var at = tensor(positions.Select(p => (long)p).ToArray(), device: all.Values.device);
        var values = all.Values.gather(2, at.view(1, batch, 1).expand(all.Values.shape[0], batch, 1));      // [component, batch, 1]
        var logit = all.Logit.gather(1, at.view(batch, 1));                                             // [batch, 1]
        return new LogitAttribution(values.MoveToOuterDisposeScope(), all.Components, logit.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Runs a right-padded batch of prompts (<paramref name="tokens"/> [batch, pos] with <paramref name="attentionMask"/>,
    /// 1 at real tokens; null: none padded) and attributes, at each prompt's last real token, logit(answers[b]) −
    /// logit(wrongs[b]) (or logit(answers[b]) alone) to every direct component (<see cref="AtPositions"/>). With a
    /// prompt set: <c>AtLastTokens(model, set.Clean.Tokens, set.Clean.AttentionMask, set.AnswerIds, set.WrongIds)</c>.
    /// </summary>
    /// <exception cref="InterpException">The tokens or mask are invalid, or the lists do not have one entry per prompt.</exception>
    public static LogitAttribution AtLastTokens(HookedTransformer model, Tensor tokens, Tensor? attentionMask, IReadOnlyList<int> answers, IReadOnlyList<int>? wrongs = null)
    {
        PassChecks.LinearReadout(model, "direct logit attribution (HeadAttribution.AtLastTokens)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        tokens = model.ValidateTokens(tokens);
        long batch = tokens.shape[0], pos = tokens.shape[1];
        var padding = model.PaddingMask(attentionMask, batch, pos);
        int[] last = padding is null
            ? Enumerable.Repeat((int)pos - 1, (int)batch).ToArray()
            : padding.logical_not().sum([1]).cpu().data<long>().Select(n => (int)n - 1).ToArray();
        var (logits, cache) = model.RunWithCache(tokens, padding?.logical_not(), CacheFilter);
        using (cache) return Keep(AtPositions(model, cache, logits, last, answers, wrongs));
    }

    /// <summary>
    /// The logits before the soft cap at the first <paramref name="n"/> positions, [batch, n, d_vocab]: the cached final
    /// stream through ln_final and the unembedding, as the forward pass computes them before it caps them.
    /// </summary>
    private static Tensor PreCapLogits(HookedTransformer model, ActivationCache cache, long n)
    {
        var cfg = model.Config;
        if (cfg.NLayers == 0)
            throw new InterpException($"direct logit attribution under a logit soft cap reads the final stream (the last block's resid_post), but {PassChecks.Describe(cfg)} has no blocks");
        var final = cache[HookNames.ResidPost(cfg.NLayers - 1)].narrow(1, 0, n);
        return model.Unembed.forward(model.LnFinal is null ? final : model.LnFinal.forward(final));
    }

    private static LogitAttribution Keep(LogitAttribution a)
    {
        a.Values.MoveToOuterDisposeScope();
        a.Logit.MoveToOuterDisposeScope();
        return a;
    }

    private static void CheckTargets(Tensor ids, string what, long batch, long pos, int vocab)
    {
        if (ids.dim() != 2 || ids.shape[0] != batch || ids.shape[1] < 1 || ids.shape[1] > pos)
            throw new InterpException($"logit attribution: {what} tokens must be [batch {batch}, n ≤ {pos}] (one target per attributed position); got [{string.Join(", ", ids.shape)}]");
        using var scope = NewDisposeScope();
        using var size = vocab.ToScalar();
        var bad = ids.lt(Scalars.Zero).logical_or(ids.ge(size));
        if (bad.any().item<bool>())
        {
            long flat = bad.reshape(-1).to(ScalarType.Int32).argmax().item<long>();
            long n = ids.shape[1];
            throw new InterpException($"logit attribution: {what} token id {ids.reshape(-1)[flat].item<long>()} at [batch {flat / n}, position {flat % n}] is outside the vocabulary [0, {vocab})");
        }
    }
}

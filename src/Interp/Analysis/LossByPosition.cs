using Interp.Hooks;
using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>The loss curve along the sequence: where a model predicts well, and what an intervention costs where.</summary>
public static class LossByPosition
{
    /// <summary>
    /// Mean next-token loss over the batch at each predicted position 1 … pos − 1 (entry i predicts token i + 1), with
    /// <paramref name="hooks"/> attached for the pass: [pos − 1].
    /// </summary>
    /// <exception cref="InterpException">The model has no logits (a base encoder) or is a bidirectional encoder, whose logit at p does not predict token p + 1.</exception>
    public static double[] Mean(HookedTransformer model, Tensor tokens, params (string Name, HookFunction Hook)[] hooks)
    {
        model.EnsureUnembed("loss by position");
        model.EnsureCausal("loss by position (the next-token loss)");
        using var scope = NewDisposeScope();
        var logits = model.RunWithHooks(tokens, hooks);
        return Metrics.PerTokenLoss(logits, tokens).mean([0]).to(ScalarType.Float64).data<double>().ToArray();   // [pos − 1]
    }

    /// <summary>
    /// Next-token loss of every sequence at each predicted position, with <paramref name="hooks"/> attached: [batch][pos − 1]
    /// (entry i predicts token i + 1; <see cref="Mean"/> is its mean over the batch).
    /// </summary>
    /// <exception cref="InterpException">As <see cref="Mean"/>.</exception>
    public static double[][] PerSequence(HookedTransformer model, Tensor tokens, params (string Name, HookFunction Hook)[] hooks)
    {
        model.EnsureUnembed("loss by position");
        model.EnsureCausal("loss by position (the next-token loss)");
        using var scope = NewDisposeScope();
        var loss = Metrics.PerTokenLoss(model.RunWithHooks(tokens, hooks), tokens).to(ScalarType.Float64).contiguous();   // [batch, pos − 1]
        var flat = loss.data<double>().ToArray();
        int n = (int)loss.shape[1];
        return Enumerable.Range(0, (int)loss.shape[0]).Select(b => flat[(b * n)..((b + 1) * n)]).ToArray();
    }
}

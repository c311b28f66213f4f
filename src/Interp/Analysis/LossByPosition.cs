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
    public static double[] Mean(HookedTransformer model, Tensor tokens, params (string Name, HookFunction Hook)[] hooks)
    {
        using var scope = NewDisposeScope();
        var logits = model.RunWithHooks(tokens, hooks);
        return Metrics.PerTokenLoss(logits, tokens).mean([0]).to(ScalarType.Float64).data<double>().ToArray();   // [pos − 1]
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>Scores of the circuits through tokens.</summary>
public static class CircuitScores
{
    /// <summary>
    /// The full message circuit of every head through tokens, W_E·W_V·W_O·W_U (d_vocab × d_vocab: what attending to
    /// token s does to the logit of token t), kept factored: [layer, head, d_vocab, d_vocab] of rank ≤ d_head.
    /// </summary>
    public static FactoredMatrix FullMessage(HookedTransformer model)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var ov = HeadCircuits.Message(model);
        var a = model.Embed.W_E.detach().matmul(ov.A);          // [layer, head, d_vocab, d_head]
        var b = ov.B.matmul(model.Unembed.W_U.detach());        // [layer, head, d_head, d_vocab]
        return new FactoredMatrix(a, b).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Copying score of every head's full message circuit, as in "A Mathematical Framework for Transformer Circuits":
    /// Σλ / Σ|λ| over its eigenvalues λ (Σλ is real: it is the trace). 1 means attending to a token raises that same
    /// token's logit; −1 means it lowers it. Computed from the d_head × d_head matrix B·A: no d_vocab² matrix exists.
    /// </summary>
    public static double[,] Copying(HookedTransformer model)
    {
        using var scope = NewDisposeScope();
        using var full = FullMessage(model);
        var eig = full.Eigenvalues();                            // [layer, head, k] complex
        var score = real(eig).sum(-1) / eig.abs().sum(-1);
        var result = new double[model.Config.NLayers, model.Config.NHeads];
        var flat = score.to(ScalarType.Float64).cpu().data<double>().ToArray();
        for (int l = 0; l < model.Config.NLayers; l++)
            for (int h = 0; h < model.Config.NHeads; h++) result[l, h] = flat[l * model.Config.NHeads + h];
        return result;
    }
}

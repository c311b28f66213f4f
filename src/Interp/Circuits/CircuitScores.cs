using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Circuits;

/// <summary>Which of a head's two circuits.</summary>
public enum Circuit
{
    /// <summary>The pattern (QK) circuit W_Q·W_Kᵀ: where a token looks.</summary>
    Pattern,
    /// <summary>The message (OV) circuit W_V·W_O: what it moves.</summary>
    Message,
}

/// <summary>
/// Scores of every head's circuits through tokens, computed from d_model-sized matrices only, so that they cost the
/// same for a 50,000-token vocabulary as for a small one: no d_vocab × d_vocab matrix, and no d_vocab × d_head factor
/// per head, is ever formed.
/// </summary>
public static class CircuitScores
{
    /// <summary>
    /// Copying score of every head's full message circuit W_E·OV·W_U, as in "A Mathematical Framework for Transformer
    /// Circuits": Σλ / Σ|λ| over its eigenvalues λ (Σλ is real: it is the trace), [layer, head]. 1 means attending
    /// to a token raises that same token's logit; −1 means it lowers it.
    /// </summary>
    /// <remarks>W_E·W_V·W_O·W_U = A·B with A = W_E·W_V and B = W_O·W_U shares its nonzero eigenvalues with
    /// B·A = W_O·(W_U·W_E)·W_V, a d_head × d_head matrix built from the d_model × d_model product W_U·W_E.</remarks>
    /// <exception cref="InterpException">W_U does not read the residual stream (a base encoder; a masked-LM head).</exception>
    public static double[,] Copying(HookedTransformer model)
    {
        PassChecks.UnembedReadsStream(model, "the copying score of the full message circuit W_E·OV·W_U (CircuitScores.Copying)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var ov = HeadCircuits.Message(model);
        var middle = Gram(model.Unembed.W_U.detach(), model.Embed.W_E.detach(), model.Embed.Scale);
        return EigenScore(model, ov, middle);
    }

    /// <summary>
    /// The same eigenvalue score for every head's full pattern circuit W_E·QK·W_Eᵀ, [layer, head]: near 1 when tokens
    /// attend to copies of themselves (a duplicate-token head's signature), near −1 when they avoid them.
    /// </summary>
    /// <exception cref="InterpException">The model normalises queries and keys per head (q/k norms): it has no pattern circuit.</exception>
    public static double[,] SameToken(HookedTransformer model)
    {
        PassChecks.PatternCircuit(model, "the same-token score of the full pattern circuit W_E·QK·W_Eᵀ (CircuitScores.SameToken)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var qk = HeadCircuits.Pattern(model);
        var we = model.Embed.W_E.detach();
        var middle = Gram(we.mT, we, model.Embed.Scale * model.Embed.Scale);
        return EigenScore(model, qk, middle);
    }

    /// <summary>
    /// The singular values of every head's full circuit through tokens (W_E·QK·W_Eᵀ or W_E·OV·W_U), [layer, head], from
    /// a d_model-sized core with the same singular values: with W_E = Q_E·R_E and W_Uᵀ = Q_U·R_U (thin QR, once for
    /// the model), ‖W_E·X·W_U‖ and its spectrum equal those of R_E·X·R_Uᵀ because Q_E and Q_U have orthonormal columns.
    /// </summary>
    /// <exception cref="InterpException">The pattern circuit of a model with q/k norms; the message circuit of a model whose W_U does not read the stream.</exception>
    public static CircuitSpectrum[,] FullSpectra(HookedTransformer model, Circuit circuit)
    {
        if (circuit == Circuit.Pattern) PassChecks.PatternCircuit(model, "the spectra of the full pattern circuit W_E·QK·W_Eᵀ (CircuitScores.FullSpectra)");
        else PassChecks.UnembedReadsStream(model, "the spectra of the full message circuit W_E·OV·W_U (CircuitScores.FullSpectra)");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var inner = circuit == Circuit.Pattern ? HeadCircuits.Pattern(model) : HeadCircuits.Message(model);
        var left = Embedding(model).to(ScalarType.Float64);
        var right = (circuit == Circuit.Pattern ? Embedding(model).mT : model.Unembed.W_U.detach()).to(ScalarType.Float64);
        var (_, rl) = linalg.qr(left, linalg.QRMode.R);              // [d_model, d_model] (or smaller for a tiny vocabulary)
        var (_, rr) = linalg.qr(right.mT, linalg.QRMode.R);
        using var core = new FactoredMatrix(rl.matmul(inner.A.to(ScalarType.Float64)), inner.B.to(ScalarType.Float64).matmul(rr.mT));
        return CircuitSpectrum.Of(core);
    }

    /// <summary>Σλ/Σ|λ| of left·(A·B)·right for every head, from the eigenvalues of B·middle·A, middle = right·left; one layer at a time.</summary>
    private static double[,] EigenScore(HookedTransformer model, FactoredMatrix inner, Tensor middle)
    {
        var scores = new Tensor[model.Config.NLayers];
        for (int l = 0; l < scores.Length; l++)
        {
            using var layer = NewDisposeScope(); // each layer's float64 copies go before the next layer's are made
            var small = inner.B[l].to(ScalarType.Float64).matmul(middle).matmul(inner.A[l].to(ScalarType.Float64)); // [head, d_head, d_head]
            var eig = linalg.eigvals(small);
            scores[l] = (real(eig).sum(-1) / eig.abs().sum(-1)).MoveToOuterDisposeScope();
        }
        return ToLayerHead(model, stack(scores));
    }

    // Vocabulary rows per product in Gram: bounds its extra memory to a few hundred MiB at any vocabulary size.
    private const long GramChunk = 8192;

    /// <summary>
    /// scale · right·left, [d_model, d_model] in float64, for right [d_model, d_vocab] and left [d_vocab, d_model], as a sum
    /// over chunks of the vocabulary: no vocabulary-sized copy (a converted or scaled W_E or W_U) is ever made, so at
    /// Gemma's 256,000 tokens it needs tens of MiB beyond the weights. Each chunk's product runs in float32 (float64 for
    /// a float64 model) and is added in float64: a relative error of order 1e-7·√8192 per chunk, summed exactly.
    /// </summary>
    private static Tensor Gram(Tensor right, Tensor left, double scale)
    {
        using var scope = NewDisposeScope();
        var product = right.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        long vocab = left.shape[0];
        var sum = zeros([right.shape[0], left.shape[1]], ScalarType.Float64, right.device);
        for (long start = 0; start < vocab; start += GramChunk)
        {
            using var step = NewDisposeScope();
            long n = Math.Min(GramChunk, vocab - start);
            sum.add_(right.narrow(1, start, n).to(product).matmul(left.narrow(0, start, n).to(product)).to(ScalarType.Float64), Scalars.One);
        }
        using var s = scale.ToScalar();
        return sum.mul_(s).MoveToOuterDisposeScope();
    }

    /// <summary>The token embedding as the model adds it to the stream (W_E times its scale).</summary>
    private static Tensor Embedding(HookedTransformer model) => model.Embed.Scaled();

    internal static double[,] ToLayerHead(HookedTransformer model, Tensor values)
    {
        int layers = model.Config.NLayers, heads = model.Config.NHeads;
        var flat = values.to(ScalarType.Float64).cpu().data<double>().ToArray();
        var result = new double[layers, heads];
        for (int l = 0; l < layers; l++)
            for (int h = 0; h < heads; h++) result[l, h] = flat[l * heads + h];
        return result;
    }
}

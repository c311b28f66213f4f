using System.Globalization;
using Interp.Models;
using Interp.Results;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>Whether a token's logit goes up or down when a feature fires.</summary>
public enum LogitEffectDirection
{
    /// <summary>The largest effects: tokens the feature promotes.</summary>
    Promoted,
    /// <summary>The most negative effects: tokens the feature suppresses.</summary>
    Suppressed,
}

/// <summary>One of a feature's top direct effects on the logits.</summary>
/// <param name="Feature">The feature.</param>
/// <param name="Direction">Promoted (largest) or suppressed (most negative).</param>
/// <param name="Rank">1 for the largest effect in its direction.</param>
/// <param name="TokenId">The token.</param>
/// <param name="Token">Its display string (the id in decimal without a tokenizer).</param>
/// <param name="Value">(W_dec[f] · W_U)[token]: the logit change per unit of activation along the direct path.</param>
public sealed record LogitEffect(int Feature, LogitEffectDirection Direction, int Rank, int TokenId, string Token, double Value);

/// <summary>Which logit effects <see cref="SaeLogitEffects.Compute"/> reports.</summary>
public sealed record SaeLogitEffectOptions
{
    /// <summary>Tokens per direction and feature (default 10).</summary>
    public int TopK { get; init; } = 10;
    /// <summary>The features; null: all of them.</summary>
    public IReadOnlyList<int>? Features { get; init; }
    /// <summary>
    /// Multiply by the final norm's gain first, W_dec[f]·diag(w_ln_final)·W_U (default false). For a model whose norms
    /// were folded (<see cref="WeightProcessingOptions.FoldLn"/>) the gain is already inside W_U and the option is ignored.
    /// </summary>
    public bool ThroughFinalNormGain { get; init; }
    /// <summary>Features whose [chunk, d_vocab] effects are computed together (default 64), bounding memory.</summary>
    public int FeaturesPerChunk { get; init; } = 64;
}

/// <summary>
/// Each feature's direct effect on the logits: its decoder direction W_dec[f] read by the unembedding, W_dec[f]·W_U
/// [d_vocab], and the tokens it most promotes and suppresses (as Neuronpedia's "top/bottom logits"). This is the
/// direct path only: the final LayerNorm's normalisation (the division by the stream's scale and, for LayerNorm, the
/// centring) is ignored, and so is every later layer, as in TransformerLens's direct logit attribution of a
/// direction; only the final norm's gain can be applied (<see cref="SaeLogitEffectOptions.ThroughFinalNormGain"/>).
/// The unembedding bias b_U is not part of a direction's effect. Only for an SAE whose decoder writes the residual
/// stream (it replaces <c>hook_resid_pre</c>, <c>hook_resid_mid</c>, <c>hook_resid_post</c>, <c>hook_attn_out</c> or
/// <c>hook_mlp_out</c>, with d_out = d_model).
/// </summary>
public sealed class SaeLogitEffects
{
    /// <summary>The table name of <see cref="ToTable"/>.</summary>
    public const string TableName = "sae_logit_effects";

    private SaeLogitEffects(IReadOnlyList<LogitEffect> rows) => Rows = rows;

    /// <summary>Every effect: by feature, promoted before suppressed, by rank.</summary>
    public IReadOnlyList<LogitEffect> Rows { get; }

    /// <summary>One feature's effects in one direction, by rank.</summary>
    public IReadOnlyList<LogitEffect> Of(int feature, LogitEffectDirection direction) =>
        Rows.Where(r => r.Feature == feature && r.Direction == direction).ToArray();

    /// <summary>
    /// The full effects W_dec[features]·W_U, [n, d_vocab] float32 (through the final norm's gain when
    /// <paramref name="throughFinalNormGain"/>), for the <paramref name="features"/> given.
    /// </summary>
    /// <exception cref="InterpException">The SAE does not write the residual stream, the model's unembedding does not read it, or a feature is out of range.</exception>
    public static Tensor Matrix(HookedTransformer model, Sae sae, IReadOnlyList<int> features, bool throughFinalNormGain = false)
    {
        ArgumentNullException.ThrowIfNull(features);
        CheckApplies(model, sae);
        foreach (int f in features) SaeChecks.Feature(sae, f);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var unembed = ReadingMatrix(model, throughFinalNormGain);                                // [d_model, d_vocab]
        var rows = sae.WDec.index_select(0, tensor(features.Select(f => (long)f).ToArray())).to(unembed.dtype, unembed.device);   // [n, d_model]
        return rows.matmul(unembed).to(ScalarType.Float32).cpu().MoveToOuterDisposeScope();    // [n, d_vocab]
    }

    /// <summary>
    /// The top <see cref="SaeLogitEffectOptions.TopK"/> promoted and suppressed tokens of each feature, with token strings
    /// from <paramref name="tokenizer"/> (null: the model's own, else the ids in decimal).
    /// </summary>
    /// <exception cref="InterpException">The SAE does not write the residual stream, the model's unembedding does not read it,
    /// TopK or the chunk size is below 1 or TopK exceeds d_vocab, or a feature is out of range.</exception>
    public static SaeLogitEffects Compute(HookedTransformer model, Sae sae, SaeLogitEffectOptions? options = null, ITokenizer? tokenizer = null,
        CancellationToken cancellationToken = default)
    {
        CheckApplies(model, sae);
        options ??= new SaeLogitEffectOptions();
        int vocab = model.Config.DVocab;
        if (options.TopK < 1 || options.TopK > vocab)
            throw new InterpException($"tokens per direction (TopK) must be in [1, d_vocab = {vocab}], got {options.TopK}");
        if (options.FeaturesPerChunk < 1) throw new InterpException($"features per chunk must be at least 1, got {options.FeaturesPerChunk}");
        var features = options.Features ?? Enumerable.Range(0, sae.Config.DSae).ToArray();
        foreach (int f in features) SaeChecks.Feature(sae, f);
        tokenizer ??= model.Tokenizer;
        var rows = new List<LogitEffect>();
        foreach (var chunk in features.Chunk(options.FeaturesPerChunk))
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var effects = Matrix(model, sae, chunk, options.ThroughFinalNormGain);               // [chunk, d_vocab]
            var (top, topIds) = effects.topk(options.TopK, dim: -1, largest: true);              // [chunk, k]
            var (bottom, bottomIds) = effects.topk(options.TopK, dim: -1, largest: false);       // [chunk, k], most negative first
            Add(rows, chunk, LogitEffectDirection.Promoted, top, topIds, tokenizer);
            Add(rows, chunk, LogitEffectDirection.Suppressed, bottom, bottomIds, tokenizer);
        }
        // Promoted before suppressed within each feature, features in the order asked for.
        var order = features.Distinct().Select((f, i) => (f, i)).ToDictionary(x => x.f, x => x.i);
        return new SaeLogitEffects(rows.OrderBy(r => order[r.Feature]).ThenBy(r => r.Direction).ThenBy(r => r.Rank).ToArray());
    }

    private static void Add(List<LogitEffect> rows, int[] features, LogitEffectDirection direction, Tensor values, Tensor ids, ITokenizer? tokenizer)
    {
        int k = (int)values.shape[1];
        var v = values.to(ScalarType.Float64).contiguous().data<double>().ToArray();
        var t = ids.to(ScalarType.Int32).contiguous().data<int>().ToArray();
        var text = tokenizer is null ? t.Select(id => id.ToString(CultureInfo.InvariantCulture)).ToArray() : tokenizer.ToStrTokens(t);
        for (int i = 0; i < features.Length; i++)
            for (int r = 0; r < k; r++)
                rows.Add(new LogitEffect(features[i], direction, r + 1, t[i * k + r], text[i * k + r], v[i * k + r]));
    }

    /// <summary>W_U [d_model, d_vocab], times the final norm's gain on its rows when asked and the norms are not folded.</summary>
    private static Tensor ReadingMatrix(HookedTransformer model, bool throughFinalNormGain)
    {
        var wU = model.Unembed.W_U.detach();
        if (!throughFinalNormGain || model.Processing.FoldLn || model.LnFinal is null) return wU;
        return model.LnFinal.W.detach().unsqueeze(-1) * wU;                                     // [d_model, 1] · [d_model, d_vocab]
    }

    /// <summary>
    /// Throws unless <paramref name="sae"/>'s decoder writes <paramref name="model"/>'s residual stream and the model's
    /// logits read it linearly up to the final norm.
    /// </summary>
    /// <exception cref="InterpException">Either does not hold.</exception>
    public static void CheckApplies(HookedTransformer model, Sae sae)
    {
        const string what = "SAE logit effects (W_dec · W_U)";
        SaeChecks.WritesResidualStream(model, sae, what);
        PassChecks.LinearReadout(model, what);
    }

    /// <summary>
    /// The <c>sae_logit_effects</c> table, one row per (feature, direction, rank): <c>feature</c> (int32),
    /// <c>direction</c> (string, <c>promoted</c> | <c>suppressed</c>), <c>rank</c> (int32), <c>token_id</c> (int32),
    /// <c>token</c> (string), <c>value</c> (float64, the logit change per unit activation).
    /// </summary>
    public ParquetTable ToTable()
    {
        var rows = new ParquetColumns();
        foreach (var r in Rows)
            rows.Row((SaeColumns.Feature, r.Feature), ("direction", r.Direction == LogitEffectDirection.Promoted ? "promoted" : "suppressed"),
                (Columns.Rank, r.Rank), (Columns.TokenId, r.TokenId), (Columns.Token, r.Token), (Columns.Value, r.Value));
        return rows.ToTable();
    }
}

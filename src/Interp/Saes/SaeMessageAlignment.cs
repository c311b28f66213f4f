using Interp.Circuits;
using Interp.Hooks;
using Interp.Models;
using Interp.Results;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>What one head's message circuit does to one feature's decoder direction.</summary>
/// <param name="Feature">The feature.</param>
/// <param name="Layer">The head's layer.</param>
/// <param name="Head">The head.</param>
/// <param name="Gain">‖d_f·OV‖ / ‖d_f‖: how much the head moves the feature's direction when it attends to a token carrying it.</param>
/// <param name="TopTargetFeature">The target feature whose decoder direction is most aligned with d_f·OV (largest cosine; −1 when d_f·OV is zero).</param>
/// <param name="Cosine">cos(d_f·OV, d_target) of that target feature (0 when d_f·OV is zero).</param>
public sealed record FeatureMessage(int Feature, int Layer, int Head, double Gain, int TopTargetFeature, double Cosine);

/// <summary>Which features and targets <see cref="SaeMessageAlignment.Compute"/> reads.</summary>
public sealed record SaeMessageAlignmentOptions
{
    /// <summary>The features; null: all of them.</summary>
    public IReadOnlyList<int>? Features { get; init; }
    /// <summary>
    /// The SAE whose decoder directions are the targets (e.g. an SAE at a later layer's stream); null: the same SAE,
    /// so that a head that copies a feature shows the feature itself as its target.
    /// </summary>
    public Sae? Targets { get; init; }
    /// <summary>Features pushed through the heads together (default 64), bounding memory to [n_heads, chunk, d_sae of the targets].</summary>
    public int FeaturesPerChunk { get; init; } = 64;
}

/// <summary>
/// The pattern/message view at the level of features: each feature's decoder direction d_f = W_dec[f] pushed through
/// the message circuit OV = W_V·W_O of every head that reads what the feature writes (<see cref="HeadCircuits.Message"/>;
/// the heads of the SAE's layer and later for an SAE on <c>hook_resid_pre</c>, of the later layers for one on
/// <c>hook_resid_mid</c>, <c>hook_resid_post</c>, <c>hook_attn_out</c> or <c>hook_mlp_out</c>): m = d_f·W_V^{l,h}·W_O^{l,h},
/// its gain ‖m‖/‖d_f‖, and the target feature whose decoder direction m is most like (largest cosine). The model's
/// weights are used as they are: the LayerNorm before attention (ln1) is ignored, as in TransformerLens's direct-path
/// circuits (its gain is inside W_V once the norms are folded, <see cref="WeightProcessingOptions.FoldLn"/>); biases
/// are not part of the circuit; where a norm follows attention (Gemma 2's ln1_post) its gain is included, as in
/// <see cref="HeadCircuits.Message"/>.
/// </summary>
public sealed class SaeMessageAlignment
{
    /// <summary>The table name of <see cref="ToTable"/>.</summary>
    public const string TableName = "sae_message_alignment";

    private SaeMessageAlignment(IReadOnlyList<FeatureMessage> rows, int firstLayer, int layers, int heads) =>
        (Rows, FirstLayer, Layers, Heads) = (rows, firstLayer, layers, heads);

    /// <summary>By feature (in the order asked for), then layer, then head.</summary>
    public IReadOnlyList<FeatureMessage> Rows { get; }
    /// <summary>The first layer whose heads read what the SAE writes.</summary>
    public int FirstLayer { get; }
    /// <summary>The model's layers.</summary>
    public int Layers { get; }
    /// <summary>Heads per layer.</summary>
    public int Heads { get; }

    /// <summary>One feature's gains as a [layer, head] map over all layers (NaN for heads before <see cref="FirstLayer"/>), for heatmaps.</summary>
    public double[,] GainMap(int feature)
    {
        var map = new double[Layers, Heads];
        for (int l = 0; l < Layers; l++)
            for (int h = 0; h < Heads; h++) map[l, h] = double.NaN;
        foreach (var r in Rows.Where(r => r.Feature == feature)) map[r.Layer, r.Head] = r.Gain;
        return map;
    }

    /// <summary>
    /// The first layer whose attention reads the stream <paramref name="sae"/> writes: L for <c>blocks.L.hook_resid_pre</c>,
    /// L + 1 for the hooks after block L's attention (its resid_mid, resid_post, attn_out, mlp_out); n_layers when no
    /// head reads it.
    /// </summary>
    /// <exception cref="InterpException">The SAE does not write the residual stream.</exception>
    public static int FirstReadingLayer(HookedTransformer model, Sae sae)
    {
        SaeChecks.WritesResidualStream(model, sae, "SAE message alignment");
        string writes = SaeChecks.WrittenHook(sae.Config);
        int layer = HookNames.LayerOf(writes)!.Value;
        return HookNames.Is(writes, HookNames.ResidPre) ? layer : layer + 1;
    }

    /// <summary>The alignment of the features of <paramref name="options"/> with every head that reads them.</summary>
    /// <exception cref="InterpException">The SAE (or the target SAE) does not write the residual stream, a feature is out of range, or the chunk size is below 1.</exception>
    public static SaeMessageAlignment Compute(HookedTransformer model, Sae sae, SaeMessageAlignmentOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new SaeMessageAlignmentOptions();
        int first = FirstReadingLayer(model, sae);
        var targetSae = options.Targets ?? sae;
        if (options.Targets is not null) SaeChecks.WritesResidualStream(model, targetSae, "SAE message alignment (the target SAE)");
        if (options.FeaturesPerChunk < 1) throw new InterpException($"features per chunk must be at least 1, got {options.FeaturesPerChunk}");
        var features = options.Features ?? Enumerable.Range(0, sae.Config.DSae).ToArray();
        foreach (int f in features) SaeChecks.Feature(sae, f);
        var cfg = model.Config;
        var rows = new List<FeatureMessage>();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var ov = HeadCircuits.Message(model);                                            // [layer, head, d_model, d_model]
        var dtype = ov.DType;
        var targets = nn.functional.normalize(targetSae.WDec.detach().to(dtype, model.Device), dim: -1);   // [d_sae_t, d_model], unit rows
        foreach (var chunk in features.Chunk(options.FeaturesPerChunk))
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var step = NewDisposeScope();
            var d = sae.WDec.detach().index_select(0, tensor(chunk.Select(f => (long)f).ToArray())).to(dtype, model.Device);   // [c, d_model]
            var dNorm = d.norm(-1);                                                             // [c]
            for (int l = first; l < cfg.NLayers; l++)
            {
                using var layerScope = NewDisposeScope();
                using var head = ov.Select(0, l);                                               // [head, d_model, d_model]
                using var pushed = head.LeftMatmul(d.unsqueeze(0));                              // [head, c, d_model], factored through d_head
                var m = pushed.AB();                                                            // [head, c, d_model]
                var mNorm = m.norm(-1);                                                         // [head, c]
                var gain = (mNorm / dNorm).to(ScalarType.Float64).cpu().data<double>().ToArray();
                var cos = nn.functional.normalize(m, dim: -1).matmul(targets.t());              // [head, c, d_sae_t]
                var (best, bestIndex) = cos.max(-1);                                            // [head, c]
                var bestValue = best.to(ScalarType.Float64).cpu().data<double>().ToArray();
                var bestFeature = bestIndex.to(ScalarType.Int32).cpu().data<int>().ToArray();
                var zero = mNorm.eq(Scalars.Zero).cpu().data<bool>().ToArray();
                for (int i = 0; i < chunk.Length; i++)
                    for (int h = 0; h < cfg.NHeads; h++)
                    {
                        int k = h * chunk.Length + i;
                        rows.Add(zero[k] ? new FeatureMessage(chunk[i], l, h, 0, -1, 0) : new FeatureMessage(chunk[i], l, h, gain[k], bestFeature[k], bestValue[k]));
                    }
            }
        }
        var order = features.Distinct().Select((f, i) => (f, i)).ToDictionary(x => x.f, x => x.i);
        var sorted = rows.DistinctBy(r => (r.Feature, r.Layer, r.Head)).OrderBy(r => order[r.Feature]).ThenBy(r => r.Layer).ThenBy(r => r.Head).ToArray();
        return new SaeMessageAlignment(sorted, first, cfg.NLayers, cfg.NHeads);
    }

    /// <summary>
    /// The <c>sae_message_alignment</c> table, one row per (feature, head): <c>feature</c>, <c>layer</c>, <c>head</c>
    /// (int32), <c>gain</c> (float64, ‖d_f·OV‖/‖d_f‖), <c>top_target_feature</c> (int32, −1 when d_f·OV = 0) and
    /// <c>cosine</c> (float64, its cosine with d_f·OV).
    /// </summary>
    public ParquetTable ToTable() => new ParquetTable()
        .Add(SaeColumns.Feature, Rows.Select(r => r.Feature).ToArray())
        .Add(Columns.Layer, Rows.Select(r => r.Layer).ToArray())
        .Add(Columns.Head, Rows.Select(r => r.Head).ToArray())
        .Add("gain", Rows.Select(r => r.Gain).ToArray())
        .Add("top_target_feature", Rows.Select(r => r.TopTargetFeature).ToArray())
        .Add("cosine", Rows.Select(r => r.Cosine).ToArray());
}

using Interp.Hooks;
using Interp.Results;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>Logit effects W_dec[f]·W_U and message alignment d_f·W_V·W_O against plain double loops; SAEs off the residual stream are refused.</summary>
public sealed class SaeLogitEffectsTests
{
    private const int DModel = 64, Vocab = 1000, DSae = SaeFeatureFixture.DSae;

    private static float[] Flat(Tensor t) => t.detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();

    /// <summary>A standard SAE with random weights at <paramref name="hook"/>, d_in = <paramref name="dIn"/>.</summary>
    private static Sae RandomSae(string hook, int dIn, int dSae, long seed = 5)
    {
        var g = new Generator((ulong)seed);
        var cfg = new SaeConfig(dIn, dSae, SaeArchitecture.Standard, hook, true, "float32", "cpu", null, null);
        return Sae.Create(cfg, new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn([dIn, dSae], generator: g), ["b_enc"] = zeros(dSae),
            ["W_dec"] = randn([dSae, dIn], generator: g), ["b_dec"] = zeros(dIn),
        });
    }

    [Fact]
    public async Task Top_promoted_and_suppressed_tokens_equal_a_double_loop_over_W_dec_and_W_U()
    {
        using var fx = new SaeFeatureFixture();
        using var tok = SaeFeatureFixture.Gpt2Tokenizer();
        var wDec = Flat(fx.Sae.WDec);
        var wU = Flat(fx.Model.Unembed.W_U);
        var gain = Flat(fx.Model.LnFinal!.W);
        foreach (bool throughGain in new[] { false, true })
        {
            var effects = SaeLogitEffects.Compute(fx.Model, fx.Sae, new SaeLogitEffectOptions { TopK = 5, ThroughFinalNormGain = throughGain, FeaturesPerChunk = 100 }, tok);
            Assert.Equal(DSae * 2 * 5, effects.Rows.Count);
            for (int f = 0; f < DSae; f++)
            {
                var e = SaeFeatureReference.LogitEffects(wDec, DModel, wU, Vocab, f, throughGain ? gain : null);
                var order = Enumerable.Range(0, Vocab).OrderByDescending(v => e[v]).ToArray();
                var promoted = effects.Of(f, LogitEffectDirection.Promoted);
                var suppressed = effects.Of(f, LogitEffectDirection.Suppressed);
                Assert.Equal(order.Take(5), promoted.Select(r => r.TokenId));
                Assert.Equal(order.Reverse().Take(5), suppressed.Select(r => r.TokenId));
                Assert.All(promoted.Concat(suppressed), r => Assert.InRange(r.Value - e[r.TokenId], -1e-4, 1e-4));
                Assert.Equal([1, 2, 3, 4, 5], promoted.Select(r => r.Rank));
                Assert.All(promoted, r => Assert.Equal(tok.ToStrTokens([r.TokenId])[0], r.Token));
            }
        }
        // The gain matters here (ln_f's weight is not all ones), so the variant is a different computation.
        Assert.Contains(gain, g => Math.Abs(g - 1) > 1e-3);

        var matrix = SaeLogitEffects.Matrix(fx.Model, fx.Sae, [17, 3]);
        Assert.Equal([2L, Vocab], matrix.shape);
        var m17 = SaeFeatureReference.LogitEffects(wDec, DModel, wU, Vocab, 17);
        TensorAssert.Close(tensor(m17.Select(v => (float)v).ToArray()), matrix[0], 1e-4, "W_dec[17]·W_U");

        using var tmp = new TempDir();
        var few = SaeLogitEffects.Compute(fx.Model, fx.Sae, new SaeLogitEffectOptions { TopK = 3, Features = [9, 2] });
        Assert.Equal([9, 2], few.Rows.Select(r => r.Feature).Distinct());
        await few.ToTable().WriteAsync(tmp.File("logit.parquet"));
        var table = ParquetRead.Columns(tmp.File("logit.parquet"));
        Assert.Equal([SaeColumns.Feature, "direction", Columns.Rank, Columns.TokenId, Columns.Token, Columns.Value], table.Keys);
        Assert.Equal(["promoted", "promoted", "promoted", "suppressed", "suppressed", "suppressed"], table["direction"].Cast<string>().Take(6));
        Assert.Equal(few.Rows.Select(r => r.TokenId.ToString(System.Globalization.CultureInfo.InvariantCulture)), table[Columns.Token].Cast<string>());   // no tokenizer: ids
    }

    [Fact]
    public void With_the_norms_folded_the_gain_is_inside_W_U_and_the_option_changes_nothing()
    {
        using var fx = new SaeFeatureFixture();
        var wDec = Flat(fx.Sae.WDec);
        var wU = Flat(fx.Model.Unembed.W_U);
        var gain = Flat(fx.Model.LnFinal!.W);
        Interp.Models.WeightProcessing.ProcessWeights(fx.Model, new Interp.Models.WeightProcessingOptions { FoldLn = true });
        var folded = SaeLogitEffects.Matrix(fx.Model, fx.Sae, [4, 30]);
        TensorAssert.Close(folded, SaeLogitEffects.Matrix(fx.Model, fx.Sae, [4, 30], throughFinalNormGain: true), 0, "the option on folded weights");
        // Folding puts the gain in W_U's rows and centres them over d_model: W_U' = diag(w)·W_U − mean over rows.
        int[] features = [4, 30];
        for (int k = 0; k < 2; k++)
        {
            var expected = new double[Vocab];
            for (int v = 0; v < Vocab; v++)
            {
                double mean = 0;
                for (int i = 0; i < DModel; i++) mean += (double)gain[i] * wU[i * Vocab + v] / DModel;
                for (int i = 0; i < DModel; i++) expected[v] += wDec[features[k] * DModel + i] * ((double)gain[i] * wU[i * Vocab + v] - mean);
            }
            TensorAssert.Close(tensor(expected.Select(x => (float)x).ToArray()), folded[k], 1e-4, $"folded W_dec[{features[k]}]·W_U");
        }
    }

    [Fact]
    public void Collection_stops_when_cancelled()
    {
        using var fx = new SaeFeatureFixture();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens(), cancellationToken: cts.Token));
        Assert.Throws<OperationCanceledException>(() => SaeLogitEffects.Compute(fx.Model, fx.Sae, cancellationToken: cts.Token));
        Assert.Throws<OperationCanceledException>(() => SaeMessageAlignment.Compute(fx.Model, fx.Sae, cancellationToken: cts.Token));
    }

    [Fact]
    public void Logit_effects_refuse_saes_off_the_residual_stream_and_bad_features()
    {
        using var fx = new SaeFeatureFixture();
        using var mlp = RandomSae(HookNames.MlpPost(0), 256, 16);
        Assert.Contains($"this SAE writes '{HookNames.MlpPost(0)}'", Assert.Throws<InterpException>(() => SaeLogitEffects.Compute(fx.Model, mlp)).Message);
        using var z = Sae.Create(new SaeConfig(DModel, 8, SaeArchitecture.Standard, HookNames.Z(1), true, "float32", "cpu", null, null) { ReshapeHookZ = true },
            new Dictionary<string, Tensor> { ["W_enc"] = zeros(DModel, 8), ["b_enc"] = zeros(8), ["W_dec"] = zeros(8, DModel), ["b_dec"] = zeros(DModel) });
        Assert.Contains("residual stream", Assert.Throws<InterpException>(() => SaeLogitEffects.Compute(fx.Model, z)).Message);
        Assert.Contains("feature 256 is outside the SAE's features [0, 256)", Assert.Throws<InterpException>(() =>
            SaeLogitEffects.Compute(fx.Model, fx.Sae, new SaeLogitEffectOptions { Features = [0, 256] })).Message);
        Assert.Contains("feature -3 is outside", Assert.Throws<InterpException>(() => SaeLogitEffects.Matrix(fx.Model, fx.Sae, [-3])).Message);
        Assert.Contains("(TopK) must be in [1, d_vocab = 1000], got 1001", Assert.Throws<InterpException>(() =>
            SaeLogitEffects.Compute(fx.Model, fx.Sae, new SaeLogitEffectOptions { TopK = 1001 })).Message);
        Assert.Contains("got 0", Assert.Throws<InterpException>(() => SaeLogitEffects.Compute(fx.Model, fx.Sae, new SaeLogitEffectOptions { TopK = 0 })).Message);
    }

    [Fact]
    public async Task Message_alignment_equals_a_loop_over_each_heads_W_V_and_W_O()
    {
        using var fx = new SaeFeatureFixture();
        using var later = RandomSae(HookNames.ResidPost(1), DModel, 40);
        int[] features = [0, 5, 22, 255];
        foreach (var target in new[] { fx.Sae, later })
        {
            var result = SaeMessageAlignment.Compute(fx.Model, fx.Sae, new SaeMessageAlignmentOptions
            {
                Features = features, FeaturesPerChunk = 3, Targets = ReferenceEquals(target, fx.Sae) ? null : target,
            });
            Assert.Equal(1, result.FirstLayer);   // blocks.1.hook_resid_pre is read by layers 1 and 2
            Assert.Equal(features.Length * 2 * 4, result.Rows.Count);
            var wDec = Flat(fx.Sae.WDec);
            var targets = Flat(target.WDec);
            int nTargets = target.Config.DSae;
            foreach (var r in result.Rows)
            {
                var d = Enumerable.Range(0, DModel).Select(i => (double)wDec[r.Feature * DModel + i]).ToArray();
                var attn = fx.Model.Blocks[r.Layer].Attn;
                var m = SaeFeatureReference.ThroughOv(d, Flat(attn.W_V[r.Head]), Flat(attn.W_O[r.Head]), DModel, 16);
                double gain = SaeFeatureReference.Norm(m) / SaeFeatureReference.Norm(d);
                Assert.InRange(r.Gain - gain, -1e-4 * gain, 1e-4 * gain);
                var cos = Enumerable.Range(0, nTargets).Select(t => SaeFeatureReference.Cosine(m, Enumerable.Range(0, DModel).Select(i => (double)targets[t * DModel + i]).ToArray())).ToArray();
                Assert.InRange(r.Cosine - cos.Max(), -1e-4, 1e-4);
                Assert.InRange(cos[r.TopTargetFeature] - cos.Max(), -1e-4, 0);   // the reported target is (one of) the best
            }
            Assert.Equal(features, result.Rows.Select(r => r.Feature).Distinct());
            var map = result.GainMap(22);
            Assert.True(double.IsNaN(map[0, 0]));
            Assert.Equal(result.Rows.Single(r => (r.Feature, r.Layer, r.Head) == (22, 2, 3)).Gain, map[2, 3]);
        }

        using var tmp = new TempDir();
        await SaeMessageAlignment.Compute(fx.Model, fx.Sae, new SaeMessageAlignmentOptions { Features = [1] }).ToTable().WriteAsync(tmp.File("m.parquet"));
        var table = ParquetRead.Columns(tmp.File("m.parquet"));
        Assert.Equal([SaeColumns.Feature, Columns.Layer, Columns.Head, "gain", "top_target_feature", "cosine"], table.Keys);
        Assert.Equal(8, table["gain"].Length);
    }

    [Fact]
    public void The_reading_layers_follow_the_hook_and_bad_inputs_are_refused()
    {
        using var fx = new SaeFeatureFixture();
        using var post0 = RandomSae(HookNames.ResidPost(0), DModel, 8);
        using var mid2 = RandomSae(HookNames.ResidMid(2), DModel, 8);
        using var attn1 = RandomSae(HookNames.AttnOut(1), DModel, 8);
        Assert.Equal(1, SaeMessageAlignment.FirstReadingLayer(fx.Model, fx.Sae));
        Assert.Equal(1, SaeMessageAlignment.FirstReadingLayer(fx.Model, post0));
        Assert.Equal(2, SaeMessageAlignment.FirstReadingLayer(fx.Model, attn1));
        Assert.Equal(3, SaeMessageAlignment.FirstReadingLayer(fx.Model, mid2));
        Assert.Empty(SaeMessageAlignment.Compute(fx.Model, mid2).Rows);   // no later head reads it
        Assert.Equal(8 * 2 * 4, SaeMessageAlignment.Compute(fx.Model, post0).Rows.Count);

        using var mlp = RandomSae(HookNames.MlpPost(1), 256, 8);
        Assert.Contains($"writes '{HookNames.MlpPost(1)}'", Assert.Throws<InterpException>(() => SaeMessageAlignment.Compute(fx.Model, mlp)).Message);
        Assert.Contains("the target SAE", Assert.Throws<InterpException>(() =>
            SaeMessageAlignment.Compute(fx.Model, fx.Sae, new SaeMessageAlignmentOptions { Targets = mlp })).Message);
        Assert.Contains("feature 300 is outside", Assert.Throws<InterpException>(() =>
            SaeMessageAlignment.Compute(fx.Model, fx.Sae, new SaeMessageAlignmentOptions { Features = [300] })).Message);
        Assert.Contains("features per chunk must be at least 1, got 0", Assert.Throws<InterpException>(() =>
            SaeMessageAlignment.Compute(fx.Model, fx.Sae, new SaeMessageAlignmentOptions { FeaturesPerChunk = 0 })).Message);
    }
}

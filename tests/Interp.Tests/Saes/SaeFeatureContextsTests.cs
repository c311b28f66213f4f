using System.Globalization;
using Interp.Results;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>Top-activating contexts against a brute-force sort of every position, ties and padding included; and the density histogram.</summary>
public sealed class SaeFeatureContextsTests
{
    /// <summary>Random acts on a 0.5 grid (many ties, many zeros), the last row left- and right-padded.</summary>
    private static (float[,,] Acts, bool[,] Real, long[] Tokens) TiedActs()
    {
        const int n = 4, pos = 12, d = 5;
        var rng = new Random(3);
        var acts = new float[n, pos, d];
        var real = new bool[n, pos];
        var tokens = new long[n * pos];
        for (int s = 0; s < n; s++)
            for (int p = 0; p < pos; p++)
            {
                real[s, p] = s < 3 || (p >= 2 && p < 9);
                tokens[s * pos + p] = rng.Next(1000);
                for (int f = 0; f < d; f++) acts[s, p, f] = rng.Next(3) == 0 ? 0 : (float)(rng.Next(1, 6) * 0.5);
            }
        for (int s = 0; s < n; s++)
            for (int p = 0; p < pos; p++) acts[s, p, 4] = 0;   // feature 4 is dead
        return (acts, real, tokens);
    }

    private static SaeFeatureActivations FromArrays(float[,,] acts, bool[,] real, long[] tokens)
    {
        int n = acts.GetLength(0), pos = acts.GetLength(1), d = acts.GetLength(2);
        var flat = new float[acts.Length];
        Buffer.BlockCopy(acts, 0, flat, 0, flat.Length * sizeof(float));
        var mask = real.Cast<bool>().Select(b => b ? 1L : 0L).ToArray();
        return SaeFeatureActivations.FromActs(tensor(flat, [n, pos, d]), tensor(tokens, [n, pos]), tensor(mask, [n, pos]));
    }

    private static void AssertMatchesBruteForce(SaeFeatureContexts contexts, float[,,] acts, bool[,]? real, int feature, SaeFeatureContextOptions o)
    {
        var expected = SaeFeatureReference.TopContexts(acts, real, feature, o.TopN, o.Before, o.After);
        var actual = contexts.Of(feature);
        Assert.Equal(expected.Select(e => (e.Rank, e.Sequence, e.Position, e.Value)), actual.Select(c => (c.Rank, c.Sequence, c.Position, c.Value)));
        for (int r = 0; r < expected.Count; r++)
            Assert.Equal(expected[r].Window, actual[r].Tokens.Select(t => (t.Offset, t.Position, t.Value)));
    }

    [Fact]
    public void Top_contexts_equal_a_brute_force_sort_with_ties_broken_by_sequence_then_position()
    {
        var (acts, real, tokens) = TiedActs();
        var collection = FromArrays(acts, real, tokens);
        var options = new SaeFeatureContextOptions { TopN = 6, Before = 3, After = 2 };
        var contexts = SaeFeatureContexts.Top(collection, null, options);
        Assert.Equal([0, 1, 2, 3], contexts.Contexts.Select(c => c.Feature).Distinct());   // the dead feature has none
        for (int f = 0; f < 4; f++) AssertMatchesBruteForce(contexts, acts, real, f, options);
        // Without a tokenizer a token's text is its id; the window's tokens are the sequence's.
        Assert.All(contexts.Contexts.SelectMany(c => c.Tokens.Select(t => (c, t))), x =>
        {
            Assert.Equal(tokens[x.c.Sequence * 12 + x.t.Position], x.t.TokenId);
            Assert.Equal(x.t.TokenId.ToString(CultureInfo.InvariantCulture), x.t.Token);
        });
        // Asking for features picks them, in that order; a window of 0 + 0 is the maximum alone.
        var only = SaeFeatureContexts.Top(collection, null, new SaeFeatureContextOptions { TopN = 100, Before = 0, After = 0, Features = [3, 1, 4] });
        Assert.Equal([3, 1], only.Contexts.Select(c => c.Feature).Distinct());
        Assert.All(only.Contexts, c => Assert.Equal([(0, c.Value)], c.Tokens.Select(t => (t.Offset, t.Value))));
        AssertMatchesBruteForce(only, acts, real, 1, new SaeFeatureContextOptions { TopN = 100, Before = 0, After = 0 });
    }

    [Fact]
    public async Task On_the_reference_positions_contexts_follow_the_reference_acts_and_carry_token_strings()
    {
        using var fx = new SaeFeatureFixture();
        using var tok = SaeFeatureFixture.Gpt2Tokenizer();
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens());
        var options = new SaeFeatureContextOptions { TopN = 5, Before = 4, After = 1, Features = [0, 22, 100, 255] };
        var contexts = SaeFeatureContexts.Top(acts, tok, options);
        var reference = SaeFeatureFixture.ReferenceActs();
        foreach (int f in options.Features)
        {
            var expected = SaeFeatureReference.TopContexts(reference, null, f, 5, 4, 1);
            var actual = contexts.Of(f);
            // The order can swap only where two reference values are closer than the stated tolerance; none are here.
            Assert.Equal(expected.Select(e => (e.Sequence, e.Position)), actual.Select(c => (c.Sequence, c.Position)));
            Assert.All(expected.Zip(actual), p => Assert.InRange(p.Second.Value - p.First.Value, -0.005, 0.005));
        }
        var ids = SaeFeatureFixture.TokenIds;
        Assert.All(contexts.Contexts, c =>
            Assert.Equal(tok.ToStrTokens(c.Tokens.Select(t => (int)ids[t.Position]).ToArray()), c.Tokens.Select(t => t.Token)));

        using var tmp = new TempDir();
        await contexts.ToTable().WriteAsync(tmp.File("ctx.parquet"));
        var table = ParquetRead.Columns(tmp.File("ctx.parquet"));
        Assert.Equal([SaeColumns.Feature, Columns.Rank, Columns.Sequence, Columns.Position, "offset", Columns.TokenId, Columns.Token, Columns.Value], table.Keys);
        Assert.Equal(contexts.Contexts.Sum(c => c.Tokens.Count), table[Columns.Value].Length);
        Assert.Equal(contexts.Contexts.SelectMany(c => c.Tokens.Select(t => t.Token)), table[Columns.Token].Cast<string>());
    }

    [Fact]
    public void Bad_context_options_are_clear_errors()
    {
        var (acts, real, tokens) = TiedActs();
        var c = FromArrays(acts, real, tokens);
        Assert.Contains("TopN) must be at least 1, got 0", Assert.Throws<InterpException>(() => SaeFeatureContexts.Top(c, null, new SaeFeatureContextOptions { TopN = 0 })).Message);
        Assert.Contains("(Before) must be ≥ 0, got -1", Assert.Throws<InterpException>(() => SaeFeatureContexts.Top(c, null, new SaeFeatureContextOptions { Before = -1 })).Message);
        Assert.Contains("(After) must be ≥ 0, got -2", Assert.Throws<InterpException>(() => SaeFeatureContexts.Top(c, null, new SaeFeatureContextOptions { After = -2 })).Message);
        Assert.Contains("feature 5 is outside the SAE's features [0, 5)", Assert.Throws<InterpException>(() => SaeFeatureContexts.Top(c, null, new SaeFeatureContextOptions { Features = [1, 5] })).Message);
        Assert.Contains("feature -1 is outside", Assert.Throws<InterpException>(() => SaeFeatureContexts.Top(c, null, new SaeFeatureContextOptions { Features = [-1] })).Message);
    }

    [Fact]
    public void The_density_histogram_bins_log10_density_and_counts_dead_features_apart()
    {
        // Exact: edges [-2, -1, 0]; 0.01 → -2 (bin 0), 0.1 → -1 (bin 1), 0.5 → -0.30 (bin 1), 1 → 0 (the last bin is closed).
        var h = FeatureDensityHistogram.Of([0, 1, 0.1, 0.01, 0.5, 0], bins: 2);
        Assert.Equal([-2.0, -1, 0], h.Edges);
        Assert.Equal([1L, 3], h.Counts);
        Assert.Equal((2, 4, 6), (h.Dead, h.Live, h.Features));

        // From the reference acts: each live feature lands in the bin whose edges bracket its log10 density.
        var reference = SaeFeatureFixture.ReferenceActs();
        var densities = Enumerable.Range(0, SaeFeatureFixture.DSae)
            .Select(f => Enumerable.Range(0, SaeFeatureFixture.N).Count(p => reference[0, p, f] > 0) / (double)SaeFeatureFixture.N).ToArray();
        var acts = SaeFeatureActivations.FromActs(tensor(reference.Cast<float>().ToArray(), [1, SaeFeatureFixture.N, SaeFeatureFixture.DSae]),
            zeros(1, SaeFeatureFixture.N, dtype: ScalarType.Int64));
        var hist = FeatureDensityHistogram.Of(acts.Stats, bins: 12);
        var expected = new long[12];
        foreach (double d in densities.Where(d => d > 0))
        {
            double v = Math.Log10(d);
            int bin = Enumerable.Range(0, 12).First(i => (v >= hist.Edges[i] && v < hist.Edges[i + 1]) || (i == 11 && v <= hist.Edges[12]));
            expected[bin]++;
        }
        Assert.Equal(expected, hist.Counts);
        Assert.Equal(Math.Floor(Math.Log10(densities.Where(d => d > 0).Min())), hist.Edges[0]);
        Assert.Equal(0, hist.Dead);

        Assert.Contains("feature 1 has density 1.5", Assert.Throws<InterpException>(() => FeatureDensityHistogram.Of([0.5, 1.5])).Message);
        Assert.Contains("at least 1 bin, got 0", Assert.Throws<InterpException>(() => FeatureDensityHistogram.Of([0.5], bins: 0)).Message);
        Assert.Contains("is empty or not finite", Assert.Throws<InterpException>(() => FeatureDensityHistogram.Of([0.5], min: 0)).Message);
    }
}

using Interp.Hooks;
using Interp.Results;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// The sparse feature activations: at the 40 reference positions the active set equals feature_acts.f32 exactly (the
/// SAE README's guarantee) and the values are within its 0.005; batched and padded collection equals a dense encode
/// of each sequence run alone; the stats equal counts over the reference acts and SAELens's sparsity.safetensors.
/// </summary>
public sealed class SaeFeatureActivationsTests
{
    private const int N = SaeFeatureFixture.N, DSae = SaeFeatureFixture.DSae;

    [Fact]
    public void At_the_reference_positions_the_active_set_is_exact_and_the_stats_match_the_reference_acts()
    {
        using var fx = new SaeFeatureFixture();
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens());
        var reference = SaeFeatureFixture.ReferenceActs();
        var expected = SaeFeatureReference.Sparse(reference);
        Assert.Equal(expected.Select(e => (e.Sequence, e.Position, e.Feature)), acts.Entries.Select(e => (e.Sequence, e.Position, e.Feature)));
        Assert.All(expected.Zip(acts.Entries), p => Assert.InRange(p.Second.Value - p.First.Value, -0.005, 0.005));
        Assert.Equal(N, acts.RealPositions);
        Assert.Equal(31.75 * N, acts.Entries.Count);   // L0 mean 31.75 (README)

        var sparsity = NaiveSafeTensors.Read(Path.Combine(SaeFeatureFixture.Folder, "sparsity.safetensors")).Tensors.Single(t => t.Name == "sparsity").Tensor.Values;
        for (int f = 0; f < DSae; f++)
        {
            int count = 0;
            double max = 0, sum = 0;
            for (int p = 0; p < N; p++)
                if (reference[0, p, f] > 0) { count++; sum += reference[0, p, f]; max = Math.Max(max, reference[0, p, f]); }
            var s = acts.Stats[f];
            Assert.Equal(f, s.Feature);
            Assert.Equal(count, s.ActiveCount);
            Assert.Equal((double)count / N, s.Density);
            Assert.InRange(s.Log10Density - sparsity[f], -1e-5, 1e-5);
            Assert.InRange(s.Max - max, -0.005, 0.005);
            Assert.InRange(s.MeanWhenActive - sum / count, -0.005, 0.005);   // no feature is dead here (README)
        }
    }

    [Fact]
    public void Batched_padded_collection_equals_a_dense_encode_of_each_sequence_alone()
    {
        using var fx = new SaeFeatureFixture();
        var ids = SaeFeatureFixture.TokenIds;
        long[][] rows = [ids, ids.Reverse().ToArray(), ids.Skip(7).Concat(ids.Take(7)).ToArray()];
        int[] lengths = [N, N, 28];   // the last row right-padded after 28 real tokens
        var tokens = tensor(rows.SelectMany(r => r).ToArray(), [3, N]);
        var mask = tensor(lengths.SelectMany(len => Enumerable.Range(0, N).Select(p => p < len ? 1L : 0L)).ToArray(), [3, N]);
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, tokens, mask, new SaeFeatureActivationOptions { SequencesPerForward = 2 });

        var dense = new float[3, N, DSae];
        var real = new bool[3, N];
        for (int s = 0; s < 3; s++)
        {
            using var scope = NewDisposeScope();
            var alone = tensor(rows[s].Take(lengths[s]).ToArray(), [1, lengths[s]]);
            var (_, cache) = fx.Model.RunWithCache(alone, name => name == fx.Sae.Config.HookName);
            using (cache)
            {
                var one = SaeFeatureFixture.ToArray3(fx.Sae.Encode(cache[fx.Sae.Config.HookName]));
                for (int p = 0; p < lengths[s]; p++)
                {
                    real[s, p] = true;
                    for (int f = 0; f < DSae; f++) dense[s, p, f] = one[0, p, f];
                }
            }
        }
        var expected = SaeFeatureReference.Sparse(dense, real);
        Assert.Equal(expected.Select(e => (e.Sequence, e.Position, e.Feature)), acts.Entries.Select(e => (e.Sequence, e.Position, e.Feature)));
        Assert.All(expected.Zip(acts.Entries), p => Assert.InRange(p.Second.Value - p.First.Value, -1e-4, 1e-4));
        Assert.Equal(2 * N + 28, acts.RealPositions);
        Assert.DoesNotContain(acts.Entries, e => e.Sequence == 2 && e.Position >= 28);
        Assert.All(acts.Stats, s => Assert.Equal(expected.Count(e => e.Feature == s.Feature) / (double)(2 * N + 28), s.Density, 12));
        // Lookups: ValueAt is the dense value (0 where inactive), TokenAt the token.
        for (int p = 0; p < N; p += 7)
            for (int f = 0; f < DSae; f += 13) Assert.Equal(dense[1, p, f] > 0 ? acts.Entries.Single(e => (e.Sequence, e.Position, e.Feature) == (1, p, f)).Value : 0, acts.ValueAt(1, p, f));
        Assert.Equal((int)rows[2][5], acts.TokenAt(2, 5));
        Assert.False(acts.IsReal(2, 30));
    }

    [Fact]
    public async Task The_tables_have_their_columns_and_one_row_per_entry_or_feature()
    {
        using var fx = new SaeFeatureFixture();
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens());
        using var tmp = new TempDir();
        await acts.ToTable().WriteAsync(tmp.File("acts.parquet"));
        await acts.StatsTable().WriteAsync(tmp.File("stats.parquet"));
        var t = ParquetRead.Columns(tmp.File("acts.parquet"));
        Assert.Equal([Columns.Sequence, Columns.Position, SaeColumns.Feature, Columns.Value], t.Keys);
        Assert.Equal(acts.Entries.Select(e => e.Feature), t[SaeColumns.Feature].Cast<int>());
        Assert.Equal(acts.Entries.Select(e => e.Value), t[Columns.Value].Cast<float>());
        var s = ParquetRead.Columns(tmp.File("stats.parquet"));
        Assert.Equal([SaeColumns.Feature, "active_count", "positions", "density", "log10_density", "max", "mean_active"], s.Keys);
        Assert.Equal(DSae, s["density"].Length);
        Assert.Equal(acts.Stats.Select(x => x.ActiveCount), s["active_count"].Cast<long>());
        Assert.Equal(SaeFeatureActivations.TableName, "sae_feature_acts");
        Assert.Equal(SaeFeatureActivations.StatsTableName, "sae_feature_stats");
    }

    [Fact]
    public void A_dead_feature_has_density_zero_and_no_mean()
    {
        var acts = SaeFeatureActivations.FromActs(tensor(new float[] { 0, 2, 0, 3, -1, 0 }, [1, 2, 3]), tensor(new long[] { 5, 6 }, [1, 2]));
        Assert.Equal([(0, 0, 1, 2f), (0, 1, 0, 3f)], acts.Entries.Select(e => (e.Sequence, e.Position, e.Feature, e.Value)));
        Assert.True(acts.Stats[2].IsDead);
        Assert.Equal(-10, acts.Stats[2].Log10Density, 1e-9);
        Assert.True(double.IsNaN(acts.Stats[2].MeanWhenActive));
        Assert.Equal(0.5, acts.Stats[0].Density);
    }

    [Fact]
    public void Bad_inputs_are_clear_errors()
    {
        using var fx = new SaeFeatureFixture();
        Assert.Contains("sequences per forward pass must be at least 1, got 0", Assert.Throws<InterpException>(() =>
            SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens(), options: new SaeFeatureActivationOptions { SequencesPerForward = 0 })).Message);
        Assert.Contains("tokens must be [n_seq 1, pos 2]", Assert.Throws<InterpException>(() =>
            SaeFeatureActivations.FromActs(zeros(1, 2, 3), zeros(1, 3, dtype: ScalarType.Int64))).Message);
        Assert.Contains("[n_seq, pos, d_sae]", Assert.Throws<InterpException>(() => SaeFeatureActivations.FromActs(zeros(2, 3), zeros(2, 3))).Message);
        var acts = SaeFeatureActivations.FromActs(zeros(1, 2, 3), zeros(1, 2, dtype: ScalarType.Int64));
        Assert.Contains("feature 3 is outside the SAE's features [0, 3)", Assert.Throws<InterpException>(() => acts.ValueAt(0, 0, 3)).Message);
        Assert.Contains("(sequence 0, position 2)", Assert.Throws<InterpException>(() => acts.TokenAt(0, 2)).Message);
        // An SAE on a hook point this model does not have.
        var cfg = fx.Sae.Config with { HookName = HookNames.ResidPre(7) };
        using var elsewhere = Sae.Create(cfg, fx.Sae.StateDict.ToDictionary(kv => kv.Key, kv => kv.Value));
        Assert.Throws<UnknownHookException>(() => SaeFeatureActivations.Collect(fx.Model, elsewhere, SaeFeatureFixture.Tokens()));
    }

    [Fact]
    public void FromEntries_rebuilds_the_collection_and_refuses_bad_entries_naming_them()
    {
        using var fx = new SaeFeatureFixture();
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens());
        var tokens = Enumerable.Range(0, acts.Sequences).SelectMany(q => Enumerable.Range(0, acts.Positions).Select(p => acts.TokenAt(q, p))).ToArray();
        var entries = acts.Entries.ToArray();
        var again = SaeFeatureActivations.FromEntries(acts.DSae, acts.Positions, tokens, entries);
        Assert.Equal(acts.Entries, again.Entries);
        Assert.Equal(acts.Stats, again.Stats);
        Assert.Equal(acts.RealPositions, again.RealPositions);

        string Refused(IReadOnlyList<FeatureActivation> bad) =>
            Assert.Throws<InterpException>(() => SaeFeatureActivations.FromEntries(acts.DSae, acts.Positions, tokens, bad)).Message;
        Assert.Contains($"feature {acts.DSae}) is outside", Refused([entries[0] with { Feature = acts.DSae }]));
        Assert.Contains("is 0; the collection holds values > 0", Refused([entries[0] with { Value = 0 }]));
        Assert.Contains("is out of order or repeated", Refused([entries[1], entries[0]]));
        Assert.Contains("expected d_sae ≥ 1 and whole sequences",
            Assert.Throws<InterpException>(() => SaeFeatureActivations.FromEntries(acts.DSae, acts.Positions, tokens[..^1], entries)).Message);
    }
}

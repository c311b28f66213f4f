using Interp.Tests.Support;
using ParquetSharp;

namespace Interp.Tests.Experiments;

/// <summary>Model experiments on a real model; the heads the report names are recomputed from the tables.</summary>
public sealed class ModelExperimentTests
{
    [Fact]
    public async Task Induction_heads_on_stories260K_scores_every_head_and_names_the_best_ones()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "induction_heads", "--model", TestModels.StoriesBin, "--set", "batch=4", "--set", "half=8");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        Assert.Equal(TestModels.StoriesBin, manifest.Model!.Source);
        Assert.Equal(64, manifest.Model.Sha256.Length);

        string path = Path.Combine(tmp.Path, "head_scores.parquet");
        using (var reader = new ParquetFileReader(path))
        {
            var schema = reader.FileMetaData.Schema;
            Assert.Equal(PhysicalType.Int32, schema.Column(0).PhysicalType);
            Assert.Equal(PhysicalType.Int32, schema.Column(1).PhysicalType);
            Assert.Equal(PhysicalType.ByteArray, schema.Column(2).PhysicalType);
            Assert.Equal(PhysicalType.Float, schema.Column(3).PhysicalType);
        }
        var t = ParquetRead.Columns(path);
        Assert.Equal(["layer", "head", "score", "value", "run_id"], t.Keys);
        Assert.Equal(3 * 5 * 8, t["value"].Length);
        Assert.All(t["value"], v => Assert.InRange((float)v, 0f, 1f));
        Assert.Equal(["duplicate_token", "induction", "previous_token"], t["score"].Cast<string>().Distinct().Order());

        // The induction head named is the best one outside layer 0; the previous-token head the best one before it.
        var rows = Enumerable.Range(0, t["value"].Length).Select(i => (L: (int)t["layer"][i], H: (int)t["head"][i], S: (string)t["score"][i], V: (float)t["value"][i])).ToArray();
        var ind = rows.Where(r => r.S == "induction" && r.L >= 1).MaxBy(r => r.V);
        var prev = rows.Where(r => r.S == "previous_token" && r.L < ind.L).MaxBy(r => r.V);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        Assert.Equal((ind.L, ind.H), ((int)Number("induction_head_layer"), (int)Number("induction_head")));
        Assert.Equal((prev.L, prev.H), ((int)Number("previous_token_head_layer"), (int)Number("previous_token_head")));
        Assert.Equal(ind.V, Number("induction_score"), 1e-5);

        var loss = ParquetRead.Columns(Path.Combine(tmp.Path, "loss_by_position.parquet"));
        Assert.Equal((1 + 40) * (1 + 2 * 8 - 1), loss["loss"].Length);   // clean + every head, at every predicted position
    }
}

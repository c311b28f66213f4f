using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>
/// encoder_context on the real all-MiniLM-L6-v2: its numbers follow from its own tables, and its sentence embeddings
/// agree with the reference mean-pooled embeddings that ONNX Runtime computed from the original export.
/// </summary>
public sealed class EncoderExperimentTests
{
    [Fact]
    public async Task Encoder_context_on_MiniLM_reports_what_its_tables_hold_and_pools_as_the_reference_does()
    {
        using var tmp = new TempDir();
        string miniLm = SharedData.Model("all-MiniLM-L6-v2");
        // Two of the reference's sentences as the extra sentences (no comma inside either, as the list setting splits on commas).
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "encoder_context", "--model", miniLm,
            "--set", "sentences=The cat sat on the mat.,Python executes quickly.");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;

        // The shifts are the output-stage lean in each context minus the lean alone, as the table has them.
        var t = ParquetRead.Columns(Path.Combine(tmp.Path, "mouse_cosines.parquet"));
        int stages = 7; // embeddings + 6 layers
        Assert.Equal(3 * stages, t["lean"].Length);
        double Lean(string mouse) => Enumerable.Range(0, t["lean"].Length)
            .Where(i => (string)t["mouse"][i] == mouse && (int)t["stage"][i] == stages - 1).Select(i => (double)t["lean"][i]).Single();
        Assert.Equal(Lean("alone"), Number("lean_alone"), 1e-3);
        Assert.Equal(Lean("animal context") - Lean("alone"), Number("shift_animal_context"), 1e-3);
        Assert.Equal(Lean("tech context") - Lean("alone"), Number("shift_tech_context"), 1e-3);
        for (int i = 0; i < t["lean"].Length; i++)
            Assert.Equal((double)t["cos_cat"][i] - (double)t["cos_keyboard"][i], (double)t["lean"][i], 1e-5);

        // Sentence 3 and 4 are the reference's sentences 1 and 4: their cosine equals the reference embeddings' cosine.
        var reference = TensorAssert.ReadRawFloats(Path.Combine(miniLm, "reference", "mean_pooled.f32"), 4, 384);
        var (a, b) = (reference[0], reference[3]);
        double expected = (a.dot(b) / (a.norm() * b.norm())).item<float>();
        var s = ParquetRead.Columns(Path.Combine(tmp.Path, "sentence_similarity.parquet"));
        double actual = Enumerable.Range(0, s["cosine"].Length)
            .Where(i => (string)s["sentence_a"][i] == "The cat sat on the mat." && (string)s["sentence_b"][i] == "Python executes quickly.")
            .Select(i => (double)s["cosine"][i]).Single();
        Assert.Equal(expected, actual, 1e-4);
    }

    [Fact]
    public async Task Encoder_context_refuses_a_causal_model_and_says_which_to_pass()
    {
        using var tmp = new TempDir();
        var (code, _, err) = await ExperimentScriptTests.RunRaw("run", "encoder_context", "--out", tmp.Path);
        Assert.NotEqual(0, code);
        Assert.Contains("needs a bidirectional encoder", err);
        Assert.Contains("all-MiniLM-L6-v2", err);
    }
}

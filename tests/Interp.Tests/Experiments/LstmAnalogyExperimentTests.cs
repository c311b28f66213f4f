using Interp.Analysis;
using Interp.Hooks;
using Interp.Loading;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// lstm_analogy end to end: every table read back by ParquetSharp with its schema; the losses equal fresh forwards of
/// both models (the built-in transformer and the LSTM the run saved) on the same sequences; the writes, probes and gates
/// obey their identities; the key numbers are the tables' own means; a saved LSTM is reused exactly.
/// </summary>
[Collection(nameof(Interp.Tests.Training.TrainingCollection))]
public sealed class LstmAnalogyExperimentTests
{
    private const int Batch = 12, Half = 24;
    private static readonly string[] Reduced = ["--set", $"batch={Batch}", "--set", "lstm_steps=150", "--set", "probe_batch=64"];

    private static IEnumerable<int> Rows(Dictionary<string, object[]> t) => Enumerable.Range(0, t["run_id"].Length);

    [Fact]
    public async Task Tables_hold_both_models_losses_writes_probes_and_gates_and_a_saved_lstm_is_reused_exactly()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, ["run", "lstm_analogy", .. Reduced]);
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        foreach (var figure in new[] { "loss_by_position.png", "writes.png", "write_cosines.png", "probe_accuracy.png", "gates_vs_attention.png", "lstm_training.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);

        // Loss: the same sequences (seed 0) through both models, recomputed here.
        var loss = ParquetRead.Columns(Path.Combine(tmp.Path, "lstm_analogy_loss.parquet"));
        Assert.Equal(["model", "sequence", "position", "segment", "loss", "run_id"], loss.Keys);
        int positions = 2 * Half + 1;
        Assert.Equal(2 * Batch * (positions - 1), loss["loss"].Length);
        using var loaded = BuiltInModel.Load();
        using var lstm = LstmModelFormat.Load(Path.Combine(tmp.Path, "lstm"));
        Assert.Equal(LstmRecipe.ModelConfig, lstm.Config);
        using (NewDisposeScope())
        using (no_grad())
        {
            var tokens = HeadDetection.RepeatedRandomTokens(loaded, Batch, Half, seed: 0, InductionRecipe.FirstTokenFor(loaded.Model.Config)).Tokens;
            foreach (var (name, logits) in new[] { ("transformer", loaded.Model.forward(tokens)), ("lstm", lstm.forward(tokens)) })
            {
                var expected = nn.functional.cross_entropy(logits[.., ..^1].permute(0, 2, 1), tokens[.., 1..], reduction: nn.Reduction.None).to(ScalarType.Float64);
                var e = expected.data<double>().ToArray();
                foreach (int i in Rows(loss).Where(i => (string)loss["model"][i] == name))
                {
                    int b = (int)loss["sequence"][i], p = (int)loss["position"][i];
                    Assert.True(Math.Abs(e[b * (positions - 1) + p] - (double)loss["loss"][i]) < 1e-4, $"{name} loss at sequence {b}, position {p}");
                }
            }
        }
        double MeanLoss(string model, string segment) => Rows(loss).Where(i => (string)loss["model"][i] == model && (string)loss["segment"][i] == segment).Average(i => (double)loss["loss"][i]);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        Assert.Equal(MeanLoss("transformer", "repeated"), Number("transformer_repeated_half_loss"), 9);
        Assert.Equal(MeanLoss("lstm", "repeated"), Number("lstm_repeated_half_loss"), 9);
        Assert.Equal(Half - 1, Rows(loss).Count(i => (string)loss["segment"][i] == "repeated" && (int)loss["sequence"][i] == 0 && (string)loss["model"][i] == "lstm"));
        Assert.True(Number("transformer_repeated_half_loss") < 1.0, "the built-in transformer copies the second copy");
        Assert.InRange(Number("lstm_first_half_loss"), 3.9, 4.8);   // random tokens: ≈ ln 63

        // Writes: the first cell update is the first cell state (c_{−1} = 0); norms ≥ 0, cosines in [−1, 1].
        var writes = ParquetRead.Columns(Path.Combine(tmp.Path, "lstm_analogy_writes.parquet"));
        Assert.Equal(["model", "component", "layer", "head", "sequence", "position", "metric", "value", "run_id"], writes.Keys);
        double Write(string component, string metric, int b, int p) => Rows(writes)
            .Where(i => (string)writes["component"][i] == component && (string)writes["metric"][i] == metric && (int)writes["sequence"][i] == b && (int)writes["position"][i] == p)
            .Select(i => (double)writes["value"][i]).Single();
        for (int b = 0; b < 3; b++) Assert.Equal(Write("cell", "norm", b, 0), Write("cell_update", "norm", b, 0), 12);
        Assert.All(Rows(writes).Where(i => (string)writes["metric"][i] == "cosine"), i => Assert.InRange((double)writes["value"][i], -1 - 1e-9, 1 + 1e-9));
        Assert.All(Rows(writes).Where(i => (string)writes["metric"][i] is "norm" or "relative_norm"), i => Assert.True((double)writes["value"][i] >= 0));
        Assert.DoesNotContain(Rows(writes), i => (string)writes["component"][i] == "cell_update" && (string)writes["metric"][i] == "cosine" && (int)writes["position"][i] == 0);
        Assert.Equal(["attn_out", "cell", "cell_update", "embed", "head", "pos_embed"], writes["component"].Cast<string>().Distinct().Order());
        // The cell norm is the recomputed ‖c_t‖ of the saved LSTM.
        using (NewDisposeScope())
        using (no_grad())
        {
            var tokens = HeadDetection.RepeatedRandomTokens(loaded, Batch, Half, seed: 0, InductionRecipe.FirstTokenFor(loaded.Model.Config)).Tokens;
            var (_, cache) = lstm.RunWithCache(tokens, n => n == HookNames.Lstm.Cell(0));
            using (cache)
                Assert.True(Math.Abs(cache[HookNames.Lstm.Cell(0)][2, 30].norm().item<float>() - Write("cell", "norm", 2, 30)) < 1e-4);
        }

        // Probes: every state and lag 0 … 24; accuracies in [0, 1]; the current token is readable from the embeddings, the previous one after the previous-token head.
        var probe = ParquetRead.Columns(Path.Combine(tmp.Path, "lstm_analogy_probe.parquet"));
        Assert.Equal(["model", "state", "layer", "lag", "accuracy", "train_accuracy", "test_positions", "train_positions", "run_id"], probe.Keys);
        Assert.Equal(5 * 25, probe["accuracy"].Length);
        Assert.All(probe["accuracy"], a => Assert.InRange((double)a, 0, 1));
        double Accuracy(string state, int lag) => Rows(probe).Where(i => (string)probe["state"][i] == state && (int)probe["lag"][i] == lag).Select(i => (double)probe["accuracy"][i]).Single();
        Assert.True(Accuracy(HookNames.ResidPre(0), 0) > 0.95, "the token embedding holds the current token");
        Assert.True(Accuracy(HookNames.ResidPre(1), 1) > 0.8, "after the previous-token head the stream holds the previous token");
        Assert.True(Accuracy(HookNames.ResidPre(0), 8) < 0.1, "the embeddings know nothing of 8 tokens back");
        Assert.Equal(Batch * (positions - 1 - 24), Rows(probe).Where(i => (int)probe["lag"][i] == 24).Select(i => (int)probe["test_positions"][i]).Distinct().Single());
        foreach (int k in new[] { 1, 8, 24 })
        {
            Assert.Equal(Accuracy(HookNames.Lstm.Cell(0), k), Number($"lstm_probe_accuracy_k{k}"), 12);
            Assert.Equal(new[] { HookNames.ResidPre(0), HookNames.ResidPre(1), HookNames.ResidPost(1) }.Max(s => Accuracy(s, k)), Number($"transformer_probe_accuracy_k{k}"), 12);
        }

        // Gates: means of sigmoids lie in (0, 1); the induction head attends to the induction target on the second copy.
        var gates = ParquetRead.Columns(Path.Combine(tmp.Path, "lstm_analogy_gates.parquet"));
        Assert.Equal(["model", "quantity", "layer", "head", "position", "value", "run_id"], gates.Keys);
        Assert.All(Rows(gates).Where(i => ((string)gates["quantity"][i]).EndsWith("gate", StringComparison.Ordinal)), i => Assert.InRange((double)gates["value"][i], 0, 1));
        Assert.Equal(["forget_gate", "forget_gate_no_repeat", "induction_attention", "input_gate", "input_gate_no_repeat", "output_gate", "output_gate_no_repeat", "previous_token_attention"],
            gates["quantity"].Cast<string>().Distinct().Order());
        Assert.True(Number("induction_head_attention_repeated_half") > 0.5);
        Assert.Contains("**Memory**", File.ReadAllText(Path.Combine(tmp.Path, "report.md")));

        // The saved LSTM, loaded instead of trained, gives the same numbers.
        using var again = new TempDir();
        var (code2, _, err2, manifest2) = await ExperimentScriptTests.Run(again.Path, ["run", "lstm_analogy", .. Reduced, "--set", $"lstm={Path.Combine(tmp.Path, "lstm")}"]);
        Assert.True(code2 == 0, err2);
        Assert.DoesNotContain(manifest2.Artifacts, a => a.File == "lstm_training.parquet");
        foreach (var name in new[] { "lstm_repeated_half_loss", "lstm_probe_accuracy_k8", "lstm_cell_update_relative_norm" })
            Assert.Equal(Number(name), manifest2.KeyNumbers.Single(k => k.Name == name).Value, 6);
    }

    [Fact]
    public async Task Token_sequences_run_through_both_models_and_bad_input_fails_with_its_line_and_value()
    {
        using var tmp = new TempDir();
        string file = Path.Combine(tmp.Path, "sequences.jsonl");
        var rng = new Random(3);
        var sequences = new[] { 30, 41, 27 }.Select(n => new[] { 0 }.Concat(Enumerable.Range(0, n - 1).Select(_ => rng.Next(1, 64))).ToArray()).ToArray();
        File.WriteAllLines(file, sequences.Select(s => $"{{\"tokens\": [{string.Join(", ", s)}]}}"));
        using var run = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(run.Path, "run", "lstm_analogy", "--prompts", file, "--set", "lstm_steps=30", "--set", "probe_batch=16");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(run.Path, manifest);
        var loss = ParquetRead.Columns(Path.Combine(run.Path, "lstm_analogy_loss.parquet"));
        Assert.Equal(2 * sequences.Sum(s => s.Length - 1), loss["loss"].Length);   // padded positions are left out
        Assert.All(loss["segment"], s => Assert.Equal("other", s));
        for (int b = 0; b < sequences.Length; b++)
            Assert.Equal(sequences[b].Length - 2, Rows(loss).Where(i => (int)loss["sequence"][i] == b).Max(i => (int)loss["position"][i]));
        Assert.Contains(manifest.KeyNumbers, k => k.Name == "lstm_mean_loss");
        Assert.Contains(manifest.KeyNumbers, k => k.Name == "lstm_probe_accuracy_k24");

        File.WriteAllLines(file, ["{\"tokens\": [0, 5, 9]}", "{\"tokens\": [0, 64]}"]);
        using var bad = new TempDir();
        var (badCode, _, badErr, _) = await ExperimentScriptTests.Run(bad.Path, "run", "lstm_analogy", "--prompts", file, "--set", "lstm_steps=1");
        Assert.NotEqual(0, badCode);
        Assert.Contains("sequences.jsonl", badErr);
        Assert.Contains("sequences.jsonl:2", badErr);
        Assert.Contains("64", badErr);
    }

    [Fact]
    public async Task A_model_of_another_vocabulary_and_a_bad_setting_are_refused_before_training()
    {
        using var tmp = new TempDir();
        var (code, _, err, _) = await ExperimentScriptTests.Run(tmp.Path, "run", "lstm_analogy", "--model", TestModels.StoriesBin);
        Assert.NotEqual(0, code);
        Assert.Contains("vocabulary 64", err);
        Assert.Contains("d_vocab 512", err);
        using var zero = new TempDir();
        var (zeroCode, _, zeroErr, _) = await ExperimentScriptTests.Run(zero.Path, "run", "lstm_analogy", "--set", "lstm_steps=0");
        Assert.NotEqual(0, zeroCode);
        Assert.Contains("setting 'lstm_steps' must be at least 1, got 0", zeroErr);
    }
}

using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>The hooked LSTM: its hooks against the LSTM equations computed from its weights, interventions, and its file format.</summary>
[Collection(nameof(Interp.Tests.Training.TrainingCollection))]
public sealed class LstmTests
{
    private static readonly LstmConfig Small = new() { Name = "lstm-test", DVocab = 12, DHidden = 8, NLayers = 2 };

    private static Tensor Tokens(int batch, int pos, int vocab, ulong seed)
    {
        var rng = new Random((int)seed);
        var data = new long[batch * pos];
        for (int i = 0; i < data.Length; i++) data[i] = rng.Next(vocab);
        return tensor(data, [batch, pos]);
    }

    /// <summary>
    /// The LSTM equations (PyTorch's documented gate order i, f, g, o) in double precision on plain arrays, from the
    /// weights alone: state[name][layer][b, t, j].
    /// </summary>
    private static Dictionary<string, double[][,,]> Reference(HookedLstm model, long[,] tokens)
    {
        var cfg = model.Config;
        int batch = tokens.GetLength(0), pos = tokens.GetLength(1), d = cfg.DHidden;
        static float[] F(Tensor t) => t.detach().contiguous().data<float>().ToArray();
        var we = F(model.W_E);
        var names = new[] { "i", "f", "g", "o", "c", "h" };
        var result = names.ToDictionary(n => n, _ => new double[cfg.NLayers][,,]);
        var input = new double[batch, pos, d];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < pos; t++)
                for (int j = 0; j < d; j++) input[b, t, j] = we[tokens[b, t] * d + j];
        for (int l = 0; l < cfg.NLayers; l++)
        {
            float[] wih = F(model.WeightIh(l)), whh = F(model.WeightHh(l)), bih = F(model.BiasIh(l)), bhh = F(model.BiasHh(l));
            foreach (var n in names) result[n][l] = new double[batch, pos, d];
            for (int b = 0; b < batch; b++)
            {
                var h = new double[d];
                var c = new double[d];
                for (int t = 0; t < pos; t++)
                {
                    var z = new double[4 * d];
                    for (int r = 0; r < 4 * d; r++)
                    {
                        double s = bih[r] + bhh[r];
                        for (int k = 0; k < d; k++) s += wih[r * d + k] * input[b, t, k] + whh[r * d + k] * h[k];
                        z[r] = s;
                    }
                    for (int j = 0; j < d; j++)
                    {
                        double i = Sigmoid(z[j]), f = Sigmoid(z[d + j]), g = Math.Tanh(z[2 * d + j]), o = Sigmoid(z[3 * d + j]);
                        c[j] = f * c[j] + i * g;
                        h[j] = o * Math.Tanh(c[j]);
                        (result["i"][l][b, t, j], result["f"][l][b, t, j], result["g"][l][b, t, j], result["o"][l][b, t, j]) = (i, f, g, o);
                        (result["c"][l][b, t, j], result["h"][l][b, t, j]) = (c[j], h[j]);
                    }
                }
            }
            input = result["h"][l];
        }
        return result;
    }

    private static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    private static double MaxDiff(Tensor actual, double[,,] expected)
    {
        Assert.Equal([expected.GetLength(0), expected.GetLength(1), expected.GetLength(2)], actual.shape);
        var a = actual.to(ScalarType.Float64).contiguous().data<double>().ToArray();
        double max = 0;
        int k = 0;
        foreach (var e in expected) max = Math.Max(max, Math.Abs(a[k++] - e));
        return max;
    }

    [Fact]
    public void Hooks_of_a_trained_model_equal_the_gate_equations_computed_from_its_weights()
    {
        // Trained (briefly, on the built-in recipe's data with a small vocabulary), so the weights are not the initial ones.
        var options = LstmRecipe.Training with { Steps = 40, BatchSize = 8, LogInterval = 0, EvalBatchSize = 4, EvalHalfLength = 5, WarmupSteps = 5 };
        var data = LstmRecipe.Data with { VocabSize = Small.DVocab, SequenceLength = 24, SpanMaxLength = 10, SpanMinLength = 3 };
        using var model = LstmRecipe.CreateModel(Small, seed: 3);
        var before = model.WeightHh(1).detach().clone();
        var result = InductionTrainer.Train(model, data, options);
        Assert.True(TensorAssert.MaxAbsDiff(before, model.WeightHh(1)) > 1e-3, "training changed the weights");
        Assert.True(result.Loss[^1] < result.Loss[0], $"training lowers the loss ({result.Loss[0]:F3} → {result.Loss[^1]:F3})");

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = Tokens(3, 11, Small.DVocab, 7);
        var expected = Reference(model, ToArray(tokens));
        var (logits, cache) = model.RunWithCache(tokens);
        using (cache)
        {
            Assert.Equal(1 + 6 * Small.NLayers, cache.Count);
            for (int l = 0; l < Small.NLayers; l++)
                foreach (var (name, key) in new[] { (HookNames.Lstm.InputGate(l), "i"), (HookNames.Lstm.ForgetGate(l), "f"), (HookNames.Lstm.CellCandidate(l), "g"),
                             (HookNames.Lstm.OutputGate(l), "o"), (HookNames.Lstm.Cell(l), "c"), (HookNames.Lstm.Hidden(l), "h") })
                {
                    double diff = MaxDiff(cache[name], expected[key][l]);
                    Assert.True(diff < 1e-5, $"{name}: max |hook − equation| = {diff:g3}");
                }
            // The logits: the last hidden state through W_U, b_U; and the hooked (unrolled) pass equals the fused one.
            var h = tensor(Flatten(expected["h"][^1]), [3, 11, Small.DHidden]);
            var reference = h.matmul(model.W_U.to(ScalarType.Float64)).add(model.b_U.to(ScalarType.Float64), Interp.Scalars.One);
            TensorAssert.Close(reference, logits, 1e-5, "logits of the hooked pass vs the equations");
            TensorAssert.Close(logits, model.forward(tokens), 1e-5, "hooked (unrolled) vs fused pass");
        }
    }

    [Fact]
    public void Hooks_see_one_position_at_a_time_and_a_replacement_changes_every_later_step()
    {
        using var model = LstmRecipe.CreateModel(Small, seed: 1);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = Tokens(2, 9, Small.DVocab, 11);
        var seen = new List<(int Position, long[] Shape)>();
        const int cut = 4;
        // Zeroing both states after step `cut` restarts the recurrence: later logits equal a fresh run on the rest.
        HookFunction Reset(string name) => (act, _) =>
        {
            if (name == HookNames.Lstm.Cell(0)) seen.Add((model.Position, act.shape));
            return model.Position == cut ? zeros_like(act) : null;
        };
        var hooks = Enumerable.Range(0, Small.NLayers).SelectMany(l => new[] { HookNames.Lstm.Cell(l), HookNames.Lstm.Hidden(l) })
            .Select(n => (n, Reset(n))).ToArray();
        var patched = model.RunWithHooks(tokens, hooks);
        Assert.Equal(Enumerable.Range(0, 9), seen.Select(s => s.Position));
        Assert.All(seen, s => Assert.Equal([2L, 1, Small.DHidden], s.Shape));
        Assert.Equal(-1, model.Position);
        var fresh = model.forward(tokens[.., (cut + 1)..]);
        TensorAssert.Close(fresh, patched[.., (cut + 1)..], 1e-5, "after the reset vs a fresh run");
        Assert.True(TensorAssert.MaxAbsDiff(model.forward(tokens)[.., (cut + 1)..], fresh) > 1e-3, "the reset changed the later logits");
        // Before the reset nothing changed (at the reset itself the zeroed hidden state makes the logits).
        TensorAssert.Close(model.forward(tokens)[.., ..cut], patched[.., ..cut], 1e-5, "up to the reset");
    }

    [Fact]
    public void Unknown_hooks_and_bad_tokens_fail_with_their_names()
    {
        using var model = LstmRecipe.CreateModel(Small);
        var unknown = Assert.Throws<UnknownHookException>(() => model.RunWithHooks(tensor(new long[] { 1, 2 }), ("lstm.0.hook_cel", (_, _) => null)));
        Assert.Contains("lstm.0.hook_cell", unknown.Message);
        var bad = Assert.Throws<InvalidTokensException>(() => model.forward(tensor(new long[] { 1, 12 })));
        Assert.Contains("[0, 12)", bad.Message);
        Assert.Throws<InvalidModelConfigException>(() => new HookedLstm(Small with { DHidden = 0 }));
        Assert.Throws<ArgumentException>(() => InductionTrainer.Train(model, LstmRecipe.Data, LstmRecipe.Training));   // vocab 64 ≠ 12
    }

    [Fact]
    public void The_recipe_matches_the_transformer_in_size_and_a_saved_model_round_trips_exactly()
    {
        using var transformer = InductionRecipe.CreateModel();
        long transformerParameters = transformer.parameters().Sum(p => p.NumberOfElements);
        using var model = LstmRecipe.CreateModel();
        long parameters = model.parameters().Sum(p => p.NumberOfElements);
        Assert.Equal(LstmRecipe.ModelConfig.ParameterCount, parameters);
        Assert.InRange(parameters / (double)transformerParameters, 0.98, 1.02);

        using var tmp = new TempDir();
        LstmModelFormat.Save(model, tmp.Path, new Dictionary<string, string> { ["steps"] = "0" });
        using var loaded = LstmModelFormat.Load(tmp.Path);
        Assert.Equal(model.Config, loaded.Config);
        using var scope = NewDisposeScope();
        var tokens = Tokens(2, 7, 64, 5);
        TensorAssert.Close(model.forward(tokens), loaded.forward(tokens), 0.0, "saved vs loaded");

        // An unknown config key and a damaged weights file are errors that name them.
        string manifest = Path.Combine(tmp.Path, LstmModelFormat.ManifestFile);
        string text = File.ReadAllText(manifest);
        File.WriteAllText(manifest, text.Replace("\"d_hidden\"", "\"d_hiden\""));
        Assert.Contains("d_hiden", Assert.Throws<ModelFileException>(() => LstmModelFormat.Load(tmp.Path)).Message);
        File.WriteAllText(manifest, text);
        var bytes = File.ReadAllBytes(Path.Combine(tmp.Path, LstmModelFormat.WeightsFile));
        bytes[^1] ^= 0x40;
        File.WriteAllBytes(Path.Combine(tmp.Path, LstmModelFormat.WeightsFile), bytes);
        Assert.Contains("SHA-256", Assert.Throws<ModelFileException>(() => LstmModelFormat.Load(tmp.Path)).Message);
    }

    private static long[,] ToArray(Tensor tokens)
    {
        var flat = tokens.data<long>().ToArray();
        var result = new long[tokens.shape[0], tokens.shape[1]];
        Buffer.BlockCopy(flat, 0, result, 0, flat.Length * sizeof(long));
        return result;
    }

    private static double[] Flatten(double[,,] values) => values.Cast<double>().ToArray();
}

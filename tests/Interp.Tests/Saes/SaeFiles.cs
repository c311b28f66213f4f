using System.Text.Json.Nodes;
using Interp.Hooks;
using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>An SAE to write in SAELens's layout: its architecture, normalisation and shape.</summary>
internal sealed record SaeSpec(string Architecture, string Normalize = "none", bool ApplyBDec = true, bool HookZ = false, int K = 0,
    bool Rescale = false, int DIn = 12, int DSae = 32, int DOut = 10, string? HookName = null)
{
    public const int NHeads = 3;

    public bool IsTranscoder => Architecture is "transcoder" or "skip_transcoder" or "jumprelu_transcoder";

    public int Out => IsTranscoder ? DOut : DIn;

    /// <summary>The hook point the SAE reads.</summary>
    public string Hook => HookName ?? (HookZ ? HookNames.Z(0) : IsTranscoder ? HookNames.Normalized(0, "ln2") : HookNames.ResidPre(0));

    /// <summary>A transcoder's output hook.</summary>
    public static string HookOut => HookNames.MlpOut(0);

    public override string ToString() =>
        $"{Architecture}{(Rescale ? "+rescale" : "")}/{Normalize}{(ApplyBDec ? "" : "/no-b_dec-in")}{(HookZ ? "/hook_z" : "")}";
}

/// <summary>
/// Random SAEs written exactly as SAELens 6 saves them (<c>cfg.json</c> built here by hand, not by
/// <c>SaeConfig.ToJson</c>; <c>sae_weights.safetensors</c> F32), with the matching <see cref="ReferenceSae"/>.
/// </summary>
internal static class SaeFiles
{
    /// <summary>The tensors SAELens 6 gives each architecture (its <c>initialize_weights</c>), with their shapes.</summary>
    public static (string Name, long[] Shape)[] Layout(SaeSpec s)
    {
        long i = s.DIn, h = s.DSae, o = s.Out;
        return s.Architecture switch
        {
            "gated" => [("W_enc", [i, h]), ("W_dec", [h, o]), ("b_dec", [o]), ("b_gate", [h]), ("r_mag", [h]), ("b_mag", [h])],
            "jumprelu" or "jumprelu_transcoder" => [("W_enc", [i, h]), ("b_enc", [h]), ("W_dec", [h, o]), ("b_dec", [o]), ("threshold", [h])],
            "skip_transcoder" => [("W_enc", [i, h]), ("b_enc", [h]), ("W_dec", [h, o]), ("b_dec", [o]), ("W_skip", [o, i])],
            _ => [("W_enc", [i, h]), ("b_enc", [h]), ("W_dec", [h, o]), ("b_dec", [o])],
        };
    }

    /// <summary>Random weights for <paramref name="s"/>, row-major, keyed by SAELens's names.</summary>
    public static Dictionary<string, float[]> RandomTensors(SaeSpec s, int seed)
    {
        var rng = new Random(seed);
        var t = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in Layout(s))
        {
            int n = (int)shape.Aggregate(1L, (a, b) => a * b);
            t[name] = name switch
            {
                "W_enc" => Gaussian(rng, n, 1.5 / Math.Sqrt(s.DIn)),
                // Decoder rows of varied norms, so that TopK's decoder-norm rescaling changes which features win.
                "W_dec" => RowScaled(rng, (int)shape[0], (int)shape[1], 0.3),
                "threshold" => Uniform(rng, n, 0.05, 0.6),
                "W_skip" => Gaussian(rng, n, 0.2),
                "r_mag" => Gaussian(rng, n, 0.3),
                _ => Gaussian(rng, n, 0.3),   // b_enc, b_dec, b_gate, b_mag
            };
        }
        return t;
    }

    public static ReferenceSae Reference(SaeSpec s, IReadOnlyDictionary<string, float[]> t) => new()
    {
        Architecture = s.Architecture,
        DIn = s.DIn,
        DSae = s.DSae,
        DOut = s.DOut,
        Normalize = s.Normalize,
        ApplyBDecToInput = s.ApplyBDec,
        K = s.K,
        RescaleActsByDecoderNorm = s.Rescale,
        WEnc = t["W_enc"],
        WDec = t["W_dec"],
        BDec = t["b_dec"],
        BEnc = t.GetValueOrDefault("b_enc"),
        Threshold = t.GetValueOrDefault("threshold"),
        BGate = t.GetValueOrDefault("b_gate"),
        RMag = t.GetValueOrDefault("r_mag"),
        BMag = t.GetValueOrDefault("b_mag"),
        WSkip = t.GetValueOrDefault("W_skip"),
    };

    /// <summary><c>cfg.json</c> in SAELens 6.x's <c>save_model</c> layout (SAE fields, metadata, architecture last).</summary>
    public static JsonObject V6Config(SaeSpec s, bool hookNameOutInMetadata = true)
    {
        var o = new JsonObject
        {
            ["d_in"] = s.DIn,
            ["d_sae"] = s.DSae,
            ["dtype"] = "float32",
            ["device"] = "cpu",
            ["apply_b_dec_to_input"] = !s.IsTranscoder && s.ApplyBDec,
            ["normalize_activations"] = s.Normalize,
            ["reshape_activations"] = s.HookZ ? "hook_z" : "none",
        };
        if (s.Architecture == "topk")
        {
            o["k"] = s.K;
            o["rescale_acts_by_decoder_norm"] = s.Rescale;
        }
        if (s.IsTranscoder)
        {
            o["d_out"] = s.DOut;
            if (!hookNameOutInMetadata) o["hook_name_out"] = SaeSpec.HookOut;
        }
        var metadata = new JsonObject
        {
            ["sae_lens_version"] = "6.18.0",
            ["sae_lens_training_version"] = "6.18.0",
            ["model_name"] = "gpt2-tiny-random",
            ["hook_name"] = s.Hook,
            ["hook_head_index"] = null,
            ["context_size"] = 16,
            ["prepend_bos"] = false,
        };
        if (s.IsTranscoder && hookNameOutInMetadata) metadata["hook_name_out"] = SaeSpec.HookOut;
        o["metadata"] = metadata;
        o["architecture"] = s.Architecture;
        return o;
    }

    /// <summary>Writes <c>cfg.json</c> and <c>sae_weights.safetensors</c> (plus <paramref name="extra"/> tensors) to <paramref name="dir"/>.</summary>
    public static string Write(string dir, SaeSpec s, JsonNode config, IReadOnlyDictionary<string, float[]> t,
        params (string Name, float[] Data, long[] Shape)[] extra)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, Interp.Saes.Sae.ConfigFile), config.ToJsonString());
        WriteWeights(Path.Combine(dir, Interp.Saes.Sae.WeightsFile), s, t, extra);
        return dir;
    }

    public static void WriteWeights(string path, SaeSpec s, IReadOnlyDictionary<string, float[]> t, params (string Name, float[] Data, long[] Shape)[] extra)
    {
        using var scope = NewDisposeScope();
        var tensors = Layout(s).Select(l => new KeyValuePair<string, Tensor>(l.Name, tensor(t[l.Name], l.Shape)))
            .Concat(extra.Select(e => new KeyValuePair<string, Tensor>(e.Name, tensor(e.Data, e.Shape))))
            .OrderBy(p => p.Key, StringComparer.Ordinal);   // safetensors.torch.save_file writes the names sorted
        SafeTensorsWriter.Write(path, tensors);
    }

    /// <summary>
    /// <paramref name="rows"/> random input rows (different means and scales, so that both normalisations matter) whose
    /// every active/inactive decision is at least <paramref name="margin"/> from its boundary in the reference.
    /// </summary>
    public static float[] InputsAwayFromBoundaries(ReferenceSae reference, int seed, int rows, double margin = 1e-3)
    {
        var rng = new Random(seed);
        var kept = new List<float>();
        for (int tries = 0; kept.Count < rows * reference.DIn; tries++)
        {
            Assert.True(tries < 200 * rows, $"no {rows} inputs with a margin of {margin} after {tries} tries");
            double mean = rng.NextDouble() * 2 - 1, scale = 0.5 + 3 * rng.NextDouble();
            var row = Gaussian(rng, reference.DIn, scale);
            for (int i = 0; i < row.Length; i++) row[i] += (float)mean;
            if (reference.Forward(row, 1).Margin[0] >= margin) kept.AddRange(row);
        }
        return kept.ToArray();
    }

    public static float[] Gaussian(Random rng, int n, double sd)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            a[i] = (float)(sd * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return a;
    }

    private static float[] Uniform(Random rng, int n, double lo, double hi) =>
        Enumerable.Range(0, n).Select(_ => (float)(lo + (hi - lo) * rng.NextDouble())).ToArray();

    private static float[] RowScaled(Random rng, int rows, int cols, double sd)
    {
        var a = Gaussian(rng, rows * cols, sd);
        for (int r = 0; r < rows; r++)
        {
            double f = 0.3 + 2.5 * rng.NextDouble();
            for (int c = 0; c < cols; c++) a[r * cols + c] *= (float)f;
        }
        return a;
    }

    /// <summary>A stage as doubles, row-major (a hook_z output flattened).</summary>
    public static double[] Doubles(Tensor t)
    {
        using var d = t.detach().to(ScalarType.Float64).contiguous().flatten();
        return d.data<double>().ToArray();
    }

    /// <summary>Asserts max |expected − actual| ≤ <paramref name="tolerance"/>.</summary>
    public static void Close(double[] expected, Tensor actual, double tolerance, string what)
    {
        var a = Doubles(actual);
        Assert.True(expected.Length == a.Length, $"{what}: {a.Length} values, expected {expected.Length}");
        double worst = 0;
        int at = -1;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(expected[i] - a[i]);
            if (!(d <= worst)) { worst = d; at = i; }
        }
        Assert.True(worst <= tolerance, $"{what}: max |Δ| = {worst:g4} at {at} (expected {(at >= 0 ? expected[at] : 0):g6}, got {(at >= 0 ? a[at] : 0):g6}), tolerance {tolerance:g4}");
    }
}

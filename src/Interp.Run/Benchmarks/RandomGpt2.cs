using System.Text.Json;
using Interp.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Benchmarks;

/// <summary>The shape of a random-weight GPT-2 written in the Hugging Face format.</summary>
/// <param name="Name">Folder name.</param>
/// <param name="Layers">n_layer.</param>
/// <param name="Heads">n_head.</param>
/// <param name="DModel">n_embd.</param>
/// <param name="Vocab">vocab_size.</param>
/// <param name="Context">n_positions.</param>
public sealed record Gpt2Shape(string Name, int Layers, int Heads, int DModel, int Vocab, int Context)
{
    /// <summary>GPT-2 small: 12 layers, 12 heads, d_model 768, d_mlp 3072, vocab 50,257, context 1024.</summary>
    public static Gpt2Shape Small { get; } = new("gpt2-small-random", 12, 12, 768, 50257, 1024);

    /// <summary>A tiny shape for smoke runs.</summary>
    public static Gpt2Shape Tiny { get; } = new("gpt2-tiny-bench", 2, 4, 64, 1000, 64);

    /// <summary>
    /// Writes <c>config.json</c> and <c>model.safetensors</c> (HF names: wte, wpe, h.{i}.ln_1, attn.c_attn as Conv1D
    /// [d, 3d], …, ln_f; lm_head tied to wte) with N(0, 0.02) weights (seed 0) into <paramref name="modelsDir"/>/Name,
    /// unless a complete copy is already there. Returns the folder.
    /// </summary>
    public string EnsureWritten(string modelsDir)
    {
        string dir = Path.Combine(modelsDir, Name);
        string config = Path.Combine(dir, "config.json"), weights = Path.Combine(dir, "model.safetensors");
        string json = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["architectures"] = new[] { "GPT2LMHeadModel" },
            ["model_type"] = "gpt2",
            ["vocab_size"] = Vocab,
            ["n_positions"] = Context,
            ["n_ctx"] = Context,
            ["n_embd"] = DModel,
            ["n_layer"] = Layers,
            ["n_head"] = Heads,
            ["activation_function"] = "gelu_new",
            ["layer_norm_epsilon"] = 1e-5,
            ["tie_word_embeddings"] = true,
            ["_comment"] = "random weights N(0, 0.02), seed 0, written by interp bench",
        }, new JsonSerializerOptions { WriteIndented = true });
        if (File.Exists(weights) && File.Exists(config) && File.ReadAllText(config) == json) return dir;
        Directory.CreateDirectory(dir);
        using var scope = NewDisposeScope();
        var g = new Generator(0);
        int d = DModel;
        using Scalar std = 0.02.ToScalar(), half = 0.5.ToScalar();
        Tensor Rand(params long[] shape) => randn(shape, generator: g).mul(std);
        var t = new List<KeyValuePair<string, Tensor>>
        {
            new("wte.weight", Rand(Vocab, d)),
            new("wpe.weight", Rand(Context, d).mul(half)),
        };
        for (int l = 0; l < Layers; l++)
        {
            string p = $"h.{l}.";
            t.Add(new(p + "ln_1.weight", ones(d).add(Rand(d), Scalars.One)));
            t.Add(new(p + "ln_1.bias", Rand(d)));
            t.Add(new(p + "attn.c_attn.weight", Rand(d, 3 * d)));
            t.Add(new(p + "attn.c_attn.bias", Rand(3 * d)));
            t.Add(new(p + "attn.c_proj.weight", Rand(d, d)));
            t.Add(new(p + "attn.c_proj.bias", Rand(d)));
            t.Add(new(p + "ln_2.weight", ones(d).add(Rand(d), Scalars.One)));
            t.Add(new(p + "ln_2.bias", Rand(d)));
            t.Add(new(p + "mlp.c_fc.weight", Rand(d, 4 * d)));
            t.Add(new(p + "mlp.c_fc.bias", Rand(4 * d)));
            t.Add(new(p + "mlp.c_proj.weight", Rand(4 * d, d)));
            t.Add(new(p + "mlp.c_proj.bias", Rand(d)));
        }
        t.Add(new("ln_f.weight", ones(d).add(Rand(d), Scalars.One)));
        t.Add(new("ln_f.bias", Rand(d)));
        SafeTensorsWriter.Write(weights, t);
        File.WriteAllText(config, json);
        return dir;
    }

    /// <summary>
    /// Multiply-adds ×2 of one forward pass over [batch, pos] tokens: per token and layer 2·(4d² + 2·d·d_mlp) for the
    /// projections and 2·2·pos·d for scores and z (full square, as the kernels compute it), plus 2·d·vocab for the unembedding.
    /// </summary>
    public static double ForwardFlops(Models.ModelConfig c, long batch, long pos)
    {
        double d = c.DModel, tokens = batch * pos;
        double perLayer = 2 * (2 * d * c.HeadDim * c.NHeads + 2 * d * c.HeadDim * c.KvHeads + (c.AttentionOnly ? 0 : (c.Mlp == Models.MlpKind.Gated ? 3 : 2) * d * c.DMlp))
            + 4 * pos * c.HeadDim * c.NHeads;
        return tokens * (c.NLayers * perLayer + 2 * d * c.DVocab);
    }
}

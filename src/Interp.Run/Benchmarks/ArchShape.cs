using System.Text.Json;
using Interp.Loading;

namespace Interp.Benchmarks;

/// <summary>
/// A released model's shape with random weights, written once in the Hugging Face format (its config.json, its
/// checkpoint names and the dtype it ships in) by <see cref="RandomCheckpoint"/>, so that the bench measures today's
/// model families at their real sizes without a model hub.
/// </summary>
/// <param name="Name">Folder name.</param>
/// <param name="Config">config.json, as the released model's (its sizes, norms, rotary and attention settings).</param>
/// <param name="Ships">The dtype its released checkpoint is stored in (bfloat16 for Llama 3.2 and Gemma 2, float16 for Pythia).</param>
/// <param name="GainOffset">What a norm's gain is stored around: 1, or 0 for Gemma's gain − 1.</param>
public sealed record ArchShape(string Name, IReadOnlyDictionary<string, object> Config, SafeTensorsDType Ships, double GainOffset = 1)
{
    /// <summary>EleutherAI/pythia-160m: GPT-NeoX, 12 layers, d_model 768, 12 heads, parallel blocks, rotary on a quarter of each head, vocab 50,304; float16.</summary>
    public static ArchShape Pythia160m { get; } = new("pythia-160m-random", new Dictionary<string, object>
    {
        ["architectures"] = new[] { "GPTNeoXForCausalLM" }, ["model_type"] = "gpt_neox", ["hidden_size"] = 768, ["intermediate_size"] = 3072,
        ["num_attention_heads"] = 12, ["num_hidden_layers"] = 12, ["max_position_embeddings"] = 2048, ["rotary_pct"] = 0.25,
        ["rotary_emb_base"] = 10000, ["use_parallel_residual"] = true, ["vocab_size"] = 50304, ["layer_norm_eps"] = 1e-5,
        ["hidden_act"] = "gelu", ["tie_word_embeddings"] = false, ["torch_dtype"] = "float16",
    }, SafeTensorsDType.F16);

    /// <summary>meta-llama/Llama-3.2-1B: 16 layers, d_model 2048, 32 query and 8 key/value heads of 64, SwiGLU 8192, Llama 3 rotary scaling, tied vocab 128,256; bfloat16.</summary>
    public static ArchShape Llama32_1B { get; } = new("llama-3.2-1b-random", new Dictionary<string, object>
    {
        ["architectures"] = new[] { "LlamaForCausalLM" }, ["model_type"] = "llama", ["hidden_size"] = 2048, ["intermediate_size"] = 8192,
        ["num_attention_heads"] = 32, ["num_key_value_heads"] = 8, ["head_dim"] = 64, ["num_hidden_layers"] = 16,
        ["max_position_embeddings"] = 131072, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 500000.0,
        ["rope_scaling"] = new Dictionary<string, object> { ["factor"] = 32.0, ["high_freq_factor"] = 4.0, ["low_freq_factor"] = 1.0, ["original_max_position_embeddings"] = 8192, ["rope_type"] = "llama3" },
        ["tie_word_embeddings"] = true, ["vocab_size"] = 128256, ["hidden_act"] = "silu", ["attention_bias"] = false, ["mlp_bias"] = false,
        ["torch_dtype"] = "bfloat16",
    }, SafeTensorsDType.BF16);

    /// <summary>google/gemma-2-2b: 26 layers, d_model 2304, 8 query and 4 key/value heads of 256, GeGLU 9216, alternating 4096-token sliding window, soft caps 50 and 30, tied vocab 256,000; bfloat16.</summary>
    public static ArchShape Gemma2_2B { get; } = new("gemma-2-2b-random", new Dictionary<string, object>
    {
        ["architectures"] = new[] { "Gemma2ForCausalLM" }, ["model_type"] = "gemma2", ["hidden_size"] = 2304, ["intermediate_size"] = 9216,
        ["num_attention_heads"] = 8, ["num_key_value_heads"] = 4, ["head_dim"] = 256, ["num_hidden_layers"] = 26,
        ["max_position_embeddings"] = 8192, ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 10000.0, ["query_pre_attn_scalar"] = 256,
        ["sliding_window"] = 4096, ["attn_logit_softcapping"] = 50.0, ["final_logit_softcapping"] = 30.0,
        ["hidden_activation"] = "gelu_pytorch_tanh", ["vocab_size"] = 256000, ["tie_word_embeddings"] = true, ["torch_dtype"] = "bfloat16",
    }, SafeTensorsDType.BF16, GainOffset: 0);

    /// <summary>
    /// Writes config.json and a random model.safetensors (N(0, 0.02), seed 0, in <see cref="Ships"/>) into
    /// <paramref name="modelsDir"/>/Name unless a complete copy is there; returns the folder and whether it was written now.
    /// </summary>
    public (string Dir, bool Written) EnsureWritten(string modelsDir)
    {
        string dir = Path.Combine(modelsDir, Name);
        string config = Path.Combine(dir, "config.json"), weights = Path.Combine(dir, "model.safetensors");
        var content = new Dictionary<string, object>(Config) { ["_comment"] = "random weights N(0, 0.02), seed 0, written by interp bench" };
        string json = JsonSerializer.Serialize(content, new JsonSerializerOptions { WriteIndented = true });
        if (File.Exists(weights) && File.Exists(config) && File.ReadAllText(config) == json) return (dir, false);
        Directory.CreateDirectory(dir);
        if (File.Exists(weights)) File.Delete(weights); // a config change invalidates the weights
        File.WriteAllText(config, json);
        RandomCheckpoint.Write(dir, Ships, seed: 0, GainOffset);
        return (dir, true);
    }
}

using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading.Architectures;

/// <summary>
/// One Hugging Face architecture family: how its <c>config.json</c> becomes a <see cref="ModelConfig"/> and how its
/// checkpoint names become TransformerLens names. Reading the tensors (dtypes, shards, shape checks, leftovers) is
/// shared by <see cref="CheckpointTensors"/>; where the computation differs, the adapter's config picks the block
/// variant and components. Adding an architecture is one adapter here plus, if it computes something new, its variant.
/// </summary>
internal abstract class HfArchitecture
{
    /// <summary>The family name shown by <c>interp info</c> (e.g. "gpt_neox").</summary>
    public abstract string Family { get; }

    /// <summary>The <c>model_type</c> values of config.json this adapter reads.</summary>
    public abstract IReadOnlyList<string> ModelTypes { get; }

    /// <summary>The model config <paramref name="hf"/> describes; <paramref name="name"/> is the model's display name.</summary>
    public abstract ModelConfig ReadConfig(HfConfig hf, string name);

    /// <summary>
    /// The config with what only the checkpoint tells (e.g. whether a BERT file holds a masked-LM head or a pooler);
    /// <paramref name="cfg"/> itself for most architectures.
    /// </summary>
    public virtual ModelConfig WithCheckpoint(ModelConfig cfg, CheckpointTensors ckpt) => cfg;

    /// <summary>The checkpoint's tensors under TransformerLens names for <paramref name="cfg"/>.</summary>
    public abstract Dictionary<string, Tensor> ReadWeights(CheckpointTensors ckpt, ModelConfig cfg, HfConfig hf);

    /// <summary>Every adapter, in the order <c>interp info</c> lists them.</summary>
    public static IReadOnlyList<HfArchitecture> All { get; } =
        [new Gpt2Architecture(), new LlamaArchitecture(), new GptNeoXArchitecture(), new Gemma2Architecture(), new BertArchitecture()];

    /// <summary>Every supported <c>model_type</c>.</summary>
    public static IEnumerable<string> SupportedModelTypes => All.SelectMany(a => a.ModelTypes);

    /// <summary>The adapter for <paramref name="modelType"/>, or null.</summary>
    public static HfArchitecture? For(string modelType) => All.FirstOrDefault(a => a.ModelTypes.Contains(modelType));

    /// <summary>
    /// The config.json keys each <see cref="ModelConfig"/> field is read from, in the adapters' order of preference
    /// (GPT-2 spells them n_embd, n_layer, …): a config that fails <see cref="ModelConfig.Validate"/> is reported at the
    /// key the file spells, the first candidate present (or the first candidate, when the value is the default).
    /// </summary>
    private static readonly Dictionary<string, string[]> FieldKeys = new()
    {
        [nameof(ModelConfig.DModel)] = ["hidden_size", "n_embd"],
        [nameof(ModelConfig.NLayers)] = ["num_hidden_layers", "n_layer"],
        [nameof(ModelConfig.NHeads)] = ["num_attention_heads", "n_head"],
        [nameof(ModelConfig.NKvHeads)] = ["num_key_value_heads", "num_attention_heads"],
        [nameof(ModelConfig.DHead)] = ["head_dim", "hidden_size", "n_embd"],
        [nameof(ModelConfig.DMlp)] = ["intermediate_size", "n_inner"],
        [nameof(ModelConfig.DVocab)] = ["vocab_size"],
        [nameof(ModelConfig.NCtx)] = ["max_position_embeddings", "n_positions", "n_ctx"],
        [nameof(ModelConfig.NormEps)] = ["rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"],
        [nameof(ModelConfig.RotaryDim)] = ["rotary_pct", "head_dim", "hidden_size"],
        [nameof(ModelConfig.RotaryBase)] = ["rope_theta", "rotary_emb_base"],
        [nameof(ModelConfig.RopeScaling)] = ["rope_scaling"],
        [nameof(ModelConfig.AttnScale)] = ["query_pre_attn_scalar"],
        [nameof(ModelConfig.AttnScoresSoftCap)] = ["attn_logit_softcapping"],
        [nameof(ModelConfig.OutputLogitsSoftCap)] = ["final_logit_softcapping"],
        [nameof(ModelConfig.SlidingWindow)] = ["sliding_window"],
        [nameof(ModelConfig.SlidingWindowLayers)] = ["layer_types", "max_window_layers"],
        [nameof(ModelConfig.NTokenTypes)] = ["type_vocab_size"],
        [nameof(ModelConfig.EmbeddingScale)] = ["hidden_size"],
        [nameof(ModelConfig.Block)] = ["use_parallel_residual"],
    };

    /// <summary>The error for a config read from <paramref name="hf"/> that failed validation, at the key its field was read from.</summary>
    public static ModelFileException ConfigError(HfConfig hf, InvalidModelConfigException error)
    {
        string? key = error.Field is not null && FieldKeys.TryGetValue(error.Field, out var candidates)
            ? candidates.FirstOrDefault(hf.Has) ?? candidates[0]
            : null;
        return key is null ? new ModelFileException(hf.Path, null, error.Message, error) : hf.Error(key, error.Message, error);
    }

    /// <summary>The MLP activation named by <c>hidden_act</c> / <c>activation_function</c> (Hugging Face's ACT2FN names).</summary>
    protected static Activation ReadActivation(HfConfig hf, string key, string fallback)
    {
        string act = hf.String(key) ?? fallback;
        return act switch
        {
            "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" or "gelu_tanh" => Activation.GeluTanh,
            "gelu" => Activation.Gelu,
            "relu" => Activation.Relu,
            "silu" or "swish" => Activation.Silu,
            _ => throw hf.Error(key, $"unsupported activation '{act}' (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu)"),
        };
    }

    /// <summary>
    /// The sliding-window layers of a config with <c>layer_types</c> ("sliding_attention" / "full_attention"), or
    /// <paramref name="fallback"/> when it has none; checked against n_layers.
    /// </summary>
    protected static int[] SlidingLayers(HfConfig hf, int layers, Func<int, bool> fallback)
    {
        if (layers > ModelConfig.MaxLayers) throw hf.Error("num_hidden_layers", $"{layers} layers is implausible (at most {ModelConfig.MaxLayers})");
        var types = hf.Strings("layer_types");
        if (types is null) return Enumerable.Range(0, layers).Where(fallback).ToArray();
        if (types.Length != layers) throw hf.Error("layer_types", $"has {types.Length} entries for {layers} layers");
        var bad = types.FirstOrDefault(t => t is not ("sliding_attention" or "full_attention"));
        if (bad is not null) throw hf.Error("layer_types", $"unsupported layer type '{bad}' (supported: sliding_attention, full_attention)");
        return Enumerable.Range(0, layers).Where(l => types[l] == "sliding_attention").ToArray();
    }

    /// <summary>A Linear's query-like weight [head·d_head, d_model] → [head, d_model, d_head].</summary>
    protected static Tensor InHeads(Tensor w, int heads, int dHead, int dModel) => w.view(heads, dHead, dModel).transpose(1, 2);

    /// <summary>A Linear's output weight [d_model, head·d_head] → [head, d_head, d_model].</summary>
    protected static Tensor OutHeads(Tensor w, int heads, int dHead, int dModel) => w.t().reshape(heads, dHead, dModel);
}

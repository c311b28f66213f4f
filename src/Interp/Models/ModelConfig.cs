using System.Text.Json.Serialization;

namespace Interp.Models;

/// <summary>How the residual stream is normalised before attention, the MLP and the unembedding.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<NormKind>))]
public enum NormKind
{
    /// <summary>LayerNorm: centre, divide by the standard deviation, then scale and shift (GPT-2).</summary>
    LayerNorm,
    /// <summary>RMSNorm: divide by the root mean square, then scale (LLaMA).</summary>
    RMSNorm,
    /// <summary>No normalisation at all.</summary>
    None,
}

/// <summary>Where position information enters the model.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<PositionalKind>))]
public enum PositionalKind
{
    /// <summary>A learned table W_pos [n_ctx, d_model] added to the token embedding (GPT-2).</summary>
    Learned,
    /// <summary>The original Transformer's fixed sin/cos table added to the token embedding.</summary>
    Sinusoidal,
    /// <summary>Rotary embeddings applied to queries and keys inside attention (LLaMA).</summary>
    Rotary,
    /// <summary>No position information (the causal mask alone).</summary>
    None,
}

/// <summary>Which pairs of a head's dimensions a rotary embedding rotates together.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RotaryStyle>))]
public enum RotaryStyle
{
    /// <summary>Adjacent pairs (2i, 2i+1), as llama2.c and Meta's original LLaMA code do.</summary>
    AdjacentPairs,
    /// <summary>The two halves (i, i + d/2), as Hugging Face LLaMA checkpoints do.</summary>
    Halves,
}

/// <summary>The MLP sublayer of each block.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<MlpKind>))]
public enum MlpKind
{
    /// <summary>No MLP: an attention-only model.</summary>
    None,
    /// <summary>act(x·W_in + b_in)·W_out + b_out (GPT-2).</summary>
    Standard,
    /// <summary>(act(x·W_gate) ⊙ x·W_in)·W_out, SwiGLU when act is SiLU (LLaMA).</summary>
    Gated,
}

/// <summary>The MLP's nonlinearity.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Activation>))]
public enum Activation
{
    /// <summary>GELU, tanh approximation (GPT-2's <c>gelu_new</c>).</summary>
    GeluTanh,
    /// <summary>GELU with the exact error function.</summary>
    Gelu,
    /// <summary>ReLU.</summary>
    Relu,
    /// <summary>SiLU / swish (LLaMA).</summary>
    Silu,
}

/// <summary>
/// The architecture of a <see cref="HookedTransformer"/>: sizes and the choice of each component. It describes
/// the architecture only; every hook point that the architecture has always exists.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>A human-readable name, e.g. "gpt2-tiny-random".</summary>
    public string Name { get; init; } = "model";
    /// <summary>Width of the residual stream.</summary>
    public required int DModel { get; init; }
    /// <summary>Number of transformer blocks.</summary>
    public required int NLayers { get; init; }
    /// <summary>Number of query heads per layer.</summary>
    public required int NHeads { get; init; }
    /// <summary>Number of key/value heads (grouped-query attention when smaller than <see cref="NHeads"/>); 0 means NHeads.</summary>
    public int NKvHeads { get; init; }
    /// <summary>Width of one head; 0 means DModel / NHeads.</summary>
    public int DHead { get; init; }
    /// <summary>Hidden width of the MLP; ignored when <see cref="Mlp"/> is None.</summary>
    public int DMlp { get; init; }
    /// <summary>Vocabulary size.</summary>
    public required int DVocab { get; init; }
    /// <summary>Longest sequence the model accepts.</summary>
    public required int NCtx { get; init; }
    /// <summary>Normalisation kind.</summary>
    public NormKind Norm { get; init; } = NormKind.LayerNorm;
    /// <summary>Epsilon inside the normalisation's square root.</summary>
    public double NormEps { get; init; } = 1e-5;
    /// <summary>Positional scheme.</summary>
    public PositionalKind Positional { get; init; } = PositionalKind.Learned;
    /// <summary>Rotary pairing convention (only for <see cref="PositionalKind.Rotary"/>).</summary>
    public RotaryStyle RotaryStyle { get; init; } = RotaryStyle.Halves;
    /// <summary>Rotary base θ.</summary>
    public double RotaryBase { get; init; } = 10000.0;
    /// <summary>How many dimensions of each head rotate; 0 means all of <see cref="DHead"/>.</summary>
    public int RotaryDim { get; init; }
    /// <summary>MLP kind; None for attention-only models.</summary>
    public MlpKind Mlp { get; init; } = MlpKind.Standard;
    /// <summary>MLP nonlinearity.</summary>
    public Activation Act { get; init; } = Activation.GeluTanh;
    /// <summary>Whether the linear maps carry biases (GPT-2 yes, LLaMA no). Without them, biases are fixed zero buffers.</summary>
    public bool UseBias { get; init; } = true;

    /// <summary>Key/value head count with the default applied.</summary>
    [JsonIgnore] public int KvHeads => NKvHeads == 0 ? NHeads : NKvHeads;
    /// <summary>Head width with the default applied.</summary>
    [JsonIgnore] public int HeadDim => DHead == 0 ? DModel / NHeads : DHead;
    /// <summary>Rotary width with the default applied.</summary>
    [JsonIgnore] public int RotaryWidth => RotaryDim == 0 ? HeadDim : RotaryDim;
    /// <summary>True when the blocks have no MLP.</summary>
    [JsonIgnore] public bool AttentionOnly => Mlp == MlpKind.None;

    /// <summary>Throws <see cref="InterpException"/> naming the first field that makes no sense.</summary>
    public ModelConfig Validate()
    {
        static void Require(bool ok, string what) { if (!ok) throw new InterpException($"Invalid model config: {what}."); }
        Require(DModel > 0, $"DModel must be positive, got {DModel}");
        Require(NLayers >= 0, $"NLayers must not be negative, got {NLayers}");
        Require(NHeads > 0, $"NHeads must be positive, got {NHeads}");
        Require(DVocab > 0, $"DVocab must be positive, got {DVocab}");
        Require(NCtx > 0, $"NCtx must be positive, got {NCtx}");
        Require(DHead >= 0 && HeadDim > 0, $"DHead must be positive, got {HeadDim}");
        Require(DHead != 0 || DModel % NHeads == 0, $"DModel {DModel} is not divisible by NHeads {NHeads}; set DHead");
        Require(KvHeads > 0 && NHeads % KvHeads == 0, $"NHeads {NHeads} must be a multiple of NKvHeads {KvHeads}");
        Require(Mlp == MlpKind.None || DMlp > 0, $"DMlp must be positive for an MLP, got {DMlp}");
        Require(NormEps >= 0, $"NormEps must not be negative, got {NormEps}");
        Require(Positional != PositionalKind.Rotary || (RotaryWidth % 2 == 0 && RotaryWidth <= HeadDim),
            $"RotaryDim {RotaryWidth} must be even and at most DHead {HeadDim}");
        Require(Positional != PositionalKind.Sinusoidal || DModel % 2 == 0, $"sinusoidal positions need an even DModel, got {DModel}");
        Require(RotaryBase > 0, $"RotaryBase must be positive, got {RotaryBase}");
        // Guards against configs (e.g. from a hostile file) that would allocate absurd tensors.
        Require((long)DVocab * DModel <= 4L << 30 && (long)NCtx * DModel <= 4L << 30 && (long)DModel * Math.Max(DMlp, 1) <= 4L << 30,
            "sizes are implausibly large (a single weight matrix would exceed 4 G elements)");
        return this;
    }
}

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

/// <summary>How a block combines attention, the MLP and the norms with the residual stream.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BlockKind>))]
public enum BlockKind
{
    /// <summary>Pre-norm, sequential: mid = pre + attn(ln1(pre)); post = mid + mlp(ln2(mid)) (GPT-2, LLaMA, Gemma).</summary>
    PreNorm,
    /// <summary>Pre-norm, parallel: post = pre + attn(ln1(pre)) + mlp(ln2(pre)); no resid_mid (GPT-NeoX, GPT-J).</summary>
    Parallel,
    /// <summary>Post-norm: mid = pre + attn(pre); n = ln1(mid); post = n + mlp(n); the block's output is ln2(post) (BERT).</summary>
    PostNorm,
}

/// <summary>What turns the last residual stream into the model's output.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<HeadKind>))]
public enum HeadKind
{
    /// <summary>The final norm, then the unembedding W_U: logits [batch, pos, d_vocab] (every decoder).</summary>
    Unembed,
    /// <summary>BERT's masked-LM head: dense, activation, LayerNorm, then the unembedding: logits [batch, pos, d_vocab].</summary>
    MaskedLM,
    /// <summary>No head: the output is the last hidden state [batch, pos, d_model] (a base encoder such as BertModel).</summary>
    None,
}

/// <summary>Llama 3's rescaling of the rotary frequencies (<c>rope_scaling</c> with <c>rope_type</c> "llama3").</summary>
/// <param name="Factor">Divides the frequencies of the long wavelengths.</param>
/// <param name="LowFreqFactor">Wavelengths above original / LowFreqFactor are divided by <paramref name="Factor"/>.</param>
/// <param name="HighFreqFactor">Wavelengths below original / HighFreqFactor are kept; those between are interpolated.</param>
/// <param name="OriginalMaxPositions">The context the model was pre-trained with.</param>
public sealed record RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions);

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
    /// <summary>
    /// Biases of the query, key and value maps when <see cref="UseBias"/> is false (Qwen 2: q/k/v biases, no o bias);
    /// ignored when <see cref="UseBias"/> is true.
    /// </summary>
    public bool QkvBias { get; init; }
    /// <summary>The family the weights came from ("gpt2", "llama", "gpt_neox", "gemma2", "qwen3", "bert", …), for display.</summary>
    public string Family { get; init; } = "custom";
    /// <summary>How each block combines its sublayers with the residual stream.</summary>
    public BlockKind Block { get; init; } = BlockKind.PreNorm;
    /// <summary>False for a bidirectional encoder (BERT): every query sees every real key.</summary>
    public bool Causal { get; init; } = true;
    /// <summary>
    /// Gemma 2's extra norms on each sublayer's output before it joins the residual stream (TransformerLens's
    /// <c>ln1_post</c>, <c>ln2_post</c>).
    /// </summary>
    public bool NormAfterSublayers { get; init; }
    /// <summary>Multiplies the token embedding (Gemma: √d_model, rounded to float32); 1 for most models.</summary>
    public double EmbeddingScale { get; init; } = 1.0;
    /// <summary>Divides the attention scores; 0 means √d_head (Gemma 2: √query_pre_attn_scalar).</summary>
    public double AttnScale { get; init; }
    /// <summary>Soft cap on attention scores, c·tanh(s / c), before the mask; 0 for none (Gemma 2: 50).</summary>
    public double AttnScoresSoftCap { get; init; }
    /// <summary>Soft cap on the output logits, c·tanh(l / c); 0 for none (Gemma 2: 30).</summary>
    public double OutputLogitsSoftCap { get; init; }
    /// <summary>Sliding-window attention: a query sees the last W keys, itself included; 0 for none (Mistral, Gemma 2).</summary>
    public int SlidingWindow { get; init; }
    /// <summary>The layers that use <see cref="SlidingWindow"/>; null means every layer (Gemma 2: the even layers).</summary>
    public int[]? SlidingWindowLayers { get; init; }
    /// <summary>RMSNorm over d_head on each query and key head, before rotary (Qwen 3's q_norm / k_norm).</summary>
    public bool QkNorm { get; init; }
    /// <summary>Llama 3 rotary frequency scaling, or null for plain rotary.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>Number of token types (BERT segments A/B); 0 for none.</summary>
    public int NTokenTypes { get; init; }
    /// <summary>A norm right after the embeddings, whose output is <c>blocks.0.hook_resid_pre</c> (BERT).</summary>
    public bool EmbeddingNorm { get; init; }
    /// <summary>What produces the output from the last residual stream.</summary>
    public HeadKind Head { get; init; } = HeadKind.Unembed;
    /// <summary>BERT's pooler, tanh(dense(h[:, 0])), applied by <see cref="HookedTransformer.Pool"/>.</summary>
    public bool Pooler { get; init; }

    /// <summary>Key/value head count with the default applied.</summary>
    [JsonIgnore] public int KvHeads => NKvHeads == 0 ? NHeads : NKvHeads;
    /// <summary>Head width with the default applied.</summary>
    [JsonIgnore] public int HeadDim => DHead == 0 ? DModel / NHeads : DHead;
    /// <summary>Rotary width with the default applied.</summary>
    [JsonIgnore] public int RotaryWidth => RotaryDim == 0 ? HeadDim : RotaryDim;
    /// <summary>True when the blocks have no MLP.</summary>
    [JsonIgnore] public bool AttentionOnly => Mlp == MlpKind.None;
    /// <summary>The attention-score divisor with the default applied.</summary>
    [JsonIgnore] public double AttnScaleOrDefault => AttnScale == 0 ? Math.Sqrt(HeadDim) : AttnScale;
    /// <summary>True when the model outputs logits over the vocabulary (it has an unembedding).</summary>
    [JsonIgnore] public bool HasUnembed => Head != HeadKind.None;
    /// <summary>True when the blocks have a <c>hook_resid_mid</c> between attention and MLP (not parallel, not attention-only).</summary>
    [JsonIgnore] public bool HasResidMid => Block != BlockKind.Parallel && !AttentionOnly;
    /// <summary>The sliding window of layer <paramref name="layer"/>, or 0 when it attends to the whole prefix.</summary>
    public int WindowOf(int layer) => SlidingWindow > 0 && (SlidingWindowLayers is null || SlidingWindowLayers.Contains(layer)) ? SlidingWindow : 0;

    /// <summary>The most layers a config may have: far beyond any real model, and a bound on per-layer bookkeeping.</summary>
    public const int MaxLayers = 1 << 16;

    /// <summary>Throws <see cref="InvalidModelConfigException"/> naming the first field that makes no sense.</summary>
    public ModelConfig Validate()
    {
        static void Require(bool ok, string? field, string what) { if (!ok) throw new InvalidModelConfigException(field, $"Invalid model config: {what}."); }
        Require(Enum.IsDefined(Norm) && Enum.IsDefined(Positional) && Enum.IsDefined(RotaryStyle) && Enum.IsDefined(Mlp)
            && Enum.IsDefined(Act) && Enum.IsDefined(Block) && Enum.IsDefined(Head), null, "an enum field holds an undefined value");
        // Non-nullable by type, but a deserialised config (interp-model.json's "family": null) can still hold null.
        Require(Name is not null, nameof(Name), "Name must be set");
        Require(Family is not null, nameof(Family), "Family must be set (\"custom\" when it is none of the known ones)");
        Require(DModel > 0, nameof(DModel), $"DModel must be positive, got {DModel}");
        Require(NLayers >= 0 && NLayers <= MaxLayers, nameof(NLayers), $"NLayers must be in [0, {MaxLayers}], got {NLayers}");
        Require(NHeads > 0, nameof(NHeads), $"NHeads must be positive, got {NHeads}");
        Require(DVocab > 0, nameof(DVocab), $"DVocab must be positive, got {DVocab}");
        Require(NCtx > 0, nameof(NCtx), $"NCtx must be positive, got {NCtx}");
        Require(DHead >= 0 && HeadDim > 0, nameof(DHead), $"DHead must be positive, got {HeadDim}");
        Require(DHead != 0 || DModel % NHeads == 0, nameof(NHeads), $"DModel {DModel} is not divisible by NHeads {NHeads}; set DHead");
        Require(KvHeads > 0 && NHeads % KvHeads == 0, nameof(NKvHeads), $"NHeads {NHeads} must be a multiple of NKvHeads {KvHeads}");
        Require(Mlp == MlpKind.None || DMlp > 0, nameof(DMlp), $"DMlp must be positive for an MLP, got {DMlp}");
        Require(NormEps >= 0, nameof(NormEps), $"NormEps must not be negative, got {NormEps}");
        Require(RotaryDim >= 0, nameof(RotaryDim), $"RotaryDim must not be negative (0 means all of DHead), got {RotaryDim}");
        Require(Positional != PositionalKind.Rotary || (RotaryWidth % 2 == 0 && RotaryWidth <= HeadDim), nameof(RotaryDim),
            $"RotaryDim {RotaryWidth} must be even and at most DHead {HeadDim}");
        Require(Positional != PositionalKind.Sinusoidal || DModel % 2 == 0, nameof(DModel), $"sinusoidal positions need an even DModel, got {DModel}");
        Require(RotaryBase > 0, nameof(RotaryBase), $"RotaryBase must be positive, got {RotaryBase}");
        Require(double.IsFinite(EmbeddingScale) && EmbeddingScale > 0, nameof(EmbeddingScale), $"EmbeddingScale must be positive, got {EmbeddingScale}");
        Require(double.IsFinite(AttnScale) && AttnScale >= 0, nameof(AttnScale), $"AttnScale must be positive (or 0 for √d_head), got {AttnScale}");
        Require(double.IsFinite(AttnScoresSoftCap) && AttnScoresSoftCap >= 0, nameof(AttnScoresSoftCap), $"AttnScoresSoftCap must not be negative, got {AttnScoresSoftCap}");
        Require(double.IsFinite(OutputLogitsSoftCap) && OutputLogitsSoftCap >= 0, nameof(OutputLogitsSoftCap), $"OutputLogitsSoftCap must not be negative, got {OutputLogitsSoftCap}");
        Require(SlidingWindow >= 0, nameof(SlidingWindow), $"SlidingWindow must not be negative, got {SlidingWindow}");
        Require(SlidingWindowLayers is null || SlidingWindowLayers.All(l => l >= 0 && l < NLayers), nameof(SlidingWindowLayers),
            $"SlidingWindowLayers must name layers in [0, {NLayers})");
        Require(Causal || SlidingWindow == 0, nameof(SlidingWindow), "a sliding window needs a causal model");
        Require(NTokenTypes >= 0, nameof(NTokenTypes), $"NTokenTypes must not be negative, got {NTokenTypes}");
        Require(RopeScaling is null || (Positional == PositionalKind.Rotary && RopeScaling.Factor > 0 && RopeScaling.LowFreqFactor > 0
            && RopeScaling.HighFreqFactor > RopeScaling.LowFreqFactor && RopeScaling.OriginalMaxPositions > 0), nameof(RopeScaling),
            "RopeScaling needs rotary positions, Factor > 0, 0 < LowFreqFactor < HighFreqFactor and OriginalMaxPositions > 0");
        Require(Block != BlockKind.PostNorm || (Norm != NormKind.None && !AttentionOnly), nameof(Block), "post-norm blocks need a norm and an MLP");
        Require(Block != BlockKind.Parallel || !AttentionOnly, nameof(Block), "parallel blocks need an MLP");
        Require(Head != HeadKind.MaskedLM || Norm != NormKind.None, nameof(Head), "the masked-LM head needs a norm");
        // Guards against configs (e.g. from a hostile file) that would allocate absurd tensors.
        Require((long)DVocab * DModel <= 4L << 30 && (long)NCtx * DModel <= 4L << 30 && (long)DModel * Math.Max(DMlp, 1) <= 4L << 30
            && (long)NHeads * HeadDim * DModel <= 4L << 30, null,
            "sizes are implausibly large (a single weight matrix would exceed 4 G elements)");
        return this;
    }
}

/// <summary>A <see cref="ModelConfig"/> that makes no sense (<see cref="ModelConfig.Validate"/>); <see cref="Field"/> names the field at fault.</summary>
public sealed class InvalidModelConfigException : InterpException
{
    /// <summary>The <see cref="ModelConfig"/> property at fault (e.g. "RotaryBase"), or null when several are (sizes too large together).</summary>
    public string? Field { get; }

    /// <summary>Creates the exception.</summary>
    public InvalidModelConfigException(string? field, string message) : base(message) => Field = field;
}

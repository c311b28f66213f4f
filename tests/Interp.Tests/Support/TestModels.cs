using Interp.Models;

namespace Interp.Tests.Support;

/// <summary>Paths of the shared real models, and small random configs for architecture tests.</summary>
public static class TestModels
{
    public static string Gpt2TinyDir => SharedData.Model("gpt2-tiny-random");
    public static string StoriesBin => SharedData.Model("stories260K/stories260K.bin");
    public static string StoriesTokenizer => SharedData.Model("stories260K/tok512.bin");

    public static ModelConfig Gpt2Like => new()
    {
        Name = "gpt2-like", DModel = 32, NLayers = 2, NHeads = 4, DMlp = 64, DVocab = 50, NCtx = 24,
        Norm = NormKind.LayerNorm, Positional = PositionalKind.Learned, Mlp = MlpKind.Standard, Act = Activation.GeluTanh,
    };

    public static ModelConfig LlamaLike => new()
    {
        Name = "llama-like", DModel = 32, NLayers = 2, NHeads = 4, NKvHeads = 2, DMlp = 48, DVocab = 50, NCtx = 24,
        Norm = NormKind.RMSNorm, Positional = PositionalKind.Rotary, RotaryStyle = RotaryStyle.Halves,
        Mlp = MlpKind.Gated, Act = Activation.Silu, UseBias = false,
    };

    /// <summary>GPT-NeoX-like: parallel blocks, partial rotary (half of each head), LayerNorm, untied head.</summary>
    public static ModelConfig NeoXLike => new()
    {
        Name = "neox-like", Family = "gpt_neox", DModel = 32, NLayers = 2, NHeads = 4, DMlp = 64, DVocab = 50, NCtx = 24,
        Norm = NormKind.LayerNorm, Positional = PositionalKind.Rotary, RotaryStyle = RotaryStyle.Halves, RotaryDim = 4,
        Block = BlockKind.Parallel, Mlp = MlpKind.Standard, Act = Activation.Gelu, UseBias = true,
    };

    /// <summary>Gemma-2-like: pre and post norms, √d embedding scale, soft caps, a sliding window on layer 0, GeGLU, q/k norms.</summary>
    public static ModelConfig Gemma2Like => new()
    {
        Name = "gemma2-like", Family = "gemma2", DModel = 32, NLayers = 2, NHeads = 4, NKvHeads = 2, DHead = 12, DMlp = 48, DVocab = 50, NCtx = 24,
        Norm = NormKind.RMSNorm, Positional = PositionalKind.Rotary, RotaryStyle = RotaryStyle.Halves, NormAfterSublayers = true,
        EmbeddingScale = Math.Sqrt(32), AttnScale = 4, AttnScoresSoftCap = 50, OutputLogitsSoftCap = 30,
        SlidingWindow = 4, SlidingWindowLayers = [0], QkNorm = true,
        Mlp = MlpKind.Gated, Act = Activation.GeluTanh, UseBias = false,
    };

    /// <summary>BERT-like masked LM: bidirectional, post-norm blocks, token types, embedding norm, MLM head.</summary>
    public static ModelConfig BertLike => new()
    {
        Name = "bert-like", Family = "bert", DModel = 32, NLayers = 2, NHeads = 4, DMlp = 64, DVocab = 50, NCtx = 24,
        Norm = NormKind.LayerNorm, Positional = PositionalKind.Learned, Causal = false, Block = BlockKind.PostNorm,
        EmbeddingNorm = true, NTokenTypes = 2, Head = HeadKind.MaskedLM, Mlp = MlpKind.Standard, Act = Activation.Gelu, UseBias = true,
    };

    public static ModelConfig AttnOnlySinusoidal => new()
    {
        Name = "attn-only-sinusoidal", DModel = 32, NLayers = 2, NHeads = 4, DVocab = 50, NCtx = 24,
        Norm = NormKind.LayerNorm, Positional = PositionalKind.Sinusoidal, Mlp = MlpKind.None,
    };

    public static HookedTransformer Random(ModelConfig cfg, long seed = 1)
    {
        var model = new HookedTransformer(cfg);
        model.InitWeights(seed, std: 0.3);
        // Non-trivial biases and norm gains, so that bias handling is exercised too.
        using var _ = TorchSharp.torch.no_grad();
        var gen = new TorchSharp.torch.Generator((ulong)seed + 1000);
        foreach (var (name, p) in model.named_parameters())
        {
            string leaf = name[(name.LastIndexOf('.') + 1)..];
            if (leaf.StartsWith('b') || leaf == "w") p.add_(TorchSharp.torch.randn(p.shape, generator: gen) * 0.1);
        }
        return model;
    }

    public static TorchSharp.torch.Tensor RandomTokens(int vocab, int batch, int pos, long seed = 7)
    {
        var gen = new TorchSharp.torch.Generator((ulong)seed);
        return TorchSharp.torch.randint(0, vocab, [batch, pos], generator: gen, dtype: TorchSharp.torch.ScalarType.Int64);
    }
}

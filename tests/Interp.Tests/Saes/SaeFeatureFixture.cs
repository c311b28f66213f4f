using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>The shared SAE of ../shared/saes/gpt2-tiny-random-res-1 with its model, reference tokens and reference feature acts.</summary>
internal sealed class SaeFeatureFixture : IDisposable
{
    public const int N = 40, DIn = 64, DSae = 256;
    private readonly LoadedModel _loaded;

    public SaeFeatureFixture()
    {
        _loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        Sae = Sae.Load(Folder);
    }

    public static string Folder => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");
    public static string Reference(string file) => Path.Combine(Folder, "reference", file);

    public Interp.Models.HookedTransformer Model => _loaded.Model;
    public Sae Sae { get; }

    /// <summary>The model's 40 reference token ids.</summary>
    public static long[] TokenIds => File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt"))
        .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    /// <summary>The reference tokens as [1, 40].</summary>
    public static Tensor Tokens() => tensor(TokenIds, [1, N]);

    /// <summary>feature_acts.f32 as [1, 40, 256].</summary>
    public static float[,,] ReferenceActs()
    {
        var flat = TensorAssert.ReadRawFloats(Reference("feature_acts.f32"), N, DSae).data<float>().ToArray();
        var a = new float[1, N, DSae];
        Buffer.BlockCopy(flat, 0, a, 0, flat.Length * sizeof(float));
        return a;
    }

    /// <summary>The GPT-2 tokenizer (its ids below 1000 are the test model's vocabulary, as display strings).</summary>
    public static HuggingFaceTokenizer Gpt2Tokenizer() => HuggingFaceTokenizer.Load(Path.Combine(SharedData.Root, "tokenizers", "gpt2"));

    public static float[,,] ToArray3(Tensor t)
    {
        var c = t.detach().cpu().to(ScalarType.Float32).contiguous();
        var a = new float[c.shape[0], c.shape[1], c.shape[2]];
        var flat = c.data<float>().ToArray();
        Buffer.BlockCopy(flat, 0, a, 0, flat.Length * sizeof(float));
        return a;
    }

    public void Dispose()
    {
        Sae.Dispose();
        _loaded.Dispose();
    }
}

using Interp.Models;

namespace Interp.Training;

/// <summary>
/// A tested recipe in which a 2-layer attention-only transformer learns the textbook induction circuit on CPU in
/// about a minute: a previous-token head in layer 0 and induction heads in layer 1 whose keys read it
/// (K-composition). See <see cref="InductionDataOptions"/> for why the data works and the README for the numbers.
/// </summary>
public static class InductionRecipe
{
    /// <summary>
    /// The architecture: d_model 64, 2 heads of width 32 per layer (few heads give each a clean role), vocabulary 64
    /// (BOS + 63 content tokens), context 64, LayerNorm, learned positions, biases, no MLP — TransformerLens's
    /// attn-only-2l in miniature.
    /// </summary>
    public static ModelConfig ModelConfig { get; } = new()
    {
        Name = "attn-only-2l-induction",
        DModel = 64,
        NLayers = 2,
        NHeads = 2,
        DVocab = 64,
        NCtx = 64,
        Norm = NormKind.LayerNorm,
        Positional = PositionalKind.Learned,
        Mlp = MlpKind.None,
        UseBias = true,
    };

    /// <summary>The data: half in-context bigram sequences (noise 0.05), half random tokens with two repeated spans.</summary>
    public static InductionDataOptions Data { get; } = new();

    /// <summary>
    /// The optimisation: AdamW, peak lr 2e-3 after 100 warm-up steps, constant, weight decay 0.01, batch 32; and head
    /// dropout that gives the model TransformerLens attn-only-2l's structure: in layer 0, half of the sequences lose one
    /// of the two heads (so both learn to be previous-token heads, each dispensable); in layer 1, head 1.1 is dropped
    /// from half of the sequences and head 1.0 never (so 1.0 becomes the one induction head the model cannot do without).
    /// </summary>
    public static TrainingOptions Training { get; } = new()
    {
        HeadDropout =
        [
            new HeadDropout(Layer: 0, Heads: [0, 1], Probability: 0.5, OneAtATime: true),
            new HeadDropout(Layer: 1, Heads: [1], Probability: 0.5, OneAtATime: false),
        ],
    };

    /// <summary>
    /// The token the built-in model's sequences start with (BOS = 0) when <paramref name="config"/> is this recipe's
    /// architecture; null for any other model (its tokenizer, if any, says).
    /// </summary>
    public static int? FirstTokenFor(ModelConfig config) => config == ModelConfig ? (int)InductionDataGenerator.Bos : null;

    /// <summary>A freshly initialised model (TransformerLens's default N(0, 0.8/√d_model) weights).</summary>
    public static HookedTransformer CreateModel(long seed = 0)
    {
        var model = new HookedTransformer(ModelConfig);
        model.InitWeights(seed);
        return model;
    }
}

using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using Interp.Training.Saes;
using static TorchSharp.torch;

namespace Interp.Tests.Training.Saes;

/// <summary>The recipes' evaluation (L0, explained variance, CE loss score) against exact identities and a direct computation.</summary>
public sealed class SaeRecipeTests
{
    [Fact]
    public void An_sae_that_reconstructs_exactly_scores_one_and_zero_ablation_matches_a_direct_computation()
    {
        using var tmp = new TempDir();
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        var model = loaded.Model;
        string path = tmp.File("held-out.txt");
        File.WriteAllText(path, "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.\n\n" +
                                "Tom had a big red ball. He threw it high and Lily caught it. They laughed and played until the sun went down.");
        string hook = HookNames.ResidPre(2);
        // relu(x) − relu(−x) = x: W_enc = [I, −I], W_dec = [I; −I], zero biases, reconstructs every activation exactly.
        using var scope = NewDisposeScope();
        var eye64 = eye(64);
        var config = new SaeConfig(64, 128, SaeArchitecture.Standard, hook, false, "float32", "cpu", null, null);
        using var sae = Sae.Create(config, new Dictionary<string, Tensor>
        {
            ["W_enc"] = cat([eye64, -eye64], 1), ["b_enc"] = zeros(128), ["W_dec"] = cat([eye64, -eye64], 0), ["b_dec"] = zeros(64),
        });
        var corpus = new TextFileTokenSource(path, loaded.RequireTokenizer());
        var s = SaeRecipe.Evaluate(model, sae, corpus, 16, bos: 1);
        var windows = TokenWindows.Pack(corpus.Documents(), 16, 1, true).ToArray();
        Assert.True(windows.Length >= 2);
        Assert.Equal(windows.Length * 16L, s.Positions);
        Assert.Equal(64, s.L0, 1e-12);
        Assert.Equal(1.0, s.ExplainedVariance, 1e-6);
        Assert.Equal(s.CeLossClean, s.CeLossWithSae, 1e-5);
        Assert.Equal(1.0, s.CeLossScore, 1e-4);

        // Direct: the windows, the clean and the zero-ablated losses computed here.
        var tokens = tensor(windows.SelectMany(w => w.Select(t => (long)t)).ToArray(), [windows.Length, 16]);
        using var noGrad = no_grad();
        double Loss(Tensor logits) => nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, 512), tokens[.., 1..].reshape(-1)).item<float>();
        Assert.Equal(Loss(model.forward(tokens)), s.CeLossClean, 1e-5);
        Assert.Equal(Loss(model.RunWithHooks(tokens, (hook, (a, _) => zeros_like(a)))), s.CeLossZeroAblated, 1e-5);
        Assert.True(s.CeLossZeroAblated > s.CeLossClean + 1, "zero-ablating the residual stream must hurt");
    }
}

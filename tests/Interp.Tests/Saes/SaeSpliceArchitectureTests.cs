using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// Splicing SAEs of the architectures whose forward differs most from the shared standard SAE (gated, TopK with
/// decoder-norm rescaling, layer_norm) into gpt2-tiny-random at <c>blocks.1.hook_resid_pre</c>: with the error term the
/// model's logits are exactly its own; without it they change; the spliced features are SAELens's on the model's own
/// residual stream.
/// </summary>
public sealed class SaeSpliceArchitectureTests
{
    private const int N = 40, DModel = 64;

    private static long[] TokenIds() => File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt"))
        .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();

    public static TheoryData<string, string, int, bool> Cases() => new()
    {
        { "gated", "none", 0, false },
        { "topk", "none", 8, true },
        { "standard", "layer_norm", 0, false },
        { "gated", "layer_norm", 0, false },
        { "topk", "constant_norm_rescale", 8, true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void With_the_error_term_the_logits_are_unchanged_exactly(string architecture, string normalize, int k, bool rescale)
    {
        var spec = new SaeSpec(architecture, normalize, K: k, Rescale: rescale, DIn: DModel, DSae: 96, HookName: HookNames.ResidPre(1));
        var t = SaeFiles.RandomTensors(spec, 17);
        using var dir = new TempDir();
        SaeFiles.Write(dir.Path, spec, SaeFiles.V6Config(spec), t);
        using var sae = Sae.Load(dir.Path);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [1, N]);
        var clean = model.forward(tokens);

        using (model.WithSaes(sae, useErrorTerm: true))
            TensorAssert.Close(clean, model.forward(tokens), 0, $"{spec}: logits with the error term");

        using (model.WithSaes(sae))
        {
            var (logits, cache) = model.RunWithCache(tokens);
            using (cache)
            {
                Assert.True(TensorAssert.MaxAbsDiff(clean, logits) > 1e-3, $"{spec}: splicing without the error term changed nothing");
                // The features the splice computed are SAELens's on the residual stream the model gave the SAE.
                var x = cache[spec.Hook][0].contiguous().data<float>().ToArray();
                var r = SaeFiles.Reference(spec, t).Forward(x, N);
                var acts = SaeFiles.Doubles(cache[HookNames.SaeLeaf.Of(spec.Hook, HookNames.SaeLeaf.ActsPost)][0]);
                var output = SaeFiles.Doubles(cache[HookNames.SaeLeaf.Of(spec.Hook, HookNames.SaeLeaf.Output)][0]);
                int compared = 0;
                for (int p = 0; p < N; p++)
                {
                    if (r.Margin[p] < 1e-3) continue;   // a decision this close to its boundary may go either way in float32
                    compared++;
                    for (int f = 0; f < spec.DSae; f++)
                        Assert.True(Math.Abs(acts[p * spec.DSae + f] - r.ActsPost[p * spec.DSae + f]) <= 1e-4, $"{spec}: acts[{p}, {f}]");
                    for (int j = 0; j < DModel; j++)
                        Assert.True(Math.Abs(output[p * DModel + j] - r.Output[p * DModel + j]) <= 1e-4, $"{spec}: output[{p}, {j}]");
                }
                Assert.True(compared >= N / 2, $"{spec}: only {compared} positions away from a boundary");
            }
        }
        TensorAssert.Close(clean, model.forward(tokens), 0, "logits after the splices");
    }
}

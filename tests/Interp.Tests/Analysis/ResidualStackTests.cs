using Interp.Analysis;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Analysis;

/// <summary>TransformerLens's residual-stream views of the cache: each checked against the hooks it must add up to.</summary>
public sealed class ResidualStackTests
{
    public static TheoryData<string, bool> Models() => AnalysisModels.WithProcessing();

    [Theory]
    [MemberData(nameof(Models))]
    public void Decompositions_sum_to_the_stream_and_the_norm_applied_to_them_to_the_norms_output(string name, bool processed)
    {
        using var model = AnalysisModels.Build(name, processed);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var cfg = model.Config;
        var tokens = AnalysisModels.Tokens(model);
        var (_, cache) = model.RunWithCache(tokens, _ => true);                        // every hook, hook_result included
        using (cache)
        {
            var resids = cache.AccumulatedResid(model, includeMid: true);
            for (int l = 0; l <= cfg.NLayers; l++)
            {
                var stream = l < cfg.NLayers ? cache[HookNames.ResidPre(l)] : cache[HookNames.ResidPost(l - 1)];
                var parts = cache.DecomposeResid(model, l);
                TensorAssert.Close(stream, parts.Values.sum([0]), 1e-4, $"{name}: decompose_resid({l})");
                TensorAssert.Close(stream, resids.Values[resids.IndexOf(l < cfg.NLayers ? $"{l}_pre" : "final_post")], 0, $"accumulated {l}");

                // Heads (and b_O) plus embeddings and MLPs rebuild the same stream.
                var heads = cache.StackHeadResults(model, l);
                var rebuilt = parts.Values[..(model.PosEmbed is null ? 1 : 2)].sum([0]);
                if (heads.Components.Count > 0) rebuilt = rebuilt + heads.Values.sum([0]);
                for (int m = 0; m < l && !cfg.AttentionOnly; m++) rebuilt = rebuilt + cache[HookNames.MlpOut(m)];
                TensorAssert.Close(stream, rebuilt, 1e-4, $"{name}: heads up to layer {l}");

                // The norm reading that stream, applied component by component with its cached scale: Σ · w + b is its output.
                if (cfg.Norm == NormKind.None) continue;
                var norm = l < cfg.NLayers ? model.Blocks[l].Ln1! : model.LnFinal!;
                var normalized = l < cfg.NLayers ? cache[HookNames.Normalized(l, "ln1")] : cache[HookNames.LnFinalNormalized];
                var summed = cache.DecomposeResid(model, l, applyLn: true).Values.sum([0]);
                // LayerNorm's hook_normalized includes w and b; RMSNorm's is before w (TransformerLens's convention).
                var expected = cfg.Norm == NormKind.LayerNorm ? (normalized - norm.B) / norm.W : normalized;
                TensorAssert.Close(expected, summed, 2e-4, $"{name}: apply_ln_to_stack at layer {l}");
            }
            if (!cfg.AttentionOnly)
            {
                var mid = cache.DecomposeResid(model, 0, mlpInput: true, applyLn: true);
                Assert.Equal("0_attn_out", mid.Labels[^1]);
                var ln2 = model.Blocks[0].Ln2!;
                var normalized = cache[HookNames.Normalized(0, "ln2")];
                TensorAssert.Close(cfg.Norm == NormKind.LayerNorm ? (normalized - ln2.B) / ln2.W : normalized, mid.Values.sum([0]), 2e-4, "ln2 input");
                Assert.Contains("0_mid", resids.Labels);
            }
        }
    }

    [Fact]
    public void Labels_follow_TransformerLens()
    {
        using var model = AnalysisModels.Build("gpt2", processed: false);
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(AnalysisModels.Tokens(model), _ => true);
        using (cache)
        {
            Assert.Equal(["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"], cache.DecomposeResid(model).Labels);
            Assert.Equal(["0_pre", "1_pre", "final_post"], cache.AccumulatedResid(model).Labels);
            Assert.Equal(["0_pre", "0_mid", "1_pre"], cache.AccumulatedResid(model, 1, includeMid: true).Labels);
            Assert.Equal(["L0H0", "L0H1", "L0H2", "L0H3", "0_attn_bias"], cache.StackHeadResults(model, 1).Labels);
            Assert.Equal(["L0H0", "L0H1", "L0H2", "L0H3"], cache.StackHeadResults(model, 1, includeAttnBias: false).Labels);
            Assert.Equal([0L, 2, 12, 32], cache.StackHeadResults(model, 0).Values.shape);
            var heads = cache.StackHeadResults(model).Components;
            Assert.Equal((ComponentKind.Head, 1, 3, "head"), (heads[8].Kind, heads[8].Layer, heads[8].Head, heads[8].Name));
        }
    }

    [Fact]
    public void Head_results_come_from_hook_z_when_hook_result_was_not_cached()
    {
        using var model = AnalysisModels.Build("stories260K", processed: false);   // grouped-query attention
        using var scope = NewDisposeScope();
        var tokens = AnalysisModels.Tokens(model);
        var (_, withResult) = model.RunWithCache(tokens, _ => true);
        var (_, withoutResult) = model.RunWithCache(tokens);                          // the default leaves hook_result out
        using (withResult)
        using (withoutResult)
        {
            Assert.False(withoutResult.Contains(HookNames.Result(0)));
            for (int l = 0; l < model.Config.NLayers; l++)
                TensorAssert.Close(withResult[HookNames.Result(l)], withoutResult.HeadResults(model, l), 1e-5, $"layer {l}");
        }
    }

    [Fact]
    public void Bad_requests_name_the_layer_or_hook_at_fault()
    {
        using var model = AnalysisModels.Build("attn-only-sinusoidal", processed: false);
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(AnalysisModels.Tokens(model), n => !n.EndsWith("hook_scale"));
        using (cache)
        {
            Assert.Contains("layer 3 is outside [0, 2]", Assert.Throws<InterpException>(() => cache.DecomposeResid(model, 3)).Message);
            Assert.Contains("mlpInput: block 0 has no MLP (the model is attention-only)",
                Assert.Throws<InterpException>(() => cache.DecomposeResid(model, 0, mlpInput: true)).Message);
            Assert.Contains("hook 'ln_final.hook_scale': not in the cache",
                Assert.Throws<HookException>(() => cache.DecomposeResid(model, applyLn: true)).Message);
            var stack = cache.DecomposeResid(model).Values;
            Assert.Contains("hook 'blocks.1.ln1.hook_scale'", Assert.Throws<HookException>(() => cache.ApplyLnToStack(model, stack, 1)).Message);
        }
        var (_, full) = model.RunWithCache(AnalysisModels.Tokens(model), _ => true);
        using (full)
        {
            var e = Assert.Throws<InterpException>(() => full.ApplyLnToStack(model, zeros(3, 2, 5, 32)));
            Assert.Contains("the stack must be [component, 2, 12, 32] to match ln_final.hook_scale; got [3, 2, 5, 32]", e.Message);
            Assert.Contains("no component 'L9H9'", Assert.Throws<InterpException>(() => full.StackHeadResults(model).IndexOf("L9H9")).Message);
        }
    }
}

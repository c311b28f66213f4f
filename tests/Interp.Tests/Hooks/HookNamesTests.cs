using System.Reflection;
using System.Text.RegularExpressions;
using Interp.Hooks;
using Interp.Models;
using Interp.Tests.Support;

namespace Interp.Tests.Hooks;

/// <summary>
/// HookNames is the one place hook names are spelled: each of its names exists on every architecture where it applies
/// (and nowhere else), every hook point of every model is one of its names, and no other source file spells one.
/// </summary>
public partial class HookNamesTests
{
    public static TheoryData<string> Architectures => new() { "gpt2", "llama", "attn-only", "neox", "gemma2", "bert" };

    private static ModelConfig Config(string arch) => arch switch
    {
        "gpt2" => TestModels.Gpt2Like,
        "llama" => TestModels.LlamaLike,
        "neox" => TestModels.NeoXLike,
        "gemma2" => TestModels.Gemma2Like,
        "bert" => TestModels.BertLike,
        _ => TestModels.AttnOnlySinusoidal,
    };

    /// <summary>The public members of HookNames that are not hook names (helpers and prefixes).</summary>
    private static readonly string[] NotHookNames = ["Block", "ActName", "ShortNames", "LayerOf", "Is", "ScaleOf", "NormalizedOf", "EmbedNorm", "MlmHeadNorm"];

    /// <summary>Whether the model of <paramref name="cfg"/> has the hook that HookNames member <paramref name="member"/> names (<paramref name="norm"/> for Scale/Normalized).</summary>
    private static bool Applies(string member, ModelConfig cfg, string? norm, bool split = false) => member switch
    {
        "QInput" or "KInput" or "VInput" => split && cfg.Block != BlockKind.PostNorm,
        "MlpIn" => split && !cfg.AttentionOnly && cfg.Block != BlockKind.PostNorm,
        "PosEmbed" => cfg.Positional is PositionalKind.Learned or PositionalKind.Sinusoidal,
        "LnFinalScale" or "LnFinalNormalized" => cfg.Norm != NormKind.None && cfg.Block != BlockKind.PostNorm,
        "TokenTypeEmbed" => cfg.NTokenTypes > 0,
        "MlmHeadPost" => cfg.Head == HeadKind.MaskedLM,
        "NormalizedResidMid" or "NormalizedResidPost" => cfg.Block == BlockKind.PostNorm,
        "ResidMid" => cfg.HasResidMid,
        "Scale" or "Normalized" => norm switch
        {
            "ln1" => cfg.Norm != NormKind.None,
            "ln2" => cfg.Norm != NormKind.None && !cfg.AttentionOnly,
            "ln1_post" => cfg.NormAfterSublayers,
            "ln2_post" => cfg.NormAfterSublayers && !cfg.AttentionOnly,
            _ => cfg.QkNorm, // attn.q_norm, attn.k_norm
        },
        "EmbedNormScale" or "EmbedNormNormalized" => cfg.EmbeddingNorm,
        "MlmHeadNormScale" or "MlmHeadNormNormalized" => cfg.Head == HeadKind.MaskedLM,
        "RotQ" or "RotK" => cfg.Positional == PositionalKind.Rotary,
        "MlpOut" or "MlpPre" or "MlpPost" => !cfg.AttentionOnly,
        "MlpPreLinear" => cfg.Mlp == MlpKind.Gated,
        _ => true,
    };

    /// <summary>Every hook name HookNames can produce for <paramref name="layers"/>: (member, norm, name).</summary>
    private static IEnumerable<(string Member, string? Norm, string Name)> Produced(IEnumerable<int> layers)
    {
        var type = typeof(HookNames);
        foreach (var field in type.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => !NotHookNames.Contains(f.Name)))
            yield return (field.Name, null, (string)field.GetValue(null)!);
        foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Static).Where(m => !m.IsSpecialName && !NotHookNames.Contains(m.Name)))
        {
            var parameters = method.GetParameters().Select(p => p.ParameterType).ToArray();
            foreach (int layer in layers)
            {
                if (parameters.SequenceEqual([typeof(int)])) yield return (method.Name, null, (string)method.Invoke(null, [layer])!);
                else if (parameters.SequenceEqual([typeof(int), typeof(string)]))
                    foreach (var norm in new[] { "ln1", "ln2", "ln1_post", "ln2_post", "attn.q_norm", "attn.k_norm" }) yield return (method.Name, norm, (string)method.Invoke(null, [layer, norm])!);
                else Assert.Fail($"HookNames.{method.Name} has parameters ({string.Join(", ", parameters.Select(p => p.Name))}) this test does not know: list it in NotHookNames or teach the test");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void EveryHookName_ExistsExactlyWhereItApplies(string arch)
    {
        var cfg = Config(arch);
        using var model = new HookedTransformer(cfg);
        var names = model.HookPoints.Select(h => h.Name).ToHashSet();
        var produced = Produced([0, cfg.NLayers - 1]).ToArray();
        Assert.True(produced.Length > 20, $"only {produced.Length} names produced");
        foreach (var (member, norm, name) in produced)
            Assert.True(Applies(member, cfg, norm) == names.Contains(name),
                $"{arch}: HookNames.{member}{(norm is null ? "" : $"(…, {norm})")} = {name} {(names.Contains(name) ? "exists but should not" : "does not exist")}");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("attn-only")]
    [InlineData("neox")]
    [InlineData("gemma2")]
    public void WithSplitInputs_EveryHookName_ExistsExactlyWhereItApplies(string arch)
    {
        var cfg = Config(arch);
        using var model = new HookedTransformer(cfg) { UseSplitInputs = true };
        var names = model.HookPoints.Select(h => h.Name).ToHashSet();
        foreach (var (member, norm, name) in Produced([0, cfg.NLayers - 1]))
            Assert.True(Applies(member, cfg, norm, split: true) == names.Contains(name),
                $"{arch} with split inputs: HookNames.{member}{(norm is null ? "" : $"(…, {norm})")} = {name} {(names.Contains(name) ? "exists but should not" : "does not exist")}");
        Assert.Equal(names.Count, model.HookPoints.Count);
        model.UseSplitInputs = false;
        Assert.DoesNotContain(model.HookPoints, h => HookNames.Is(h.Name, HookNames.QInput));
        Assert.Throws<UnknownHookException>(() => model.GetHookPoint(HookNames.KInput(0)));
    }

    [Fact]
    public void SplitInputs_AreRefusedOnPostNormModels()
    {
        using var model = new HookedTransformer(TestModels.BertLike);
        var e = Assert.Throws<InterpException>(() => model.UseSplitInputs = true);
        Assert.Contains("post-norm", e.Message);
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void EveryHookPoint_IsAHookNamesName(string arch)
    {
        var cfg = Config(arch);
        using var model = new HookedTransformer(cfg);
        var produced = Produced(Enumerable.Range(0, cfg.NLayers)).Select(p => p.Name).ToHashSet();
        foreach (var hook in model.HookPoints)
            Assert.True(produced.Contains(hook.Name), $"{arch}: hook point {hook.Name} is not produced by any HookNames member");
        // The helpers agree with the names: the layer is read back, and each name is its own kind only.
        foreach (var hook in model.HookPoints.Where(h => h.Name.StartsWith("blocks.", StringComparison.Ordinal)))
            Assert.Equal(int.Parse(hook.Name.Split('.')[1]), HookNames.LayerOf(hook.Name));
        Assert.Equal(cfg.NLayers, model.HookPoints.Count(h => HookNames.Is(h.Name, HookNames.Pattern)));
        Assert.Equal(HookNames.LnFinalScale, HookNames.ScaleOf("ln_final"));
        Assert.Equal(HookNames.Scale(1, "ln2"), HookNames.ScaleOf("blocks.1.ln2"));
    }

    // SAELens's cfg.json keys (hook_name, hook_name_out, hook_point, hook_point_head_index, hook_head_index, hook_layer) are keys, not hook names.
    [GeneratedRegex("\"[^\"\\n]*hook_(?!(name|name_out|point|point_head_index|head_index|layer)\")[a-z]")]
    private static partial Regex HookLiteral();

    /// <summary>
    /// No source file of src/ but HookNames.cs builds a hook name from a string literal (the scripts' report prose may
    /// name hooks in words; their code uses HookNames as well: see the filter of induction_heads).
    /// </summary>
    [Fact]
    public void NoSourceFileOutsideHookNames_SpellsAHookName()
    {
        string src = Path.GetDirectoryName(RepoFiles.Path("src/Interp/Hooks/HookNames.cs"))!;
        src = Path.GetFullPath(Path.Combine(src, "..", ".."));
        var offenders = new List<string>();
        int scanned = 0;
        foreach (var file in Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(src, file);
            var parts = relative.Split(Path.DirectorySeparatorChar);
            if (parts.Contains("obj") || parts.Contains("bin")) continue;
            if (Path.GetFileName(file) == "HookNames.cs") continue;
            var lines = File.ReadAllLines(file);
            scanned++;
            for (int i = 0; i < lines.Length; i++)
            {
                string code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal)) continue;
                if (HookLiteral().IsMatch(code)) offenders.Add($"{relative}:{i + 1}: {code}");
            }
        }
        Assert.True(scanned > 50, $"only {scanned} source files scanned under {src}");
        Assert.Matches(HookLiteral(), "h.Name.EndsWith(\".hook_result\")");   // the check sees what it looks for
        Assert.True(offenders.Count == 0, "hook names spelled outside HookNames.cs:\n" + string.Join("\n", offenders));
    }
}

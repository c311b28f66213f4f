using Interp.Cli;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// Steering with SAE features (adding α·W_dec[f], clamping a feature) in the core and through the CLI verbs
/// <c>generate --steer/--clamp</c>, <c>logits --sae</c> and <c>cache --sae</c>, against hand-written hooks and the
/// shared SAE's references.
/// </summary>
public sealed class SaeSteeringTests
{
    private const int N = 40, DSae = 256;

    private static string Folder => Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");
    private static string Reference(string file) => Path.Combine(Folder, "reference", file);
    private static string TokensCsv => File.ReadAllText(Path.Combine(TestModels.Gpt2TinyDir, "reference", "tokens.txt")).Trim();
    private static long[] TokenIds() => TokensCsv.Split(',', StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();

    private static async Task<(int Code, string Out, string Err)> Cli(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void Steering_adds_alpha_times_the_decoder_row_and_clamping_edits_one_feature()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var tokens = tensor(TokenIds(), [1, N]);
        const int feature = 22;
        using var steer = SteeringHook.Steer(sae, feature, 8);
        Assert.Equal(sae.Config.HookName, steer.Name);
        var byHand = model.RunWithHooks(tokens, (sae.Config.HookName, (a, _) => a + sae.WDec[feature] * 8));
        TensorAssert.Close(byHand, model.RunWithHooks(tokens, steer.Hook), 1e-5, "steered logits");
        Assert.True((byHand - model.forward(tokens)).abs().max().item<float>() > 1e-2, "steering changed nothing");

        using var clamp = SteeringHook.Clamp(sae, feature, 3.5);
        string acts = HookNames.SaeLeaf.Of(sae.Config.HookName, HookNames.SaeLeaf.ActsPost);
        using (model.WithSaes(sae, useErrorTerm: true))
        {
            var manual = model.RunWithHooks(tokens, (acts, (a, _) =>
            {
                var e = a.clone();
                e[TensorIndex.Ellipsis, feature] = full(1, 3.5f);
                return e;
            }));
            Tensor? seen = null;
            var clamped = model.RunWithHooks(tokens, clamp.Hook, (acts, (a, _) => { seen = a.detach().clone().DetachFromDisposeScope(); return null; }));
            TensorAssert.Close(manual, clamped, 0, "clamped logits");
            using var s = seen!;
            Assert.True(s[TensorIndex.Ellipsis, feature].eq(3.5f).all().item<bool>());
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => SteeringHook.Steer(sae, DSae, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SteeringHook.Clamp(sae, 0, double.NaN));
    }

    [Fact]
    public void Steering_acts_on_every_generated_token()
    {
        using var sae = Sae.Load(Folder);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        var model = loaded.Model;
        var prompt = TokenIds()[..5].Select(i => (int)i).ToArray();
        var options = new GenerationOptions { MaxNewTokens = 8 };
        using var plain = model.Generate(prompt, options);
        using var steer = SteeringHook.Steer(sae, 22, 40);
        GenerationResult steered;
        using (model.Hooks(steer.Hook)) steered = model.Generate(prompt, options);
        using var _ = steered;
        // Greedy decoding of the steered model, one full forward per token, gives the same continuation.
        var ids = prompt.Select(i => (long)i).ToList();
        using (model.Hooks(steer.Hook))
            for (int t = 0; t < 8; t++)
            {
                using var scope = NewDisposeScope();
                var logits = model.forward(tensor(ids.ToArray(), [1, ids.Count]));
                ids.Add(logits[0, -1].argmax().item<long>());
            }
        Assert.Equal(ids.Skip(5).Select(i => (int)i), steered.Tokens[0]);
        Assert.NotEqual(plain.Tokens[0], steered.Tokens[0]);
    }

    [Fact]
    public async Task Logits_with_sae_match_the_reference_and_the_error_term_gives_the_models_own()
    {
        using var tmp = new TempDir();
        var (code, _, err) = await Cli("logits", "--model", TestModels.Gpt2TinyDir, "--tokens", TokensCsv, "--sae", Folder, "--out", tmp.File("sae.parquet"));
        Assert.True(code == 0, err);
        var reference = TensorAssert.ReadRawFloats(Reference("logits_with_sae.f32"), N, 1000).data<float>().ToArray();
        var columns = ParquetRead.Columns(tmp.File("sae.parquet"));
        var positions = columns["position"].Cast<int>().ToArray();
        var vocab = columns["vocab"].Cast<int>().ToArray();
        var logits = columns["logit"].Cast<float>().ToArray();
        Assert.Equal(N * 1000, logits.Length);
        for (int i = 0; i < logits.Length; i++)
            Assert.True(Math.Abs(reference[positions[i] * 1000 + vocab[i]] - logits[i]) <= 2e-4, $"logit [{positions[i]}, {vocab[i]}]");

        (code, _, err) = await Cli("logits", "--model", TestModels.Gpt2TinyDir, "--tokens", TokensCsv, "--sae", Folder, "--sae-error-term", "--out", tmp.File("err.parquet"));
        Assert.True(code == 0, err);
        (code, _, err) = await Cli("logits", "--model", TestModels.Gpt2TinyDir, "--tokens", TokensCsv, "--out", tmp.File("plain.parquet"));
        Assert.True(code == 0, err);
        Assert.Equal(ParquetRead.Columns(tmp.File("plain.parquet"))["logit"], ParquetRead.Columns(tmp.File("err.parquet"))["logit"]);
    }

    [Fact]
    public async Task Cache_with_sae_writes_the_feature_activations()
    {
        using var tmp = new TempDir();
        string acts = HookNames.SaeLeaf.Of(HookNames.ResidPre(1), HookNames.SaeLeaf.ActsPost);
        var (code, _, err) = await Cli("cache", "--model", TestModels.Gpt2TinyDir, "--tokens", TokensCsv, "--sae", Folder, "--hooks", "*" + HookNames.SaeLeaf.ActsPost, "--out", tmp.File("c.safetensors"));
        Assert.True(code == 0, err);
        var (tensors, _) = NaiveSafeTensors.Read(tmp.File("c.safetensors"));
        var entry = Assert.Single(tensors);
        Assert.Equal(acts, entry.Name);
        Assert.Equal([1L, N, DSae], entry.Tensor.Shape);
        var expected = TensorAssert.ReadRawFloats(Reference("feature_acts.f32"), N, DSae).data<float>().ToArray();
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i] > 0, entry.Tensor.Values[i] > 0);   // the README: active sets match from tokens
            Assert.True(Math.Abs(expected[i] - entry.Tensor.Values[i]) <= 0.005, $"acts[{i}]");
        }
    }

    /// <summary>A random SAE for stories260K (d_model 64) at blocks.1.hook_resid_pre, saved in SAELens's format: a model with a tokenizer for <c>generate --text</c>.</summary>
    private static string StoriesSae(TempDir dir)
    {
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        int d = loaded.Model.Config.DModel;
        using var gen = new TorchSharp.torch.Generator(9);
        using var scope = NewDisposeScope();
        var config = new SaeConfig(d, 32, SaeArchitecture.Standard, HookNames.ResidPre(1), true, "float32", "cpu", null, "stories260K");
        using var sae = Sae.Create(config, new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn([d, 32], generator: gen), ["b_enc"] = zeros(32),
            ["W_dec"] = nn.functional.normalize(randn([32, d], generator: gen), p: 2, dim: 1), ["b_dec"] = zeros(d),
        });
        sae.Save(dir.Path);
        return dir.Path;
    }

    [Theory]
    [InlineData("--steer", "FOLDER:22", "expected SAE:FEATURE:NUMBER")]
    [InlineData("--steer", "FOLDER:x:1", "the feature 'x' is not a non-negative integer")]
    [InlineData("--steer", "FOLDER:22:inf", "'inf' is not a finite number")]
    [InlineData("--steer", "FOLDER:32:1", "features 0…31")]
    [InlineData("--clamp", "FOLDER:-1:1", "the feature '-1' is not a non-negative integer")]
    [InlineData("--steer", "/nonexistent-sae:1:1", "/nonexistent-sae")]
    public async Task Bad_steering_specs_name_the_option_and_value(string option, string spec, string message)
    {
        using var dir = new TempDir();
        string folder = StoriesSae(dir);
        var (code, _, err) = await Cli("generate", "--model", TestModels.StoriesBin, "--text", "Once", option, spec.Replace("FOLDER", folder));
        Assert.Equal(1, code);
        Assert.Contains(message, err);
        Assert.Contains(option, err);
    }

    [Fact]
    public async Task Generate_with_steer_differs_from_plain_generation_and_is_reproducible()
    {
        using var dir = new TempDir();
        string folder = StoriesSae(dir);
        string[] common = ["generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "12"];
        var (code, plain, err) = await Cli(common);
        Assert.True(code == 0, err);
        var (code2, steered, err2) = await Cli([.. common, "--steer", $"{folder}:3:12"]);
        Assert.True(code2 == 0, err2);
        var (_, again, _) = await Cli([.. common, "--steer", $"{folder}:3:12"]);
        Assert.NotEqual(plain, steered);
        Assert.Equal(steered, again);
        Assert.StartsWith("Once upon a time", steered);
        // Clamping a feature to the value it has would change nothing; with the error term, clamping splices only.
        var (code3, clamped, err3) = await Cli([.. common, "--clamp", $"{folder}:3:0", "--sae", folder]);
        Assert.True(code3 == 0, err3);
        Assert.StartsWith("Once upon a time", clamped);
    }
}

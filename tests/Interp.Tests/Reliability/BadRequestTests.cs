using Interp.Analysis;
using Interp.Cli;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Models;
using Interp.Results;
using Interp.Tests.Experiments;
using Interp.Tests.Support;
using Interp.Tokenizers;
using static TorchSharp.torch;

namespace Interp.Tests.Reliability;

/// <summary>
/// Every kind of bad request a user can make, each answered by the project's own typed exception whose message names
/// the value at fault and, where one helps, the valid choice. The catalogue's names are recorded for the CI summary.
/// </summary>
public sealed class BadRequestTests
{
    private static HookedTransformer Model() => TestModels.Random(TestModels.Gpt2Like); // 2 layers × 4 heads, vocab 50, n_ctx 24

    private static Tensor Tokens(params long[] ids) => tensor(ids, [1, ids.Length]);

    private static T Throws<T>(Action action) where T : Exception => Assert.Throws<T>(action);

    /// <summary>The catalogue: name → a request that must fail, the exception type, and phrases its message must hold.</summary>
    private static readonly Dictionary<string, (Func<Exception> Request, Type Type, string[] Phrases)> Catalogue = new()
    {
        ["unknown hook name (closest names suggested)"] = (() =>
        {
            using var model = Model();
            return Throws<UnknownHookException>(() => model.RunWithHooks(Tokens(1, 2), ("blocks.0.attn.hook_zz", (a, _) => null)));
        }, typeof(UnknownHookException), ["hook 'blocks.0.attn.hook_zz': no such hook point. Did you mean: blocks.0.attn.hook_z"]),

        ["unknown short hook name (closest names suggested)"] = (() => Throws<HookException>(() => HookNames.ActName("patern", 0)),
            typeof(HookException), ["hook 'patern': unknown short hook name. Did you mean: pattern"]),

        ["hook not in the activation cache (closest cached names suggested)"] = (() =>
        {
            using var model = Model();
            var (logits, cache) = model.RunWithCache(Tokens(1, 2), name => name.EndsWith("hook_z", StringComparison.Ordinal));
            using (logits) using (cache) return Throws<HookException>(() => _ = cache["blocks.1.attn.hook_q"]);
        }, typeof(HookException), ["hook 'blocks.1.attn.hook_q': not in the cache (2 activations cached). Closest cached names: blocks.1.attn.hook_z"]),

        ["hook replacement of the wrong shape"] = (() =>
        {
            using var model = Model();
            return Throws<HookException>(() => model.RunWithHooks(Tokens(1, 2), ("blocks.0.hook_resid_pre", (a, _) => zeros(1, 2, 7))));
        }, typeof(HookException), ["hook 'blocks.0.hook_resid_pre': a hook returned shape [1, 2, 7] but the activation has shape [1, 2, 32]"]),

        ["ablation layer out of range"] = (() =>
        {
            using var model = Model();
            return Throws<InterpException>(() => Ablation.Run(model, Tokens(1, 2, 3), AblationTarget.OfHead(5, 0), AblationKind.Zero, Metrics.Loss()));
        }, typeof(InterpException), ["layer 5 is outside the model's layers 0…1"]),

        ["ablation head out of range"] = (() =>
        {
            using var model = Model();
            return Throws<InterpException>(() => Ablation.Run(model, Tokens(1, 2, 3), AblationTarget.OfHead(1, 4), AblationKind.Zero, Metrics.Loss()));
        }, typeof(InterpException), ["head 4 is outside layer 1's heads 0…3"]),

        ["patching layer out of range"] = (() =>
        {
            using var model = Model();
            using var patching = new ActivationPatching(model, Tokens(1, 2, 3), Tokens(1, 4, 3), Metrics.Loss());
            return Throws<InterpException>(() => patching.Patch(PatchSite.ResidPre(9)));
        }, typeof(InterpException), ["layer 9 is outside the model's layers [0, 2)"]),

        ["patching head out of range"] = (() =>
        {
            using var model = Model();
            using var patching = new ActivationPatching(model, Tokens(1, 2, 3), Tokens(1, 4, 3), Metrics.Loss());
            return Throws<InterpException>(() => patching.Patch(PatchSite.HeadOut(0, -2)));
        }, typeof(InterpException), ["head -2 is outside the model's heads [0, 4)"]),

        ["token id outside the vocabulary"] = (() =>
        {
            using var model = Model();
            return Throws<InvalidTokensException>(() => model.forward(Tokens(1, 2, 50)));
        }, typeof(InvalidTokensException), ["token id 50 at [batch 0, pos 2] is outside the vocabulary [0, 50)"]),

        ["negative token id"] = (() =>
        {
            using var model = Model();
            return Throws<InvalidTokensException>(() => model.forward(Tokens(-1, 2)));
        }, typeof(InvalidTokensException), ["token id -1 at [batch 0, pos 0] is outside the vocabulary [0, 50)"]),

        ["sequence longer than the context"] = (() =>
        {
            using var model = Model();
            return Throws<InvalidTokensException>(() => model.forward(Tokens(new long[25])));
        }, typeof(InvalidTokensException), ["sequence of 25 tokens is longer than the model's context n_ctx = 24"]),

        ["clean and corrupted tokens of unequal length"] = (() =>
        {
            using var model = Model();
            return Throws<InterpException>(() => new ActivationPatching(model, Tokens(1, 2, 3, 4, 5), Tokens(1, 2, 3, 4, 5, 6), Metrics.Loss()));
        }, typeof(InterpException), ["clean and corrupted tokens of the same shape [batch, pos]: clean tokens have shape [1, 5], corrupted tokens [1, 6]"]),

        ["clean and corrupted prompts of unequal length"] = (() =>
        {
            var tokenizer = Llama2CTokenizer.Load(TestModels.StoriesTokenizer);
            return Throws<InterpException>(() => ActivationPatching.Tokenize(tokenizer, "The cat sat", "The big dog sat down"));
        }, typeof(InterpException), ["activation patching needs prompts of the same length: clean prompt \"The cat sat\" tokenises to shape [1, "]),

        ["NaN appearing in an activation (hook where it first appears)"] = (() =>
        {
            using var model = Model();
            using (no_grad()) model.Blocks[0].Mlp!.W_out.fill_(float.NaN);
            return Throws<NonFiniteActivationException>(() => model.RunChecked(Tokens(1, 2, 3)));
        }, typeof(NonFiniteActivationException), ["non-finite activation at hook 'blocks.0.hook_mlp_out' (the first hook in forward order where they appear): 96 NaN"]),

        ["Inf appearing in an activation (hook where it first appears)"] = (() =>
        {
            using var model = TestModels.Random(TestModels.LlamaLike);
            // A finite embedding row of 3e38: RMSNorm's mean square overflows, so its scale is +Inf (the normalised value is 0).
            using (no_grad()) model.Embed.W_E[1].fill_(3e38f);
            return Throws<NonFiniteActivationException>(() => model.RunChecked(Tokens(2, 1, 3)));
        }, typeof(NonFiniteActivationException), ["non-finite activation at hook 'blocks.0.ln1.hook_scale'", "0 NaN and 1 ±Inf of 3 values; the first is Infinity at [batch 0, pos 1, one 0]"]),

        ["output folder that cannot be created (a file is in the way)"] = (() =>
        {
            using var tmp = new TempDir();
            File.WriteAllText(tmp.File("blocker"), "a file where a folder should be");
            string target = Path.Combine(tmp.File("blocker"), "run");
            return Assert.ThrowsAsync<InterpException>(() => new ExperimentRunner().RunAsync(new Scripted((_, _) => Task.CompletedTask),
                new ExperimentRunOptions { OutputDirectory = target })).GetAwaiter().GetResult();
        }, typeof(InterpException), ["cannot create the output folder", "blocker/run"]),

        ["output folder that cannot be written, through `interp run`"] = (() =>
        {
            using var tmp = new TempDir();
            File.WriteAllText(tmp.File("blocker"), "x");
            var error = new StringWriter();
            int code = CliApp.RunAsync(["run", "positional_encoding", "--out", Path.Combine(tmp.File("blocker"), "out")], new StringWriter(), error).GetAwaiter().GetResult();
            Assert.Equal(1, code);
            return new InterpException(error.ToString()); // the CLI's one-line answer, checked like the others
        }, typeof(InterpException), ["cannot create the output folder", "blocker/out"]),

        ["table file that cannot be written"] = (() =>
        {
            using var tmp = new TempDir();
            File.WriteAllText(tmp.File("blocker"), "x");
            return Assert.ThrowsAsync<InterpException>(() => new ParquetTable().Add("x", new[] { 1 }).WriteAsync(Path.Combine(tmp.File("blocker"), "t.parquet"))).GetAwaiter().GetResult();
        }, typeof(InterpException), ["cannot create the folder for Parquet table", "blocker/t.parquet"]),

        ["artefact name with a path (traversal out of --out)"] = (() => ArtefactError("../../escape.parquet"),
            typeof(InterpException), ["artefact name '../../escape.parquet' must be a plain file name ending in .parquet inside the run folder"]),

        ["artefact name that is absolute"] = (() => ArtefactError("/tmp/interp-absolute.parquet"),
            typeof(InterpException), ["artefact name '/tmp/interp-absolute.parquet' must be a plain file name"]),

        ["artefact name with a NUL or a hidden-file dot"] = (() => ArtefactError("a\0b.parquet", ".hidden.parquet"),
            typeof(InterpException), ["must be a plain file name", "'.hidden.parquet'"]),

        ["model path that does not exist"] = (() => Throws<ModelFileException>(() => ModelLoader.Load("/no/such/model")),
            typeof(ModelFileException), ["/no/such/model: no such file or directory"]),

        ["tokenizer entry that leaves the model folder"] = (() =>
        {
            using var tmp = new TempDir();
            using var model = Model();
            InterpModelFormat.Save(model, tmp.Path, tokenizer: "../../etc/passwd");
            return Throws<ModelFileException>(() => ModelLoader.Load(tmp.Path));
        }, typeof(ModelFileException), ["tensor 'tokenizer': must be \"gpt2\" or a plain file name inside the model directory"]),
    };

    /// <summary>Runs every request of the named artefact names through an experiment; returns the first failure, and checks nothing escaped.</summary>
    private static Exception ArtefactError(params string[] names)
    {
        using var tmp = new TempDir();
        string run = tmp.Sub("run");
        var messages = new List<string>();
        foreach (var name in names)
        {
            var runDir = Path.Combine(run, Guid.NewGuid().ToString("N"));
            new ExperimentRunner().RunAsync(new Scripted(async (ctx, ct) =>
                await ctx.WriteTableAsync(name, new ParquetTable().Add("x", new[] { 1 }), "evil", ct)), new ExperimentRunOptions { OutputDirectory = runDir }).GetAwaiter().GetResult();
            var manifest = RunManifest.Load(runDir);
            Assert.Equal(RunStatus.Failed, manifest.Status);
            messages.Add(manifest.Error!);
        }
        // Nothing was written outside the run folders: the temp folder holds only "run" and what is inside it.
        Assert.Equal(["run"], Directory.GetFileSystemEntries(tmp.Path).Select(Path.GetFileName));
        Assert.False(File.Exists("/tmp/interp-absolute.parquet"));
        return new InterpException(string.Join("\n", messages));
    }

    public static TheoryData<string> Names => new(Catalogue.Keys);

    [Theory, MemberData(nameof(Names))]
    public void Bad_request_is_a_typed_error_with_a_clear_message(string name)
    {
        var (request, type, phrases) = Catalogue[name];
        var ex = request();
        Assert.IsAssignableFrom(type, ex);
        Assert.IsAssignableFrom<InterpException>(ex);
        foreach (var phrase in phrases) Assert.True(ex.Message.Contains(phrase, StringComparison.Ordinal), $"\"{phrase}\" is not in: {ex.Message}");
    }

    /// <summary>
    /// Every entry names what its message must say (an entry with no phrase would pass whatever the message), the
    /// message types are Interp's own, and the catalogue goes into the CI summary.
    /// </summary>
    [Fact]
    public void Every_entry_checks_its_message_and_the_catalogue_is_recorded_for_the_ci_summary()
    {
        Assert.All(Catalogue, entry =>
        {
            Assert.NotEmpty(entry.Value.Phrases);
            Assert.All(entry.Value.Phrases, phrase => Assert.False(string.IsNullOrWhiteSpace(phrase), $"{entry.Key}: an empty phrase matches every message"));
            Assert.True(typeof(InterpException).IsAssignableFrom(entry.Value.Type), $"{entry.Key}: {entry.Value.Type} is not an InterpException");
        });
        string line = $"bad requests covered ({Catalogue.Count}): {string.Join("; ", Catalogue.Keys)}";
        Fuzz.Record("bad-requests", line);
        Assert.Equal(line, File.ReadAllText(Path.Combine(ExperimentScriptTests.RepoRoot(), "artifacts", "reliability", "bad-requests.txt")).TrimEnd());
    }
}

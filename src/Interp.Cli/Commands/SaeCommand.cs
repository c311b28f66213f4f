using System.CommandLine;
using System.Globalization;
using System.Text;
using Interp.Experiments;
using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Training.Saes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp sae</c>: <c>train</c> an SAE on any hook point of any model over a corpus (a text file of blank-line
/// separated documents, a JSON Lines file of <c>{"text": …}</c>, or <c>--generate N</c> documents the model samples
/// itself) into a SAELens 6 folder; <c>info DIR</c> describes a saved SAE; <c>recipe NAME</c> trains and evaluates a
/// default SAE (<see cref="SaeRecipe"/>). <c>--model builtin</c> names the built-in model.
/// </summary>
public sealed class SaeCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<SaeCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <summary>The <c>--model</c> value that names the built-in model.</summary>
    public const string BuiltInName = "builtin";

    /// <inheritdoc />
    public override Command Build() => new("sae", "Train and inspect sparse autoencoders (SAELens format)") { Train(), Info(), Recipe() };

    private LoadedModel Load(string path, string? tokenizer, string? device)
    {
        if (path != BuiltInName) return LoadModel(path, tokenizer, device);
        ApplyThreads();
        return BuiltInModel.Load(Logger);
    }

    private Command Train()
    {
        var d = new SaeTrainingOptions();
        var model = ModelOption();
        model.Description += $"; '{BuiltInName}' for the built-in model";
        var tokenizer = TokenizerOption();
        var device = DeviceOption();
        var hook = new Option<string>("--hook") { Description = $"Hook point to train on, e.g. {HookNames.ResidPre(2)}", Required = true };
        var architecture = new Option<string>("--architecture") { Description = "standard (L1), topk or jumprelu", DefaultValueFactory = _ => "standard" };
        architecture.AcceptOnlyFromAmong("standard", "topk", "jumprelu");
        var k = new Option<int>("--k") { Description = "TopK: features kept per token", DefaultValueFactory = _ => d.K };
        var dSae = new Option<int?>("--d-sae") { Description = "Number of features (default 8 × d_in)" };
        var l1 = new Option<double>("--l1") { Description = "Standard: L1 coefficient", DefaultValueFactory = _ => d.L1Coefficient };
        var l0 = new Option<double>("--l0") { Description = "JumpReLU: L0 coefficient", DefaultValueFactory = _ => d.L0Coefficient };
        var warmUp = new Option<int>("--sparsity-warm-up") { Description = "Steps over which the L1/L0 coefficient ramps up from 0", DefaultValueFactory = _ => 0 };
        var lr = new Option<double>("--lr") { Description = "Adam learning rate", DefaultValueFactory = _ => d.LearningRate };
        var lrWarmUp = new Option<int>("--lr-warm-up") { Description = "Steps of learning-rate warm-up", DefaultValueFactory = _ => 0 };
        var lrDecay = new Option<int>("--lr-decay") { Description = "Final steps of linear learning-rate decay to lr / 10", DefaultValueFactory = _ => 0 };
        var tokens = new Option<long>("--training-tokens") { Description = "Activations to train on", DefaultValueFactory = _ => d.TrainingTokens };
        var batch = new Option<int>("--batch-size") { Description = "Activations per step", DefaultValueFactory = _ => d.BatchSizeTokens };
        var buffer = new Option<int?>("--buffer-tokens") { Description = $"Activations in the shuffling buffer (default max({d.BufferTokens}, 4 × batch size))" };
        var context = new Option<int?>("--context-size") { Description = "Tokens per context window, BOS included (default min(128, n_ctx))" };
        var normalize = new Option<string>("--normalize") { Description = "none or expected_average_only_in (folded into the saved weights)", DefaultValueFactory = _ => "none" };
        normalize.AcceptOnlyFromAmong("none", "expected_average_only_in");
        var bDecInit = new Option<string>("--b-dec-init") { Description = "zeros or mean (of the first batch)", DefaultValueFactory = _ => "zeros" };
        bDecInit.AcceptOnlyFromAmong("zeros", "mean");
        var checkpoint = new Option<int>("--checkpoint-every") { Description = "Save a checkpoint every N steps under OUT/checkpoints/<tokens>/ (0: none)", DefaultValueFactory = _ => 0 };
        var seed = new Option<long>("--seed") { Description = "Seed of the weights and the shuffling", DefaultValueFactory = _ => d.Seed };
        var corpus = new Option<string?>("--corpus") { Description = "Corpus: a JSON Lines file (.jsonl) of {\"text\": ...} or a text file of documents separated by blank lines" };
        var textKey = new Option<string>("--text-key") { Description = "JSON Lines: the key holding each line's text", DefaultValueFactory = _ => "text" };
        var generate = new Option<int?>("--generate") { Description = "Instead of a corpus: N documents the model samples itself from BOS (temperature 1)" };
        var bos = new Option<int?>("--bos") { Description = "BOS token id for a model without a tokenizer (the built-in model's is 0)" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (cfg.json, sae_weights.safetensors, sparsity.safetensors)", Required = true };
        var optionsFile = new Option<string?>("--options") { Description = "A JSON object of training options in SAELens's names (architecture, d_sae, k, lr, training_tokens, …); flags given on the command line override it" };
        var command = new Command("train", "Train an SAE on a hook point over a corpus and save it in SAELens's format")
            { optionsFile, model, tokenizer, device, hook, architecture, k, dSae, l1, l0, warmUp, lr, lrWarmUp, lrDecay, tokens, batch, buffer, context, normalize, bDecInit, checkpoint, seed, corpus, textKey, generate, bos, output };
        command.Validators.Add(r =>
        {
            if ((r.GetValue(corpus) is null) == (r.GetValue(generate) is null)) r.AddError("give exactly one of --corpus FILE and --generate N");
        });
        command.SetAction((parse, ct) => Guard(async () =>
        {
            // An options file first (SAELens-style keys, unknown keys rejected), then every flag given on the command line.
            var o = parse.GetValue(optionsFile) is { } file ? SaeTrainingOptionsFile.Load(file) : new SaeTrainingOptions();
            bool Given<T>(Option<T> option) => parse.GetResult(option) is { Implicit: false };
            T Pick<T>(Option<T> option, T current) => Given(option) ? parse.GetValue(option)! : current;
            o = o with
            {
                Architecture = Given(architecture)
                    ? parse.GetValue(architecture) switch { "topk" => SaeArchitecture.TopK, "jumprelu" => SaeArchitecture.JumpRelu, _ => SaeArchitecture.Standard }
                    : o.Architecture,
                K = Pick(k, o.K),
                DSae = Pick(dSae, o.DSae),
                L1Coefficient = Pick(l1, o.L1Coefficient),
                L0Coefficient = Pick(l0, o.L0Coefficient),
                SparsityWarmUpSteps = Pick(warmUp, o.SparsityWarmUpSteps),
                LearningRate = Pick(lr, o.LearningRate),
                LrWarmUpSteps = Pick(lrWarmUp, o.LrWarmUpSteps),
                LrDecaySteps = Pick(lrDecay, o.LrDecaySteps),
                TrainingTokens = Pick(tokens, o.TrainingTokens),
                BatchSizeTokens = Pick(batch, o.BatchSizeTokens),
                ContextSize = Pick(context, o.ContextSize),
                NormalizeActivations = Given(normalize)
                    ? parse.GetValue(normalize) == "none" ? SaeNormalization.None : SaeNormalization.ExpectedAverageOnlyIn
                    : o.NormalizeActivations,
                BDecInit = Given(bDecInit) ? parse.GetValue(bDecInit) == "mean" ? SaeBDecInit.Mean : SaeBDecInit.Zeros : o.BDecInit,
                CheckpointEverySteps = Pick(checkpoint, o.CheckpointEverySteps),
                Seed = Pick(seed, o.Seed),
            };
            o = o with { BufferTokens = Given(buffer) ? parse.GetValue(buffer)!.Value : Math.Max(o.BufferTokens, 4 * o.BatchSizeTokens) };
            SaeTrainer trainer;
            try { trainer = new SaeTrainer(o, Logger); }
            catch (ArgumentException e) { throw new InterpException(e.Message); }
            using var loaded = Load(parse.GetValue(model)!, parse.GetValue(tokenizer), parse.GetValue(device));
            int? bosId = loaded.Tokenizer?.BosId ?? parse.GetValue(bos);
            ISaeTokenSource source;
            if (parse.GetValue(corpus) is { } path)
            {
                var tok = loaded.RequireTokenizer();
                source = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
                    ? new JsonLinesTokenSource(path, tok, parse.GetValue(textKey)!) : new TextFileTokenSource(path, tok);
            }
            else
            {
                if (bosId is null) throw new InterpException($"--generate needs a BOS prompt: {loaded.Model.Config.Name} has no tokenizer BOS, so pass --bos ID");
                int length = Math.Min(loaded.Model.Config.NCtx, o.ContextSize ?? Math.Min(128, loaded.Model.Config.NCtx) * 2) - 1;
                try { source = new GeneratedTokenSource(loaded.Model, bosId.Value, parse.GetValue(generate)!.Value, length, (int)o.Seed); }
                catch (ArgumentException e) { throw new InterpException(e.Message); }
            }
            string outDir = parse.GetValue(output)!;
            var display = ProgressDisplay.ForConsole(Console.Error);
            var progress = new Progress(p => display.Report(new ExperimentProgress(
                $"step {p.Step}/{p.TotalSteps}  mse {p.Mse:G4}  L0 {p.L0:F1}  explained variance {p.ExplainedVariance:F3}  dead {p.DeadFeatures}", (double)p.Step / p.TotalSteps)));
            SaeTrainingResult result;
            try { result = trainer.TrainOnModel(loaded.Model, parse.GetValue(hook)!, source, outDir, bosId, progress, ct); }
            catch (ArgumentException e) { throw new InterpException(e.Message); }
            var f = result.Final;
            await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"trained {result.Steps} steps ({result.Tokens:N0} tokens) in {result.Elapsed.TotalSeconds:F0} s: L0 {f.L0:F1}, explained variance {f.ExplainedVariance:F3}, dead features {f.DeadFeatures}; saved to {outDir}"));
            return 0;
        }));
        return command;
    }

    private Command Info()
    {
        var dir = new Argument<string>("dir") { Description = "An SAE folder (cfg.json + sae_weights.safetensors)" };
        var command = new Command("info", "Describe a saved SAE: config, tensor shapes and, with sparsity.safetensors, dead and dense features") { dir };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            await Console.Out.WriteAsync(Describe(parse.GetValue(dir)!));
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// What <c>sae info</c> prints. Dead features are those whose saved log10 firing density is at the floor (−10: they
    /// never fired in the sampling window), dense ones fire on more than 10% of tokens.
    /// </summary>
    public static string Describe(string folder)
    {
        using var sae = Sae.Load(folder);
        var c = sae.Config;
        var w = new StringBuilder();
        void Line(string key, object? value) => w.Append(CultureInfo.InvariantCulture, $"{key + ":",-24}{value}\n");
        Line("architecture", c.ArchitectureName + (c.K is int kk ? $" (k {kk})" : ""));
        Line("hook", c.HookName);
        if (c.ModelName is not null) Line("model", c.ModelName);
        Line("d_in", c.DIn);
        Line("d_sae", c.DSae);
        Line("dtype", c.DType);
        Line("device", c.Device);
        Line("apply_b_dec_to_input", c.ApplyBDecToInput ? "true" : "false");
        Line("normalize_activations", c.NormalizationName);
        foreach (var key in new[] { "context_size", "prepend_bos", "dataset_path", "sae_lens_version" })
            if (c.Metadata[key] is { } v) Line(key, v.ToJsonString().Trim('"'));
        w.Append("tensors:\n");
        foreach (var (name, t) in sae.StateDict) w.Append(CultureInfo.InvariantCulture, $"  {name,-12}[{string.Join(", ", t.shape)}] float32\n");
        string sparsity = Path.Combine(folder, Sae.SparsityFile);
        if (File.Exists(sparsity))
        {
            using var file = SafeTensorsFile.Open(sparsity);
            if (!file.Contains("sparsity")) throw new ModelFileException(sparsity, "sparsity", "missing");
            using var scope = NewDisposeScope();
            var s = file.ReadTensor("sparsity").to(ScalarType.Float64).reshape(-1);
            if (s.shape[0] != c.DSae) throw new ModelFileException(sparsity, "sparsity", $"has {s.shape[0]} entries, but d_sae = {c.DSae}");
            using Scalar floor = (-9.99).ToScalar(), dense = (-1.0).ToScalar();
            long dead = s.lt(floor).sum().item<long>(), denseCount = s.gt(dense).sum().item<long>();
            Line("dead features", $"{dead} (never fired in the sampling window)");
            Line("dense features", $"{denseCount} (fire on > 10% of tokens)");
            Line("median log10 density", s.median().item<double>().ToString("F2", CultureInfo.InvariantCulture));
        }
        return w.ToString();
    }

    private Command Recipe()
    {
        var name = new Argument<string>("name") { Description = "builtin or stories260K" };
        name.AcceptOnlyFromAmong("builtin", "stories260K");
        var model = new Option<string?>("--model", "-m") { Description = "The model file (stories260K: its .bin; default: searched as shared/models/stories260K/ beside the repository)" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder", Required = true };
        var command = new Command("recipe", "Train a default SAE (generated corpus, TopK) and report L0, explained variance and the CE loss score") { name, model, output };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            var recipe = SaeRecipe.Named(parse.GetValue(name)!);
            string? path = parse.GetValue(model);
            if (recipe == SaeRecipe.Stories260K && path is null)
                path = FindUpward("shared/models/stories260K/stories260K.bin") ?? FindUpward("../shared/models/stories260K/stories260K.bin")
                    ?? throw new InterpException("stories260K not found: pass --model PATH/stories260K.bin");
            using var loaded = Load(path ?? BuiltInName, null, null);
            var display = ProgressDisplay.ForConsole(Console.Error);
            var progress = new Progress(p => display.Report(new ExperimentProgress(
                $"step {p.Step}/{p.TotalSteps}  mse {p.Mse:G4}  L0 {p.L0:F1}  explained variance {p.ExplainedVariance:F3}  dead {p.DeadFeatures}", (double)p.Step / p.TotalSteps)));
            string outDir = parse.GetValue(output)!;
            var report = recipe.Run(loaded.Model, outDir, Logger, progress, ct);
            var s = report.Scores;
            await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"{recipe.Name} {recipe.HookName}: trained {report.Training.Tokens:N0} tokens in {report.Training.Elapsed.TotalSeconds:F0} s (+ {report.GenerationTime.TotalSeconds:F0} s generating {report.CorpusTokens:N0} corpus tokens); " +
                $"held out ({s.Positions:N0} tokens): L0 {s.L0:F1}, explained variance {s.ExplainedVariance:F3}, CE clean {s.CeLossClean:F3} / with SAE {s.CeLossWithSae:F3} / zero-ablated {s.CeLossZeroAblated:F3}, CE loss score {s.CeLossScore:F3}; saved to {outDir}"));
            return 0;
        }));
        return command;
    }

    private static string? FindUpward(string relative)
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.GetFullPath(Path.Combine(dir.FullName, relative));
                if (File.Exists(candidate)) return candidate;
            }
        return null;
    }

    /// <summary>Reports synchronously (System.Progress would post to a thread pool and reorder the bar's updates).</summary>
    private sealed class Progress(Action<SaeTrainingProgress> report) : IProgress<SaeTrainingProgress>
    {
        public void Report(SaeTrainingProgress value) => report(value);
    }
}

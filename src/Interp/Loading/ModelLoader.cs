using Interp.Loading.Architectures;
using Interp.Models;
using Interp.Tokenizers;
using TorchSharp;

namespace Interp.Loading;

/// <summary>Options for <see cref="ModelLoader.Load"/>.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>
    /// A tokenizer to use instead of the one found beside the model: a Hugging Face <c>tokenizer.json</c> (or a folder
    /// with one) or a llama2.c <c>tokenizer.bin</c>, recognised by content.
    /// </summary>
    public string? TokenizerPath { get; init; }
    /// <summary>Device to place the weights on ("cpu" by default, or e.g. "cuda:0").</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>
    /// TransformerLens-style weight processing applied right after loading (see <see cref="WeightProcessing"/>);
    /// <see cref="WeightProcessingOptions.None"/> by default, so that the loaded weights are exactly the file's.
    /// </summary>
    public WeightProcessingOptions Processing { get; init; } = WeightProcessingOptions.None;
    /// <summary>
    /// The dtype the model holds its weights in and computes in: null (the default) for float32, a float16 or bfloat16
    /// checkpoint widened exactly; or float16, bfloat16 or float64. A Hugging Face checkpoint is converted tensor by
    /// tensor as it is read, so loading a bfloat16 file as bfloat16 needs about twice the file's size at its peak, not
    /// four times. On a CPU without bfloat16 matrix instructions its products run far slower than float32's.
    /// </summary>
    public torch.ScalarType? DType { get; init; }
    /// <summary>
    /// The dtype the forward pass computes in (<see cref="HookedTransformer.ComputeDType"/>); null (the default) for
    /// <see cref="DType"/>'s. Float32 with <see cref="DType"/> bfloat16 holds a bfloat16 checkpoint at its own size and
    /// computes in float32, each weight widened where it is used: float32's speed (bfloat16 products are slow on most
    /// CPUs) at half float32's memory, with the logits of a float32 copy of the bfloat16 weights, bit for bit.
    /// </summary>
    public torch.ScalarType? ComputeDType { get; init; }
}

/// <summary>A loaded model with its tokenizer (when one could be found) and where it came from.</summary>
public sealed class LoadedModel : IDisposable
{
    private readonly string _noTokenizerReason;

    internal LoadedModel(HookedTransformer model, ITokenizer? tokenizer, string source, string format, string noTokenizerReason)
    {
        Model = model;
        Tokenizer = tokenizer;
        if (tokenizer is not null) model.Tokenizer = tokenizer;
        Source = source;
        Format = format;
        _noTokenizerReason = noTokenizerReason;
    }

    /// <summary>The model.</summary>
    public HookedTransformer Model { get; }
    /// <summary>The tokenizer, or null when none goes with the model; the loader also sets it as <see cref="HookedTransformer.Tokenizer"/>.</summary>
    public ITokenizer? Tokenizer { get; }
    /// <summary>The path the model was loaded from.</summary>
    public string Source { get; }
    /// <summary>"llama2.c", "interp", or "huggingface-" and the config's model_type ("huggingface-gpt_neox").</summary>
    public string Format { get; }

    /// <summary>The tokenizer, or an error that says why there is none and what to do.</summary>
    public ITokenizer RequireTokenizer() =>
        Tokenizer ?? throw new InterpException($"{Source}: no tokenizer for this model ({_noTokenizerReason}); pass token ids instead of text, or name a tokenizer file");

    /// <summary>This model moved to <paramref name="device"/> (a new LoadedModel; this one is disposed, the tokenizer moves over).</summary>
    /// <exception cref="InterpException">The device name is not valid, or the device does not exist in this libtorch build.</exception>
    internal LoadedModel OnDevice(string device)
    {
        torch.Device target;
        try { target = new torch.Device(device); }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException or System.Runtime.InteropServices.ExternalException)
        {
            Dispose();
            throw new InterpException($"--device '{device}' is not a device name (cpu, cuda, cuda:0, …): {ex.Message}", ex);
        }
        return Replaced(m => m.ToDevice(target));
    }

    /// <summary>This model converted to <paramref name="dtype"/> (a new LoadedModel; this one is disposed, the tokenizer moves over).</summary>
    internal LoadedModel InDtype(torch.ScalarType dtype) => Replaced(m => m.ToDtype(dtype));

    /// <summary>A LoadedModel of <paramref name="copy"/>(this model), which replaces this one (disposed, also when the copy fails).</summary>
    private LoadedModel Replaced(Func<HookedTransformer, HookedTransformer> copy)
    {
        HookedTransformer replacement;
        try { replacement = copy(Model); }
        catch
        {
            Dispose();
            throw;
        }
        Model.Dispose();
        return new LoadedModel(replacement, Tokenizer, Source, Format, _noTokenizerReason);
    }

    /// <summary>Frees the weights.</summary>
    public void Dispose()
    {
        Model.Dispose();
        (Tokenizer as IDisposable)?.Dispose();
    }
}

/// <summary>
/// Loads a model from a path, recognised by its content: a llama2.c <c>.bin</c> file (its header), a Hugging Face
/// directory (<c>config.json</c> with a <c>model_type</c> that one adapter in <c>Interp.Loading.Architectures</c> reads,
/// plus safetensors), or a directory in the project's own format (<c>interp-model.json</c>).
/// </summary>
public static class ModelLoader
{
    /// <summary>The Hugging Face <c>model_type</c> values that load.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = HfArchitecture.SupportedModelTypes.ToArray();

    /// <summary>Loads the model at <paramref name="path"/>, then applies <see cref="ModelLoadOptions.Processing"/>.</summary>
    public static LoadedModel Load(string path, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        if (options.DType is { } dtype && dtype is not (torch.ScalarType.Float32 or torch.ScalarType.Float64 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16))
            throw new InterpException($"ModelLoadOptions.DType: {dtype} is not a floating-point dtype (float32, float64, float16 or bfloat16)");
        if (options.ComputeDType is { } compute && compute is not (torch.ScalarType.Float32 or torch.ScalarType.Float64 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16))
            throw new InterpException($"ModelLoadOptions.ComputeDType: {compute} is not a floating-point dtype (float32, float64, float16 or bfloat16)");
        LoadedModel loaded;
        if (File.Exists(path)) loaded = LoadFile(path, options);
        else if (!Directory.Exists(path)) throw new ModelFileException(path, null, "no such file or directory");
        else if (InterpModelFormat.IsInterpModel(path)) loaded = LoadInterp(path, options);
        else if (File.Exists(Path.Combine(path, "config.json"))) loaded = LoadHuggingFace(path, options);
        else throw new ModelFileException(path, null,
            $"is not a model directory: it has no config.json (Hugging Face) and no {InterpModelFormat.ManifestFile} (this toolkit's format); for a llama2.c model, name its .bin file");
        if (options.DType is { } wanted && loaded.Model.DType != wanted) loaded = loaded.InDtype(wanted);
        if (options.ComputeDType is { } computeIn) loaded.Model.ComputeDType = computeIn;
        if (options.Processing.Any)
        {
            try { loaded.Model.ProcessWeights(options.Processing); }
            catch
            {
                loaded.Dispose();
                throw;
            }
        }
        if (options.Device != "cpu") loaded = loaded.OnDevice(options.Device);
        return loaded;
    }

    /// <summary>A single file: llama2.c by its header; anything else recognisable gets a message that says what it is.</summary>
    private static LoadedModel LoadFile(string path, ModelLoadOptions options)
    {
        var head = new byte[16];
        int n;
        using (var stream = File.OpenRead(path)) n = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        string? other =
            n >= 4 && head.AsSpan(0, 4).SequenceEqual("GGUF"u8) ? "a GGUF file, which is not supported (use the Hugging Face safetensors folder)"
            : n >= 4 && head.AsSpan(0, 4).SequenceEqual("PK\u0003\u0004"u8) ? "a zip archive (a PyTorch .bin/.pt checkpoint?), which is not supported: use safetensors"
            : n >= 9 && head[8] == (byte)'{' && BitConverter.ToUInt64(head, 0) < 100_000_000 ? $"a safetensors file on its own: name the folder that holds it with its config.json ({Path.GetDirectoryName(Path.GetFullPath(path))})"
            : n >= 1 && head.AsSpan(0, n).TrimStart(" \t\r\n"u8) is [(byte)'{', ..] ? $"a JSON file: name the model folder ({Path.GetDirectoryName(Path.GetFullPath(path))}) instead"
            : null;
        if (other is not null) throw new ModelFileException(path, null, $"is {other}");
        return LoadLlama2C(path, options);
    }
    private static LoadedModel LoadLlama2C(string path, ModelLoadOptions options)
    {
        var model = Llama2CCheckpoint.Load(path);
        string reason = "";
        string? tokPath = options.TokenizerPath ?? TokenizerLoader.FindBeside(path, out reason);
        var tokenizer = DisposeOnError(model, () => tokPath is null ? null : TokenizerLoader.Load(tokPath, model.Config.DVocab));
        return new LoadedModel(model, tokenizer, path, "llama2.c", reason);
    }

    /// <summary>Runs <paramref name="load"/> (a tokenizer load); if it throws, frees <paramref name="model"/> before rethrowing.</summary>
    private static T DisposeOnError<T>(HookedTransformer model, Func<T> load)
    {
        try { return load(); }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static LoadedModel LoadInterp(string dir, ModelLoadOptions options)
    {
        var (config, tokenizerEntry) = InterpModelFormat.ReadManifest(dir);
        if (tokenizerEntry is not null and not "gpt2" && !FileNames.IsPlain(tokenizerEntry))
            throw new ModelFileException(Path.Combine(dir, InterpModelFormat.ManifestFile), "tokenizer", "must be \"gpt2\" or a plain file name inside the model directory");
        var model = InterpModelFormat.Load(dir, config);
        string reason = "its manifest names no tokenizer";
        ITokenizer? tokenizer = DisposeOnError(model, () =>
            options.TokenizerPath is not null ? TokenizerLoader.Load(options.TokenizerPath, model.Config.DVocab)
            : tokenizerEntry == "gpt2" ? Gpt2For(model.Config, out reason)
            : tokenizerEntry is not null ? Llama2CTokenizer.Load(Path.Combine(dir, tokenizerEntry), model.Config.DVocab)
            : (ITokenizer?)null);
        return new LoadedModel(model, tokenizer, dir, "interp", reason);
    }

    private static LoadedModel LoadHuggingFace(string dir, ModelLoadOptions options)
    {
        var hf = HfConfig.Load(Path.Combine(dir, "config.json"));
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
        string type = hf.ModelType ?? throw hf.Error("model_type", $"missing: it names the architecture (supported: {string.Join(", ", SupportedModelTypes)})");
        var architecture = HfArchitecture.For(type)
            ?? throw hf.Error("model_type", $"unsupported model_type '{type}' (supported: {string.Join(", ", SupportedModelTypes)})");
        var cfg = architecture.ReadConfig(hf, name);
        using var ckpt = CheckpointTensors.Open(dir);
        cfg = architecture.WithCheckpoint(cfg, ckpt);
        try { cfg.Validate(); }
        catch (InvalidModelConfigException ex) { throw HfArchitecture.ConfigError(hf, ex); }

        // Before the model allocates anything: the config must not ask for more than the weights can justify.
        LoadBudget.Check(cfg, ckpt.ElementCount, hf.Path);
        var model = Build(cfg, options.DType);
        ckpt.ReadDtype = options.DType ?? torch.ScalarType.Float32;
        try
        {
            using var scope = torch.NewDisposeScope();
            var weights = architecture.ReadWeights(ckpt, cfg, hf);
            ckpt.EnsureAllUsed();
            WeightLoader.Load(model, weights, dir);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        // The tokenizer the folder ships (tokenizer.json); a GPT-2 folder without one gets GPT-2's own BPE.
        string reason = "";
        string? found = options.TokenizerPath ?? TokenizerLoader.FindBeside(dir, out reason);
        ITokenizer? tokenizer = DisposeOnError(model, () =>
            found is not null ? TokenizerLoader.Load(found, cfg.DVocab)
            : type == "gpt2" ? Gpt2For(cfg, out reason)
            : (ITokenizer?)null);
        return new LoadedModel(model, tokenizer, dir, "huggingface-" + type, reason);
    }

    /// <summary>A model of <paramref name="cfg"/> whose weights are created in <paramref name="dtype"/> (float32 when null).</summary>
    private static HookedTransformer Build(ModelConfig cfg, torch.ScalarType? dtype)
    {
        var previous = Component.BuildDtype;
        Component.BuildDtype = dtype;
        try { return new HookedTransformer(cfg); }
        finally { Component.BuildDtype = previous; }
    }

    /// <summary>The GPT-2 BPE tokenizer, when the vocabulary is GPT-2's.</summary>
    private static Gpt2Tokenizer? Gpt2For(ModelConfig cfg, out string reason)
    {
        var gpt2 = new Gpt2Tokenizer();
        reason = cfg.DVocab >= gpt2.VocabSize ? "" : $"its vocabulary of {cfg.DVocab} is smaller than GPT-2's {gpt2.VocabSize}";
        return cfg.DVocab >= gpt2.VocabSize ? gpt2 : null;
    }
}

using Interp.Experiments;
using System.CommandLine;
using Interp.Loading;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using TorchSharp;

namespace Interp.Cli.Commands;

/// <summary>
/// Shared plumbing of the verbs: the common options, model loading, and turning the toolkit's own errors into a
/// one-line message and exit code 1 (anything else is a bug and keeps its stack trace).
/// </summary>
public abstract class VerbBase(CliConsole console, IOptions<RunDefaults> options, ILogger logger)
{
    /// <summary>The verb's output writers.</summary>
    protected CliConsole Console { get; } = console;
    /// <summary>Bound settings.</summary>
    protected RunDefaults Options { get; } = options.Value;
    /// <summary>Logger.</summary>
    protected ILogger Logger { get; } = logger;

    /// <summary><c>--model PATH</c>: a llama2.c .bin file or a model directory.</summary>
    protected static Option<string> ModelOption() => new("--model", "-m")
    {
        Description = "Model: a llama2.c .bin file, a Hugging Face directory (config.json + safetensors) or an Interp model directory",
        Required = true,
    };

    /// <summary><c>--tokenizer FILE</c>.</summary>
    protected static Option<string?> TokenizerOption() => new("--tokenizer") { Description = "Tokenizer to use instead of the one beside the model: a Hugging Face tokenizer.json (or its folder) or a llama2.c tokenizer.bin" };

    /// <summary><c>--device</c>, overriding the configured device.</summary>
    protected static Option<string?> DeviceOption() => new("--device") { Description = "Device for the weights (cpu, cuda:0, …); default from configuration" };

    /// <summary>Builds the System.CommandLine command.</summary>
    public abstract Command Build();

    /// <summary>Applies the configured torch thread count (process-wide), when one is configured.</summary>
    protected void ApplyThreads()
    {
        if (Options.Threads > 0) torch.set_num_threads(Options.Threads);
    }

    /// <summary>Loads the model named on the command line, with the configured device and threads.</summary>
    protected LoadedModel LoadModel(string path, string? tokenizer, string? device)
    {
        ApplyThreads();
        Logger.LogInformation("Loading {Model}", path);
        var loaded = ModelLoader.Load(path, new ModelLoadOptions { TokenizerPath = tokenizer, Device = device ?? Options.Device });
        Logger.LogInformation("Loaded {Format} model {Name}: {Params:N0} parameters", loaded.Format, loaded.Model.Config.Name, loaded.Model.ParameterCount);
        return loaded;
    }

    /// <summary>Runs <paramref name="body"/>, reporting the toolkit's errors as a message and exit code 1, and cancellation as 130.</summary>
    protected async Task<int> Guard(Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (InterpException ex)
        {
            await Console.Error.WriteLineAsync($"error: {ex.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            await Console.Error.WriteLineAsync("cancelled");
            return 130;
        }
    }
}

using System.CommandLine;
using Interp.Cli.Commands;
using Interp.Experiments;
using Interp.Models;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Interp.Cli;

/// <summary>
/// The <c>interp</c> command: a Microsoft.Extensions.Hosting generic host (configuration from appsettings.json,
/// INTERP_ environment variables and the command line; ILogger logging to stderr) whose verbs are System.CommandLine
/// commands. Ctrl+C cancels the running verb through its CancellationToken.
/// </summary>
public static class CliApp
{
    /// <summary>Runs the command line <paramref name="args"/>, writing results to <paramref name="output"/> and errors to <paramref name="error"/>.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        NativeEnvironment.Apply();   // before anything loads libtorch
        using var host = BuildHost(output, error);
        var services = host.Services;
        // `interp run NAME …`: everything after the name, --help included, belongs to the script.
        if (args.Length >= 2 && args[0] == "run" && !args[1].StartsWith('-'))
        {
            // Outside System.CommandLine's invocation: Ctrl+C and SIGTERM must cancel (and reach the script) here too,
            // not end this process under it.
            using var interrupted = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            using var signals = Interp.Experiments.InterruptSignals.Cancel(interrupted);
            return await services.GetRequiredService<RunCommand>().RunScriptAsync(args[1], args[2..], interrupted.Token);
        }
        var root = new RootCommand("Interp: mechanistic interpretability for transformer language models.")
        {
            services.GetRequiredService<InfoCommand>().Build(),
            services.GetRequiredService<LogitsCommand>().Build(),
            services.GetRequiredService<CacheCommand>().Build(),
            services.GetRequiredService<GenerateCommand>().Build(),
            services.GetRequiredService<ListCommand>().Build(),
            services.GetRequiredService<RunCommand>().Build(),
            services.GetRequiredService<TrainDefaultCommand>().Build(),
            services.GetRequiredService<BenchCommand>().Build(),
            services.GetRequiredService<PromptsCommand>().Build(),
            services.GetRequiredService<TokensCommand>().Build(),
            services.GetRequiredService<SaeCommand>().Build(),
            services.GetRequiredService<MergeCommand>().Build(),
            services.GetRequiredService<SlurmCommand>().Build(),

        };
        return await root.Parse(args).InvokeAsync(Invocation(output, error), cancellationToken);
    }

    /// <summary>
    /// Ctrl+C cancels the verb's token; the process then waits up to 30 s for the verb to record what it finished
    /// (manifest status "cancelled", report) before it is terminated.
    /// </summary>
    private static InvocationConfiguration Invocation(TextWriter output, TextWriter error) =>
        new() { Output = output, Error = error, ProcessTerminationTimeout = TimeSpan.FromSeconds(30) };

    private static IHost BuildHost(TextWriter output, TextWriter error)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = AppContext.BaseDirectory,
            DisableDefaults = true,
        });
        builder.Configuration
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
            .AddEnvironmentVariables("INTERP_");
        builder.Services.Configure<RunDefaults>(builder.Configuration.GetSection(RunDefaults.Section));
        builder.Logging.AddConfiguration(builder.Configuration.GetSection("Logging"));
        builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Services.AddSingleton(new CliConsole(output, error));
        builder.Services.AddSingleton<InfoCommand>();
        builder.Services.AddSingleton<LogitsCommand>();
        builder.Services.AddSingleton<CacheCommand>();
        builder.Services.AddSingleton<GenerateCommand>();
        builder.Services.AddSingleton<ListCommand>();
        builder.Services.AddSingleton<MergeCommand>();
        builder.Services.AddSingleton<SlurmCommand>();
        builder.Services.AddSingleton<RunCommand>();
        builder.Services.AddSingleton<TrainDefaultCommand>();
        builder.Services.AddSingleton<BenchCommand>();
        builder.Services.AddSingleton<PromptsCommand>();
        builder.Services.AddSingleton<TokensCommand>();
        builder.Services.AddSingleton<SaeCommand>();

        return builder.Build();
    }
}

/// <summary>Where verbs write their results and their error messages (the process console, or a test's writers).</summary>
public sealed record CliConsole(TextWriter Out, TextWriter Error);

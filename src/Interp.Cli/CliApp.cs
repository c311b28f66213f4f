using System.CommandLine;
using Interp.Cli.Commands;
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
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = AppContext.BaseDirectory,
            DisableDefaults = true,
        });
        builder.Configuration
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
            .AddEnvironmentVariables("INTERP_");
        builder.Services.Configure<InterpOptions>(builder.Configuration.GetSection(InterpOptions.Section));
        builder.Logging.AddConfiguration(builder.Configuration.GetSection("Logging"));
        builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Services.AddSingleton(new CliConsole(output, error));
        builder.Services.AddSingleton<InfoCommand>();
        builder.Services.AddSingleton<LogitsCommand>();
        builder.Services.AddSingleton<GenerateCommand>();
        using var host = builder.Build();

        var root = new RootCommand("Interp: mechanistic interpretability for transformer language models.")
        {
            host.Services.GetRequiredService<InfoCommand>().Build(),
            host.Services.GetRequiredService<LogitsCommand>().Build(),
            host.Services.GetRequiredService<GenerateCommand>().Build(),
        };
        var parse = root.Parse(args);
        return await parse.InvokeAsync(new InvocationConfiguration { Output = output, Error = error }, cancellationToken);
    }
}

/// <summary>Where verbs write their results and their error messages (the process console, or a test's writers).</summary>
public sealed record CliConsole(TextWriter Out, TextWriter Error);

using System.CommandLine;
using Interp.Benchmarks;
using Interp.Experiments;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp bench [--quick] [--out DIR] [--reps N] [--no-peer | --install-peer]</c>: the benchmark suite (<see cref="BenchSuite"/>), a
/// table on stdout and <c>bench.parquet</c> + <c>bench.md</c> in the output folder.
/// </summary>
public sealed class BenchCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<BenchCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <inheritdoc />
    public override Command Build()
    {
        var quick = new Option<bool>("--quick") { Description = "Tiny sizes: a smoke run of seconds" };
        var output = new Option<string?>("--out", "-o") { Description = "Output folder (default: {ArtifactsRoot}/bench)" };
        var reps = new Option<int?>("--reps") { Description = "Timed repetitions per variant (default 5; 3 with --quick)" };
        var noPeer = new Option<bool>("--no-peer") { Description = "Skip the PyTorch-eager peer" };
        var installPeer = new Option<bool>("--install-peer") { Description = "Install the peer first if it is missing (benchmarks/setup-peer.sh: apt-get python3-torch on OpenBLAS, as root)" };
        var only = new Option<string[]>("--only") { Description = "Run only these sections: gpt2, models, sweep, copying, memory, parquet, leak, generation, sae, lstm, eap, archs, soak (soak runs only when named; archs in a quick run only when named; repeatable)" };
        var calls = new Option<int?>("--calls") { Description = $"Calls of the soak section (default {BenchOptions.DefaultSoakCalls:N0})" };
        var command = new Command("bench", "Benchmark the toolkit against its own plain forward and against PyTorch eager") { quick, output, reps, noPeer, installPeer, only, calls };
        command.SetAction((parse, ct) => Guard(async () =>
        {
            ApplyThreads();
            bool q = parse.GetValue(quick);
            string outDir = parse.GetValue(output) ?? Path.Combine(Options.ArtifactsRoot, "bench");
            var bench = new BenchOptions
            {
                Quick = q,
                OutDir = outDir,
                ModelsDir = Path.Combine(Options.ArtifactsRoot, "bench", "models"),
                Repetitions = parse.GetValue(reps) ?? (q ? 3 : 5),
                Peer = !parse.GetValue(noPeer),
                InstallPeer = parse.GetValue(installPeer),
                SoakCalls = parse.GetValue(calls) ?? BenchOptions.DefaultSoakCalls,
                Only = parse.GetValue(only) is { Length: > 0 } sections ? sections.ToHashSet(StringComparer.Ordinal) : null,
            };
            string markdown = "";
            // Torch state (no_grad, dispose scopes) is per thread: keep the whole run on one.
            await TorchThread.RunAsync(async () =>
            {
                var rows = await BenchSuite.RunAsync(bench, line => Logger.LogInformation("{Line}", line), ct);
                markdown = await BenchSuite.WriteAsync(rows, outDir, ct);
            });
            await Console.Out.WriteAsync(markdown);
            await Console.Out.WriteLineAsync($"wrote {Path.Combine(outDir, "bench.parquet")} and bench.md");
            return 0;
        }));
        return command;
    }
}

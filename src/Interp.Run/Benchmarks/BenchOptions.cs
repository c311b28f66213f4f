namespace Interp.Benchmarks;

/// <summary>What <see cref="BenchSuite.RunAsync"/> runs, and where it writes.</summary>
public sealed record BenchOptions
{
    /// <summary>Tiny sizes everywhere (a smoke run of seconds): a small GPT-2 shape, short inputs, few repetitions.</summary>
    public bool Quick { get; init; }
    /// <summary>Folder of <c>bench.parquet</c> and <c>bench.md</c>.</summary>
    public string OutDir { get; init; } = "artifacts/bench";
    /// <summary>Folder of the generated random-weight models (git-ignored).</summary>
    public string ModelsDir { get; init; } = "artifacts/bench/models";
    /// <summary>Timed repetitions per variant after warm-up (medians are reported); at least 5 for the full suite.</summary>
    public int Repetitions { get; init; } = 5;
    /// <summary>Untimed warm-up runs per variant.</summary>
    public int Warmup { get; init; } = 1;
    /// <summary>Compare against the PyTorch-eager peer (<c>benchmarks/peer.py</c>); off, its rows are skipped.</summary>
    public bool Peer { get; init; } = true;
    /// <summary>Install the peer (<c>benchmarks/setup-peer.sh</c>: apt-get, as root) when its Python cannot import torch; off, a missing peer's rows say how to install it.</summary>
    public bool InstallPeer { get; init; }
    /// <summary>The peer's Python (Debian's, with python3-torch on OpenBLAS).</summary>
    public string Python { get; init; } = "/usr/bin/python3";
    /// <summary>The <c>benchmarks/</c> folder (peer.py, setup-peer.sh); null: searched upward from the current and the program's folders.</summary>
    public string? ScriptsDir { get; init; }
    /// <summary>
    /// Sections to run (null: all): <c>gpt2</c> (matmul peak, GPT-2 forwards vs the peer), <c>models</c> (stories260K and
    /// the built-in model), <c>sweep</c>, <c>copying</c>, <c>memory</c>, <c>parquet</c>, <c>leak</c>, <c>generation</c> (the
    /// key/value cache vs one forward and vs the cache-less loop), <c>sae</c> (SAE training throughput vs the forward rate), <c>lstm</c> (training lstm_analogy's LSTM vs the built-in transformer, same recipe), <c>eap</c> (edge attribution patching vs the forward), <c>archs</c> (Pythia-160m, Llama-3.2-1B
    /// and Gemma-2-2B shapes: a few minutes and 8 GB of checkpoints written once; in a quick run only when named); and <c>soak</c>, which
    /// runs only when named (<see cref="SoakCalls"/> calls under allocation pressure, a few minutes).
    /// </summary>
    public IReadOnlySet<string>? Only { get; init; }

    /// <summary>Calls of the <c>soak</c> section (<see cref="Soak"/>), which runs only when <see cref="Only"/> names it.</summary>
    public int SoakCalls { get; init; } = DefaultSoakCalls;

    /// <summary>The soak's calls unless told otherwise.</summary>
    public const int DefaultSoakCalls = 200_000;

    /// <summary>True when section <paramref name="name"/> is to run.</summary>
    public bool Runs(string name) => Only is null || Only.Contains(name);

    /// <summary><c>llama2.c</c> stories260K model file; null: searched as <c>shared/models/stories260K/stories260K.bin</c> beside the repository; missing: skipped.</summary>
    public string? StoriesPath { get; init; }
}

/// <summary>One measured figure of the suite.</summary>
/// <param name="Benchmark">What is measured, e.g. <c>cache_overhead</c>.</param>
/// <param name="Model">The model: <c>gpt2-small-random</c>, <c>stories260K</c>, <c>builtin</c>, or <c>machine</c>.</param>
/// <param name="Input">The input, e.g. <c>4x128</c> (batch × positions), or what else sizes the benchmark.</param>
/// <param name="Value">The figure (a ratio, seconds, GiB, GFLOP/s, percent…); NaN when it could not be measured.</param>
/// <param name="Unit">Its unit.</param>
/// <param name="Target">The target (NaN for a figure that is only reported).</param>
/// <param name="Comparison"><c>&lt;=</c>, <c>&gt;=</c>, <c>&lt;</c> or <c>report</c>.</param>
/// <param name="A">Median of the measured side (seconds or bytes as the detail says), NaN if none.</param>
/// <param name="B">Median of the reference side, NaN if none.</param>
/// <param name="Detail">How it was measured.</param>
public sealed record BenchRow(string Benchmark, string Model, string Input, double Value, string Unit, double Target,
    string Comparison, double A, double B, string Detail)
{
    /// <summary>True when the target is met (always true for reported-only figures, false when not measured).</summary>
    public bool Met => Comparison switch
    {
        "report" => true,
        _ when double.IsNaN(Value) => false,
        "<=" => Value <= Target,
        "<" => Value < Target,
        ">=" => Value >= Target,
        _ => false,
    };
}

using static TorchSharp.torch;

namespace Interp.Training;

/// <summary>
/// What <see cref="InductionDataGenerator"/> produces. Token 0 is a BOS token that starts every sequence; content
/// tokens are 1 … <see cref="VocabSize"/> − 1. Each sequence is, independently, one of two kinds:
/// <list type="bullet">
/// <item><b>In-context bigram (Markov) sequences</b> (probability <see cref="MarkovFraction"/>): each sequence draws
/// its own random successor table succ[t]; token i+1 is succ[token i], or with probability
/// <see cref="MarkovNoise"/> a uniformly random token. The table is new in every sequence, so the only way to
/// predict is to find an earlier occurrence of the current token and copy what followed it: exactly an induction
/// head reading a previous-token head. Repeats are dense and at varying distances, so there is no positional
/// shortcut.</item>
/// <item><b>Repeated-span sequences</b>: uniformly random tokens into which <see cref="SpanCount"/> spans of
/// <see cref="SpanMinLength"/>–<see cref="SpanMaxLength"/> tokens are copied from an earlier random place to a
/// later random place (long-range, exact repeats like the evaluation's).</item>
/// </list>
/// </summary>
public sealed record InductionDataOptions
{
    /// <summary>Vocabulary size including the BOS token 0.</summary>
    public int VocabSize { get; init; } = 64;
    /// <summary>Tokens per sequence, BOS included.</summary>
    public int SequenceLength { get; init; } = 64;
    /// <summary>Probability that a sequence is an in-context bigram sequence rather than a repeated-span one.</summary>
    public double MarkovFraction { get; init; } = 0.5;
    /// <summary>In bigram sequences, the probability that a token is uniformly random instead of the successor.</summary>
    public double MarkovNoise { get; init; } = 0.05;
    /// <summary>Number of copied spans in a repeated-span sequence.</summary>
    public int SpanCount { get; init; } = 2;
    /// <summary>Shortest copied span.</summary>
    public int SpanMinLength { get; init; } = 8;
    /// <summary>Longest copied span.</summary>
    public int SpanMaxLength { get; init; } = 24;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first option that makes no sense.</summary>
    public InductionDataOptions Validate()
    {
        static void Require(bool ok, string what) { if (!ok) throw new ArgumentException($"Invalid data options: {what}."); }
        Require(VocabSize >= 3, $"VocabSize must be at least 3, got {VocabSize}");
        Require(SequenceLength >= 4, $"SequenceLength must be at least 4, got {SequenceLength}");
        Require(MarkovFraction is >= 0 and <= 1, $"MarkovFraction must lie in [0, 1], got {MarkovFraction}");
        Require(MarkovNoise is >= 0 and <= 1, $"MarkovNoise must lie in [0, 1], got {MarkovNoise}");
        Require(SpanCount >= 0, $"SpanCount must not be negative, got {SpanCount}");
        Require(SpanMinLength >= 1 && SpanMaxLength >= SpanMinLength, $"need 1 ≤ SpanMinLength ≤ SpanMaxLength, got {SpanMinLength}–{SpanMaxLength}");
        Require(2 * SpanMaxLength + 1 <= SequenceLength, $"two spans of {SpanMaxLength} tokens must fit in {SequenceLength} − 1 positions");
        return this;
    }
}

/// <summary>
/// Seeded generator of training batches for the induction circuit (see <see cref="InductionDataOptions"/>), and of
/// the standard evaluation batch (<see cref="RepeatedRandomTokens"/>). It uses its own SplitMix64 generator, so the
/// same seed gives the same tokens on every platform and .NET version, independent of TorchSharp's global RNG.
/// </summary>
public sealed class InductionDataGenerator
{
    /// <summary>The BOS token that starts every sequence.</summary>
    public const long Bos = 0;

    private readonly SplitMix64 _rng;
    private readonly int[] _successor;

    /// <summary>The options this generator draws from.</summary>
    public InductionDataOptions Options { get; }

    /// <summary>Creates a generator; the same options and seed always give the same batches in the same order.</summary>
    public InductionDataGenerator(InductionDataOptions options, ulong seed)
    {
        Options = options.Validate();
        _rng = new SplitMix64(seed);
        _successor = new int[options.VocabSize];
    }

    /// <summary>The next batch of training sequences, int64 [batch, SequenceLength].</summary>
    public Tensor NextBatch(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        int t = Options.SequenceLength;
        var data = new long[batchSize * t];
        for (int b = 0; b < batchSize; b++) FillSequence(data.AsSpan(b * t, t));
        return tensor(data, [batchSize, t]);
    }

    /// <summary>Fills <paramref name="seq"/> with one sequence (BOS first), advancing the generator.</summary>
    public void FillSequence(Span<long> seq)
    {
        int v = Options.VocabSize, n = seq.Length;
        seq[0] = Bos;
        if (_rng.NextDouble() < Options.MarkovFraction)
        {
            for (int tok = 1; tok < v; tok++) _successor[tok] = _rng.Next(1, v);
            seq[1] = _rng.Next(1, v);
            for (int i = 2; i < n; i++)
                seq[i] = _rng.NextDouble() < Options.MarkovNoise ? _rng.Next(1, v) : _successor[seq[i - 1]];
            return;
        }
        for (int i = 1; i < n; i++) seq[i] = _rng.Next(1, v);
        for (int k = 0; k < Options.SpanCount; k++)
        {
            int len = _rng.Next(Options.SpanMinLength, Options.SpanMaxLength + 1);
            if (2 * len + 1 > n) continue;
            int dst = _rng.Next(1 + len, n - len + 1);  // the copy lands in [dst, dst + len)
            int src = _rng.Next(1, dst - len + 1);      // the source [src, src + len) ends before dst
            seq.Slice(src, len).CopyTo(seq.Slice(dst, len));
        }
    }

    /// <summary>
    /// The standard evaluation batch (TransformerLens's head-detector convention): each row is BOS followed by
    /// <paramref name="halfLength"/> uniformly random content tokens r and then r again, int64
    /// [batch, 2·halfLength + 1]. Position 1 + i holds r[i] and position 1 + halfLength + i repeats it.
    /// </summary>
    public static Tensor RepeatedRandomTokens(int batch, int halfLength, int vocabSize, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(halfLength, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 3);
        var rng = new SplitMix64(seed);
        int t = 2 * halfLength + 1;
        var data = new long[batch * t];
        for (int b = 0; b < batch; b++)
        {
            data[b * t] = Bos;
            for (int i = 1; i <= halfLength; i++) data[b * t + i] = data[b * t + i + halfLength] = rng.Next(1, vocabSize);
        }
        return tensor(data, [batch, t]);
    }
}

/// <summary>SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast and fully specified, hence reproducible everywhere.</summary>
internal sealed class SplitMix64(ulong seed)
{
    private ulong _state = seed;

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [<paramref name="min"/>, <paramref name="max"/>) (Lemire's multiply-shift; bias below 2⁻³²).</summary>
    public int Next(int min, int max) => min + (int)((ulong)(uint)(NextUInt64() >> 32) * (ulong)(max - min) >> 32);
}

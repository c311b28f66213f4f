using System.Diagnostics;
using System.Globalization;
using Interp.Circuits;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Interp.Tests.Circuits;

/// <summary>
/// FactoredMatrix against dense computation in float64 on the same factor values. "Relative 1e-4" means: the largest
/// error in a matrix result is at most 1e-4 times that matrix's spectral norm (largest singular value), or, for a
/// product, 1e-4 times the product of its operands' spectral norms — the scale floating-point error is proportional to.
/// </summary>
public sealed class FactoredMatrixTests(ITestOutputHelper output)
{
    private const double Tol = 1e-4;

    // ---------------------------------------------------------------- property test over random shapes

    /// <summary>One random case: leading dims of each factor (broadcasting to each other), sizes, dtype.</summary>
    private sealed record Case(int Seed, long[] LeadA, long[] LeadB, long M, long N, long R, ScalarType DType, bool ZeroColumn, double Magnitude)
    {
        public long[] Lead
        {
            get
            {
                var lead = new long[Math.Max(LeadA.Length, LeadB.Length)];
                for (int i = 1; i <= lead.Length; i++)
                    lead[^i] = Math.Max(i <= LeadA.Length ? LeadA[^i] : 1, i <= LeadB.Length ? LeadB[^i] : 1);
                return lead;
            }
        }

        public override string ToString() =>
            $"case {Seed}: A {Fmt([.. LeadA, M, R])}, B {Fmt([.. LeadB, R, N])}, {DType}, magnitude {Magnitude:g3}{(ZeroColumn ? ", A has a zero column" : "")}";
    }

    private static Case MakeCase(int seed)
    {
        var rng = new Random(seed);
        long[][] leads = [[], [2], [2, 3]];
        var full = leads[rng.Next(3)];
        // A reduced version of the full leading shape, which broadcasts back to it: fewer dims, or some dims 1.
        long[] Reduced() => rng.Next(2) == 0 ? full[1..] : full.Select(d => rng.Next(2) == 0 ? 1L : d).ToArray();
        long[] leadA = full, leadB = full;
        switch (rng.Next(3))
        {
            case 1: leadA = full.Length == 0 ? [] : Reduced(); break;
            case 2: leadB = full.Length == 0 ? [] : Reduced(); break;
        }
        // One size in four is small so that r > min(m, n) comes up often; one case in three is square.
        long Size() => rng.Next(4) == 0 ? rng.Next(1, 8) : rng.Next(1, 41);
        long m = Size();
        long n = rng.Next(3) == 0 ? m : Size();
        long r = rng.Next(1, 13);
        var dtype = seed % 2 == 0 ? ScalarType.Float32 : ScalarType.Float64;
        return new Case(seed, leadA, leadB, m, n, r, dtype, ZeroColumn: rng.Next(10) == 0, Magnitude: Math.Pow(10, rng.NextDouble() * 4 - 2));
    }

    [Fact]
    public void Agrees_with_dense_computation_on_300_random_shapes()
    {
        var cases = Enumerable.Range(1, 300).Select(MakeCase).ToList();
        foreach (var c in cases) CheckCase(c);

        // The cases cover what they claim to.
        Assert.True(cases.Count(c => c.R > Math.Min(c.M, c.N)) >= 30);
        Assert.True(cases.Count(c => c.M == c.N) >= 60);
        Assert.True(cases.Count(c => c.M == c.N && c.R > c.M) >= 10);
        Assert.True(cases.Count(c => !c.LeadA.SequenceEqual(c.LeadB)) >= 50);
        Assert.All(new[] { 0, 1, 2 }, len => Assert.Contains(cases, c => c.Lead.Length == len));
        Assert.Contains(cases, c => c.ZeroColumn);
    }

    private static void CheckCase(Case c)
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator((ulong)c.Seed);
        Tensor Rand(params long[] shape) => randn(shape, ScalarType.Float64, generator: gen).to(c.DType);
        var a = Rand([.. c.LeadA, c.M, c.R]) * c.Magnitude;
        if (c.ZeroColumn) a.narrow(-1, 0, 1).zero_();
        var b = Rand([.. c.LeadB, c.R, c.N]);
        string at = c.ToString();

        using var fm = new FactoredMatrix(a, b);
        var (a64, b64) = (a.to(ScalarType.Float64), b.to(ScalarType.Float64));
        var ab = a64.matmul(b64);
        var norm2 = SpectralNorm(ab);
        long[] lead = c.Lead;
        long k = Math.Min(Math.Min(c.M, c.N), c.R);

        Assert.Equal(lead, fm.LeadingDims);
        Assert.Equal([.. lead, c.M, c.N], fm.Shape);
        Assert.Equal((c.M, c.N, c.R), (fm.Rows, fm.Columns, fm.Rank));
        Close(ab, fm.AB(), norm2, "AB " + at);
        Close(ab.mT, fm.T.AB(), norm2, "transpose " + at);
        Close(ab.narrow(-2, 0, Math.Min(3, c.M)).narrow(-1, 0, Math.Min(3, c.N)), fm.GetCorner(3), norm2, "corner " + at);
        Close(ab * -2.5, fm.Scale(-2.5).AB(), norm2 * 2.5, "scale " + at);
        Close(linalg.matrix_norm(ab, "fro"), fm.Norm(), linalg.matrix_norm(ab, "fro"), "norm " + at);

        // SVD: singular values, reconstruction, orthonormal columns.
        using var svd = fm.Svd();
        Assert.Equal([.. lead, c.M, k], svd.U.shape);
        Assert.Equal([.. lead, k], svd.S.shape);
        Assert.Equal([.. lead, c.N, k], svd.Vh.shape);
        Assert.Equal(fm.ResultType, svd.S.dtype);
        var denseS = linalg.svdvals(ab);
        Close(denseS.narrow(-1, 0, k), svd.S, norm2, "singular values " + at);
        if (denseS.shape[^1] > k) // AB has rank ≤ r: the rest of its singular values are zero.
            Close(zeros_like(denseS.narrow(-1, k, denseS.shape[^1] - k)), denseS.narrow(-1, k, denseS.shape[^1] - k), norm2, "extra singular values " + at);
        Close(ab, (svd.U * svd.S.unsqueeze(-2)).matmul(svd.Vh.mT), norm2, "U·diag(S)·Vhᵀ " + at);
        var identity = eye(k, dtype: ScalarType.Float64);
        Close(identity.expand([.. lead, k, k]), svd.U.mT.matmul(svd.U), ones(lead), "UᵀU " + at);
        Close(identity.expand([.. lead, k, k]), svd.Vh.mT.matmul(svd.Vh), ones(lead), "VᵀV " + at);

        // Products stay factored, with the smallest available inner dimension.
        var rng = new Random(c.Seed);
        var right = Rand([.. lead, c.N, rng.Next(1, 16)]);
        using (var product = fm.Matmul(right))
        {
            Assert.Equal(Math.Min(c.R, c.N), product.Rank);
            Close(ab.matmul(right.to(ScalarType.Float64)), product.AB(), norm2 * SpectralNorm(right), "AB·M " + at);
        }
        var left = Rand([.. lead, rng.Next(1, 16), c.M]);
        using (var product = fm.LeftMatmul(left))
        {
            Assert.Equal(Math.Min(c.R, c.M), product.Rank);
            Close(left.to(ScalarType.Float64).matmul(ab), product.AB(), norm2 * SpectralNorm(left), "M·AB " + at);
        }
        long r2 = rng.Next(1, 13);
        using (var other = new FactoredMatrix(Rand([.. lead, c.N, r2]), Rand([r2, rng.Next(1, 16)])))
        using (var product = fm.Matmul(other))
        {
            var otherAb = other.A.to(ScalarType.Float64).matmul(other.B.to(ScalarType.Float64));
            Assert.Equal(Math.Min(Math.Min(c.R, r2), c.N), product.Rank);
            Close(ab.matmul(otherAb), product.AB(), norm2 * SpectralNorm(otherAb), "AB·(A₂B₂) " + at);
        }

        // Indexing over leading dims.
        if (lead.Length > 0)
        {
            long[] index = lead.Take(rng.Next(1, lead.Length + 1)).Select(d => (long)rng.Next((int)d)).ToArray();
            var expected = index.Aggregate(ab, (t, i) => t.select(0, i));
            using var picked = fm[index];
            Close(expected, picked.AB(), norm2.amax([.. Enumerable.Range(0, lead.Length).Select(d => (long)d)]), "indexing " + at);
            int dim = rng.Next(lead.Length);
            long at2 = rng.Next((int)lead[dim]);
            using var selected = fm.Select(dim, at2);
            Close(ab.select(dim, at2), selected.AB(), norm2.select(dim, at2), "Select " + at);
        }

        // Square products: BA and eigenvalues.
        if (c.M == c.N)
        {
            Close(b64.matmul(a64), fm.BA(), SpectralNorm(a64) * SpectralNorm(b64), "BA " + at);
            var eig = fm.Eigenvalues();
            Assert.Equal([.. lead, Math.Min(c.M, c.R)], eig.shape);
            Assert.True(eig.is_complex(), "eigenvalues are complex " + at);
            AssertSameEigenvalues(linalg.eigvals(ab), eig, norm2, at);
        }
        else
        {
            Assert.Throws<InterpException>(() => fm.Eigenvalues());
            Assert.Throws<InterpException>(() => fm.BA());
        }
    }

    /// <summary>
    /// The eigenvalues of a rank-≤k matrix: each of the k returned ones matches a distinct dense eigenvalue
    /// (nearest unused), and the dense ones left over are ≈ 0 — the extra zeros AB has when m > r.
    /// </summary>
    private static void AssertSameEigenvalues(Tensor dense, Tensor actual, Tensor scale, string at)
    {
        long m = dense.shape[^1], k = actual.shape[^1];
        var (dRe, dIm) = Parts(dense.reshape(-1, m));
        var (aRe, aIm) = Parts(actual.reshape(-1, k));
        var scales = scale.to(ScalarType.Float64).reshape(-1).data<double>().ToArray();
        for (int batch = 0; batch < scales.Length; batch++)
        {
            double tol = Tol * scales[batch];
            var used = new bool[m];
            for (long j = 0; j < k; j++)
            {
                double re = aRe[batch * k + j], im = aIm[batch * k + j];
                if (j > 0)
                    Assert.True(Math.Sqrt(re * re + im * im) <= Hypot(aRe, aIm, batch * k + j - 1) + tol, $"eigenvalues sorted by magnitude, {at}");
                long best = -1;
                double bestDist = double.PositiveInfinity;
                for (long i = 0; i < m; i++)
                {
                    if (used[i]) continue;
                    double dist = Math.Sqrt(Math.Pow(dRe[batch * m + i] - re, 2) + Math.Pow(dIm[batch * m + i] - im, 2));
                    if (dist < bestDist) (best, bestDist) = (i, dist);
                }
                Assert.True(bestDist <= tol, $"eigenvalue {re:g6}{im:+0.#####g;-0.#####g}i has no dense match within {tol:g3} (nearest {bestDist:g3}), {at}");
                used[best] = true;
            }
            for (long i = 0; i < m; i++)
                if (!used[i])
                    Assert.True(Hypot(dRe, dIm, batch * m + i) <= tol, $"unmatched dense eigenvalue {Hypot(dRe, dIm, batch * m + i):g3} is not ≈ 0, {at}");
        }

        static (double[] Re, double[] Im) Parts(Tensor z) =>
            (z.real.to(ScalarType.Float64).contiguous().data<double>().ToArray(), z.imag.to(ScalarType.Float64).contiguous().data<double>().ToArray());
        static double Hypot(double[] re, double[] im, long i) => Math.Sqrt(re[i] * re[i] + im[i] * im[i]);
    }

    // ---------------------------------------------------------------- explicit cases

    [Fact]
    public void Per_head_QK_matrices_broadcast_and_index_like_the_dense_ones()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(11);
        var wq = randn([2, 3, 16, 4], generator: gen);   // [layer, head, d_model, d_head]
        var wk = randn([3, 16, 4], generator: gen);      // one set of keys shared by the layers: broadcasts
        using var qk = new FactoredMatrix(wq, wk.mT);
        Assert.Equal([2L, 3, 16, 16], qk.Shape);
        Assert.Equal([2L, 3], qk.LeadingDims);
        Assert.Equal(4, qk.Rank);
        using var head = qk[1, 0];
        Assert.Empty(head.LeadingDims);
        var expected = wq[1, 0].matmul(wk[0].mT);
        Close(expected, head.AB(), SpectralNorm(expected), "qk[1, 0]");
        using var layer = qk[-1];
        Assert.Equal([3L, 16, 16], layer.Shape);
        using var heads0 = qk.Select(1, 0);
        Close(wq.select(1, 0).matmul(wk[0].mT), heads0.AB(), SpectralNorm(expected) * 10, "Select(1, 0)");
    }

    [Fact]
    public void ToString_shows_shapes_rank_dtype_and_norm()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(3);
        var (a, b) = (randn([7, 4], generator: gen), randn([4, 5], generator: gen));
        using var single = new FactoredMatrix(a, b);
        string text = single.ToString();
        Assert.StartsWith("FactoredMatrix 7×5, rank 4, float32, ‖AB‖_F ", text);
        double shown = double.Parse(text[(text.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        Assert.Equal(linalg.matrix_norm(a.matmul(b), "fro").item<float>(), shown, 3e-3 * shown);

        using var batch = new FactoredMatrix(randn([2, 3, 7, 4], generator: gen), b);
        Assert.Matches(@"^FactoredMatrix \[2, 3\] of 7×5, rank 4, float32, ‖AB‖_F [0-9.e+-]+ to [0-9.e+-]+$", batch.ToString());
        batch.Dispose();
        Assert.Equal("FactoredMatrix (disposed)", batch.ToString());
    }

    [Fact]
    public void Bad_shapes_throw_InterpException_naming_the_shapes()
    {
        using var scope = NewDisposeScope();
        var inner = Assert.Throws<InterpException>(() => new FactoredMatrix(zeros(5, 4), zeros(3, 6)));
        Assert.Contains("[5, 4]", inner.Message);
        Assert.Contains("[3, 6]", inner.Message);

        var leading = Assert.Throws<InterpException>(() => new FactoredMatrix(zeros(2, 5, 4), zeros(3, 4, 6)));
        Assert.Contains("[2, 5, 4]", leading.Message);
        Assert.Contains("[3, 4, 6]", leading.Message);

        Assert.Contains("[5]", Assert.Throws<InterpException>(() => new FactoredMatrix(zeros(5), zeros(5, 3))).Message);
        Assert.Contains("Float64", Assert.Throws<InterpException>(() => new FactoredMatrix(zeros(5, 4), zeros([4, 3], ScalarType.Float64))).Message);

        using var fm = new FactoredMatrix(ones(2, 5, 4), ones(4, 6));
        var right = Assert.Throws<InterpException>(() => fm.Matmul(zeros(5, 2)));
        Assert.Contains("[2, 5, 6]", right.Message);
        Assert.Contains("[5, 2]", right.Message);
        Assert.Contains("[3, 6, 2]", Assert.Throws<InterpException>(() => fm.Matmul(zeros(3, 6, 2))).Message);
        Assert.Contains("[3, 6]", Assert.Throws<InterpException>(() => fm.LeftMatmul(zeros(3, 6))).Message);
        using var other = new FactoredMatrix(ones(5, 2), ones(2, 3));
        var product = Assert.Throws<InterpException>(() => fm.Matmul(other));
        Assert.Contains("[2, 5, 6]", product.Message);
        Assert.Contains("[5, 3]", product.Message);

        Assert.Contains("[2, 5, 6]", Assert.Throws<InterpException>(() => fm.Eigenvalues()).Message);
        Assert.Contains("[2, 5, 6]", Assert.Throws<InterpException>(() => fm.BA()).Message);
        Assert.Contains("index 2", Assert.Throws<InterpException>(() => fm[2]).Message);
        Assert.Contains("2 indices", Assert.Throws<InterpException>(() => fm[0, 0]).Message);
        Assert.Contains("dim 1", Assert.Throws<InterpException>(() => fm.Select(1, 0)).Message);
    }

    [Fact]
    public void Dispose_frees_its_own_handles_and_leaves_the_callers_tensors_alone()
    {
        var (a, b) = (randn(6, 2), randn(2, 6));
        var fm = new FactoredMatrix(a, b);
        fm.Dispose();
        fm.Dispose(); // idempotent
        Assert.True(fm.A.IsInvalid);
        Assert.True(fm.B.IsInvalid);
        Assert.False(a.IsInvalid);
        Assert.Equal(36, a.matmul(b).numel());
        Assert.Throws<ObjectDisposedException>(() => fm.Svd());
        a.Dispose();
        b.Dispose();
    }

    [Fact]
    public void Works_with_dispose_scopes_and_leaves_no_temporaries_in_them()
    {
        FactoredMatrix kept, dropped;
        using (var outer = NewDisposeScope())
        {
            var (a, b) = (randn(2, 9, 3), randn(3, 7));
            kept = new FactoredMatrix(a, b);
            dropped = new FactoredMatrix(a, b);
            var (right, left) = (randn(7, 2), randn(4, 9));
            var droppedT = dropped.T;
            int before = outer.DisposablesCount;
            // Every result lands in the caller's scope, and nothing else does: once the results are disposed the
            // scope holds what it held before.
            var results = new List<IDisposable> { kept.AB(), kept.T, kept.GetCorner(), kept.Scale(2), kept.Norm(), kept.Svd(),
                kept[1], kept.Select(0, 0), kept.Matmul(right), kept.LeftMatmul(left), kept.Matmul(droppedT) };
            _ = kept.ToString();
            int handles = results.Sum(r => r switch { FactoredMatrix => 2, FactoredSvd => 3, _ => 1 });
            Assert.Equal(before + handles, outer.DisposablesCount);
            foreach (var r in results) r.Dispose();
            Assert.Equal(before, outer.DisposablesCount);
            kept.MoveToOuterDisposeScope();
        }
        // The scope freed the matrix left in it, not the one moved out.
        Assert.True(dropped.A.IsInvalid);
        Assert.False(kept.A.IsInvalid);
        using (var product = kept.AB()) Assert.Equal([2L, 9, 7], product.shape);
        kept.Dispose();
    }

    // ---------------------------------------------------------------- scale: GPT-2's vocabulary through one head

    [Fact]
    public void Vocab_sized_product_is_decomposed_without_materialising_it()
    {
        const long m = 50_257, r = 64;
        const long denseBytes = m * m * 4; // one float32 m × m matrix: 10.1 GB
        using var scope = NewDisposeScope();
        using var gen = new Generator(2024);
        var a = randn([m, r], generator: gen) / 8;
        var b = randn([r, m], generator: gen) / 8;

        long residentBefore = Memory.ResetPeak();
        var clock = Stopwatch.StartNew();
        using var fm = new FactoredMatrix(a, b);
        using var svd = fm.Svd();
        var svdTime = clock.Elapsed;
        var norm = fm.Norm();
        var normTime = clock.Elapsed - svdTime;
        var eig = fm.Eigenvalues();
        var eigTime = clock.Elapsed - svdTime - normTime;
        clock.Stop();
        long grew = Memory.Peak() - residentBefore;
        output.WriteLine($"m = n = {m}, r = {r}: SVD {svdTime.TotalSeconds:F2} s, norm {normTime.TotalSeconds:F2} s, eigenvalues {eigTime.TotalSeconds:F2} s, " +
            $"total {clock.Elapsed.TotalSeconds:F2} s; peak resident memory grew {grew / 1e6:F0} MB (a dense product would need {denseBytes / 1e9:F1} GB)");
        Assert.True(grew < denseBytes / 4, $"peak memory grew by {grew / 1e9:F2} GB: something of size m × n was allocated");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed}");

        Assert.Equal([m, r], svd.U.shape);
        Assert.Equal([r], svd.S.shape);
        Assert.Equal([m, r], svd.Vh.shape);
        Assert.Equal([r], eig.shape);
        var identity = eye(r, dtype: ScalarType.Float64);
        Close(identity, svd.U.mT.matmul(svd.U), ones(1).squeeze(), "UᵀU");
        Close(identity, svd.Vh.mT.matmul(svd.Vh), ones(1).squeeze(), "VᵀV");

        // Independent checks that need no m × n matrix. Singular values: S² are the eigenvalues of (AᵀA)(BBᵀ).
        var (a64, b64) = (a.to(ScalarType.Float64), b.to(ScalarType.Float64));
        var gramS = linalg.eigvals(a64.mT.matmul(a64).matmul(b64.matmul(b64.mT))).real.clamp_min(0).sqrt().sort(descending: true).Values;
        var sMax = gramS[0];
        Close(gramS, svd.S, sMax, "singular values from the Gram matrices");
        Close(svd.S.to(ScalarType.Float64).square().sum().sqrt(), norm, norm.to(ScalarType.Float64), "norm² = ΣS²");
        // Eigenvalues: their sum is trace(AB) = Σᵢⱼ Aᵢⱼ·Bⱼᵢ, and they come in conjugate pairs.
        var trace = (a64 * b64.mT).sum();
        var eigSum = eig.to(ScalarType.ComplexFloat64).sum();
        var eigScale = eig.abs().to(ScalarType.Float64).sum();
        Close(trace, eigSum.real, eigScale, "Σλ = trace(AB)");
        Close(zeros(1, dtype: ScalarType.Float64).squeeze(), eigSum.imag, eigScale, "Σ Im λ = 0");
        // A random probe: (A·B)·x against U·diag(S)·Vhᵀ·x.
        var x = randn([m, 3], ScalarType.Float64, generator: gen);
        var probe = a64.matmul(b64.matmul(x));
        var fromSvd = svd.U.to(ScalarType.Float64).matmul(svd.S.to(ScalarType.Float64).unsqueeze(-1) * svd.Vh.to(ScalarType.Float64).mT.matmul(x));
        Close(probe, fromSvd, sMax * SpectralNorm(x), "AB·x = U·diag(S)·Vhᵀ·x");
    }

    /// <summary>Resident-memory readings, from /proc/self/status on Linux (VmRSS, VmHWM) with the peak reset first.</summary>
    private static class Memory
    {
        /// <summary>Resets the peak (where the OS allows) and returns the current resident size in bytes.</summary>
        public static long ResetPeak()
        {
            GC.Collect();
            try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            return Read("VmRSS:") ?? Process.GetCurrentProcess().WorkingSet64;
        }

        /// <summary>The peak resident size since the last reset, in bytes.</summary>
        public static long Peak() => Read("VmHWM:") ?? Process.GetCurrentProcess().PeakWorkingSet64;

        private static long? Read(string key)
        {
            if (!File.Exists("/proc/self/status")) return null;
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line is null ? null : long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>
    /// Asserts that <paramref name="actual"/> matches <paramref name="expected"/> (same shape) with, for every matrix
    /// of the batch, max |Δ| ≤ 1e-4 · its <paramref name="scale"/> (scale has the leading dims only).
    /// </summary>
    private static void Close(Tensor expected, Tensor actual, Tensor scale, string what)
    {
        Assert.True(expected.shape.SequenceEqual(actual.shape), $"{what}: shape {Fmt(actual.shape)}, expected {Fmt(expected.shape)}");
        using var _ = NewDisposeScope();
        int lead = (int)scale.dim();
        var diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs();
        var perMatrix = diff.dim() == lead ? diff : diff.flatten(lead).amax([-1]);
        var ratio = (perMatrix / scale.to(ScalarType.Float64).clamp_min(1e-300)).max().item<double>();
        Assert.True(ratio <= Tol, $"{what}: max |Δ| / scale = {ratio:g3} exceeds {Tol:g1}");
    }

    /// <summary>The largest singular value of each matrix, [..leading dims], in float64.</summary>
    private static Tensor SpectralNorm(Tensor t) => linalg.svdvals(t.to(ScalarType.Float64)).select(-1, 0);

    private static string Fmt(long[] shape) => "[" + string.Join(", ", shape) + "]";
}

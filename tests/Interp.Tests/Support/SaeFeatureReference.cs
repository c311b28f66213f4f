namespace Interp.Tests.Support;

/// <summary>
/// Plain-loop references for the SAE feature passes, written from their definitions (no tensors, double precision):
/// sparse entries of a dense array, top contexts by brute force, W_dec·W_U, and d·W_V·W_O per head.
/// </summary>
public static class SaeFeatureReference
{
    /// <summary>Every (sequence, position, feature, value) with value &gt; 0 of dense acts [n][pos][d_sae] at real positions, row-major.</summary>
    public static List<(int Sequence, int Position, int Feature, float Value)> Sparse(float[,,] acts, bool[,]? real = null)
    {
        var list = new List<(int, int, int, float)>();
        for (int s = 0; s < acts.GetLength(0); s++)
            for (int p = 0; p < acts.GetLength(1); p++)
            {
                if (real is not null && !real[s, p]) continue;
                for (int f = 0; f < acts.GetLength(2); f++)
                    if (acts[s, p, f] > 0) list.Add((s, p, f, acts[s, p, f]));
            }
        return list;
    }

    /// <summary>
    /// Brute force: for feature f, every real (s, p) with acts &gt; 0 sorted by value descending, then sequence, then
    /// position, the first n kept; each with its window [p − before, p + after] clipped to the sequence's real tokens.
    /// </summary>
    public static List<(int Rank, int Sequence, int Position, float Value, List<(int Offset, int Position, float Value)> Window)> TopContexts(
        float[,,] acts, bool[,]? real, int f, int n, int before, int after)
    {
        var all = new List<(int S, int P, float V)>();
        for (int s = 0; s < acts.GetLength(0); s++)
            for (int p = 0; p < acts.GetLength(1); p++)
                if ((real is null || real[s, p]) && acts[s, p, f] > 0) all.Add((s, p, acts[s, p, f]));
        // Insertion sort by (value desc, s asc, p asc): deliberately not the LINQ/heap the code uses.
        for (int i = 1; i < all.Count; i++)
        {
            var x = all[i];
            int j = i - 1;
            while (j >= 0 && Before(x, all[j])) { all[j + 1] = all[j]; j--; }
            all[j + 1] = x;
        }
        var result = new List<(int, int, int, float, List<(int, int, float)>)>();
        for (int r = 0; r < Math.Min(n, all.Count); r++)
        {
            var (s, p, v) = all[r];
            var window = new List<(int, int, float)>();
            for (int q = p - before; q <= p + after; q++)
                if (q >= 0 && q < acts.GetLength(1) && (real is null || real[s, q])) window.Add((q - p, q, acts[s, q, f]));
            result.Add((r + 1, s, p, v, window));
        }
        return result;
    }

    private static bool Before((int S, int P, float V) a, (int S, int P, float V) b) =>
        a.V > b.V || (a.V == b.V && (a.S < b.S || (a.S == b.S && a.P < b.P)));

    /// <summary>(W_dec[f] · W_U)[v] for every v, as a double loop; <paramref name="gain"/> (d_model) multiplies W_U's rows when given.</summary>
    public static double[] LogitEffects(float[] wDec, int dModel, float[] wU, int vocab, int f, float[]? gain = null)
    {
        var e = new double[vocab];
        for (int v = 0; v < vocab; v++)
        {
            double sum = 0;
            for (int i = 0; i < dModel; i++) sum += (double)wDec[f * dModel + i] * (gain is null ? 1 : gain[i]) * wU[i * vocab + v];
            e[v] = sum;
        }
        return e;
    }

    /// <summary>m = d·W_V·W_O for one head: W_V [d_model, d_head], W_O [d_head, d_model], both row-major.</summary>
    public static double[] ThroughOv(double[] d, float[] wV, float[] wO, int dModel, int dHead)
    {
        var z = new double[dHead];
        for (int e = 0; e < dHead; e++)
            for (int i = 0; i < dModel; i++) z[e] += d[i] * wV[i * dHead + e];
        var m = new double[dModel];
        for (int j = 0; j < dModel; j++)
            for (int e = 0; e < dHead; e++) m[j] += z[e] * wO[e * dModel + j];
        return m;
    }

    /// <summary>Euclidean norm.</summary>
    public static double Norm(double[] x) => Math.Sqrt(x.Sum(v => v * v));

    /// <summary>Cosine of two vectors.</summary>
    public static double Cosine(double[] a, double[] b)
    {
        double dot = 0;
        for (int i = 0; i < a.Length; i++) dot += a[i] * b[i];
        return dot / (Norm(a) * Norm(b));
    }
}

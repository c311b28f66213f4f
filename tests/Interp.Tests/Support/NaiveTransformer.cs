using Interp.Models;

namespace Interp.Tests.Support;

/// <summary>
/// A deliberately naive double-precision reference: loops over positions, heads and dimensions, written from the
/// textbook definitions (sinusoids, rotary pairs, LayerNorm/RMSNorm, GELU/SiLU, causal softmax attention).
/// It reads a model's weights as arrays but shares none of its code.
/// </summary>
public sealed class NaiveTransformer(HookedTransformer model)
{
    private readonly ModelConfig _c = model.Config;
    private readonly Dictionary<string, double[]> _w = model.state_dict()
        .ToDictionary(kv => kv.Key, kv => kv.Value.to(TorchSharp.torch.ScalarType.Float64).contiguous().data<double>().ToArray());

    private readonly Dictionary<string, long[]> _shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

    private double W(string name, params int[] index)
    {
        var shape = _shapes[name];
        long flat = 0;
        for (int i = 0; i < index.Length; i++) flat = flat * shape[i] + index[i];
        return _w[name][flat];
    }

    public double[][] Forward(int[] tokens)
    {
        int n = tokens.Length, d = _c.DModel, e = _c.HeadDim;
        var x = new double[n][];
        for (int p = 0; p < n; p++)
        {
            x[p] = new double[d];
            for (int i = 0; i < d; i++)
            {
                x[p][i] = W("embed.W_E", tokens[p], i);
                if (_c.Positional == PositionalKind.Learned) x[p][i] += W("pos_embed.W_pos", p, i);
                if (_c.Positional == PositionalKind.Sinusoidal)
                    x[p][i] += i % 2 == 0 ? Math.Sin(p / Math.Pow(10000, (double)i / d)) : Math.Cos(p / Math.Pow(10000, (double)(i - 1) / d));
            }
        }
        for (int l = 0; l < _c.NLayers; l++)
        {
            string b = $"blocks.{l}.";
            var h = x.Select(r => Norm(r, b + "ln1")).ToArray();
            var attn = Attention(h, b + "attn.");
            for (int p = 0; p < n; p++) for (int i = 0; i < d; i++) x[p][i] += attn[p][i];
            if (_c.Mlp == MlpKind.None) continue;
            for (int p = 0; p < n; p++)
            {
                var m = Mlp(Norm(x[p], b + "ln2"), b + "mlp.");
                for (int i = 0; i < d; i++) x[p][i] += m[i];
            }
        }
        return x.Select(r =>
        {
            var f = Norm(r, "ln_final");
            var logits = new double[_c.DVocab];
            for (int v = 0; v < _c.DVocab; v++)
            {
                double acc = _c.UseBias ? W("unembed.b_U", v) : 0;
                for (int i = 0; i < d; i++) acc += f[i] * W("unembed.W_U", i, v);
                logits[v] = acc;
            }
            return logits;
        }).ToArray();
    }

    private double[] Norm(double[] x, string name)
    {
        int d = x.Length;
        var o = new double[d];
        if (_c.Norm == NormKind.LayerNorm)
        {
            double mean = x.Average(), variance = x.Sum(a => (a - mean) * (a - mean)) / d;
            for (int i = 0; i < d; i++) o[i] = (x[i] - mean) / Math.Sqrt(variance + _c.NormEps) * W(name + ".w", i) + W(name + ".b", i);
        }
        else
        {
            double rms = Math.Sqrt(x.Sum(a => a * a) / d + _c.NormEps);
            for (int i = 0; i < d; i++) o[i] = x[i] / rms * W(name + ".w", i);
        }
        return o;
    }

    private double[][] Attention(double[][] x, string a)
    {
        int n = x.Length, d = _c.DModel, e = _c.HeadDim, group = _c.NHeads / _c.KvHeads;
        double[] Project(double[] row, string w, string bias, int head)
        {
            var o = new double[e];
            for (int j = 0; j < e; j++)
            {
                double acc = _c.UseBias ? W(bias, head, j) : 0;
                for (int i = 0; i < d; i++) acc += row[i] * W(w, head, i, j);
                o[j] = acc;
            }
            return o;
        }
        var output = Enumerable.Range(0, n).Select(_ => new double[d]).ToArray();
        for (int hq = 0; hq < _c.NHeads; hq++)
        {
            int hk = hq / group;
            var q = x.Select((r, p) => Rotate(Project(r, a + "W_Q", a + "b_Q", hq), p)).ToArray();
            var k = x.Select((r, p) => Rotate(Project(r, a + "W_K", a + "b_K", hk), p)).ToArray();
            var v = x.Select(r => Project(r, a + "W_V", a + "b_V", hk)).ToArray();
            for (int p = 0; p < n; p++)
            {
                var s = new double[p + 1];
                for (int t = 0; t <= p; t++) s[t] = q[p].Zip(k[t], (qa, ka) => qa * ka).Sum() / Math.Sqrt(e);
                double max = s.Max();
                var weights = s.Select(z => Math.Exp(z - max)).ToArray();
                double sum = weights.Sum();
                var z = new double[e];
                for (int t = 0; t <= p; t++) for (int j = 0; j < e; j++) z[j] += weights[t] / sum * v[t][j];
                for (int i = 0; i < d; i++) for (int j = 0; j < e; j++) output[p][i] += z[j] * W(a + "W_O", hq, j, i);
            }
        }
        if (_c.UseBias) foreach (var row in output) for (int i = 0; i < d; i++) row[i] += W(a + "b_O", i);
        return output;
    }

    private double[] Rotate(double[] vec, int pos)
    {
        if (_c.Positional != PositionalKind.Rotary) return vec;
        int r = _c.RotaryWidth;
        var o = (double[])vec.Clone();
        for (int i = 0; i < r / 2; i++)
        {
            double angle = pos * Math.Pow(_c.RotaryBase, -2.0 * i / r);
            (int a, int b) = _c.RotaryStyle == RotaryStyle.AdjacentPairs ? (2 * i, 2 * i + 1) : (i, i + r / 2);
            o[a] = vec[a] * Math.Cos(angle) - vec[b] * Math.Sin(angle);
            o[b] = vec[a] * Math.Sin(angle) + vec[b] * Math.Cos(angle);
        }
        return o;
    }

    private double[] Mlp(double[] x, string m)
    {
        int d = _c.DModel, f = _c.DMlp;
        var hidden = new double[f];
        for (int j = 0; j < f; j++)
        {
            double lin = _c.UseBias ? W(m + "b_in", j) : 0;
            for (int i = 0; i < d; i++) lin += x[i] * W(m + "W_in", i, j);
            if (_c.Mlp == MlpKind.Gated)
            {
                double gate = 0;
                for (int i = 0; i < d; i++) gate += x[i] * W(m + "W_gate", i, j);
                hidden[j] = Act(gate) * lin;
            }
            else hidden[j] = Act(lin);
        }
        var o = new double[d];
        for (int i = 0; i < d; i++)
        {
            double acc = _c.UseBias ? W(m + "b_out", i) : 0;
            for (int j = 0; j < f; j++) acc += hidden[j] * W(m + "W_out", j, i);
            o[i] = acc;
        }
        return o;
    }

    private double Act(double x) => _c.Act switch
    {
        Activation.GeluTanh => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
        Activation.Relu => Math.Max(0, x),
        Activation.Silu => x / (1 + Math.Exp(-x)),
        _ => throw new NotSupportedException(_c.Act.ToString()),
    };
}

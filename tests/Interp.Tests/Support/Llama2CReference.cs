namespace Interp.Tests.Support;

/// <summary>
/// An independent, plain per-position implementation of llama2.c's run.c forward pass, written straight from the
/// checkpoint format (no batching, no hooks, no TorchSharp, double precision). Used as the reference for the
/// hooked model's logits.
/// </summary>
public sealed class Llama2CReference
{
    private readonly int _dim, _hidden, _layers, _heads, _kvHeads, _vocab, _seqLen, _hs;
    private readonly float[] _tok, _rmsAtt, _wq, _wk, _wv, _wo, _rmsFfn, _w1, _w2, _w3, _rmsFinal, _wcls;

    public Llama2CReference(string path)
    {
        using var reader = new BinaryReader(File.OpenRead(path));
        _dim = reader.ReadInt32(); _hidden = reader.ReadInt32(); _layers = reader.ReadInt32();
        _heads = reader.ReadInt32(); _kvHeads = reader.ReadInt32(); int vocab = reader.ReadInt32(); _seqLen = reader.ReadInt32();
        _vocab = Math.Abs(vocab);
        _hs = _dim / _heads;
        int kvDim = _kvHeads * _hs;
        float[] Read(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = reader.ReadSingle(); return a; }
        _tok = Read((long)_vocab * _dim);
        _rmsAtt = Read(_layers * _dim);
        _wq = Read((long)_layers * _dim * _dim);
        _wk = Read((long)_layers * kvDim * _dim);
        _wv = Read((long)_layers * kvDim * _dim);
        _wo = Read((long)_layers * _dim * _dim);
        _rmsFfn = Read(_layers * _dim);
        _w1 = Read((long)_layers * _hidden * _dim);
        _w2 = Read((long)_layers * _dim * _hidden);
        _w3 = Read((long)_layers * _hidden * _dim);
        _rmsFinal = Read(_dim);
        Read(2L * _seqLen * _hs / 2);
        _wcls = vocab > 0 ? _tok : Read((long)_vocab * _dim);
    }

    public int Vocab => _vocab;

    /// <summary>Logits [pos][vocab] for the sequence, computed one position at a time with a key/value cache.</summary>
    public double[][] Forward(IReadOnlyList<int> tokens)
    {
        int kvDim = _kvHeads * _hs, kvMul = _heads / _kvHeads;
        var keys = new double[_layers][][];
        var values = new double[_layers][][];
        for (int l = 0; l < _layers; l++) { keys[l] = new double[tokens.Count][]; values[l] = new double[tokens.Count][]; }
        var logits = new double[tokens.Count][];
        for (int pos = 0; pos < tokens.Count; pos++)
        {
            var x = new double[_dim];
            for (int i = 0; i < _dim; i++) x[i] = _tok[(long)tokens[pos] * _dim + i];
            for (int l = 0; l < _layers; l++)
            {
                var xb = RmsNorm(x, _rmsAtt, l * _dim);
                var q = MatVec(_wq, (long)l * _dim * _dim, _dim, _dim, xb);
                var k = MatVec(_wk, (long)l * kvDim * _dim, kvDim, _dim, xb);
                var v = MatVec(_wv, (long)l * kvDim * _dim, kvDim, _dim, xb);
                for (int i = 0; i < _dim; i += 2)
                {
                    int headDim = i % _hs;
                    double angle = pos * Math.Pow(10000.0, -(double)headDim / _hs);
                    double c = Math.Cos(angle), s = Math.Sin(angle);
                    Rotate(q, i, c, s);
                    if (i < kvDim) Rotate(k, i, c, s);
                }
                keys[l][pos] = k;
                values[l][pos] = v;
                var att = new double[_dim];
                for (int h = 0; h < _heads; h++)
                {
                    int kvh = h / kvMul;
                    var scores = new double[pos + 1];
                    for (int t = 0; t <= pos; t++)
                    {
                        double sc = 0;
                        for (int i = 0; i < _hs; i++) sc += q[h * _hs + i] * keys[l][t][kvh * _hs + i];
                        scores[t] = sc / Math.Sqrt(_hs);
                    }
                    double max = scores.Max(), sum = 0;
                    for (int t = 0; t <= pos; t++) { scores[t] = Math.Exp(scores[t] - max); sum += scores[t]; }
                    for (int t = 0; t <= pos; t++)
                        for (int i = 0; i < _hs; i++) att[h * _hs + i] += scores[t] / sum * values[l][t][kvh * _hs + i];
                }
                var o = MatVec(_wo, (long)l * _dim * _dim, _dim, _dim, att);
                for (int i = 0; i < _dim; i++) x[i] += o[i];

                xb = RmsNorm(x, _rmsFfn, l * _dim);
                var h1 = MatVec(_w1, (long)l * _hidden * _dim, _hidden, _dim, xb);
                var h3 = MatVec(_w3, (long)l * _hidden * _dim, _hidden, _dim, xb);
                for (int i = 0; i < _hidden; i++) h1[i] = h1[i] / (1 + Math.Exp(-h1[i])) * h3[i];
                var down = MatVec(_w2, (long)l * _dim * _hidden, _dim, _hidden, h1);
                for (int i = 0; i < _dim; i++) x[i] += down[i];
            }
            logits[pos] = MatVec(_wcls, 0, _vocab, _dim, RmsNorm(x, _rmsFinal, 0));
        }
        return logits;
    }

    private static void Rotate(double[] vec, int i, double c, double s)
    {
        double v0 = vec[i], v1 = vec[i + 1];
        vec[i] = v0 * c - v1 * s;
        vec[i + 1] = v0 * s + v1 * c;
    }

    private double[] RmsNorm(double[] x, float[] w, int offset)
    {
        double ss = x.Sum(a => a * a) / x.Length + 1e-5;
        double inv = 1 / Math.Sqrt(ss);
        var o = new double[x.Length];
        for (int i = 0; i < x.Length; i++) o[i] = w[offset + i] * (inv * x[i]);
        return o;
    }

    private static double[] MatVec(float[] w, long offset, int rows, int cols, double[] x)
    {
        var o = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double acc = 0;
            long row = offset + (long)r * cols;
            for (int c = 0; c < cols; c++) acc += w[row + c] * x[c];
            o[r] = acc;
        }
        return o;
    }
}

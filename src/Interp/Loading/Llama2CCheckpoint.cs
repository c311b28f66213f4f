using Interp.Models;
using static TorchSharp.torch;

namespace Interp.Loading;

/// <summary>
/// Reads llama2.c checkpoints (the legacy version-0 <c>.bin</c> of <c>run.c</c>): a header of 7 int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier
/// is stored separately), then float32 weights, matrices [out, in]. The rotary convention is adjacent pairs.
/// </summary>
public static class Llama2CCheckpoint
{
    private const int HeaderBytes = 7 * sizeof(int);

    /// <summary>Reads the header and turns it into a model config, checking it against the file's length.</summary>
    public static (ModelConfig Config, bool SharedClassifier) ReadConfig(string path)
    {
        using var stream = OpenRead(path);
        long length = stream.Length;
        if (length < HeaderBytes)
            throw new ModelFileException(path, null, $"file is {length} bytes, shorter than the 28-byte llama2.c header");
        var header = new int[7];
        var bytes = new byte[HeaderBytes];
        stream.ReadExactly(bytes);
        Buffer.BlockCopy(bytes, 0, header, 0, HeaderBytes);
        if (BitConverter.ToUInt32(bytes, 0) == 0x616b3432)
            throw new ModelFileException(path, null, "this is a llama2.c version-1+ export ('ak42' magic); only the legacy version-0 format of run.c is supported");
        int dim = header[0], hidden = header[1], layers = header[2], heads = header[3], kvHeads = header[4], vocab = header[5], seqLen = header[6];
        void Check(bool ok, string what)
        {
            if (!ok) throw new ModelFileException(path, null,
                $"implausible llama2.c header (dim {dim}, hidden_dim {hidden}, n_layers {layers}, n_heads {heads}, n_kv_heads {kvHeads}, vocab_size {vocab}, seq_len {seqLen}): {what}");
        }
        Check(dim > 0 && hidden > 0 && layers > 0 && heads > 0 && kvHeads > 0 && seqLen > 0 && vocab != 0 && vocab != int.MinValue,
            "sizes must be positive");
        Check(dim % heads == 0, "dim is not divisible by n_heads");
        Check(heads % kvHeads == 0, "n_heads is not a multiple of n_kv_heads");
        Check((dim / heads) % 2 == 0, "the head size must be even for rotary embeddings");
        bool shared = vocab > 0;
        vocab = Math.Abs(vocab);
        long expected = HeaderBytes + 4L * FloatCount(dim, hidden, layers, heads, kvHeads, vocab, seqLen, shared);
        Check(expected > 0, "sizes overflow");
        if (length < expected)
            throw new ModelFileException(path, null,
                $"file is {length} bytes but its header (dim {dim}, hidden_dim {hidden}, n_layers {layers}, n_heads {heads}, n_kv_heads {kvHeads}, vocab_size {vocab}, seq_len {seqLen}) needs {expected}: truncated or not a llama2.c checkpoint");
        var config = new ModelConfig
        {
            Name = Path.GetFileNameWithoutExtension(path),
            Family = "llama2.c",
            DModel = dim, NLayers = layers, NHeads = heads, NKvHeads = kvHeads, DMlp = hidden,
            DVocab = vocab, NCtx = seqLen,
            Norm = NormKind.RMSNorm, NormEps = 1e-5,
            Positional = PositionalKind.Rotary, RotaryStyle = RotaryStyle.AdjacentPairs, RotaryBase = 10000,
            Mlp = MlpKind.Gated, Act = Activation.Silu, UseBias = false,
        };
        try { config.Validate(); }
        catch (InterpException ex) { throw new ModelFileException(path, null, ex.Message, ex); }
        return (config, shared);
    }

    /// <summary>Loads the checkpoint into a new model.</summary>
    public static HookedTransformer Load(string path)
    {
        var (cfg, shared) = ReadConfig(path);
        int d = cfg.DModel, f = cfg.DMlp, L = cfg.NLayers, h = cfg.NHeads, kv = cfg.KvHeads, e = cfg.HeadDim, V = cfg.DVocab;
        using var stream = OpenRead(path);
        // ReadConfig checked the file is long enough for every weight; the model must not ask for more than that.
        LoadBudget.Check(cfg, (stream.Length - HeaderBytes) / sizeof(float), path);
        stream.Position = HeaderBytes;
        using var scope = NewDisposeScope();
        Tensor Next(string name, params long[] shape) => ReadFloats(stream, path, name, shape);

        var tok = Next("token_embedding", V, d);
        var rmsAtt = Next("rms_att", L, d);
        var wq = Next("wq", L, h * e, d);
        var wk = Next("wk", L, kv * e, d);
        var wv = Next("wv", L, kv * e, d);
        var wo = Next("wo", L, d, h * e);
        var rmsFfn = Next("rms_ffn", L, d);
        var w1 = Next("w1", L, f, d);
        var w2 = Next("w2", L, d, f);
        var w3 = Next("w3", L, f, d);
        var rmsFinal = Next("rms_final", d);
        stream.Position += 2L * cfg.NCtx * (e / 2) * sizeof(float); // freq_cis_real/imag: recomputed, not read
        var cls = shared ? tok : Next("wcls", V, d);

        var weights = new Dictionary<string, Tensor>
        {
            ["embed.W_E"] = tok,
            ["ln_final.w"] = rmsFinal,
            ["unembed.W_U"] = cls.t(),
        };
        for (int l = 0; l < L; l++)
        {
            string p = $"blocks.{l}.";
            weights[p + "ln1.w"] = rmsAtt[l];
            weights[p + "ln2.w"] = rmsFfn[l];
            // [heads·d_head, d_model] (y = W·x) → [head, d_model, d_head]
            weights[p + "attn.W_Q"] = wq[l].view(h, e, d).transpose(1, 2);
            weights[p + "attn.W_K"] = wk[l].view(kv, e, d).transpose(1, 2);
            weights[p + "attn.W_V"] = wv[l].view(kv, e, d).transpose(1, 2);
            // [d_model, heads·d_head] → [head, d_head, d_model]
            weights[p + "attn.W_O"] = wo[l].t().reshape(h, e, d);
            weights[p + "mlp.W_gate"] = w1[l].t();
            weights[p + "mlp.W_in"] = w3[l].t();
            weights[p + "mlp.W_out"] = w2[l].t();
        }
        var model = new HookedTransformer(cfg);
        try { WeightLoader.Load(model, weights, path); }
        catch { model.Dispose(); throw; }
        return model;
    }

    private static long FloatCount(long d, long f, long L, long h, long kv, long V, long seq, bool shared)
    {
        long e = d / h;
        try
        {
            checked
            {
                return V * d + L * d + L * d * (h * e) + 2 * L * d * (kv * e) + L * (h * e) * d + L * d
                       + 3 * L * d * f + d + 2 * seq * (e / 2) + (shared ? 0 : V * d);
            }
        }
        catch (OverflowException) { return -1; }
    }

    private static FileStream OpenRead(string path)
    {
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        { throw new ModelFileException(path, null, $"cannot open: {ex.Message}", ex); }
    }

    private static Tensor ReadFloats(FileStream stream, string path, string name, long[] shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var data = new float[count];
        var span = System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan());
        if (stream.ReadAtLeast(span, span.Length, throwOnEndOfStream: false) != span.Length)
            throw new ModelFileException(path, name, "file ends inside this tensor");
        return tensor(data, shape);
    }
}

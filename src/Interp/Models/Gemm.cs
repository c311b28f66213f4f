using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// The forward pass's weight products x·W (+ b). libtorch's bundled BLAS (MKL) runs its AVX2 kernels on AMD CPUs, at
/// about half of an AVX-512 machine's float32 peak; where an OpenBLAS library can be loaded and no gradient is being
/// recorded, these products call its <c>cblas_sgemm</c> directly on the tensors' memory instead (products of at least
/// 2²⁵ multiply-adds; smaller ones stay with libtorch). OpenBLAS is found by the dynamic loader's normal search for
/// <c>libopenblas.so.0</c> (Debian: <c>libopenblas0-pthread</c>), or at the path in <c>INTERP_OPENBLAS</c>; set
/// <c>INTERP_BLAS=torch</c> to always use libtorch. OpenBLAS's own settings (<c>OPENBLAS_CORETYPE</c>,
/// <c>OPENBLAS_L2_SIZE</c>, …) are the user's and are left as they are. <see cref="Describe"/> says which was used.
/// </summary>
public static class Gemm
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void Sgemm(int order, int transA, int transB, int m, int n, int k, float alpha,
        ref byte a, int lda, ref byte b, int ldb, float beta, ref byte c, int ldc);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetThreads(int threads);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate IntPtr GetString();

    /// <summary>Products smaller than this many multiply-adds (m·k·n) always use libtorch.</summary>
    private const double MinMultiplyAdds = 1 << 25;

    private const int RowMajor = 101, NoTrans = 111, Trans = 112;
    private static readonly Lazy<(Sgemm? Product, string Description)> OpenBlas = new(Load);
    private static int _threads = -1;
    [ThreadStatic] private static long _openBlasProducts;

    /// <summary>Products this thread sent to OpenBLAS so far (tests check that the path they test was taken).</summary>
    internal static long OpenBlasProducts => _openBlasProducts;

    /// <summary>The BLAS the weight products use: "openblas" or "torch".</summary>
    public static string Backend => OpenBlas.Value.Product is null ? "torch" : "openblas";

    /// <summary>
    /// Which BLAS the weight products use and why, e.g. <c>openblas (libopenblas.so.0: OpenBLAS 0.3.21 DYNAMIC_ARCH …, core Zen)</c>
    /// or <c>torch (INTERP_BLAS=torch)</c>; for run manifests and benchmark reports.
    /// </summary>
    public static string Describe() => OpenBlas.Value.Description;

    /// <exception cref="InterpException"><c>INTERP_OPENBLAS</c> names a library that cannot be loaded or has no <c>cblas_sgemm</c>.</exception>
    private static (Sgemm? Product, string Description) Load()
    {
        if (Environment.GetEnvironmentVariable("INTERP_BLAS") is "torch") return (null, "torch (INTERP_BLAS=torch)");
        string? chosen = Environment.GetEnvironmentVariable("INTERP_OPENBLAS");
        if (!string.IsNullOrEmpty(chosen))
        {
            if (!NativeLibrary.TryLoad(chosen, out var lib))
                throw new InterpException($"INTERP_OPENBLAS={chosen}: the library cannot be loaded (unset INTERP_OPENBLAS to search the usual places)");
            return Bind(lib, chosen) ?? throw new InterpException($"INTERP_OPENBLAS={chosen}: the library has no cblas_sgemm, so it is not OpenBLAS");
        }
        foreach (string name in new[] { "libopenblas.so.0", "libopenblas.so" })
            if (NativeLibrary.TryLoad(name, out var lib) && Bind(lib, name) is { } found)
                return found;
        return (null, "torch (no OpenBLAS found: libopenblas.so.0 is not on the loader's path; set INTERP_OPENBLAS to its file)");
    }

    /// <summary>OpenBLAS's product and how to describe it, or null when <paramref name="lib"/> has no <c>cblas_sgemm</c>.</summary>
    private static (Sgemm? Product, string Description)? Bind(IntPtr lib, string name)
    {
        if (!NativeLibrary.TryGetExport(lib, "cblas_sgemm", out var fn)) return null;
        if (NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out var set))
            _setThreads = Marshal.GetDelegateForFunctionPointer<SetThreads>(set);
        string config = Text(lib, "openblas_get_config"), core = Text(lib, "openblas_get_corename");
        return (Marshal.GetDelegateForFunctionPointer<Sgemm>(fn),
            $"openblas ({name}{(config.Length > 0 ? ": " + config : "")}{(core.Length > 0 ? ", core " + core : "")})");
    }

    private static string Text(IntPtr lib, string export) =>
        NativeLibrary.TryGetExport(lib, export, out var fn)
            ? (Marshal.PtrToStringUTF8(Marshal.GetDelegateForFunctionPointer<GetString>(fn)()) ?? "").Trim()
            : "";

    private static SetThreads? _setThreads;

    /// <summary>
    /// x [..., k] · w [k, n] (+ bias [n]) → [..., n]: OpenBLAS for large float32 CPU products with no gradient recorded,
    /// else libtorch's matmul. The product is taken in x's dtype: a weight (or bias) held in another dtype is converted
    /// for this product only (<see cref="HookedTransformer.ComputeDType"/>). The inputs are never written.
    /// </summary>
    public static Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null)
    {
        w = Like(w, x);
        if (bias is not null) bias = Like(bias, x);
        var sgemm = OpenBlas.Value.Product;
        if (sgemm is null || !Eligible(x, w, bias))
            return bias is null ? x.matmul(w) : x.matmul(w).add(bias, Scalars.One);
        long k = w.shape[0], n = w.shape[1];
        var shape = x.shape;
        shape[^1] = n;
        var a = x.reshape(-1, k).contiguous();
        long m = a.shape[0];
        // B's memory: w's own, or, for a transposed view of a contiguous [n, k] tensor, that tensor's (the same bytes).
        bool transB = !w.is_contiguous() && w.t().is_contiguous();
        var wc = transB ? w.t() : w.contiguous();
        Tensor c;
        float beta = 0;
        if (bias is not null && bias.dim() == 1 && bias.is_contiguous())
        {
            c = empty(m, n, dtype: ScalarType.Float32, device: x.device);
            c.copy_(bias.expand(m, n));                    // C = bias, then C = x·W + C (a fresh buffer, never the bias)
            beta = 1;
        }
        else c = empty(m, n, dtype: ScalarType.Float32, device: x.device);
        int threads = get_num_threads();
        if (threads != _threads && _setThreads is not null)
        {
            _setThreads(threads);
            _threads = threads;
        }
        _openBlasProducts++;
        sgemm(RowMajor, NoTrans, transB ? Trans : NoTrans, (int)m, (int)n, (int)k, 1f,
            ref Data(a), (int)k, ref Data(wc), transB ? (int)k : (int)n, beta, ref Data(c), (int)n);
        GC.KeepAlive(a);
        GC.KeepAlive(wc);
        var result = c.view(shape);
        return bias is not null && beta == 0 ? result.add(bias, Scalars.One) : result;
    }

    /// <summary>
    /// <paramref name="weight"/> in <paramref name="activation"/>'s dtype: itself when they agree, else a converted copy
    /// (strides kept, so that a transposed view stays one) whose gradient flows back to the weight.
    /// </summary>
    internal static Tensor Like(Tensor weight, Tensor activation) =>
        weight.dtype == activation.dtype ? weight : weight.to(activation.dtype);

    /// <summary>
    /// The first byte of a contiguous CPU tensor's memory (not a copy). TorchSharp's span over a tensor holds at most
    /// 2³¹ − 1 bytes, so a larger tensor (a float32 unembedding of a 256k vocabulary: 2.4 GB) is read through a view
    /// of its first element, which starts at the same byte; its memory stays the tensor's.
    /// </summary>
    private static ref byte Data(Tensor t)
    {
        if (t.NumberOfElements * t.ElementSize <= int.MaxValue) return ref Unsafe.AsRef(in MemoryMarshal.GetReference((ReadOnlySpan<byte>)t.bytes));
        using var flat = t.view(-1);
        using var first = flat.narrow(0, 0, 1);
        return ref Unsafe.AsRef(in MemoryMarshal.GetReference((ReadOnlySpan<byte>)first.bytes));
    }

    private static bool Eligible(Tensor x, Tensor w, Tensor? bias)
    {
        if (x.device_type != DeviceType.CPU || w.device_type != DeviceType.CPU) return false;
        if (x.dtype != ScalarType.Float32 || w.dtype != ScalarType.Float32 || w.dim() != 2 || x.dim() < 1) return false;
        if (bias is not null && (bias.dtype != ScalarType.Float32 || bias.device_type != DeviceType.CPU)) return false;
        if (is_grad_enabled() && (x.requires_grad || w.requires_grad || (bias?.requires_grad ?? false))) return false;
        long m = x.NumberOfElements / Math.Max(1, x.shape[^1]);
        // Small products stay with libtorch: there the call costs more than the kernel, and small models keep
        // libtorch's exact numerics (summation order) in every grad mode.
        if ((double)m * w.shape[0] * w.shape[1] < MinMultiplyAdds) return false;
        return x.shape[^1] == w.shape[0] && m < int.MaxValue && w.shape[0] < int.MaxValue && w.shape[1] < int.MaxValue;
    }
}

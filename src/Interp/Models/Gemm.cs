using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// The forward pass's weight products x·W (+ b). libtorch's bundled BLAS (MKL) runs its AVX2 kernels on AMD CPUs, at
/// about half of an AVX-512 machine's float32 peak; where an OpenBLAS library is installed (Debian:
/// <c>libopenblas0-pthread</c>) and no gradient is being recorded, these products call its <c>cblas_sgemm</c> directly on
/// the tensors' memory instead (products of at least 2²⁵ multiply-adds; smaller ones stay with libtorch). Set <c>INTERP_BLAS=torch</c> to always use libtorch.
/// </summary>
public static class Gemm
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void Sgemm(int order, int transA, int transB, int m, int n, int k, float alpha,
        ref byte a, int lda, ref byte b, int ldb, float beta, ref byte c, int ldc);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetThreads(int threads);

    /// <summary>Products smaller than this many multiply-adds (m·k·n) always use libtorch.</summary>
    private const double MinMultiplyAdds = 1 << 25;

    private const int RowMajor = 101, NoTrans = 111, Trans = 112;
    private static readonly Lazy<Sgemm?> OpenBlas = new(Load);
    private static int _threads = -1;

    /// <summary>The BLAS the weight products use: "openblas" or "torch".</summary>
    public static string Backend => OpenBlas.Value is null ? "torch" : "openblas";

    private static Sgemm? Load()
    {
        if (Environment.GetEnvironmentVariable("INTERP_BLAS") is "torch") return null;
        if (!OperatingSystem.IsLinux()) return null;
        // OpenBLAS picks its kernels when it loads, from the CPU unless OPENBLAS_CORETYPE names one (e.g. Haswell: AVX2
        // only) and sizes its blocking from OPENBLAS_L2_SIZE; let it see the real CPU, then restore the environment.
        string[] overrides = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];
        var saved = overrides.Select(v => (v, Value: NativeEnvironment.Get(v))).ToArray();
        try
        {
            foreach (var (v, value) in saved) if (value is not null) NativeEnvironment.Set(v, null);
            foreach (string name in new[] { "libopenblas.so.0", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0" })
                if (NativeLibrary.TryLoad(name, out var lib) && NativeLibrary.TryGetExport(lib, "cblas_sgemm", out var fn))
                {
                    if (NativeLibrary.TryGetExport(lib, "openblas_set_num_threads", out var set))
                        _setThreads = Marshal.GetDelegateForFunctionPointer<SetThreads>(set);
                    return Marshal.GetDelegateForFunctionPointer<Sgemm>(fn);
                }
            return null;
        }
        finally
        {
            foreach (var (v, value) in saved) if (value is not null) NativeEnvironment.Set(v, value);
        }
    }

    private static SetThreads? _setThreads;

    /// <summary>
    /// x [..., k] · w [k, n] (+ bias [n]) → [..., n]: OpenBLAS for large float32 CPU products with no gradient recorded,
    /// else libtorch's matmul. The inputs are never written.
    /// </summary>
    public static Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null)
    {
        var sgemm = OpenBlas.Value;
        if (sgemm is null || !Eligible(x, w, bias))
            return bias is null ? x.matmul(w) : x.matmul(w) + bias;
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
        sgemm(RowMajor, NoTrans, transB ? Trans : NoTrans, (int)m, (int)n, (int)k, 1f,
            ref Data(a), (int)k, ref Data(wc), transB ? (int)k : (int)n, beta, ref Data(c), (int)n);
        GC.KeepAlive(a);
        GC.KeepAlive(wc);
        var result = c.view(shape);
        return bias is not null && beta == 0 ? result + bias : result;
    }

    /// <summary>The first byte of a contiguous CPU tensor's storage (its memory, not a copy).</summary>
    private static ref byte Data(Tensor t) => ref Unsafe.AsRef(in MemoryMarshal.GetReference((ReadOnlySpan<byte>)t.bytes));

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

using Interp.Models;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// The weight products against an independent float64 product: on whichever BLAS this machine gives them, and on the
/// OpenBLAS path itself where OpenBLAS is installed (skipped, with the reason, where it is not).
/// </summary>
public sealed class GemmTests
{
    [Fact]
    public void MatMul_equals_a_float64_product_with_bias_transposed_weights_and_in_grad_mode() => CheckAgainstFloat64();

    [OpenBlasFact]
    public void OpenBlas_products_equal_a_float64_product()
    {
        long before = Gemm.OpenBlasProducts;
        CheckAgainstFloat64();
        // Three large products without a gradient went to OpenBLAS; the small one and the recorded one did not.
        Assert.Equal(3, Gemm.OpenBlasProducts - before);
    }

    private static void CheckAgainstFloat64()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var x = randn([2, 256, 384], generator: g);
        var w = randn([384, 512], generator: g);
        var b = randn([512], generator: g);
        var product = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64));
        var reference = product.add(b.to(ScalarType.Float64), Scalars.One).to(ScalarType.Float32);
        using (no_grad())
        {
            var wCopy = w.clone();
            var bCopy = b.clone();
            TensorAssert.Close(reference, Gemm.MatMul(x, w, b), 1e-3);
            TensorAssert.Close(reference, Gemm.MatMul(x, w.t().contiguous().t(), b), 1e-3);    // a transposed view
            TensorAssert.Close(product.to(ScalarType.Float32), Gemm.MatMul(x, w), 1e-3);
            Assert.Equal(0, TensorAssert.MaxAbsDiff(w, wCopy) + TensorAssert.MaxAbsDiff(b, bCopy));   // inputs untouched
            Assert.Equal([1L, 512], Gemm.MatMul(x[0, ..1], w, b).shape);                         // small: libtorch
        }
        var wGrad = w.clone().requires_grad_(true);
        var y = Gemm.MatMul(x, wGrad, b);                                                        // records a graph
        Assert.True(y.requires_grad);
        TensorAssert.Close(reference, y.detach(), 1e-3);
    }

    [Fact]
    public void Forward_without_gradients_matches_the_recorded_forward()
    {
        var cfg = TestModels.Gpt2Like with { DModel = 256, NHeads = 4, DMlp = 1024, DVocab = 2048, NCtx = 128, NLayers = 2 };
        using var model = TestModels.Random(cfg, seed: 5);
        using var scope = NewDisposeScope();
        var tokens = randint(0, cfg.DVocab, [2, 128], generator: new Generator(1));
        var recorded = model.forward(tokens).detach();
        Tensor fast, exact;
        using (no_grad()) fast = model.forward(tokens);
        using (var f64 = model.ToDtype(ScalarType.Float64))
        using (no_grad()) exact = f64.forward(tokens);
        double scale = Math.Max(1, recorded.abs().max().item<float>());
        TensorAssert.Close(recorded, fast, 3e-5 * scale);
        // Both are float32 renderings of the same function: the fast path (one fused q/k/v product, OpenBLAS where it
        // is installed) is about as far from float64 as the recorded one (libtorch). Measured: 5.9e-4 against 3.4e-4
        // with OpenBLAS, bit-identical paths without it.
        double recordedError = (recorded.to(ScalarType.Float64) - exact).abs().max().item<double>();
        double fastError = (fast.to(ScalarType.Float64) - exact).abs().max().item<double>();
        Assert.True(fastError <= 3 * recordedError + 1e-6 * scale, $"fast path error {fastError:G3} against the recorded path's {recordedError:G3}");
    }
}

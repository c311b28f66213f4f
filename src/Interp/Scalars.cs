using TorchSharp;

namespace Interp;

/// <summary>
/// Constant <see cref="Scalar"/>s that live as long as the process, for libtorch calls that take a number.
/// <para>
/// A <see cref="Scalar"/> wraps a native object that its finalizer frees. One made by an implicit conversion
/// (<c>t.mul(0.5)</c>, <c>t.fill_(1)</c>, <c>t + 1e-5</c>) — or inside TorchSharp, as <c>a + b</c> on two tensors does
/// (<c>add(b)</c> is <c>add(b, alpha: 1)</c>) — belongs to nobody once its handle is passed to libtorch, so the garbage
/// collector may free it while libtorch still reads it: under allocation pressure a few forward passes in a thousand
/// failed (<c>ExternalException: Unknown scalar type</c>) or read freed memory. Interp owns every scalar it passes:
/// these constants, a field created with a module and disposed with it, or <c>using var s = x.ToScalar();</c> around
/// a call whose number changes. The repository's analyzer (<c>src/Interp.Analyzers</c>, rules INTERP0001/INTERP0002)
/// makes any other use a build error in <c>src/</c> and <c>experiments/</c>.
/// </para>
/// <example><code>
/// var sum = a.add(b, Scalars.One);                 // a + b
/// using var eps = 1e-5.ToScalar();
/// var rms = x.pow(Scalars.Two).mean([-1], keepdim: true).add_(eps, Scalars.One).sqrt_();
/// </code></example>
/// </summary>
public static class Scalars
{
    /// <summary>0.</summary>
    public static readonly Scalar Zero = 0.ToScalar();
    /// <summary>1: the alpha of <c>a.add(b, One)</c>, i.e. a + b.</summary>
    public static readonly Scalar One = 1.ToScalar();
    /// <summary>2: the exponent of a square, <c>x.pow(Two)</c>.</summary>
    public static readonly Scalar Two = 2.ToScalar();
    /// <summary>−∞ (float): the value of masked attention scores.</summary>
    public static readonly Scalar NegativeInfinity = float.NegativeInfinity.ToScalar();
    /// <summary>NaN (double): the value of entries not measured.</summary>
    public static readonly Scalar NaN = double.NaN.ToScalar();
}

using static TorchSharp.torch;

namespace Interp.Plots;

/// <summary>Turns tensors into the arrays ScottPlot and the Parquet tables take.</summary>
public static class TensorData
{
    /// <summary>A 2-D tensor as double[rows, columns].</summary>
    public static double[,] ToMatrix(Tensor t)
    {
        if (t.dim() != 2) throw new InterpException($"expected a 2-D tensor, got shape [{string.Join(", ", t.shape)}]");
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        var flat = t.detach().cpu().to(ScalarType.Float64).contiguous().data<double>().ToArray();
        var m = new double[rows, cols];
        Buffer.BlockCopy(flat, 0, m, 0, flat.Length * sizeof(double));
        return m;
    }

    /// <summary>A 1-D tensor as double[].</summary>
    public static double[] ToVector(Tensor t) => t.detach().cpu().to(ScalarType.Float64).contiguous().data<double>().ToArray();
}

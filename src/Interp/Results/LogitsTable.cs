using static TorchSharp.torch;

namespace Interp.Results;

/// <summary>The logits of one sequence as a long table: columns <c>position</c> (int32), <c>vocab</c> (int32), <c>logit</c> (float32).</summary>
public static class LogitsTable
{
    /// <summary>Builds the table from logits [pos, d_vocab] (or [1, pos, d_vocab]).</summary>
    public static ParquetTable From(Tensor logits)
    {
        if (logits.dim() == 3 && logits.shape[0] == 1) logits = logits[0];
        if (logits.dim() != 2) throw new InterpException($"logits must be [pos, d_vocab], got [{string.Join(", ", logits.shape)}]");
        int pos = (int)logits.shape[0], vocab = (int)logits.shape[1];
        var values = logits.detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();
        var positions = new int[values.Length];
        var ids = new int[values.Length];
        for (int p = 0, i = 0; p < pos; p++)
            for (int v = 0; v < vocab; v++, i++) { positions[i] = p; ids[i] = v; }
        return new ParquetTable().Add(Columns.Position, positions).Add("vocab", ids).Add("logit", values);
    }
}

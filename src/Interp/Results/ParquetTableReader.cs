using Parquet;
using Parquet.Schema;

namespace Interp.Results;

/// <summary>Reads the numeric columns of a Parquet table (as written by <see cref="ParquetTable"/>) back as doubles.</summary>
public static class ParquetTableReader
{
    /// <summary>Every int32, int64, float or double column of <paramref name="path"/>, by name (list columns are skipped).</summary>
    public static async Task<Dictionary<string, double[]>> ReadNumericAsync(string path, CancellationToken cancellationToken = default)
    {
        var numeric = new Dictionary<string, double[]>();
        foreach (var (name, column) in await ReadColumnsAsync(path, cancellationToken))
        {
            double[]? values = column switch
            {
                int[] a => a.Select(v => (double)v).ToArray(),
                long[] a => a.Select(v => (double)v).ToArray(),
                float[] a => a.Select(v => (double)v).ToArray(),
                double[] a => a,
                _ => null,
            };
            if (values is not null) numeric[name] = values;
        }
        return numeric;
    }

    /// <summary>
    /// Every flat column of <paramref name="path"/>, by name, as a typed array (<c>int[]</c>, <c>long[]</c>, <c>float[]</c>,
    /// <c>double[]</c>, <c>bool[]</c> or <c>string[]</c>; list columns are skipped).
    /// </summary>
    /// <exception cref="InterpException">The file is missing or not a readable Parquet table.</exception>
    public static async Task<Dictionary<string, Array>> ReadColumnsAsync(string path, CancellationToken cancellationToken = default)
    {
        try
        {
            await using var reader = await ParquetReader.CreateAsync(path, cancellationToken: cancellationToken);
            var fields = reader.Schema.GetDataFields().Where(f => f.MaxRepetitionLevel == 0).ToArray();
            var parts = fields.ToDictionary(f => f.Name, _ => new List<Array>());
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var group = reader.OpenRowGroupReader(g);
                int n = checked((int)group.RowCount);
                foreach (var field in fields)
                    parts[field.Name].Add(await ParquetRecords.ReadColumnAsync(group, field, n, cancellationToken));
            }
            return parts.ToDictionary(kv => kv.Key, kv => Concat(kv.Value, fields.First(f => f.Name == kv.Key)));
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot read Parquet table {path}: {ex.Message}", ex);
        }
    }

    private static Array Concat(List<Array> parts, DataField field)
    {
        if (parts.Count == 1) return parts[0];
        var type = parts.Count == 0 ? (field.ClrType == typeof(string) ? typeof(string) : field.ClrType) : parts[0].GetType().GetElementType()!;
        var all = Array.CreateInstance(type, parts.Sum(p => p.Length));
        int at = 0;
        foreach (var p in parts) { Array.Copy(p, 0, all, at, p.Length); at += p.Length; }
        return all;
    }

}

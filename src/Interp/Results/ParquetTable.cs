using Interp.Loading;
using Parquet;
using Parquet.Schema;

namespace Interp.Results;

/// <summary>
/// A results table in long format, built column by column and written to Parquet atomically (temporary file +
/// rename), in row groups of at most <see cref="RowGroupSize"/> rows so that large tables stream.
/// </summary>
public sealed class ParquetTable
{
    private readonly List<Column> _columns = new();

    /// <summary>A column: its field, its length, and how to write a slice of it into a row group.</summary>
    private sealed record Column(Field Field, long Length, Func<ParquetRowGroupWriter, long, int, CancellationToken, Task> WriteSlice);

    /// <summary>Rows per row group.</summary>
    public int RowGroupSize { get; init; } = 1 << 20;

    /// <summary>Number of rows (all columns have the same length).</summary>
    public long RowCount => _columns.Count == 0 ? 0 : _columns[0].Length;

    /// <summary>Adds a column; every column must have the same length and a distinct name.</summary>
    public ParquetTable Add<T>(string name, T[] values) where T : struct
    {
        CheckNewColumn(name, values.LongLength);
        var field = new DataField<T>(name);
        _columns.Add(new Column(field, values.LongLength, async (group, start, count, ct) =>
            await group.WriteAsync(field, new ReadOnlyMemory<T>(values, (int)start, count), cancellationToken: ct)));
        return this;
    }

    /// <summary>Adds a string column (UTF-8, required values).</summary>
    public ParquetTable Add(string name, string[] values)
    {
        CheckNewColumn(name, values.LongLength);
        var field = new DataField<string>(name, false);
        _columns.Add(new Column(field, values.LongLength, async (group, start, count, ct) =>
            await group.WriteAsync(field, new ArraySegment<string>(values, (int)start, count))));
        return this;
    }

    /// <summary>
    /// Adds a list column, list&lt;double&gt; in Parquet's standard LIST layout (read back as <c>double[]</c> by
    /// ParquetSharp, as a list by DuckDB, pandas and Arrow): one array per row, e.g. a spectrum of singular values.
    /// </summary>
    public ParquetTable Add(string name, double[][] values)
    {
        CheckNewColumn(name, values.LongLength);
        var item = new DataField<double>("element");
        var list = new ListField(name, item);
        _columns.Add(new Column(list, values.LongLength, async (group, start, count, ct) =>
        {
            var rows = new ArraySegment<double[]>(values, (int)start, count);
            var flat = new List<double>();
            var repetition = new List<int>();
            var definition = new List<int>();
            foreach (var row in rows)
            {
                // An empty list is one entry "list present, no element" (definition level 1, no value).
                if (row.Length == 0) { repetition.Add(0); definition.Add(1); continue; }
                for (int i = 0; i < row.Length; i++)
                {
                    flat.Add(row[i]);
                    repetition.Add(i == 0 ? 0 : 1);
                    definition.Add(item.MaxDefinitionLevel);
                }
            }
            await group.WriteAllPartsAsync(item, new ReadOnlyMemory<double>(flat.ToArray()),
                new ReadOnlyMemory<int>(definition.ToArray()), new ReadOnlyMemory<int>(repetition.ToArray()), ct);
        }));
        return this;
    }

    private void CheckNewColumn(string name, long length)
    {
        if (_columns.Count > 0 && length != RowCount)
            throw new InterpException($"Parquet column '{name}' has {length} rows but the table has {RowCount}");
        if (_columns.Any(c => c.Field.Name == name))
            throw new InterpException($"Parquet column '{name}' was added twice");
    }

    /// <summary>The column names, in order.</summary>
    public IReadOnlyList<string> ColumnNames => _columns.Select(c => c.Field.Name).ToArray();

    /// <summary>Writes the table to <paramref name="path"/>; a reader never sees a partial file.</summary>
    public async Task WriteAsync(string path, CancellationToken cancellationToken = default)
    {
        if (_columns.Count == 0) throw new InterpException($"{path}: a Parquet table needs at least one column");
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        try { if (dir is not null) Directory.CreateDirectory(dir); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot create the folder for Parquet table {path}: {ex.Message}", ex);
        }
        var schema = new ParquetSchema(_columns.Select(c => c.Field).ToArray());
        string tmp = Path.Combine(dir ?? ".", $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            await using (var stream = File.Create(tmp))
            await using (var writer = await ParquetWriter.CreateAsync(schema, stream, cancellationToken: cancellationToken))
            {
                for (long start = 0; start < RowCount || start == 0; start += RowGroupSize)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int count = (int)Math.Min(RowGroupSize, RowCount - start);
                    using var group = writer.CreateRowGroup();
                    foreach (var column in _columns) await column.WriteSlice(group, start, count, cancellationToken);
                    if (RowCount == 0) break;
                }
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot write Parquet table {path}: {ex.Message}", ex);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}

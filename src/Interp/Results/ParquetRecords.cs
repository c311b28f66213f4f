using System.Reflection;
using System.Text;
using Parquet;
using Parquet.Schema;

namespace Interp.Results;

/// <summary>
/// Records as Parquet rows and back: one column per parameter of the record's primary constructor, named in
/// snake_case (<c>MetricClean</c> → <c>metric_clean</c>), of type int, long, float, double, bool or string. The schema
/// comes from the type, so an empty list still writes a table with every column. Used for the per-unit rows that
/// sharded runs write and their merge reads (<c>shards/&lt;table&gt;/shard=&lt;i&gt;/part.parquet</c>).
/// </summary>
public static class ParquetRecords
{
    private static readonly Type[] Supported = [typeof(int), typeof(long), typeof(float), typeof(double), typeof(bool), typeof(string)];

    /// <summary>The column names of <typeparamref name="T"/>, in constructor order.</summary>
    public static IReadOnlyList<string> ColumnNames<T>() => Shape<T>().Parameters.Select(p => SnakeCase(p.Name!)).ToArray();

    /// <summary>The rows as a table, one column per constructor parameter.</summary>
    public static ParquetTable ToTable<T>(IReadOnlyList<T> rows)
    {
        var table = new ParquetTable();
        var shape = Shape<T>();
        foreach (var (parameter, property) in shape.Parameters.Zip(shape.Properties))
        {
            string name = SnakeCase(parameter.Name!);
            var type = parameter.ParameterType;
            if (type == typeof(int)) table.Add(name, rows.Select(r => (int)property.GetValue(r)!).ToArray());
            else if (type == typeof(long)) table.Add(name, rows.Select(r => (long)property.GetValue(r)!).ToArray());
            else if (type == typeof(float)) table.Add(name, rows.Select(r => (float)property.GetValue(r)!).ToArray());
            else if (type == typeof(double)) table.Add(name, rows.Select(r => (double)property.GetValue(r)!).ToArray());
            else if (type == typeof(bool)) table.Add(name, rows.Select(r => (bool)property.GetValue(r)!).ToArray());
            else table.Add(name, rows.Select(r => (string?)property.GetValue(r) ?? "").ToArray());
        }
        return table;
    }

    /// <summary>Reads a table written by <see cref="ToTable{T}"/> back as records, in file order.</summary>
    /// <exception cref="InterpException">The file is not readable, or lacks a column of <typeparamref name="T"/> or holds it with another type.</exception>
    public static async Task<IReadOnlyList<T>> ReadAsync<T>(string path, CancellationToken cancellationToken = default)
    {
        try
        {
            var shape = Shape<T>();
            await using var reader = await ParquetReader.CreateAsync(path, cancellationToken: cancellationToken);
            var fields = reader.Schema.GetDataFields().ToDictionary(f => f.Name, StringComparer.Ordinal);
            var columns = new List<Array>[shape.Parameters.Length];
            var wanted = new DataField[columns.Length];
            for (int c = 0; c < columns.Length; c++)
            {
                var p = shape.Parameters[c];
                string name = SnakeCase(p.Name!);
                if (!fields.TryGetValue(name, out var field))
                    throw new InterpException($"Parquet table {path} has no column '{name}' (it has {string.Join(", ", fields.Keys)}); expected the columns of {typeof(T).Name}");
                // Parquet.Net types a string column's values as ReadOnlyMemory<char>; they read back as strings.
                var stored = field.ClrType == typeof(ReadOnlyMemory<char>) ? typeof(string) : field.ClrType;
                if (stored != p.ParameterType || field.MaxRepetitionLevel != 0)
                    throw new InterpException($"Parquet table {path}: column '{name}' holds {stored.Name} values, but {typeof(T).Name}.{p.Name} is {p.ParameterType.Name}");
                (wanted[c], columns[c]) = (field, new List<Array>());
            }
            long total = 0;
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var group = reader.OpenRowGroupReader(g);
                int n = checked((int)group.RowCount);
                total += n;
                for (int c = 0; c < columns.Length; c++) columns[c].Add(await ReadColumnAsync(group, wanted[c], n, cancellationToken));
            }
            var rows = new T[total];
            var values = new object?[columns.Length];
            long row = 0;
            for (int g = 0; g < reader.RowGroupCount; g++)
                for (int i = 0; i < columns[0][g].Length; i++, row++)
                {
                    for (int c = 0; c < columns.Length; c++) values[c] = columns[c][g].GetValue(i);
                    rows[row] = (T)shape.Constructor.Invoke(values);
                }
            return rows;
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot read Parquet table {path}: {ex.Message}", ex);
        }
    }

    /// <summary>One column of a row group as a typed array (strings as <c>string[]</c>, never null).</summary>
    internal static async Task<Array> ReadColumnAsync(ParquetRowGroupReader group, DataField field, int n, CancellationToken ct)
    {
        if (field.ClrType == typeof(int)) { var a = new int[n]; await group.ReadAsync<int>(field, a, null, ct); return a; }
        if (field.ClrType == typeof(long)) { var a = new long[n]; await group.ReadAsync<long>(field, a, null, ct); return a; }
        if (field.ClrType == typeof(float)) { var a = new float[n]; await group.ReadAsync<float>(field, a, null, ct); return a; }
        if (field.ClrType == typeof(double)) { var a = new double[n]; await group.ReadAsync<double>(field, a, null, ct); return a; }
        if (field.ClrType == typeof(bool)) { var a = new bool[n]; await group.ReadAsync<bool>(field, a, null, ct); return a; }
        var strings = new string[n];
        await group.ReadAsync(field, strings, null, ct);
        return strings.Select(s => s ?? "").ToArray();
    }

    /// <summary>PascalCase or camelCase → snake_case.</summary>
    internal static string SnakeCase(string name)
    {
        var text = new StringBuilder();
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c) && i > 0 && (char.IsLower(name[i - 1]) || char.IsDigit(name[i - 1]) || (i + 1 < name.Length && char.IsLower(name[i + 1]))))
                text.Append('_');
            text.Append(char.ToLowerInvariant(c));
        }
        return text.ToString();
    }

    /// <summary>The record's primary constructor (the public one with the most parameters) and the property each parameter sets.</summary>
    private sealed record RowShape(ConstructorInfo Constructor, ParameterInfo[] Parameters, PropertyInfo[] Properties);

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Type, RowShape> Shapes = new();

    private static RowShape Shape<T>() => Shapes.GetOrAdd(typeof(T), type =>
    {
        var constructor = type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).FirstOrDefault()
            ?? throw new InterpException($"{type.Name} has no public constructor to build rows with");
        var parameters = constructor.GetParameters();
        var properties = parameters.Select(p => type.GetProperty(p.Name!, BindingFlags.Public | BindingFlags.Instance)
            ?? throw new InterpException($"{type.Name}: constructor parameter '{p.Name}' has no property of the same name (use a positional record)")).ToArray();
        foreach (var p in parameters)
            if (!Supported.Contains(p.ParameterType))
                throw new InterpException($"{type.Name}.{p.Name} is {p.ParameterType.Name}: a row column must be int, long, float, double, bool or string");
        return new RowShape(constructor, parameters, properties);
    });
}

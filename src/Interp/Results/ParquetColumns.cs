namespace Interp.Results;

/// <summary>
/// Builds a long-format table row by row: <c>columns.Row(("layer", 0), ("head", 3), ("value", 0.7f))</c>.
/// Every row must name the same columns in the same order; types are int, long, float, double, bool, string or double[] (a list column).
/// </summary>
public sealed class ParquetColumns
{
    private readonly List<(string Name, List<object> Values)> _columns = new();

    /// <summary>Number of rows so far.</summary>
    public int RowCount => _columns.Count == 0 ? 0 : _columns[0].Values.Count;

    /// <summary>Appends one row.</summary>
    public ParquetColumns Row(params (string Name, object Value)[] cells)
    {
        if (_columns.Count == 0)
            foreach (var (name, _) in cells) _columns.Add((name, new List<object>()));
        if (cells.Length != _columns.Count || cells.Select(c => c.Name).Where((n, i) => n != _columns[i].Name).Any())
            throw new InterpException($"table row names columns [{string.Join(", ", cells.Select(c => c.Name))}] but the table has [{string.Join(", ", _columns.Select(c => c.Name))}]");
        for (int i = 0; i < cells.Length; i++)
        {
            var previous = _columns[i].Values.Count > 0 ? _columns[i].Values[0].GetType() : null;
            if (previous is not null && previous != cells[i].Value.GetType())
                throw new InterpException($"table column '{cells[i].Name}' holds {previous.Name} values but a row gave {cells[i].Value.GetType().Name}");
            _columns[i].Values.Add(cells[i].Value);
        }
        return this;
    }

    /// <summary>The typed table.</summary>
    public ParquetTable ToTable()
    {
        var table = new ParquetTable();
        foreach (var (name, values) in _columns)
        {
            switch (values.Count > 0 ? values[0] : 0)
            {
                case int: table.Add(name, values.Cast<int>().ToArray()); break;
                case long: table.Add(name, values.Cast<long>().ToArray()); break;
                case float: table.Add(name, values.Cast<float>().ToArray()); break;
                case double: table.Add(name, values.Cast<double>().ToArray()); break;
                case bool: table.Add(name, values.Cast<bool>().ToArray()); break;
                case string: table.Add(name, values.Cast<string>().ToArray()); break;
                case double[]: table.Add(name, values.Cast<double[]>().ToArray()); break;
                default: throw new InterpException($"table column '{name}' has unsupported type {values[0].GetType().Name}");
            }
        }
        return table;
    }
}

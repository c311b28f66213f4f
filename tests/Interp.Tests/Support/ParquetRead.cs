using ParquetSharp;

namespace Interp.Tests.Support;

/// <summary>Reads a whole Parquet file with ParquetSharp (Apache Arrow's C++ reader): an independent check of what Parquet.Net wrote.</summary>
public static class ParquetRead
{
    public static Dictionary<string, object[]> Columns(string path)
    {
        using var reader = new ParquetFileReader(path);
        var schema = reader.FileMetaData.Schema;
        var result = new Dictionary<string, object[]>();
        var parts = Enumerable.Range(0, schema.NumColumns).Select(_ => new List<object>()).ToArray();
        for (int g = 0; g < reader.FileMetaData.NumRowGroups; g++)
        {
            using var group = reader.RowGroup(g);
            int n = checked((int)group.MetaData.NumRows);
            for (int c = 0; c < schema.NumColumns; c++)
            {
                using var column = group.Column(c);
                var values = column.ColumnDescriptor.MaxRepetitionLevel > 0
                    ? column.LogicalReader<double[]>().ReadAll(n).Cast<object>()
                    : column.ColumnDescriptor.PhysicalType switch
                {
                    PhysicalType.Int32 => column.LogicalReader<int>().ReadAll(n).Cast<object>(),
                    PhysicalType.Int64 => column.LogicalReader<long>().ReadAll(n).Cast<object>(),
                    PhysicalType.Float => column.LogicalReader<float>().ReadAll(n).Cast<object>(),
                    PhysicalType.Double => column.LogicalReader<double>().ReadAll(n).Cast<object>(),
                    PhysicalType.Boolean => column.LogicalReader<bool>().ReadAll(n).Cast<object>(),
                    PhysicalType.ByteArray => column.LogicalReader<string>().ReadAll(n).Cast<object>(),
                    var t => throw new NotSupportedException(t.ToString()),
                };
                parts[c].AddRange(values);
            }
        }
        for (int c = 0; c < schema.NumColumns; c++) result[schema.Column(c).Path.ToDotVector()[0]] = parts[c].ToArray();   // a list column's leaf is "<name>.list.element"
        return result;
    }
}

using Interp.Results;
using Interp.Tests.Support;

namespace Interp.Tests.Results;

/// <summary>Parquet tables written by Parquet.Net, read back by ParquetSharp (independent) and by our reader.</summary>
public sealed class ParquetTableTests
{
    [Fact]
    public async Task Every_column_type_round_trips_across_row_groups()
    {
        using var tmp = new TempDir();
        int n = 2500;
        var table = new ParquetTable { RowGroupSize = 1000 }
            .Add("i", Enumerable.Range(0, n).ToArray())
            .Add("l", Enumerable.Range(0, n).Select(i => (long)i << 33).ToArray())
            .Add("f", Enumerable.Range(0, n).Select(i => i * 0.5f).ToArray())
            .Add("d", Enumerable.Range(0, n).Select(i => Math.PI * i).ToArray())
            .Add("s", Enumerable.Range(0, n).Select(i => $"row {i} ✓").ToArray());
        await table.WriteAsync(tmp.File("t.parquet"));

        var c = ParquetRead.Columns(tmp.File("t.parquet"));
        Assert.Equal(Enumerable.Range(0, n).Cast<object>(), c["i"]);
        Assert.Equal(((long)2499 << 33), (long)c["l"][2499]);
        Assert.Equal(1249.5f, (float)c["f"][2499]);
        Assert.Equal(Math.PI * 1234, (double)c["d"][1234]);
        Assert.Equal("row 1500 ✓", c["s"][1500]);

        var numeric = await ParquetTableReader.ReadNumericAsync(tmp.File("t.parquet"));
        Assert.Equal(["i", "l", "f", "d"], numeric.Keys);
        Assert.Equal(Enumerable.Range(0, n).Select(i => Math.PI * i), numeric["d"]);
    }

    [Fact]
    public async Task List_columns_round_trip_across_row_groups_including_empty_lists()
    {
        using var tmp = new TempDir();
        int n = 25;
        var lists = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, i % 4).Select(j => i + j / 10.0).ToArray()).ToArray();
        await new ParquetTable { RowGroupSize = 10 }
            .Add("row", Enumerable.Range(0, n).ToArray())
            .Add("values", lists)
            .WriteAsync(tmp.File("lists.parquet"));

        var c = ParquetRead.Columns(tmp.File("lists.parquet"));
        Assert.Equal(Enumerable.Range(0, n).Cast<object>(), c["row"]);
        for (int i = 0; i < n; i++) Assert.Equal(lists[i], (double[])c["values"][i]);
        // Our own numeric reader skips the list column rather than failing on it.
        Assert.Equal(["row"], (await ParquetTableReader.ReadNumericAsync(tmp.File("lists.parquet"))).Keys);
    }

    [Fact]
    public void Mismatched_columns_are_clear_errors()
    {
        var table = new ParquetTable().Add("a", new[] { 1, 2, 3 });
        Assert.Contains("column 'b' has 2 rows but the table has 3", Assert.Throws<InterpException>(() => table.Add("b", new[] { 1f, 2f })).Message);
        Assert.Contains("column 'a' was added twice", Assert.Throws<InterpException>(() => table.Add("a", new[] { 1, 2, 3 })).Message);
        var rows = new ParquetColumns().Row(("x", 1));
        Assert.Contains("holds Int32 values but a row gave String", Assert.Throws<InterpException>(() => rows.Row(("x", "one"))).Message);
        Assert.Contains("names columns [y]", Assert.Throws<InterpException>(() => rows.Row(("y", 2))).Message);
    }

    [Fact]
    public async Task A_failed_write_leaves_no_partial_file()
    {
        using var tmp = new TempDir();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var table = new ParquetTable().Add("a", new[] { 1, 2, 3 });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => table.WriteAsync(tmp.File("t.parquet"), cts.Token));
        Assert.Empty(Directory.GetFiles(tmp.Path));
    }
}

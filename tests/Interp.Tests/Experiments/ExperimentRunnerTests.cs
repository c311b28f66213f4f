using Interp.Experiments;
using Interp.Results;
using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>The runner's guarantees: a status always, finished artefacts kept, names that cannot escape the run folder.</summary>
public sealed class ExperimentRunnerTests
{
    private static ParquetTable Table(int n) => new ParquetTable().Add("x", Enumerable.Range(0, n).ToArray());

    [Fact]
    public async Task Cancelled_run_keeps_finished_tables_and_says_cancelled()
    {
        using var tmp = new TempDir();
        using var cts = new CancellationTokenSource();
        var result = await new ExperimentRunner().RunAsync(new Scripted(async (ctx, ct) =>
        {
            await ctx.WriteTableAsync("first.parquet", Table(10), "written before the cancel", ct);
            cts.Cancel();
            await ctx.WriteTableAsync("second.parquet", Table(10), "never written", ct);
        }), new ExperimentRunOptions { OutputDirectory = tmp.Path }, cts.Token);
        var manifest = RunManifest.Load(tmp.Path);
        Assert.Equal(RunStatus.Cancelled, manifest.Status);
        Assert.Equal(["first.parquet", "report.md", "report.html"], manifest.Artifacts.Select(a => a.File));
        Assert.Equal(10, ParquetRead.Columns(tmp.File("first.parquet"))["x"].Length);
        Assert.False(File.Exists(tmp.File("second.parquet")));
        Assert.Contains("status **cancelled**", File.ReadAllText(tmp.File("report.md")));
        Assert.Equal(result.OutputDirectory, tmp.Path);
    }

    [Fact]
    public async Task Experiments_stay_on_one_thread_across_awaits_so_torch_thread_state_holds()
    {
        using var tmp = new TempDir();
        var threads = new List<int>();
        bool gradInside = true;
        await new ExperimentRunner().RunAsync(new Scripted(async (ctx, ct) =>
        {
            using var _ = TorchSharp.torch.no_grad();
            threads.Add(Environment.CurrentManagedThreadId);
            await ctx.WriteTableAsync("a.parquet", Table(3), "a", ct);
            await Task.Delay(5, ct);
            threads.Add(Environment.CurrentManagedThreadId);
            gradInside = TorchSharp.torch.is_grad_enabled();
        }), new ExperimentRunOptions { OutputDirectory = tmp.Path });
        Assert.Single(threads.Distinct());
        Assert.False(gradInside, "no_grad still holds after the awaits");
        Assert.True(TorchSharp.torch.is_grad_enabled(), "the caller's thread keeps gradients on");
        Assert.Equal(RunStatus.Completed, RunManifest.Load(tmp.Path).Status);
    }

    [Fact]
    public async Task Failed_run_records_the_error()
    {
        using var tmp = new TempDir();
        await new ExperimentRunner().RunAsync(new Scripted((ctx, ct) => throw new InterpException("the model said no")),
            new ExperimentRunOptions { OutputDirectory = tmp.Path });
        var manifest = RunManifest.Load(tmp.Path);
        Assert.Equal(RunStatus.Failed, manifest.Status);
        Assert.Equal("the model said no", manifest.Error);
    }

    [Theory]
    [InlineData("../escape.parquet")]
    [InlineData("/tmp/abs.parquet")]
    [InlineData("sub/dir.parquet")]
    [InlineData("noextension")]
    public async Task Artefact_names_cannot_escape_the_run_folder(string name)
    {
        using var tmp = new TempDir();
        string runDir = tmp.Sub("run");
        await new ExperimentRunner().RunAsync(new Scripted((ctx, ct) => ctx.WriteTableAsync(name, Table(1), "bad", ct)),
            new ExperimentRunOptions { OutputDirectory = runDir });
        var manifest = RunManifest.Load(runDir);
        Assert.Equal(RunStatus.Failed, manifest.Status);
        Assert.Contains($"artefact name '{name}' must be a plain file name", manifest.Error);
        Assert.False(File.Exists(tmp.File("escape.parquet")));
    }

    [Fact]
    public async Task A_second_run_into_the_same_folder_does_not_overwrite_the_first()
    {
        using var tmp = new TempDir();
        var options = new ExperimentRunOptions { OutputDirectory = tmp.File("run") };
        var first = await new ExperimentRunner().RunAsync(new Scripted((c, t) => Task.CompletedTask), options);
        var second = await new ExperimentRunner().RunAsync(new Scripted((c, t) => Task.CompletedTask), options);
        Assert.NotEqual(first.OutputDirectory, second.OutputDirectory);
        Assert.Equal(RunStatus.Completed, RunManifest.Load(first.OutputDirectory).Status);
    }
}

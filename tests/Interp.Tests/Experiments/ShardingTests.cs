using System.Text.Json.Nodes;
using Interp.Analysis;
using Interp.Experiments;
using Interp.Loading;
using Interp.Results;
using Interp.Tests.Reliability;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Experiments;

/// <summary>
/// Sharded runs (<c>--shard i/n</c> + <c>interp merge</c>) against the single-process run of the same settings: the
/// merged tables equal the single run's row for row (every column but run_id, exactly), for n = 1, 2, 3 and 7; a merge
/// of an incomplete or inconsistent set of shards is refused naming the shard at fault.
/// </summary>
public sealed class ShardingTests
{
    private static Task<(int Code, string Out, string Err)> Cli(params string[] args) => ExperimentScriptTests.RunRaw(args);

    [Fact]
    public void Every_unit_belongs_to_exactly_one_shard_and_the_ranges_ascend()
    {
        for (int units = 1; units <= 30; units++)
            for (int n = 1; n <= 12; n++)
            {
                var owners = new int[units];
                int previousEnd = 0;
                for (int i = 0; i < n; i++)
                {
                    var (start, end) = new ShardSpec(i, n).Range(units);
                    Assert.Equal(previousEnd, start);
                    Assert.True(end - start <= (units + n - 1) / n, $"{units} units, shard {i}/{n}: {end - start} units");
                    for (int u = start; u < end; u++) owners[u]++;
                    previousEnd = end;
                }
                Assert.Equal(units, previousEnd);
                Assert.All(owners, o => Assert.Equal(1, o));
            }
        Assert.Equal(new ShardSpec(2, 7), ShardSpec.Parse("2/7"));
        foreach (var bad in new[] { "3/3", "1", "-1/2", "a/b", "1/0", "0/2/3" })
            Assert.Contains($"'{bad}'", Assert.Throws<InterpException>(() => ShardSpec.Parse(bad)).Message);
    }

    private sealed record Row(int Unit, long Big, float Single, double Value, bool Flag, string Name) : IUnitRow;

    [Fact]
    public async Task Records_round_trip_through_parquet_and_read_back_by_ParquetSharp()
    {
        using var tmp = new TempDir();
        Row[] rows = [new(0, long.MaxValue, 1.5f, Math.PI, true, "zero"), new(3, -7, float.Epsilon, -0.0, false, ""), new(2, 0, -2f, double.MaxValue, true, "ünïcode")];
        string path = tmp.File("rows.parquet");
        await ParquetRecords.ToTable(rows).WriteAsync(path);
        Assert.Equal(rows, await ParquetRecords.ReadAsync<Row>(path));
        var independent = ParquetRead.Columns(path);
        Assert.Equal(["unit", "big", "single", "value", "flag", "name"], independent.Keys);
        Assert.Equal(rows.Select(r => (object)r.Name), independent["name"]);
        Assert.Equal(rows.Select(r => (object)r.Value), independent["value"]);

        // An empty list still has every column; a table of another shape is refused by column name.
        string empty = tmp.File("empty.parquet");
        await ParquetRecords.ToTable(Array.Empty<Row>()).WriteAsync(empty);
        Assert.Empty(await ParquetRecords.ReadAsync<Row>(empty));
        var other = new ParquetTable().Add("unit", new[] { 1 }).Add("value", new[] { "text" });
        await other.WriteAsync(tmp.File("other.parquet"));
        var error = await Assert.ThrowsAsync<InterpException>(() => ParquetRecords.ReadAsync<Row>(tmp.File("other.parquet")));
        Assert.Contains("no column 'big'", error.Message);
    }

    [Fact]
    public void A_chunk_of_a_batch_resamples_as_its_rows_of_the_whole_batch()
    {
        using var loaded = BuiltInModel.Load();
        using var scope = NewDisposeScope();
        using var reference = new AblationReference(loaded.Model, randint(0, loaded.Model.Config.DVocab, [7, 5]), seed: 11);
        var whole = reference.ResampleIndices(12);
        Assert.Equal(whole[4..9], reference.Rows(4).ResampleIndices(5));
        Assert.Equal(whole[9..], reference.Rows(4).Rows(5).ResampleIndices(3));
        using (reference.Rows(3)) { }                                                  // disposing a view frees nothing
        Assert.Equal(whole, reference.ResampleIndices(12));
        Assert.Equal(7, reference.Activation("blocks.0.hook_resid_pre").shape[0]);
    }

    /// <summary>Runs shards 0 … <paramref name="n"/> − 1 of <paramref name="experiment"/> into <paramref name="dir"/>, each of which must complete.</summary>
    private static async Task RunShardsAsync(string experiment, string[] settings, int n, string dir)
    {
        for (int i = 0; i < n; i++)
        {
            var shard = await Cli(["run", experiment, .. settings, "--shard", $"{i}/{n}", "--out", dir]);
            Assert.True(shard.Code == 0, $"shard {i}/{n}: {shard.Err}");
        }
    }

    /// <summary>Runs <paramref name="experiment"/> whole into <c>single</c>, then as n shards merged, for each n; every merged table must equal the single run's.</summary>
    private static async Task AssertShardsMergeToTheSingleRun(string experiment, string[] settings, int[] counts)
    {
        using var tmp = new TempDir();
        string single = tmp.File("single");
        var (code, _, err) = await Cli(["run", experiment, .. settings, "--out", single]);
        Assert.True(code == 0, err);
        foreach (int n in counts)
        {
            string dir = tmp.File($"shards{n}");
            await RunShardsAsync(experiment, settings, n, dir);
            Assert.False(File.Exists(Path.Combine(dir, "manifest.json")), "a shard writes only its own manifest");
            Assert.Empty(Directory.GetFiles(dir, "*.parquet"));
            var merge = await Cli("merge", dir);
            Assert.True(merge.Code == 0, $"merge of {n}: {merge.Err}");
            var manifest = RunManifest.Load(dir);
            ExperimentScriptTests.AssertArtifactsComplete(dir, manifest);
            Assert.True(RunOutputs.AssertSameTables(single, dir) > 0);
            var reference = RunManifest.Load(single);
            Assert.Equal(reference.KeyNumbers.Select(k => (k.Name, k.Value)), manifest.KeyNumbers.Select(k => (k.Name, k.Value)));
            Assert.Equal(reference.Artifacts.Select(a => a.File).Order(), manifest.Artifacts.Select(a => a.File).Order());
        }
    }

    [Fact]
    public Task Ablation_on_repeated_sequences_merged_from_1_2_3_and_7_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("ablation", ["--set", "batch=7", "--set", "half=6", "--set", "unit_size=1"], [1, 2, 3, 7]);

    [Fact]
    public Task Ablation_on_prompts_merged_from_3_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("ablation", ["--model", TestModels.StoriesBin, "--prompts", RepoFiles.Path("experiments/prompts/stories_names.jsonl"), "--set", "unit_size=5"], [3]);

    [Fact]
    public Task Activation_patching_merged_from_1_2_3_and_7_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("activation_patching", ["--set", "batch=7", "--set", "half=5", "--set", "unit_size=1", "--set", "per_position=false"], [1, 2, 3, 7]);

    [Fact]
    public Task Activation_patching_on_prompts_merged_from_3_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("activation_patching", ["--model", TestModels.StoriesBin, "--prompts", RepoFiles.Path("experiments/prompts/stories_names.jsonl"), "--set", "unit_size=5", "--set", "per_position=false"], [3]);

    [Fact]
    public Task Head_attribution_on_prompts_merged_from_1_2_3_and_7_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("head_attribution", ["--model", TestModels.StoriesBin, "--prompts", RepoFiles.Path("experiments/prompts/stories_names.jsonl"), "--set", "unit_size=3"], [1, 2, 3, 7]);

    [Fact]
    public async Task A_merge_of_missing_failed_or_mismatched_shards_is_refused_naming_the_shard()
    {
        using var tmp = new TempDir();
        string dir = tmp.File("run");
        string[] settings = ["--set", "batch=3", "--set", "half=4", "--set", "unit_size=1"];
        await RunShardsAsync("ablation", settings, 3, dir);
        string Manifest(int i) => Path.Combine(dir, ShardFiles.Manifest(i));
        string original = File.ReadAllText(Manifest(1));

        async Task Refused(string expected)
        {
            var (code, _, err) = await Cli("merge", dir);
            Assert.Equal(1, code);
            Assert.Contains(expected, err);
            Assert.False(File.Exists(Path.Combine(dir, "ablation.parquet")), "a refused merge writes no table");
        }
        void Edit(Action<JsonObject> change)
        {
            var json = JsonNode.Parse(original)!.AsObject();
            change(json);
            File.WriteAllText(Manifest(1), json.ToJsonString());
        }

        File.Delete(Manifest(1));
        await Refused("shard 1 of 3 is missing");
        Edit(j => j["settings"]!["half"] = 5);
        await Refused("shard 1 ran with setting half = 5, but shard 0 ran 4");
        Edit(j => j["model"]!["sha256"] = "0123456789abcdef");
        await Refused("shard 1 ran on model");
        Edit(j => j["seed"] = 9);
        await Refused("shard 1 ran with seed 9");
        Edit(j => { j["status"] = "failed"; j["error"] = "out of memory"; });
        await Refused("shard 1 is failed: out of memory");
        Edit(j => j["status"] = "running");
        await Refused("shard 1 is running (or was killed)");
        File.WriteAllText(Manifest(1), original);
        File.Delete(Path.Combine(dir, ShardFiles.Partition("ablation_units", 2)));
        await Refused("shard 2 of 3 is recorded as completed, but its partition shards/ablation_units/shard=2/part.parquet is missing");

        // Re-running the shard replaces its partition; the merge then completes.
        Assert.Equal(0, (await Cli(["run", "ablation", .. settings, "--shard", "2/3", "--out", dir])).Code);
        Assert.Equal(0, (await Cli("merge", dir)).Code);
        Assert.True(File.Exists(Path.Combine(dir, "ablation.parquet")));
    }

    [Fact]
    public async Task DuckDB_reads_the_shards_as_one_Hive_partitioned_table_and_the_merged_table_agrees()
    {
        using var tmp = new TempDir();
        string dir = tmp.File("run");
        await RunShardsAsync("ablation", ["--set", "batch=5", "--set", "half=4", "--set", "unit_size=1"], 3, dir);
        Assert.Equal(0, (await Cli("merge", dir)).Code);

        using var db = new DuckDB.NET.Data.DuckDBConnection("DataSource=:memory:");
        db.Open();
        object?[] Query(string sql)
        {
            using var command = db.CreateCommand();
            command.CommandText = sql;
            using var reader = command.ExecuteReader();
            Assert.True(reader.Read(), sql);
            var row = new object?[reader.FieldCount];
            for (int i = 0; i < row.Length; i++) row[i] = reader.GetValue(i);
            return row;
        }
        string shards = Path.Combine(dir, "shards", "ablation_units", "*", "part.parquet").Replace("'", "''", StringComparison.Ordinal);
        // 5 units over 3 shards: 1, 2, 2 units; 3 kinds × 6 sites (4 heads, 2 attention layers) per unit.
        var all = Query($"SELECT count(*), count(DISTINCT shard), min(unit), max(unit), count(DISTINCT unit) FROM read_parquet('{shards}', hive_partitioning = true)");
        Assert.Equal(new long[] { 90, 3, 0, 4, 5 }, all.Select(v => Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture)));
        var perShard = Query($"SELECT string_agg(n::VARCHAR, ',' ORDER BY shard) FROM (SELECT shard, count(DISTINCT unit) AS n FROM read_parquet('{shards}', hive_partitioning = true) GROUP BY shard)");
        Assert.Equal("1,2,2", perShard[0]);

        // The merged table's zero-ablated mean over all sequences, recomputed by DuckDB from the shards' per-unit rows.
        string merged = Path.Combine(dir, "ablation.parquet").Replace("'", "''", StringComparison.Ordinal);
        var check = Query($"SELECT max(abs(m.metric_ablated - u.mean)) FROM (SELECT row_number() OVER (ORDER BY file_row_number) - 1 AS site, metric_ablated FROM read_parquet('{merged}', file_row_number = true) WHERE ablation = 'zero') m " +
                          $"JOIN (SELECT site, sum(sequences * metric_ablated) / sum(sequences) AS mean FROM read_parquet('{shards}', hive_partitioning = true) WHERE ablation = 'zero' GROUP BY site) u USING (site)");
        Assert.True(Convert.ToDouble(check[0], System.Globalization.CultureInfo.InvariantCulture) < 1e-12, $"merged vs DuckDB's mean of the shards: {check[0]}");
    }

    [LinuxFact]   // SIGKILL
    public async Task A_killed_shard_leaves_no_partial_file_is_refused_by_the_merge_and_a_rerun_completes_it()
    {
        using var tmp = new TempDir();
        string dir = tmp.File("run");
        string[] settings = ["--set", "batch=16", "--set", "half=8", "--set", "unit_size=1"];
        await RunShardsAsync("ablation", settings, 2, dir);
        string partition = Path.Combine(dir, ShardFiles.Partition("ablation_units", 1));
        var complete = ParquetRead.Columns(partition);
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        // Processes started by the launcher `pid` (their environment names it, as the script's watch reads it).
        static int ScriptsOf(int pid)
        {
            byte[] marker = System.Text.Encoding.ASCII.GetBytes($"{Interp.Experiments.Experiment.LauncherVariable}={pid}\0");
            int count = 0;
            foreach (var proc in Directory.GetDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
            {
                try { if (File.ReadAllBytes(Path.Combine(proc, "environ")).AsSpan().IndexOf(marker) >= 0) count++; }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // gone meanwhile, or not ours
            }
            return count;
        }
        System.Diagnostics.Process StartShard()
        {
            var psi = new System.Diagnostics.ProcessStartInfo(dotnet, [Path.Combine(AppContext.BaseDirectory, "Interp.Cli.dll"), "run", "ablation", .. settings, "--shard", "1/2", "--out", dir])
                { RedirectStandardOutput = true, RedirectStandardError = true };
            var p = System.Diagnostics.Process.Start(psi)!;
            p.OutputDataReceived += (_, _) => { };
            p.ErrorDataReceived += (_, _) => { };
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            // The process's start-up (host, script launcher) takes longer than the run itself and varies: the run
            // starts when the shard's manifest says it runs.
            var wait = System.Diagnostics.Stopwatch.StartNew();
            while (ManifestStatus(dir, 1) != RunStatus.Running && !p.HasExited && wait.Elapsed < TimeSpan.FromSeconds(120)) Thread.Sleep(2);
            return p;
        }
        // How long shard 1 runs here, now: from its manifest's "running" to its "completed".
        double seconds;
        using (var p = StartShard())
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            while (ManifestStatus(dir, 1) != RunStatus.Completed && !p.HasExited) Thread.Sleep(2);
            seconds = watch.Elapsed.TotalSeconds;
            Assert.True(p.WaitForExit(60_000));
            Assert.Equal(0, p.ExitCode);
        }
        var random = new Random(20_261_202);
        int killedRunning = 0;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            // Re-run shard 1 and kill it (SIGKILL, the launcher; the script follows it) at a seeded moment of its run.
            using (var p = StartShard())
            {
                Thread.Sleep(TimeSpan.FromSeconds(seconds * (0.05 + 0.7 * random.NextDouble())));
                int launcher = p.Id;
                p.Kill();
                Assert.True(p.WaitForExit(30_000));
                // The script sees its launcher gone (it polls every 50 ms) and stops itself: wait until it has, rather
                // than for a fixed time a loaded machine can overrun (the script then completed under the checks below).
                var gone = System.Diagnostics.Stopwatch.StartNew();
                while (ScriptsOf(launcher) > 0 && gone.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
                Assert.True(ScriptsOf(launcher) == 0, $"the script outlived its killed launcher {launcher} by {gone.Elapsed.TotalSeconds:F1} s");
            }
            // Whatever is under a final name is complete: the partition is the earlier run's or the killed run's, in full.
            var visible = Directory.GetFiles(Path.GetDirectoryName(partition)!).Where(f => !Path.GetFileName(f).StartsWith('.')).ToArray();
            Assert.Equal([partition], visible);
            Assert.Equal(complete["metric_ablated"], ParquetRead.Columns(partition)["metric_ablated"]);
            if (ManifestStatus(dir, 1) != RunStatus.Completed)
            {
                killedRunning++;
                var (code, _, err) = await Cli("merge", dir);
                Assert.Equal(1, code);
                Assert.Contains("shard 1 is running (or was killed)", err);
            }
        }
        Assert.True(killedRunning > 0, $"no kill landed while shard 1 ran (a run takes {seconds:F1} s)");
        await RunShardsAsync("ablation", settings, 2, dir);   // shard 0 again too: a re-run replaces its partition
        Assert.Equal(0, (await Cli("merge", dir)).Code);
        Assert.Equal(RunStatus.Completed, RunManifest.Load(dir).Status);
    }

    private static RunStatus? ManifestStatus(string dir, int shard)
    {
        string path = Path.Combine(dir, ShardFiles.Manifest(shard));
        // The manifest is replaced by a rename, so a read sees one whole version.
        return File.Exists(path) ? System.Text.Json.JsonSerializer.Deserialize<RunManifest>(File.ReadAllText(path), RunManifest.Json)!.Status : null;
    }

    [Fact]
    public async Task Bad_unit_sizes_and_slurm_options_are_refused_naming_the_value()
    {
        using var tmp = new TempDir();
        var (code, _, err) = await Cli("run", "ablation", "--set", "unit_size=0", "--out", tmp.File("zero"));
        Assert.Equal(1, code);
        Assert.Contains("setting 'unit_size' must be at least 1, got 0", err);
        // --print writes the scripts without a cluster: the checks of the options come first.
        (code, _, err) = await Cli("slurm", "submit", "ablation", "--shards", "0", "--out", tmp.File("slurm0"), "--print");
        Assert.Equal(1, code);
        Assert.Contains("--shards 0: a run has at least one shard", err);
        (code, _, err) = await Cli("slurm", "submit", "ablation", "--shards", "2", "--out", tmp.File("slurm1"), "--print", "--sbatch-arg", "partition=gpu");
        Assert.Equal(1, code);
        Assert.Contains("--sbatch-arg 'partition=gpu': expected one sbatch option", err);
        (code, _, err) = await Cli("slurm", "submit", "induction_heads", "--shards", "2", "--out", tmp.File("slurm2"), "--print");
        Assert.Equal(1, code);
        Assert.Contains("experiment induction_heads does not shard", err);
        (code, _, err) = await Cli("slurm", "submit", "ablation", "--shards", "2", "--out", tmp.File("slurm3"), "--print", "--shard", "0/2");
        Assert.Equal(1, code);
        Assert.Contains("--shard is set by interp slurm submit for each task", err);
        (code, _, err) = await Cli("slurm", "status", tmp.Path);
        Assert.Equal(1, code);
        Assert.Contains("it was not submitted with interp slurm submit", err);

        // A well-formed --print: both scripts, the array over every shard, the count written out, the options quoted.
        (code, _, err) = await Cli("slurm", "submit", "ablation", "--shards", "3", "--out", tmp.File("print"), "--print", "--sbatch-arg=--partition=cpu", "--set", "half=it's");
        Assert.True(code == 0, err);
        string array = File.ReadAllText(Path.Combine(tmp.File("print"), "slurm", "array.sbatch"));
        Assert.Contains("#SBATCH --array=0-2", array);
        Assert.Contains("#SBATCH --partition=cpu", array);
        Assert.Contains("--shard \"$SLURM_ARRAY_TASK_ID/3\"", array);
        Assert.Contains("'half=it'\\''s'", array);
        Assert.Contains("merge", File.ReadAllText(Path.Combine(tmp.File("print"), "slurm", "merge.sbatch")));
    }

    [Fact]
    public Task Sae_features_merged_from_1_2_3_and_7_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("sae_features", ["--model", TestModels.Gpt2TinyDir, "--sae", Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1"),
            "--set", "sequences=7", "--set", "context_size=24", "--set", "unit_size=1", "--set", "top_features=4"], [1, 2, 3, 7]);

    [Fact]
    public Task Circuit_discovery_merged_from_1_2_3_and_7_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("circuit_discovery", ["--set", "batch=7", "--set", "half=5", "--set", "unit_size=1", "--set", "steps=3", "--set", "scatter_edges=5"], [1, 2, 3, 7]);

    [Fact]
    public Task Circuit_discovery_on_prompts_merged_from_3_shards_equals_the_single_run() =>
        AssertShardsMergeToTheSingleRun("circuit_discovery", ["--model", TestModels.StoriesBin, "--prompts", RepoFiles.Path("experiments/prompts/stories_names.jsonl"),
            "--set", "unit_size=5", "--set", "steps=3", "--set", "scatter_edges=5"], [3]);

    [Fact]
    public async Task Units_of_one_sequence_give_the_scores_and_metrics_of_the_whole_batch()
    {
        // The merge's aggregates weight each unit by its sequences: scores of units of 1 agree with one unit of 7 (to
        // rounding), as an unweighted or per-shard average would not.
        using var tmp = new TempDir();
        string sae = Path.Combine(SharedData.Root, "saes", "gpt2-tiny-random-res-1");
        foreach (string size in new[] { "1", "7" })
        {
            var circuit = await Cli("run", "circuit_discovery", "--set", "batch=7", "--set", "half=5", "--set", "steps=3", "--set", "scatter_edges=5", "--set", $"unit_size={size}", "--out", tmp.File($"circuit{size}"));
            Assert.True(circuit.Code == 0, circuit.Err);
            var features = await Cli("run", "sae_features", "--model", TestModels.Gpt2TinyDir, "--sae", sae, "--set", "sequences=7", "--set", "context_size=24", "--set", "top_features=4",
                "--set", $"unit_size={size}", "--out", tmp.File($"sae{size}"));
            Assert.True(features.Code == 0, features.Err);
        }
        var one = ParquetRead.Columns(Path.Combine(tmp.File("circuit1"), "edge_attribution.parquet"))["score"].Select(v => (double)v!).ToArray();
        var whole = ParquetRead.Columns(Path.Combine(tmp.File("circuit7"), "edge_attribution.parquet"))["score"].Select(v => (double)v!).ToArray();
        double scale = whole.Max(Math.Abs);
        Assert.Equal(whole.Length, one.Length);
        for (int e = 0; e < whole.Length; e++) Assert.True(Math.Abs(one[e] - whole[e]) <= 1e-4 * scale, $"edge row {e}: {one[e]} in units of 1, {whole[e]} in one unit");
        var evalOne = ParquetRead.Columns(Path.Combine(tmp.File("sae1"), "sae_eval.parquet"));
        var evalWhole = ParquetRead.Columns(Path.Combine(tmp.File("sae7"), "sae_eval.parquet"));
        Assert.Equal((long)evalWhole["positions"][0]!, (long)evalOne["positions"][0]!);
        foreach (string metric in new[] { "l0", "explained_variance", "explained_variance_legacy", "mse", "ce_loss_score", "kl_div_score", "dead_fraction" })
            Assert.True(Math.Abs((double)evalOne[metric][0]! - (double)evalWhole[metric][0]!) <= 1e-6 * Math.Max(1, Math.Abs((double)evalWhole[metric][0]!)),
                $"{metric}: {evalOne[metric][0]} in units of 1, {evalWhole[metric][0]} in one unit");
    }

    [Fact]
    public async Task Experiments_that_do_not_shard_say_so_and_shards_need_an_output_folder()
    {
        var (code, _, err) = await Cli("run", "induction_heads", "--shard", "0/2", "--out", Path.Combine(Path.GetTempPath(), "interp-never-written"));
        Assert.Equal(1, code);
        Assert.Contains("experiment induction_heads does not shard", err);
        (code, _, err) = await Cli("run", "ablation", "--shard", "0/2");
        Assert.Equal(1, code);
        Assert.Contains("a shard run needs --out DIR", err);
        (code, _, err) = await Cli("run", "ablation", "--shard", "2/2", "--out", Path.Combine(Path.GetTempPath(), "interp-never-written"));
        Assert.Equal(1, code);
        Assert.Contains("--shard '2/2'", err);
        using var tmp = new TempDir();
        (code, _, err) = await Cli("run", "head_attribution", "--shard", "0/2", "--out", tmp.File("attribution"));
        Assert.Equal(1, code);
        Assert.Contains("head_attribution shards with --prompts only", err);
        (code, _, err) = await Cli("run", "sae_features", "--shard", "0/2", "--out", tmp.File("sae"));
        Assert.Equal(1, code);
        Assert.Contains("every shard would train an SAE of its own", err);
        (code, _, err) = await Cli("merge", tmp.Sub("empty"));
        Assert.Equal(1, code);
        Assert.Contains("holds no shard manifests", err);
    }
}

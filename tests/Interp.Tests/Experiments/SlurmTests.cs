using Interp.Experiments;
using Interp.Tests.Reliability;
using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>
/// A sharded run on a real Slurm cluster (the shared one-node cluster <c>.ci/run</c> starts): <c>interp slurm submit
/// --wait</c> runs the job array and the merge; a shard that fails is named with its log, the merge is cancelled, and
/// <c>interp slurm resubmit</c> re-runs only that shard and the merge, whose table equals the single-process run's.
/// </summary>
public sealed class SlurmTests
{
    [SlurmFact]
    public async Task A_failed_shard_is_named_and_resubmit_completes_a_merge_equal_to_the_single_run()
    {
        using var tmp = new TempDir();
        string[] run = ["--model", TestModels.StoriesBin, "--prompts", RepoFiles.Path("experiments/prompts/stories_names.jsonl"), "--set", "unit_size=4"];
        string single = tmp.File("single"), dir = tmp.File("slurm");
        var (code, _, err) = await ExperimentScriptTests.RunRaw(["run", "ablation", .. run, "--out", single]);
        Assert.True(code == 0, err);

        // Shard 1 cannot write its partition: a file stands where its folder goes.
        string obstacle = Path.Combine(dir, ShardFiles.Partition("ablation_units", 1).Replace("/part.parquet", "", StringComparison.Ordinal));
        Directory.CreateDirectory(Path.GetDirectoryName(obstacle)!);
        File.WriteAllText(obstacle, "not a folder");
        var submitted = await ExperimentScriptTests.RunRaw(["slurm", "submit", "ablation", "--shards", "3", "--out", dir, "--wait", .. run]);
        Assert.Equal(1, submitted.Code);
        Assert.Contains("shard 1 of 3 failed", submitted.Err);
        Assert.Contains("shard 1 (Slurm FAILED; failed: cannot create the folder for Parquet table", submitted.Err);
        Assert.DoesNotContain("shard 0 (", submitted.Err);
        Assert.False(File.Exists(Path.Combine(dir, "ablation.parquet")), "the merge must not run after a failed shard");
        Assert.Contains("#SBATCH --array=0-2", File.ReadAllText(Path.Combine(dir, "slurm", "array.sbatch")));
        Assert.Contains("--dependency=afterok:", File.ReadAllText(Path.Combine(dir, "slurm", "merge.sbatch")));

        var status = await ExperimentScriptTests.RunRaw("slurm", "status", dir);
        Assert.Equal(0, status.Code);
        Assert.Matches(@"\n\s+1  failed ", status.Out);
        Assert.Matches(@"\n\s+2  completed ", status.Out);

        File.Delete(obstacle);
        var resubmitted = await ExperimentScriptTests.RunRaw("slurm", "resubmit", dir, "--wait");
        Assert.True(resubmitted.Code == 0, resubmitted.Err + resubmitted.Out);
        Assert.Contains("resubmitted shard 1 of 3", resubmitted.Out);
        var manifest = RunManifest.Load(dir);
        ExperimentScriptTests.AssertArtifactsComplete(dir, manifest);
        Assert.True(RunOutputs.AssertSameTables(single, dir) > 0);
    }
}

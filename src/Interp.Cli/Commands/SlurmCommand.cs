using System.CommandLine;
using System.Globalization;
using Interp.Cli.Slurm;
using Interp.Experiments;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Interp.Cli.Commands;

/// <summary>
/// <c>interp slurm submit NAME --shards N --out OUT [--wait] [--print] [--sbatch-arg ARG]… [run options]</c>,
/// <c>interp slurm status OUT</c>, <c>interp slurm resubmit OUT [--wait]</c>: a sharded run as a Slurm job array
/// (task i runs <c>interp run NAME --shard i/N</c>) and a merge job that runs after the array succeeds. No scheduler of
/// our own: Slurm runs the tasks, the shards' manifests (<c>OUT/shards/manifest-&lt;i&gt;.json</c>) say what finished.
/// </summary>
public sealed class SlurmCommand(CliConsole console, IOptions<RunDefaults> options, ILogger<SlurmCommand> logger)
    : VerbBase(console, options, logger)
{
    /// <summary>How often <c>--wait</c> asks Slurm.</summary>
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(1);

    /// <inheritdoc />
    public override Command Build()
    {
        var name = new Argument<string>("experiment") { Description = "A shardable experiment (interp list marks them [shards]) or a script path" };
        var shards = new Option<int>("--shards") { Description = "Number of shards (array tasks)", Required = true };
        var outDir = new Option<string>("--out", "-o") { Description = "The run's folder, on storage every node sees", Required = true };
        var wait = new Option<bool>("--wait") { Description = "Block until the merge ends; exit 1 naming the failed shards" };
        var print = new Option<bool>("--print") { Description = "Write the batch scripts and print how to submit them, without submitting" };
        var sbatch = new Option<string[]>("--sbatch-arg") { Description = "An sbatch option for both jobs, e.g. --sbatch-arg=--partition=gpu (repeatable)" };
        var submit = new Command("submit", "Submit a sharded run: an array of N shards and the merge after them. Other options go to every shard's interp run " +
            "(--model, --prompts, --seed, --set key=value, …)") { name, shards, outDir, wait, print, sbatch };
        submit.TreatUnmatchedTokensAsErrors = false;
        submit.SetAction((parse, ct) => Guard(() => SubmitAsync(parse.GetValue(name)!, parse.GetValue(shards), parse.GetValue(outDir)!, parse.GetValue(wait),
            parse.GetValue(print), parse.GetValue(sbatch) ?? [], [.. parse.UnmatchedTokens], ct)));

        var statusDir = new Argument<string>("out") { Description = "The run's folder" };
        var status = new Command("status", "Show each shard's state and the merge's") { statusDir };
        status.SetAction((parse, ct) => Guard(() => Task.FromResult(Status(Path.GetFullPath(parse.GetValue(statusDir)!)))));

        var resubmitDir = new Argument<string>("out") { Description = "The run's folder" };
        var resubmitWait = new Option<bool>("--wait") { Description = "Block until the merge ends" };
        var resubmit = new Command("resubmit", "Re-run only the failed or missing shards, then the merge") { resubmitDir, resubmitWait };
        resubmit.SetAction((parse, ct) => Guard(() => ResubmitAsync(Path.GetFullPath(parse.GetValue(resubmitDir)!), parse.GetValue(resubmitWait), ct)));

        return new Command("slurm", "Run a sharded experiment on a Slurm cluster (job array + merge)") { submit, status, resubmit };
    }

    private async Task<int> SubmitAsync(string experiment, int count, string outDir, bool wait, bool print, string[] sbatchArgs, string[] runArgs, CancellationToken ct)
    {
        if (count < 1) throw new InterpException($"--shards {count}: a run has at least one shard");
        foreach (var reserved in new[] { "--shard", "--merge", "--out", "-o" })
            if (runArgs.Contains(reserved)) throw new InterpException($"{reserved} is set by interp slurm submit for each task; leave it out of the run options");
        var script = ExperimentCatalog.Find(experiment);
        if (!script.Shards)
            throw new InterpException($"experiment {script.Name} does not shard (interp list marks those that do [shards])");
        outDir = Path.GetFullPath(outDir);
        if (ShardSet.Read(outDir).Count > 0)
            throw new InterpException($"{outDir} already holds shards: interp slurm resubmit {outDir} re-runs the failed ones; a new run needs another --out");
        // Built once here, so that the tasks find the program up to date instead of building it side by side.
        if (await ScriptLauncher.BuildAsync(script, Console.Error, ct) is null) return 1;
        string name = ExperimentCatalog.All().Any(e => e.Path == script.Path) ? script.Name : script.Path;
        Directory.CreateDirectory(Path.Combine(SlurmScripts.Folder(outDir), "logs"));
        string work = Environment.CurrentDirectory;
        SlurmScripts.WriteAtomically(SlurmScripts.ArrayScript(outDir), SlurmScripts.Array(name, count, outDir, runArgs, sbatchArgs, work));
        if (print)
        {
            SlurmScripts.WriteAtomically(SlurmScripts.MergeScript(outDir), SlurmScripts.Merge(name, outDir, sbatchArgs, work, null));
            await Console.Out.WriteLineAsync($"wrote {SlurmScripts.ArrayScript(outDir)} and {SlurmScripts.MergeScript(outDir)}; submit with:\n" +
                $"  ARRAY=$(sbatch --parsable {SlurmScripts.ArrayScript(outDir)})\n  sbatch --dependency=afterok:$ARRAY {SlurmScripts.MergeScript(outDir)}");
            return 0;
        }
        string arrayJob = SlurmClient.Submit(SlurmScripts.ArrayScript(outDir));
        SlurmScripts.WriteAtomically(SlurmScripts.MergeScript(outDir), SlurmScripts.Merge(name, outDir, sbatchArgs, work, arrayJob));
        string mergeJob = SlurmClient.Submit(SlurmScripts.MergeScript(outDir));
        var submission = new SlurmSubmission(arrayJob, Enumerable.Range(0, count).ToArray(), mergeJob, DateTimeOffset.UtcNow);
        var jobs = new SlurmJobsFile(name, count, [submission]);
        jobs.Save(outDir);
        await Console.Out.WriteLineAsync($"submitted array job {arrayJob} ({count} shards of {script.Name}) and merge job {mergeJob} (after it); logs in {Path.Combine(SlurmScripts.Folder(outDir), "logs")}");
        return wait ? await WaitAsync(outDir, jobs, submission, ct) : 0;
    }

    private async Task<int> ResubmitAsync(string outDir, bool wait, CancellationToken ct)
    {
        var jobs = SlurmJobsFile.Load(outDir);
        var last = jobs.Submissions[^1];
        var active = SlurmClient.ArrayStates(last.ArrayJob).Where(kv => !SlurmClient.IsEnded(kv.Value)).Select(kv => kv.Key).Order().ToArray();
        if (active.Length > 0)
            throw new InterpException($"shard{(active.Length > 1 ? "s" : "")} {string.Join(", ", active)} of job {last.ArrayJob} {(active.Length > 1 ? "are" : "is")} still pending or running: wait for them (interp slurm status {outDir}) or scancel {last.ArrayJob}");
        SlurmClient.Cancel(last.MergeJob);   // a merge still waiting on a failed array would never run
        var manifests = ShardSet.Read(outDir);
        var failed = Enumerable.Range(0, jobs.Count).Where(i => !manifests.TryGetValue(i, out var m) || m.Status != RunStatus.Completed).ToArray();
        bool merged = File.Exists(Path.Combine(outDir, "manifest.json")) && RunManifest.Load(outDir) is { Status: RunStatus.Completed, Shard: null };
        if (failed.Length == 0 && merged)
        {
            await Console.Out.WriteLineAsync($"every shard of {outDir} completed and the merge too: nothing to resubmit");
            return 0;
        }
        string arrayJob = "";
        if (failed.Length > 0)
            arrayJob = SlurmClient.Submit(SlurmScripts.ArrayScript(outDir), $"--array={string.Join(',', failed)}");
        var mergeOptions = arrayJob.Length > 0 ? new[] { $"--dependency=afterok:{arrayJob}" } : [];
        string mergeJob = SlurmClient.Submit(SlurmScripts.MergeScript(outDir), mergeOptions);
        var submission = new SlurmSubmission(arrayJob, failed, mergeJob, DateTimeOffset.UtcNow);
        jobs.Submissions.Add(submission);
        jobs.Save(outDir);
        await Console.Out.WriteLineAsync(failed.Length > 0
            ? $"resubmitted shard{(failed.Length > 1 ? "s" : "")} {string.Join(", ", failed)} of {jobs.Count} as array job {arrayJob}, and merge job {mergeJob} after {(failed.Length > 1 ? "them" : "it")}"
            : $"every shard completed; resubmitted the merge as job {mergeJob}");
        return wait ? await WaitAsync(outDir, jobs, submission, ct) : 0;
    }

    /// <summary>Until the submission's shards and merge end; 0 when the merge completed, else 1 naming the failed shards with their logs' last lines.</summary>
    private async Task<int> WaitAsync(string outDir, SlurmJobsFile jobs, SlurmSubmission submission, CancellationToken ct)
    {
        while (true)
        {
            var states = SlurmClient.ArrayStates(submission.ArrayJob);
            if (submission.Shards.Any(i => states.TryGetValue(i, out var s) && !SlurmClient.IsEnded(s)))
            {
                await Task.Delay(Poll, ct);
                continue;
            }
            // The array has ended: the shards' own manifests say which completed.
            var manifests = ShardSet.Read(outDir);
            var failed = submission.Shards.Where(i => !manifests.TryGetValue(i, out var m) || m.Status != RunStatus.Completed).ToArray();
            if (failed.Length > 0)
            {
                SlurmClient.Cancel(submission.MergeJob);
                await Console.Error.WriteLineAsync($"error: shard{(failed.Length > 1 ? "s" : "")} {string.Join(", ", failed)} of {jobs.Count} failed; the merge was cancelled. Fix the cause, then: interp slurm resubmit {outDir}");
                foreach (int i in failed)
                {
                    string slurm = states.TryGetValue(i, out var s) ? s : "no longer listed";
                    string recorded = manifests.TryGetValue(i, out var m) ? $"{m.Status.ToString().ToLowerInvariant()}{(m.Error is { } e ? $": {e}" : "")}" : "no manifest (it never started)";
                    await Console.Error.WriteLineAsync($"  shard {i} (Slurm {slurm}; {recorded}); last lines of {SlurmScripts.ShardLog(outDir, i)}:\n{Tail(SlurmScripts.ShardLog(outDir, i))}");
                }
                return 1;
            }
            string? merge = SlurmClient.State(submission.MergeJob);
            if (merge is not null && !SlurmClient.IsEnded(merge))
            {
                await Task.Delay(Poll, ct);
                continue;
            }
            bool done = File.Exists(Path.Combine(outDir, "manifest.json")) && RunManifest.Load(outDir).Status == RunStatus.Completed;
            if (done)
            {
                await Console.Out.WriteLineAsync($"merged {jobs.Count} shards into {outDir} (merge job {submission.MergeJob} {merge ?? "ended"})");
                return 0;
            }
            await Console.Error.WriteLineAsync($"error: the merge (job {submission.MergeJob}, Slurm {merge ?? "no longer listed"}) did not complete; last lines of {SlurmScripts.MergeLog(outDir)}:\n{Tail(SlurmScripts.MergeLog(outDir))}");
            return 1;
        }
    }

    private int Status(string outDir)
    {
        var jobs = SlurmJobsFile.Load(outDir);
        var manifests = ShardSet.Read(outDir);
        // The newest submission that ran a shard tells its Slurm state.
        var slurm = new Dictionary<int, (string Job, string State)>();
        foreach (var s in jobs.Submissions)
        {
            var states = SlurmClient.ArrayStates(s.ArrayJob);
            foreach (int i in s.Shards) slurm[i] = (s.ArrayJob, states.TryGetValue(i, out var state) ? state : "not listed");
        }
        var o = Console.Out;
        o.WriteLine($"{jobs.Experiment}: {jobs.Count} shards in {outDir}");
        o.WriteLine($"{"shard",5}  {"status",-10} {"slurm",-24} {"units",-12} {"rows",8}  ");
        foreach (int i in Enumerable.Range(0, jobs.Count))
        {
            manifests.TryGetValue(i, out var m);
            string status = m is null ? "missing" : m.Status.ToString().ToLowerInvariant();
            string units = m?.Shard is { Done.Length: > 0 } d ? $"{d.Done[0]}…{d.Done[^1]}" : m?.Shard is not null ? "none" : "";
            string job = slurm.TryGetValue(i, out var sj) ? $"{sj.Job}_{i} {sj.State}" : "";
            o.WriteLine($"{i,5}  {status,-10} {job,-24} {units,-12} {(m?.Shard?.Rows ?? 0).ToString("N0", CultureInfo.InvariantCulture),8}  {(m?.Error is { } e ? e : "")}");
        }
        var last = jobs.Submissions[^1];
        string mergeState = File.Exists(Path.Combine(outDir, "manifest.json")) ? RunManifest.Load(outDir).Status.ToString().ToLowerInvariant() : "not run";
        o.WriteLine($"merge: {mergeState} (job {last.MergeJob}: {SlurmClient.State(last.MergeJob) ?? "not listed"})");
        return 0;
    }

    private static string Tail(string path, int lines = 8)
    {
        if (!File.Exists(path)) return "    (no log)";
        var all = File.ReadAllLines(path);
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)).Select(l => "    " + l));
    }
}

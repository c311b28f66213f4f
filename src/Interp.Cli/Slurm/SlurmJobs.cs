using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Interp.Experiments;

namespace Interp.Cli.Slurm;

/// <summary>One submission of a sharded run: the array job (its shard indices) and the merge job that depends on it.</summary>
/// <param name="ArrayJob">The array job's id ("" when no shard was submitted: a resubmit of the merge alone).</param>
/// <param name="Shards">The shard indices the array runs.</param>
/// <param name="MergeJob">The merge job's id.</param>
/// <param name="Submitted">When (UTC).</param>
internal sealed record SlurmSubmission(string ArrayJob, int[] Shards, string MergeJob, DateTimeOffset Submitted);

/// <summary><c>OUT/slurm/jobs.json</c>: the run's experiment, shard count and every submission, newest last.</summary>
internal sealed record SlurmJobsFile(string Experiment, int Count, List<SlurmSubmission> Submissions)
{
    public const string Name = "jobs.json";

    public static string PathIn(string outDir) => System.IO.Path.Combine(outDir, "slurm", Name);

    public void Save(string outDir) => SlurmScripts.WriteAtomically(PathIn(outDir), JsonSerializer.Serialize(this, RunManifest.Json));

    public static SlurmJobsFile Load(string outDir)
    {
        string path = PathIn(outDir);
        if (!File.Exists(path))
            throw new InterpException($"{outDir} has no {System.IO.Path.Combine("slurm", Name)}: it was not submitted with interp slurm submit");
        try { return JsonSerializer.Deserialize<SlurmJobsFile>(File.ReadAllText(path), RunManifest.Json) ?? throw new InterpException($"{path} is empty"); }
        catch (JsonException ex) { throw new InterpException($"{path} is not valid JSON: {ex.Message}", ex); }
    }
}

/// <summary>
/// The two batch scripts of a sharded run on Slurm: <c>array.sbatch</c> (<c>#SBATCH --array=0-(n−1)</c>; task i runs
/// <c>interp run NAME --shard i/n</c>) and <c>merge.sbatch</c> (<c>interp merge OUT</c>, after the array succeeds).
/// </summary>
internal static class SlurmScripts
{
    public static string Folder(string outDir) => Path.Combine(outDir, "slurm");
    public static string ArrayScript(string outDir) => Path.Combine(Folder(outDir), "array.sbatch");
    public static string MergeScript(string outDir) => Path.Combine(Folder(outDir), "merge.sbatch");
    public static string ShardLog(string outDir, int shard) => Log(outDir, $"shard-{shard.ToString(CultureInfo.InvariantCulture)}.log");
    public static string MergeLog(string outDir) => Log(outDir, "merge.log");
    private static string Log(string outDir, string file) => Path.Combine(Folder(outDir), "logs", file);

    /// <summary>How a job starts this program: the dotnet host and the CLI's assembly (every task runs the same build).</summary>
    public static string[] Interp()
    {
        string dll = typeof(SlurmScripts).Assembly.Location;
        string host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h) ? h
            : Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        return [host, dll];
    }

    /// <summary>The array script: shard <c>$SLURM_ARRAY_TASK_ID</c> of <paramref name="count"/>, with the run's options.</summary>
    public static string Array(string experiment, int count, string outDir, IReadOnlyList<string> runArgs, IReadOnlyList<string> sbatchArgs, string workDir)
    {
        var text = Header($"interp-{experiment}", Log(outDir, "shard-%a.log"), workDir, sbatchArgs,
            $"--array=0-{(count - 1).ToString(CultureInfo.InvariantCulture)}");
        text.AppendLine(CultureInfo.InvariantCulture, $"# Shard $SLURM_ARRAY_TASK_ID of {count} of {experiment}, written by interp slurm submit.");
        text.AppendLine(CultureInfo.InvariantCulture, $"# The count is written out, not $SLURM_ARRAY_TASK_COUNT: interp slurm resubmit runs this script again as an array of the failed shards only.");
        text.AppendLine("set -euo pipefail");
        text.AppendLine("export INTERP_Interp__Threads=\"${SLURM_CPUS_PER_TASK:-$(nproc)}\"   # torch threads = the task's CPUs");
        text.AppendLine(CultureInfo.InvariantCulture,
            $"exec {Join(Interp())} run {Quote(experiment)} --shard \"$SLURM_ARRAY_TASK_ID/{count}\" --out {Quote(outDir)}{(runArgs.Count > 0 ? " " + Join(runArgs) : "")}");
        return text.ToString();
    }

    /// <summary>The merge script; <paramref name="dependency"/> (the array job) goes in as <c>--dependency=afterok:ID</c> when known.</summary>
    public static string Merge(string experiment, string outDir, IReadOnlyList<string> sbatchArgs, string workDir, string? dependency)
    {
        var text = Header($"interp-{experiment}-merge", MergeLog(outDir), workDir, sbatchArgs, dependency is null ? null : $"--dependency=afterok:{dependency}");
        if (dependency is null) text.AppendLine("# Submit after the array: sbatch --dependency=afterok:<array job id> merge.sbatch");
        text.AppendLine("set -euo pipefail");
        text.AppendLine(CultureInfo.InvariantCulture, $"exec {Join(Interp())} merge {Quote(outDir)}");
        return text.ToString();
    }

    private static StringBuilder Header(string name, string log, string workDir, IReadOnlyList<string> sbatchArgs, string? extra)
    {
        var text = new StringBuilder("#!/bin/bash\n");
        text.AppendLine(CultureInfo.InvariantCulture, $"#SBATCH --job-name={name}");
        if (extra is not null) text.AppendLine(CultureInfo.InvariantCulture, $"#SBATCH {extra}");
        text.AppendLine(CultureInfo.InvariantCulture, $"#SBATCH --output={log}");
        text.AppendLine(CultureInfo.InvariantCulture, $"#SBATCH --chdir={workDir}");
        foreach (var arg in sbatchArgs)
        {
            if (arg.Contains('\n', StringComparison.Ordinal) || !arg.StartsWith('-'))
                throw new InterpException($"--sbatch-arg '{arg}': expected one sbatch option such as --partition=gpu");
            text.AppendLine(CultureInfo.InvariantCulture, $"#SBATCH {arg}");
        }
        return text;
    }

    /// <summary>Writes <paramref name="text"/> to <paramref name="path"/> atomically (never half a script), a failure named.</summary>
    public static void WriteAtomically(string path, string text)
    {
        try { global::Interp.Loading.AtomicFile.WriteAllText(path, text); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InterpException($"cannot write {path}: {ex.Message}", ex);
        }
    }

    private static string Join(IEnumerable<string> args) => string.Join(' ', args.Select(Quote));

    /// <summary>A word for bash: single-quoted unless plainly safe.</summary>
    internal static string Quote(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c)) ? word : "'" + word.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}

/// <summary>The Slurm commands: sbatch, squeue, scancel.</summary>
internal static class SlurmClient
{
    /// <summary>States a job or array task ends in.</summary>
    private static readonly HashSet<string> Ended = new(StringComparer.Ordinal)
        { "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED" };

    public static bool IsEnded(string state) => Ended.Contains(state.Split(' ')[0]);

    /// <summary>Submits <paramref name="script"/>; returns the job id.</summary>
    public static string Submit(string script, params string[] options)
    {
        var (code, output, error) = Run("sbatch", ["--parsable", .. options, script]);
        if (code != 0) throw new InterpException($"sbatch {string.Join(' ', options)} {script} failed (exit {code}): {error.Trim()}{output.Trim()}");
        string id = output.Trim().Split(';')[0];
        return id.Length > 0 && id.All(char.IsAsciiDigit) ? id : throw new InterpException($"sbatch answered '{output.Trim()}', not a job id");
    }

    /// <summary>The state of each task of array job <paramref name="job"/> Slurm still knows (finished ones for MinJobAge), by task index.</summary>
    public static Dictionary<int, string> ArrayStates(string job)
    {
        var states = new Dictionary<int, string>();
        if (job.Length == 0) return states;
        var (code, output, _) = Run("squeue", ["-h", "-r", "-t", "all", "-j", job, "-o", "%K %T"]);
        if (code != 0) return states;   // an id Slurm has forgotten: the shards' manifests say the rest
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = line.Split(' ', 2);
            if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int task)) states[task] = parts[1];
        }
        return states;
    }

    /// <summary>The state of job <paramref name="job"/>, or null when Slurm no longer knows it.</summary>
    public static string? State(string job)
    {
        var (code, output, _) = Run("squeue", ["-h", "-t", "all", "-j", job, "-o", "%T"]);
        string state = output.Trim();
        return code == 0 && state.Length > 0 ? state.Split('\n')[0].Trim() : null;
    }

    public static void Cancel(string job)
    {
        if (job.Length > 0) Run("scancel", [job]);
    }

    /// <summary>Whether <c>sbatch</c> can be started.</summary>
    public static bool Available()
    {
        try { return Run("sbatch", ["--version"]).Code == 0; }
        catch (InterpException) { return false; }
    }

    private static (int Code, string Output, string Error) Run(string file, string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi) ?? throw new InterpException($"could not start {file}");
            var output = p.StandardOutput.ReadToEndAsync();
            var error = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
            {
                p.Kill(entireProcessTree: true);
                throw new InterpException($"{file} {string.Join(' ', args)} did not answer within 60 s: is slurmctld up?");
            }
            return (p.ExitCode, output.Result, error.Result);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InterpException($"cannot run {file} ({ex.Message}): is Slurm installed here? (--print writes the scripts without submitting)", ex);
        }
    }
}

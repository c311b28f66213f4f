using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Interp.Experiments;

/// <summary>
/// Shard <see cref="Index"/> of <see cref="Count"/> (<c>--shard i/n</c>): the experiment's work units are split into
/// <see cref="Count"/> contiguous ranges by a rule that depends only on the number of units and <see cref="Count"/>,
/// so that every unit is done by exactly one shard whatever machine or moment runs it.
/// </summary>
public readonly record struct ShardSpec(int Index, int Count)
{
    /// <summary>Parses <c>i/n</c> (0 ≤ i &lt; n).</summary>
    /// <exception cref="InterpException">The text is not of that form.</exception>
    public static ShardSpec Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int i)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 && i < n)
            return new ShardSpec(i, n);
        throw new InterpException($"--shard '{text}': expected i/n with 0 ≤ i < n (e.g. 0/4; Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT, Kubernetes: $(JOB_COMPLETION_INDEX)/N)");
    }

    /// <summary>The units [Start, End) of this shard out of <paramref name="units"/>: ⌊i·U/n⌋ … ⌊(i+1)·U/n⌋.</summary>
    public (int Start, int End) Range(int units) => ((int)((long)Index * units / Count), (int)((long)(Index + 1) * units / Count));

    /// <inheritdoc />
    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>A work unit that is a chunk of an experiment's inputs: unit <see cref="Index"/> holds items <see cref="Start"/> … <see cref="Start"/> + <see cref="Count"/> − 1.</summary>
public readonly record struct WorkUnit(int Index, int Start, int Count);

/// <summary>A per-unit row of a sharded experiment: the unit it came from, by which the merge orders and checks rows.</summary>
public interface IUnitRow
{
    /// <summary>The work unit (0 … units − 1) the row was computed in.</summary>
    int Unit { get; }
}

/// <summary>What a shard did, in its manifest (<c>shards/manifest-&lt;i&gt;.json</c>).</summary>
/// <param name="Index">The shard's index i.</param>
/// <param name="Count">The number of shards n.</param>
/// <param name="Units">The experiment's number of work units (from its settings).</param>
/// <param name="Done">The units this shard did (its range), once it has started them.</param>
/// <param name="Table">The per-unit table it wrote (<c>shards/&lt;table&gt;/shard=&lt;i&gt;/part.parquet</c>), once written.</param>
/// <param name="Rows">That table's rows.</param>
public sealed record ShardInfo(int Index, int Count, int Units, int[] Done, string? Table = null, long Rows = 0);

/// <summary>
/// The layout of a sharded run's folder: <c>shards/manifest-&lt;i&gt;.json</c> per shard and the Hive-partitioned per-unit
/// table <c>shards/&lt;table&gt;/shard=&lt;i&gt;/part.parquet</c>, which DuckDB, Spark and pyarrow read as one table with a
/// <c>shard</c> column.
/// </summary>
public static class ShardFiles
{
    /// <summary>The folder of the shards' files.</summary>
    public const string Folder = "shards";

    /// <summary>Shard <paramref name="index"/>'s manifest, relative to the run folder.</summary>
    public static string Manifest(int index) => $"{Folder}/manifest-{index.ToString(CultureInfo.InvariantCulture)}.json";

    /// <summary>Shard <paramref name="index"/>'s partition of <paramref name="table"/>, relative to the run folder.</summary>
    public static string Partition(string table, int index) => $"{Folder}/{table}/shard={index.ToString(CultureInfo.InvariantCulture)}/part.parquet";
}

/// <summary>
/// The shards of one run, read from a folder's <c>shards/manifest-*.json</c> and checked against one another: all n
/// present and completed, the same experiment, settings, seed, model (by hash) and number of units.
/// </summary>
public sealed class ShardSet
{
    private ShardSet(string directory, IReadOnlyList<RunManifest> shards) => (Directory, Shards) = (directory, shards);

    /// <summary>The run folder.</summary>
    public string Directory { get; }
    /// <summary>The shards' manifests, by index.</summary>
    public IReadOnlyList<RunManifest> Shards { get; }
    /// <summary>Shard 0's manifest: the settings, seed and options every shard shares.</summary>
    public RunManifest First => Shards[0];
    /// <summary>n.</summary>
    public int Count => Shards.Count;

    /// <summary>The manifests present in <paramref name="directory"/>, by index, unchecked (for status displays).</summary>
    public static SortedDictionary<int, RunManifest> Read(string directory)
    {
        string folder = Path.Combine(directory, ShardFiles.Folder);
        var found = new SortedDictionary<int, RunManifest>();
        if (!System.IO.Directory.Exists(folder)) return found;
        foreach (var file in System.IO.Directory.EnumerateFiles(folder, "manifest-*.json"))
        {
            string stem = Path.GetFileNameWithoutExtension(file)["manifest-".Length..];
            if (!int.TryParse(stem, NumberStyles.None, CultureInfo.InvariantCulture, out int index)) continue;
            RunManifest? manifest;
            try { manifest = JsonSerializer.Deserialize<RunManifest>(File.ReadAllText(file), RunManifest.Json); }
            catch (JsonException ex) { throw new InterpException($"shard manifest {file} is not valid JSON: {ex.Message}", ex); }
            if (manifest?.Shard is null || manifest.Shard.Index != index)
                throw new InterpException($"{file} is not the manifest of shard {index} (it names {(manifest?.Shard is null ? "no shard" : $"shard {manifest.Shard.Index}")})");
            found[index] = manifest;
        }
        return found;
    }

    /// <summary>The manifest of the lowest-numbered shard present in <paramref name="directory"/> (which experiment it is, unchecked).</summary>
    /// <exception cref="InterpException">The folder holds no shard manifest.</exception>
    public static RunManifest Any(string directory, SortedDictionary<int, RunManifest>? found = null)
    {
        found ??= Read(directory);
        return found.Count > 0 ? found.First().Value
            : throw new InterpException($"{directory} holds no shard manifests ({ShardFiles.Folder}/manifest-<i>.json): run the shards first (interp run NAME --shard i/n --out {directory})");
    }

    /// <summary>Reads and checks the shards of <paramref name="directory"/>.</summary>
    /// <exception cref="InterpException">No shards; shards missing, not completed, or of different experiments, settings, seeds, models or unit counts — each named.</exception>
    public static ShardSet Load(string directory)
    {
        var found = Read(directory);
        var first = Any(directory, found);
        int n = first.Shard!.Count;
        var other = found.Where(f => f.Value.Shard!.Count != n).Select(f => $"shard {f.Key} says {f.Value.Shard!.Count}").ToArray();
        if (other.Length > 0)
            throw new InterpException($"{directory}: the shards disagree on their number: shard {found.First().Key} is one of {n}, but {string.Join(", ", other)}");
        var missing = Enumerable.Range(0, n).Where(i => !found.ContainsKey(i)).ToArray();
        if (missing.Length > 0)
            throw new InterpException($"{directory}: shard{(missing.Length > 1 ? "s" : "")} {string.Join(", ", missing)} of {n} {(missing.Length > 1 ? "are" : "is")} missing (no {string.Join(", ", missing.Select(ShardFiles.Manifest))}): run {(missing.Length > 1 ? "them" : "it")} (interp run {first.Experiment} --shard {missing[0]}/{n} --out {directory}, or interp slurm resubmit {directory})");
        var extra = found.Keys.Where(i => i >= n).ToArray();
        if (extra.Length > 0)
            throw new InterpException($"{directory}: shard manifest{(extra.Length > 1 ? "s" : "")} {string.Join(", ", extra.Select(ShardFiles.Manifest))} belong{(extra.Length > 1 ? "" : "s")} to no shard of {n}: a leftover of an earlier split? Remove {(extra.Length > 1 ? "them" : "it")}");
        var notDone = found.Where(f => f.Value.Status != RunStatus.Completed)
            .Select(f => $"shard {f.Key} is {f.Value.Status.ToString().ToLowerInvariant()}{(f.Value.Status == RunStatus.Running ? " (or was killed)" : "")}{(f.Value.Error is { } e ? $": {e}" : "")}").ToArray();
        if (notDone.Length > 0)
            throw new InterpException($"{directory}: not every shard completed: {string.Join("; ", notDone)}");
        foreach (var (i, m) in found)
        {
            string Differs(string what, string a, string b) =>
                $"{directory}: shard {i} ran {what} {b}, but shard {found.First().Key} ran {a}: shards of one run must share the experiment, settings, seed and model";
            if (m.Experiment != first.Experiment) throw new InterpException(Differs("experiment", first.Experiment, m.Experiment));
            if (m.Seed != first.Seed) throw new InterpException(Differs("with seed", first.Seed.ToString(CultureInfo.InvariantCulture), m.Seed.ToString(CultureInfo.InvariantCulture)));
            foreach (var key in first.Settings.Select(kv => kv.Key).Union(m.Settings.Select(kv => kv.Key)))
            {
                string a = first.Settings[key]?.ToJsonString() ?? "null", b = m.Settings[key]?.ToJsonString() ?? "null";
                if (a != b) throw new InterpException(Differs($"with setting {key} =", a, b));
            }
            string hashA = first.Model?.Sha256 ?? "(no model)", hashB = m.Model?.Sha256 ?? "(no model)";
            if (hashA != hashB)
                throw new InterpException(Differs("on model", $"{first.Model?.Source} (sha256 {hashA})", $"{m.Model?.Source} (sha256 {hashB})"));
            if (m.Shard!.Units != first.Shard!.Units)
                throw new InterpException(Differs("over", $"{first.Shard.Units} units", $"{m.Shard.Units} units"));
            var (start, end) = new ShardSpec(i, n).Range(first.Shard.Units);
            if (!m.Shard.Done.SequenceEqual(Enumerable.Range(start, end - start)))
                throw new InterpException($"{directory}: shard {i} of {n} did units [{string.Join(", ", m.Shard.Done)}], not its share {start}…{end - 1} of {first.Shard.Units}");
        }
        return new ShardSet(directory, found.Values.ToArray());
    }
}

/// <summary>Thrown by a shard run once it has written its partition: the rest of the script is the merge's.</summary>
internal sealed class ShardCompletedException() : Exception("the shard's rows are written");

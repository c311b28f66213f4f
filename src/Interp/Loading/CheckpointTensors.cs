using System.Text.Json;
using static TorchSharp.torch;

namespace Interp.Loading;

/// <summary>
/// The tensors of a Hugging Face-style directory: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>. Tracks which tensors were read, so that leftovers (a sign that the
/// config disagrees with the weights) can be reported.
/// </summary>
public sealed class CheckpointTensors : IDisposable
{
    private readonly Dictionary<string, SafeTensorsFile> _byName = new(StringComparer.Ordinal);
    private readonly List<SafeTensorsFile> _files = new();
    private readonly HashSet<string> _read = new(StringComparer.Ordinal);

    // Set in the shape-recording instance of ShapesOnly: what an adapter asked for, in order; nothing is read.
    private readonly List<(string Name, long[] Shape)>? _requested;

    private CheckpointTensors(string directory, bool shapesOnly = false)
    {
        Directory = directory;
        if (shapesOnly) _requested = new();
    }

    /// <summary>
    /// A checkpoint with no files that answers every <see cref="Read"/> with a tensor on the meta device (a shape, no
    /// memory) and records the request, and says it <see cref="Contains"/> nothing: running an adapter's
    /// <c>ReadWeights</c> on it lists the tensors — names and shapes, in the adapter's order — that a checkpoint of a
    /// config must hold (optional tensors, such as an untied <c>lm_head</c>, left out).
    /// </summary>
    internal static CheckpointTensors ShapesOnly(string directory) => new(directory, shapesOnly: true);

    /// <summary>The tensors an adapter asked a <see cref="ShapesOnly"/> checkpoint for, in order.</summary>
    internal IReadOnlyList<(string Name, long[] Shape)> Requested => _requested ?? throw new InvalidOperationException("not a shapes-only checkpoint");

    /// <summary>The directory the tensors come from.</summary>
    public string Directory { get; }

    /// <summary>Every tensor name.</summary>
    public IEnumerable<string> Names => _byName.Keys;

    /// <summary>Elements held by all the tensors (each checked against its file's length when the file was opened).</summary>
    public long ElementCount => _byName.Sum(kv => kv.Value.GetInfo(kv.Key).ElementCount);

    /// <summary>Opens <c>model.safetensors</c> or the shards of <c>model.safetensors.index.json</c> in <paramref name="directory"/>.</summary>
    public static CheckpointTensors Open(string directory)
    {
        var result = new CheckpointTensors(directory);
        try
        {
            string single = Path.Combine(directory, "model.safetensors");
            string index = Path.Combine(directory, "model.safetensors.index.json");
            if (File.Exists(single)) result.Add(SafeTensorsFile.Open(single));
            else if (File.Exists(index)) result.OpenShards(index);
            else throw new ModelFileException(directory, null, "no model.safetensors or model.safetensors.index.json in this directory");
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    private void OpenShards(string indexPath)
    {
        Dictionary<string, string> weightMap;
        long length = new FileInfo(indexPath).Length;
        if (length > 16 << 20) throw new ModelFileException(indexPath, null, $"is {length} bytes; refusing an index over 16 MiB");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath), new JsonDocumentOptions { MaxDepth = 16, AllowDuplicateProperties = false });
            JsonChecks.EnsureValidStrings(doc.RootElement, indexPath);
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFileException(indexPath, null, "has no \"weight_map\" object");
            weightMap = new();
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new ModelFileException(indexPath, entry.Name, "weight_map value is not a file name");
                weightMap[entry.Name] = entry.Value.GetString()!;
            }
        }
        catch (JsonException ex) { throw new ModelFileException(indexPath, null, $"is not valid JSON: {ex.Message}", ex); }

        var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (var (tensor, file) in weightMap)
        {
            // Shard names are data: they must name a plain file inside the model directory.
            if (!FileNames.IsPlain(file))
                throw new ModelFileException(indexPath, tensor, $"shard file name '{file}' is not a plain file name inside the model directory");
            if (!shards.TryGetValue(file, out var shard))
            {
                string shardPath = Path.Combine(Directory, file);
                if (!File.Exists(shardPath)) throw new ModelFileException(indexPath, tensor, $"shard '{file}' does not exist");
                shards[file] = shard = SafeTensorsFile.Open(shardPath);
                _files.Add(shard);
            }
            if (!shard.Contains(tensor))
                throw new ModelFileException(shard.Path, tensor, "listed in model.safetensors.index.json but missing from this shard");
            _byName[tensor] = shard;
        }
    }

    private void Add(SafeTensorsFile file)
    {
        _files.Add(file);
        foreach (var info in file.Tensors) _byName[info.Name] = file;
    }

    /// <summary>True when the checkpoint has a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The dtype <see cref="Read"/> returns: float32 unless the loader builds the model in another.</summary>
    internal ScalarType ReadDtype { get; set; } = ScalarType.Float32;

    /// <summary>Reads a tensor (in <see cref="ReadDtype"/>, float32 by default) that must have <paramref name="shape"/> (the shape the config implies).</summary>
    public Tensor Read(string name, params long[] shape) => ReadAs(name, shape, ReadDtype);

    /// <summary>
    /// Reads a tensor in float32 whatever <see cref="ReadDtype"/> is: for an adapter that computes on the values before
    /// they reach the model (Gemma's gain − 1), so that they are rounded to a narrower dtype once, when copied in.
    /// </summary>
    public Tensor ReadFloat32(string name, params long[] shape) => ReadAs(name, shape, ScalarType.Float32);

    private Tensor ReadAs(string name, long[] shape, ScalarType dtype)
    {
        if (_requested is not null)
        {
            if (_requested.Any(r => r.Name == name)) throw new InvalidOperationException($"'{name}' requested twice");
            _requested.Add((name, shape));
            return empty(shape, device: new Device(TorchSharp.DeviceType.META));
        }
        if (!_byName.TryGetValue(name, out var file))
            throw new ModelFileException(Directory, name, "missing from the checkpoint, but the config implies it");
        _read.Add(name);
        var info = file.GetInfo(name);
        if (!info.DType.IsFloatingPoint())
            throw new ModelFileException(file.Path, name, $"has dtype {info.DType.HeaderName()}, but model weights must be floating point (F32, F16, BF16 or F64)");
        var tensor = file.ReadTensor(name, shape);
        if (dtype == tensor.dtype) return tensor;
        using (tensor) return tensor.to(dtype);
    }

    /// <summary>Marks a tensor as deliberately unused (e.g. GPT-2's attention-mask buffers).</summary>
    public void Ignore(string name) => _read.Add(name);

    /// <summary>Throws when a tensor was neither read nor ignored: the config and the weights disagree.</summary>
    public void EnsureAllUsed()
    {
        var left = _byName.Keys.Where(n => !_read.Contains(n)).Order(StringComparer.Ordinal).ToArray();
        if (left.Length > 0)
            throw new ModelFileException(_byName[left[0]].Path, left[0],
                $"not used by the model the config describes ({left.Length} unused tensor(s), e.g. {string.Join(", ", left.Take(3))}): the config disagrees with the weights");
    }

    /// <summary>Closes the files.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}

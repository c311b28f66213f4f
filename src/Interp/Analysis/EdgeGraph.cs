using Interp.Models;

namespace Interp.Analysis;

/// <summary>What writes into the residual stream: an embedding, one attention head's output, or an MLP's output.</summary>
public enum UpstreamKind
{
    /// <summary>The token embedding (<c>hook_embed</c>).</summary>
    Embed,
    /// <summary>The additive position embedding (<c>hook_pos_embed</c>).</summary>
    PosEmbed,
    /// <summary>One head's output z·W_O (<c>hook_result</c>).</summary>
    Head,
    /// <summary>One MLP's output (<c>hook_mlp_out</c>).</summary>
    Mlp,
}

/// <summary>Which input of a downstream node an edge enters.</summary>
public enum EdgeInput
{
    /// <summary>A head's query input.</summary>
    Q,
    /// <summary>A (key/value) head's key input.</summary>
    K,
    /// <summary>A (key/value) head's value input.</summary>
    V,
    /// <summary>An MLP's input.</summary>
    Mlp,
    /// <summary>The final residual stream (before the final norm), which the logits read.</summary>
    Logits,
}

/// <summary>An upstream node of the edge graph: <see cref="Name"/> is <c>embed</c>, <c>pos_embed</c>, <c>L{l}H{h}</c> or <c>mlp{l}</c>.</summary>
/// <param name="Kind">What it is.</param>
/// <param name="Layer">Its layer (−1 for the embeddings).</param>
/// <param name="Head">Its head (−1 unless a head).</param>
public readonly record struct UpstreamNode(UpstreamKind Kind, int Layer = -1, int Head = -1)
{
    /// <summary>The node's name in tables and figures.</summary>
    public string Name => Kind switch
    {
        UpstreamKind.Embed => "embed",
        UpstreamKind.PosEmbed => "pos_embed",
        UpstreamKind.Head => $"L{Layer}H{Head}",
        _ => $"mlp{Layer}",
    };

    /// <inheritdoc />
    public override string ToString() => Name;
}

/// <summary>
/// A downstream input of the edge graph: <see cref="Name"/> is <c>L{l}H{h}</c> (with <see cref="Input"/> q, k or v;
/// for k and v with grouped-query attention h is the key/value head), <c>mlp{l}</c> or <c>logits</c>.
/// </summary>
/// <param name="Input">Which input.</param>
/// <param name="Layer">Its layer (−1 for the logits).</param>
/// <param name="Head">Its head (−1 unless q, k or v).</param>
public readonly record struct DownstreamNode(EdgeInput Input, int Layer = -1, int Head = -1)
{
    /// <summary>The node's name in tables and figures.</summary>
    public string Name => Input switch
    {
        EdgeInput.Q or EdgeInput.K or EdgeInput.V => $"L{Layer}H{Head}",
        EdgeInput.Mlp => $"mlp{Layer}",
        _ => "logits",
    };

    /// <summary>The input's name: <c>q</c>, <c>k</c>, <c>v</c>, <c>mlp</c> or <c>logits</c>.</summary>
    public string InputName => InputNames[(int)Input];

    private static readonly string[] InputNames = ["q", "k", "v", "mlp", "logits"];

    /// <summary>The input called <paramref name="name"/> (<c>q</c>, <c>k</c>, <c>v</c>, <c>mlp</c>, <c>logits</c>).</summary>
    /// <exception cref="InterpException">Another name.</exception>
    public static EdgeInput ParseInput(string name) => Array.IndexOf(InputNames, name) is int i and >= 0
        ? (EdgeInput)i : throw new InterpException($"edge input '{name}' is none of {string.Join(", ", InputNames)}");

    /// <inheritdoc />
    public override string ToString() => Input is EdgeInput.Mlp or EdgeInput.Logits ? Name : $"{Name}.{InputName}";
}

/// <summary>An edge from an upstream node's output to a downstream node's input.</summary>
public readonly record struct Edge(UpstreamNode Upstream, DownstreamNode Downstream)
{
    /// <inheritdoc />
    public override string ToString() => $"{Upstream} → {Downstream}";
}

/// <summary>An edge and its attribution score.</summary>
public readonly record struct EdgeScore(Edge Edge, double Score);

/// <summary>
/// The computational graph of edge attribution patching (Syed et al. 2023; Hanna et al. 2024) for a pre-norm (or
/// parallel) transformer: upstream nodes write into the residual stream (the embeddings, every head's output, every
/// MLP's output), downstream inputs read it (every head's q, k and v input separately, every MLP's input, and the
/// logits). Because the residual stream is a sum, each downstream input is the sum of the outputs of every upstream
/// node before it (plus biases): an edge u → d is u's term in d's input. u is before d in layer order; within a layer
/// the heads feed the MLP of a sequential block but not of a parallel one. Node order: <see cref="Upstream"/> lists the
/// embeddings, then per layer its heads and its MLP; <see cref="Downstream"/> per layer the heads' q inputs, k inputs,
/// v inputs and the MLP, then the logits.
/// </summary>
public sealed class EdgeGraph
{
    private readonly int[] _prefix;
    private readonly Dictionary<UpstreamNode, int> _upstreamIndex = new();
    private readonly Dictionary<DownstreamNode, int> _downstreamIndex = new();

    /// <summary>The architecture.</summary>
    public ModelConfig Config { get; }
    /// <summary>The upstream nodes, in forward order.</summary>
    public IReadOnlyList<UpstreamNode> Upstream { get; }
    /// <summary>The downstream inputs, in forward order.</summary>
    public IReadOnlyList<DownstreamNode> Downstream { get; }
    /// <summary>Every edge, by downstream input then upstream node.</summary>
    public IReadOnlyList<Edge> Edges { get; }

    private EdgeGraph(ModelConfig cfg)
    {
        Config = cfg;
        var up = new List<UpstreamNode> { new(UpstreamKind.Embed) };
        if (cfg.Positional is PositionalKind.Learned or PositionalKind.Sinusoidal) up.Add(new(UpstreamKind.PosEmbed));
        var down = new List<DownstreamNode>();
        var prefix = new List<int>();
        bool parallel = cfg.Block == BlockKind.Parallel;
        for (int l = 0; l < cfg.NLayers; l++)
        {
            int beforeLayer = up.Count;
            foreach (var input in new[] { EdgeInput.Q, EdgeInput.K, EdgeInput.V })
                for (int h = 0; h < (input == EdgeInput.Q ? cfg.NHeads : cfg.KvHeads); h++)
                {
                    down.Add(new(input, l, h));
                    prefix.Add(beforeLayer);
                }
            for (int h = 0; h < cfg.NHeads; h++) up.Add(new(UpstreamKind.Head, l, h));
            if (!cfg.AttentionOnly)
            {
                down.Add(new(EdgeInput.Mlp, l));
                prefix.Add(parallel ? beforeLayer : up.Count);
                up.Add(new(UpstreamKind.Mlp, l));
            }
        }
        down.Add(new(EdgeInput.Logits));
        prefix.Add(up.Count);
        Upstream = up;
        Downstream = down;
        _prefix = prefix.ToArray();
        for (int i = 0; i < up.Count; i++) _upstreamIndex[up[i]] = i;
        for (int j = 0; j < down.Count; j++) _downstreamIndex[down[j]] = j;
        var edges = new List<Edge>();
        for (int j = 0; j < down.Count; j++)
            for (int i = 0; i < _prefix[j]; i++) edges.Add(new(up[i], down[j]));
        Edges = edges;
    }

    /// <summary>The graph of <paramref name="cfg"/>.</summary>
    /// <exception cref="InterpException">The model is post-norm (BERT), normalises its sublayers' outputs (Gemma 2) or has no unembedding: there the residual stream is not the sum of the nodes' outputs, or there are no logits.</exception>
    public static EdgeGraph For(ModelConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        if (cfg.Block == BlockKind.PostNorm)
            throw new InterpException($"edge attribution: {cfg.Name} has post-norm blocks, whose residual stream is renormalised after every sublayer, so that it is not the sum of the nodes' outputs");
        if (cfg.NormAfterSublayers)
            throw new InterpException($"edge attribution: {cfg.Name} normalises each sublayer's output (norm_after_sublayers) before it joins the stream, so that a head's output is not its term in the stream");
        if (!cfg.HasUnembed) throw new InterpException($"edge attribution: {cfg.Name} has no unembedding (no logits)");
        return new EdgeGraph(cfg);
    }

    /// <summary>How many upstream nodes (the first ones of <see cref="Upstream"/>) feed downstream input <paramref name="downstream"/> (its index).</summary>
    public int UpstreamCount(int downstream) => _prefix[downstream];

    /// <summary>The index of <paramref name="node"/> in <see cref="Upstream"/>.</summary>
    /// <exception cref="InterpException">The model has no such node.</exception>
    public int IndexOf(UpstreamNode node) => _upstreamIndex.TryGetValue(node, out int i) ? i
        : throw new InterpException($"edge graph of {Config.Name}: no upstream node {node.Name}");

    /// <summary>The index of <paramref name="node"/> in <see cref="Downstream"/>.</summary>
    /// <exception cref="InterpException">The model has no such input.</exception>
    public int IndexOf(DownstreamNode node) => _downstreamIndex.TryGetValue(node, out int j) ? j
        : throw new InterpException($"edge graph of {Config.Name}: no downstream input {node}");

    /// <summary>True when <paramref name="edge"/> is an edge of this graph (its upstream node comes before its downstream input).</summary>
    public bool Contains(Edge edge) =>
        _upstreamIndex.TryGetValue(edge.Upstream, out int i) && _downstreamIndex.TryGetValue(edge.Downstream, out int j) && i < _prefix[j];

    /// <summary>The edge from the node called <paramref name="upstream"/> to the input <paramref name="input"/> of the node called <paramref name="downstream"/>.</summary>
    /// <exception cref="InterpException">No such edge.</exception>
    public Edge Find(string upstream, string downstream, string input)
    {
        var u = Upstream.FirstOrDefault(n => n.Name == upstream);
        var d = Downstream.FirstOrDefault(n => n.Name == downstream && n.InputName == input);
        var edge = new Edge(u, d);
        if (u.Name != upstream || d.Name != downstream || d.InputName != input || !Contains(edge))
            throw new InterpException($"edge graph of {Config.Name}: no edge {upstream} → {downstream}.{input}");
        return edge;
    }
}

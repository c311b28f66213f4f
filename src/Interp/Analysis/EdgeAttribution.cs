using Interp.Hooks;
using Interp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Analysis;

/// <summary>The edge-attribution method.</summary>
public enum EdgeMethod
{
    /// <summary>Edge attribution patching: the gradient at the corrupted run.</summary>
    Eap,
    /// <summary>EAP with integrated gradients: the gradient averaged along the path from the corrupted to the clean input embeddings.</summary>
    EapIg,
}

/// <summary>What an edge outside a circuit carries when the circuit is run.</summary>
public enum CircuitAblation
{
    /// <summary>The upstream node's output on the corrupted run (Hanna et al.): an empty circuit gives the corrupted metric.</summary>
    Corrupted,
    /// <summary>
    /// The upstream node's mean output over the clean sequences at the same position (real tokens only), as mean
    /// ablation does: an empty circuit gives <see cref="EdgeAttribution.MeanAblatedMetric"/>.
    /// </summary>
    Mean,
}

/// <summary>
/// Edge attribution patching over an <see cref="EdgeGraph"/> (Syed et al. 2023, "Attribution Patching Outperforms
/// Automated Circuit Discovery"; Hanna et al. 2024, "Have Faith in Faithfulness", for EAP-IG and circuit faithfulness).
/// An edge u → d is scored Σ over the batch and positions of (u_clean − u_corrupted) · ∂metric/∂(d's input): the
/// first-order estimate of how much the metric moves from its corrupted value when that edge alone carries its clean
/// value. EAP takes the gradient at the corrupted run; EAP-IG averages it over <c>steps</c> runs whose input
/// embeddings (token and position embeddings, the inputs of every edge) lie on the straight line from the corrupted to
/// the clean embeddings, at α = k / steps for k = 0 … steps − 1 (a left Riemann sum, so that one step is EAP), while
/// (u_clean − u_corrupted) stays the difference between the real clean and corrupted runs: Hanna et al.'s EAP-IG
/// (interpolating the inputs, not each activation). Gradients with respect to a head's q, k or v input and an MLP's
/// input are taken at the split inputs (<see cref="HookedTransformer.UseSplitInputs"/>: each head's copy of the
/// residual stream before ln1, so that the norm is part of the downstream node), the logits' at the final residual
/// stream before the final norm.
/// </summary>
/// <remarks>
/// The metric differentiated is the mean over the batch of the per-sequence metric, as in activation and attribution
/// patching; the passes run <see cref="SequencesPerPass"/> sequences at a time and each pass's share is weighted by its
/// size, so that the scores do not depend on the split (a prompt-indexed metric such as the logit difference of a
/// prompt set needs the whole batch in one pass). Circuits are evaluated the way Hanna et al. evaluate them: the model
/// runs on the clean input, and every downstream input that an edge outside the circuit enters receives that upstream
/// node's corrupted output (or, with <see cref="CircuitAblation.Mean"/>, its mean output) in place of its output in this
/// run. Not safe to run concurrently with another pass on the
/// same model (it toggles split inputs and the weights' requires_grad). The stored runs stay until disposal.
/// </remarks>
public sealed class EdgeAttribution : IDisposable
{
    private readonly List<Chunk> _chunks = new();
    private readonly Dictionary<int, double[,]> _scores = new();   // steps → [upstream, downstream] (1 = EAP)
    private double[,]? _firstStep;
    private Tensor? _meanOutputs;          // [upstream, 1, pos, d_model]: each node's mean clean output per position
    private double? _meanAblatedMetric;
    private bool _disposed;

    /// <summary>The model.</summary>
    public HookedTransformer Model { get; }
    /// <summary>The graph.</summary>
    public EdgeGraph Graph { get; }
    /// <summary>The per-sequence metric.</summary>
    public Metric Metric { get; }
    /// <summary>The metric on the clean run (mean over the batch).</summary>
    public double CleanMetric { get; }
    /// <summary>The metric on the corrupted run.</summary>
    public double CorruptedMetric { get; }
    /// <summary>The most sequences of one pass.</summary>
    public int SequencesPerPass { get; }

    private sealed class Chunk(Tensor clean, Tensor corrupted, Tensor? mask, double weight) : IDisposable
    {
        public Tensor Clean { get; } = clean;
        public Tensor Corrupted { get; } = corrupted;
        public Tensor? Mask { get; } = mask;
        /// <summary>This chunk's share of the batch.</summary>
        public double Weight { get; } = weight;
        /// <summary>Upstream outputs of the clean run, [upstream, batch, pos, d_model]; replaced by clean − corrupted after the corrupted run.</summary>
        public Tensor? Delta { get; set; }
        /// <summary>Upstream outputs of the corrupted run, [upstream, batch, pos, d_model].</summary>
        public Tensor? CorruptedOutputs { get; set; }

        public void Dispose()
        {
            Clean.Dispose();
            Corrupted.Dispose();
            Mask?.Dispose();
            Delta?.Dispose();
            CorruptedOutputs?.Dispose();
        }
    }

    /// <summary>
    /// Runs the clean input (recording every upstream node's output) and the corrupted input with its backward pass
    /// (recording the corrupted outputs and the EAP scores): one forward and one forward + backward pass per
    /// <paramref name="sequencesPerPass"/> sequences.
    /// </summary>
    /// <param name="model">The model (pre-norm or parallel blocks, with an unembedding).</param>
    /// <param name="clean">The clean tokens [batch, pos].</param>
    /// <param name="corrupted">The corrupted tokens, of the same shape.</param>
    /// <param name="metric">The per-sequence metric; the mean over the batch is differentiated.</param>
    /// <param name="attentionMask">For right-padded batches, their shared attention mask [batch, pos]; null: no padding.</param>
    /// <param name="sequencesPerPass">The most sequences of one pass (null: the whole batch).</param>
    /// <param name="cancellationToken">Checked between the passes.</param>
    /// <exception cref="InterpException">The inputs differ in shape or are invalid, the model does not fit <see cref="EdgeGraph"/>, the metric does not apply, or sequencesPerPass is below 1.</exception>
    public EdgeAttribution(HookedTransformer model, Tensor clean, Tensor corrupted, Metric metric, Tensor? attentionMask = null,
        int? sequencesPerPass = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(metric);
        ArgumentNullException.ThrowIfNull(clean);
        ArgumentNullException.ThrowIfNull(corrupted);
        if (!clean.shape.SequenceEqual(corrupted.shape))
            throw new InterpException($"edge attribution needs clean and corrupted tokens of the same shape [batch, pos]: clean tokens have shape [{string.Join(", ", clean.shape)}], corrupted tokens [{string.Join(", ", corrupted.shape)}]");
        if (sequencesPerPass is < 1) throw new InterpException($"edge attribution: sequencesPerPass must be at least 1, got {sequencesPerPass}");
        Graph = EdgeGraph.For(model.Config);
        Metrics.EnsureApplies(metric, model, "edge attribution");
        Model = model;
        Metric = metric;
        try
        {
            using (var scope = NewDisposeScope())
            {
                var c = model.ValidateTokens(clean);
                var k = model.ValidateTokens(corrupted);
                var mask = model.PaddingMask(attentionMask, c.shape[0], c.shape[1])?.logical_not();
                long batch = c.shape[0];
                SequencesPerPass = (int)Math.Min(batch, sequencesPerPass ?? batch);
                for (long start = 0; start < batch; start += SequencesPerPass)
                {
                    long n = Math.Min(SequencesPerPass, batch - start);
                    _chunks.Add(new Chunk(c.narrow(0, start, n).clone().DetachFromDisposeScope(), k.narrow(0, start, n).clone().DetachFromDisposeScope(),
                        mask?.narrow(0, start, n).clone().DetachFromDisposeScope(), (double)n / batch));
                }
            }
            double cleanMetric = 0, corruptedMetric = 0;
            var first = NewScores();
            foreach (var chunk in _chunks)
            {
                cancellationToken.ThrowIfCancellationRequested();
                cleanMetric += chunk.Weight * CleanPass(chunk);
                cancellationToken.ThrowIfCancellationRequested();
                var (chunkMetric, gradients) = GradientPass(chunk, 0, cancellationToken);
                corruptedMetric += chunk.Weight * chunkMetric;
                try { Contract(chunk, gradients, first); }
                finally { foreach (var g in gradients) g?.Dispose(); }
            }
            CleanMetric = cleanMetric;
            CorruptedMetric = corruptedMetric;
            _firstStep = first;
            _scores[1] = first;
        }
        catch
        {
            foreach (var chunk in _chunks) chunk.Dispose();
            throw;
        }
    }

    /// <summary>Every edge's score by <paramref name="method"/>, in <see cref="EdgeGraph.Edges"/> order; EAP-IG with <paramref name="steps"/> interpolations (30 by default; 1 is EAP).</summary>
    /// <exception cref="InterpException">steps is below 1.</exception>
    public IReadOnlyList<EdgeScore> Scores(EdgeMethod method, int steps = 30, CancellationToken cancellationToken = default)
    {
        var matrix = Matrix(method == EdgeMethod.Eap ? 1 : steps, cancellationToken);
        var scores = new EdgeScore[Graph.Edges.Count];
        int e = 0;
        for (int j = 0; j < Graph.Downstream.Count; j++)
            for (int i = 0; i < Graph.UpstreamCount(j); i++)
                scores[e] = new EdgeScore(Graph.Edges[e++], matrix[i, j]);
        return scores;
    }

    /// <summary>The score of one edge (see <see cref="Scores"/>).</summary>
    /// <exception cref="InterpException">The edge is not in the graph, or steps is below 1.</exception>
    public double Score(Edge edge, EdgeMethod method, int steps = 30, CancellationToken cancellationToken = default)
    {
        if (!Graph.Contains(edge)) throw new InterpException($"edge attribution: {edge} is not an edge of {Model.Config.Name}'s graph");
        return Matrix(method == EdgeMethod.Eap ? 1 : steps, cancellationToken)[Graph.IndexOf(edge.Upstream), Graph.IndexOf(edge.Downstream)];
    }

    /// <summary>The score matrix of EAP-IG with <paramref name="steps"/> steps, computed once.</summary>
    private double[,] Matrix(int steps, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (steps < 1) throw new InterpException($"EAP-IG: steps must be at least 1, got {steps}");
        if (_scores.TryGetValue(steps, out var done)) return done;
        var sum = NewScores();
        foreach (var chunk in _chunks)
        {
            // Σ over the steps of (clean − corrupted) · gradient = (clean − corrupted) · Σ gradients: the gradients are
            // summed over the steps and contracted once per chunk.
            Tensor?[]? total = null;
            try
            {
                for (int k = 1; k < steps; k++)
                {
                    ct.ThrowIfCancellationRequested();
                    var (_, gradients) = GradientPass(chunk, (double)k / steps, ct);
                    if (total is null) { total = gradients; continue; }
                    for (int i = 0; i < total.Length; i++)
                    {
                        if (gradients[i] is not { } g) continue;
                        if (total[i] is null) total[i] = g;
                        else { total[i]!.add_(g, Scalars.One); g.Dispose(); }
                    }
                }
                if (total is not null) Contract(chunk, total, sum);
            }
            finally
            {
                foreach (var t in total ?? []) t?.Dispose();
            }
        }
        var first = _firstStep!;
        for (int i = 0; i < sum.GetLength(0); i++)
            for (int j = 0; j < sum.GetLength(1); j++) sum[i, j] = (sum[i, j] + first[i, j]) / steps;
        _scores[steps] = sum;
        return sum;
    }

    private double[,] NewScores() => new double[Graph.Upstream.Count, Graph.Downstream.Count];

    /// <summary>The upstream nodes' hooks: (hook name, first row in the upstream axis, rows).</summary>
    private IEnumerable<(string Hook, int Row, int Rows)> UpstreamHooks()
    {
        var up = Graph.Upstream;
        for (int i = 0; i < up.Count; i++)
        {
            var n = up[i];
            switch (n.Kind)
            {
                case UpstreamKind.Embed: yield return (HookNames.Embed, i, 1); break;
                case UpstreamKind.PosEmbed: yield return (HookNames.PosEmbed, i, 1); break;
                case UpstreamKind.Mlp: yield return (HookNames.MlpOut(n.Layer), i, 1); break;
                case UpstreamKind.Head when n.Head == 0: yield return (HookNames.Result(n.Layer), i, Model.Config.NHeads); break;
            }
        }
    }

    /// <summary>The downstream inputs' hooks: (hook name, first column in the downstream axis, columns).</summary>
    private IEnumerable<(string Hook, int Column, int Columns)> DownstreamHooks()
    {
        var down = Graph.Downstream;
        for (int j = 0; j < down.Count; j++)
        {
            var n = down[j];
            switch (n.Input)
            {
                case EdgeInput.Q when n.Head == 0: yield return (HookNames.QInput(n.Layer), j, Model.Config.NHeads); break;
                case EdgeInput.K when n.Head == 0: yield return (HookNames.KInput(n.Layer), j, Model.Config.KvHeads); break;
                case EdgeInput.V when n.Head == 0: yield return (HookNames.VInput(n.Layer), j, Model.Config.KvHeads); break;
                case EdgeInput.Mlp: yield return (HookNames.MlpIn(n.Layer), j, 1); break;
                case EdgeInput.Logits: yield return (HookNames.ResidPost(Model.Config.NLayers - 1), j, 1); break;
            }
        }
    }

    /// <summary>An upstream hook's activation as rows of the upstream axis: [batch, pos, (head,) d_model] → [rows, batch, pos, d_model].</summary>
    private static Tensor AsRows(Tensor activation) => activation.dim() == 4 ? activation.permute(2, 0, 1, 3) : activation.unsqueeze(0);

    /// <summary>A downstream hook's activation or gradient as columns: [batch, pos, (head,) d_model] → [columns, batch · pos · d_model].</summary>
    private static Tensor AsColumns(Tensor t, int columns) => (t.dim() == 4 ? t.permute(2, 0, 1, 3) : t.unsqueeze(0)).reshape(columns, -1);

    /// <summary>Runs a pass with split inputs on (restored after).</summary>
    private T WithSplitInputs<T>(Func<T> pass)
    {
        bool was = Model.UseSplitInputs;
        Model.UseSplitInputs = true;
        try { return pass(); }
        finally { Model.UseSplitInputs = was; }
    }

    /// <summary>The clean pass of a chunk: records the upstream outputs; returns the chunk's metric.</summary>
    private double CleanPass(Chunk chunk)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var outputs = Outputs(chunk.Clean);
        var hooks = UpstreamHooks().Select(h => (h.Hook, (HookFunction)((act, _) =>
        {
            outputs.narrow(0, h.Row, h.Rows).copy_(AsRows(act));
            return null;
        }))).ToArray();
        var logits = WithSplitInputs(() => Model.RunWithHooks(chunk.Clean, chunk.Mask, hooks));
        double metric = Metrics.Evaluate(Metric, logits, chunk.Clean);
        chunk.Delta = outputs.DetachFromDisposeScope();
        return metric;
    }

    /// <summary>An empty upstream-outputs tensor [upstream, batch, pos, d_model] for <paramref name="tokens"/>.</summary>
    private Tensor Outputs(Tensor tokens) =>
        empty([Graph.Upstream.Count, tokens.shape[0], tokens.shape[1], Model.Config.DModel], Model.ComputeDType, Model.Device);

    /// <summary>
    /// One forward and backward pass of a chunk on the corrupted tokens with the input embeddings at
    /// corrupted + α (clean − corrupted): returns the chunk's metric and, per downstream hook, the gradient of the
    /// chunk's weighted share of the metric as [columns, batch·pos·d_model] (null: no path to the metric; the caller
    /// disposes them). The first pass (α = 0) records the corrupted outputs and turns the chunk's clean outputs into
    /// clean − corrupted.
    /// </summary>
    private (double Metric, Tensor?[] Gradients) GradientPass(Chunk chunk, double alpha, CancellationToken ct)
    {
        bool first = chunk.CorruptedOutputs is null;
        var frozen = Model.parameters().Where(p => p.requires_grad).ToArray();
        var columnsOf = new Tensor?[DownstreamHooks().Count()];
        try
        {
            using var scope = NewDisposeScope();
            foreach (var p in frozen) p.requires_grad_(false);
            using var gradients = enable_grad();
            var corrupted = first ? Outputs(chunk.Corrupted) : chunk.CorruptedOutputs!;
            var delta = chunk.Delta!;
            using var a = alpha.ToScalar();
            var forward = new List<(string, HookFunction)>();
            foreach (var (hook, row, rows) in UpstreamHooks())
            {
                bool input = hook is HookNames.Embed or HookNames.PosEmbed;
                // After the first pass only the inputs are hooked: a hook on hook_result would make every layer
                // materialise its heads' outputs [batch, pos, head, d_model], forward and backward, for nothing.
                if (!first && !input) continue;
                forward.Add((hook, (act, _) =>
                {
                    if (first) corrupted.narrow(0, row, rows).copy_(AsRows(act.detach()));
                    if (!input) return null;
                    // The path's inputs: corrupted + α (clean − corrupted), where the gradients start.
                    var start = alpha == 0 ? act.detach() : corrupted[row].add(delta[row], a);
                    return start.detach().requires_grad_(true);
                }));
            }
            var downstream = DownstreamHooks().ToArray();
            var backward = downstream.Select((h, k) => (h.Hook, (BackwardHookFunction)((gradient, _) =>
            {
                // Runs during the backward pass, possibly on another thread: kept as [columns, batch·pos·d_model], contracted after.
                columnsOf[k] = AsColumns(gradient, h.Columns).contiguous().clone().DetachFromDisposeScope();
                return null;
            }))).ToArray();

            var perSequence = WithSplitInputs(() =>
            {
                using (Model.Hooks(forward.ToArray()))
                using (Model.BackwardHooks(backward))
                    return Metrics.PerSequence(Metric, Model.forward(chunk.Corrupted, chunk.Mask), chunk.Corrupted);
            });
            double metric = perSequence.detach().to(ScalarType.Float64).mean().item<double>();
            using var weight = chunk.Weight.ToScalar();
            var value = perSequence.mean().mul(weight);
            if (first)
            {
                delta.sub_(corrupted);                                                   // clean − corrupted
                chunk.CorruptedOutputs = corrupted.DetachFromDisposeScope();
            }
            ct.ThrowIfCancellationRequested();
            if (!value.requires_grad)
                throw new InterpException("edge attribution: the metric's value does not depend on the logits (was it computed from detached logits or from a number?)");
            Model.Backward(value.reshape(Array.Empty<long>()));
            return (metric, columnsOf);
        }
        catch
        {
            foreach (var c in columnsOf) c?.Dispose();
            throw;
        }
        finally
        {
            foreach (var p in frozen) p.requires_grad_(true);
        }
    }

    /// <summary>
    /// Adds Σ (clean − corrupted) · gradient of every edge to <paramref name="scores"/>: one product per group of inputs
    /// fed by the same upstream nodes (a layer's q, k and v inputs), the gradients [columns, batch·pos·d_model] times the
    /// nodes' clean − corrupted [prefix, batch·pos·d_model]ᵀ.
    /// </summary>
    private void Contract(Chunk chunk, Tensor?[] columnsOf, double[,] scores)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var delta = chunk.Delta!;
        var downstream = DownstreamHooks().ToArray();
        foreach (var group in downstream.Select((h, k) => (h.Column, h.Columns, Index: k)).GroupBy(h => Graph.UpstreamCount(h.Column)))
        {
            int prefix = group.Key;
            var parts = group.Where(p => columnsOf[p.Index] is not null).ToArray();   // none: no path to the metric, zero
            if (parts.Length == 0) continue;
            var stacked = parts.Length == 1 ? columnsOf[parts[0].Index]!.alias() : cat(parts.Select(p => columnsOf[p.Index]!).ToArray(), 0);
            var product = stacked.mm(delta.narrow(0, 0, prefix).reshape(prefix, -1).t()).to(ScalarType.Float64, CPU); // [columns, prefix]
            var host = product.data<double>().ToArray();
            int row = 0;
            foreach (var (column, columns, _) in parts)
                for (int c = 0; c < columns; c++, row++)
                    for (int i = 0; i < prefix; i++) scores[i, column + c] += host[row * prefix + i];
        }
    }

    /// <summary>
    /// The metric (mean over the batch) of the clean run in which every downstream input receives, for each upstream
    /// node whose edge into it is not in <paramref name="circuit"/>, that node's corrupted output (or its mean output,
    /// by <paramref name="ablation"/>) instead of its output in this run. Every edge: the clean metric, exactly; none:
    /// the corrupted metric (or <see cref="MeanAblatedMetric"/>), up to rounding.
    /// </summary>
    /// <exception cref="InterpException">An edge is not in the graph.</exception>
    public double CircuitMetric(IEnumerable<Edge> circuit, CircuitAblation ablation = CircuitAblation.Corrupted, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(circuit);
        int nu = Graph.Upstream.Count, nd = Graph.Downstream.Count;
        var kept = new bool[nu, nd];
        foreach (var e in circuit)
        {
            if (!Graph.Contains(e)) throw new InterpException($"circuit: {e} is not an edge of {Model.Config.Name}'s graph");
            kept[Graph.IndexOf(e.Upstream), Graph.IndexOf(e.Downstream)] = true;
        }
        var mean = ablation == CircuitAblation.Mean ? MeanOutputs() : null;
        double total = 0;
        foreach (var chunk in _chunks)
        {
            cancellationToken.ThrowIfCancellationRequested();
            total += chunk.Weight * CircuitPass(chunk, kept, mean ?? chunk.CorruptedOutputs!);
        }
        return total;
    }

    /// <summary>
    /// The metric of the clean run with every edge mean-ablated (the empty circuit under <see cref="CircuitAblation.Mean"/>):
    /// the zero of mean-ablation faithfulness. Computed once.
    /// </summary>
    public double MeanAblatedMetric(CancellationToken cancellationToken = default) =>
        _meanAblatedMetric ??= CircuitMetric([], CircuitAblation.Mean, cancellationToken);

    /// <summary>
    /// Faithfulness of a circuit: (m_circuit − m_empty) / (m_clean − m_empty), where m_empty is the metric with no edge
    /// kept: the corrupted metric, or <see cref="MeanAblatedMetric"/> for mean ablation.
    /// </summary>
    /// <exception cref="InterpException">The metric is the same on both ends, or an edge is not in the graph.</exception>
    public double Faithfulness(IEnumerable<Edge> circuit, CircuitAblation ablation = CircuitAblation.Corrupted, CancellationToken cancellationToken = default) =>
        ActivationPatching.Normalise(CircuitMetric(circuit, ablation, cancellationToken), CleanMetric,
            ablation == CircuitAblation.Mean ? MeanAblatedMetric(cancellationToken) : CorruptedMetric);

    /// <summary>
    /// The faithfulness of the top-n circuits of <paramref name="method"/>'s scores for each n of <paramref name="sizes"/>
    /// (null: 0, 1, 2, 5, 10, 20, 50, … up to every edge; sizes above the edge count are capped at it): one pass per size.
    /// </summary>
    public IReadOnlyList<FaithfulnessPoint> FaithfulnessCurve(EdgeMethod method, IEnumerable<int>? sizes = null, int steps = 30,
        CircuitAblation ablation = CircuitAblation.Corrupted, CancellationToken cancellationToken = default) =>
        FaithfulnessCurve(method, Scores(method, steps, cancellationToken), sizes, ablation, cancellationToken);

    /// <summary>
    /// The faithfulness curve (see the other overload) of circuits ranked by <paramref name="scores"/>, one per edge of
    /// the graph, computed elsewhere: a sharded run's scores, summed over its work units.
    /// </summary>
    /// <exception cref="InterpException">The scores are not one per edge of this graph.</exception>
    public IReadOnlyList<FaithfulnessPoint> FaithfulnessCurve(EdgeMethod method, IReadOnlyList<EdgeScore> scores, IEnumerable<int>? sizes = null,
        CircuitAblation ablation = CircuitAblation.Corrupted, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Count != Graph.Edges.Count || scores.Any(s => !Graph.Contains(s.Edge)))
            throw new InterpException($"faithfulness curve: {scores.Count} scores, but {Model.Config.Name}'s graph has {Graph.Edges.Count} edges (one score for each)");
        var ranked = EdgeCircuit.Ranked(scores).Select(s => s.Edge).ToArray();
        var points = new List<FaithfulnessPoint>();
        foreach (int n in (sizes ?? DefaultSizes(ranked.Length)).Select(n => Math.Clamp(n, 0, ranked.Length)).Distinct().Order())
            points.Add(new FaithfulnessPoint(method, n, Faithfulness(ranked.Take(n), ablation, cancellationToken), ablation));
        return points;
    }

    /// <summary>
    /// Every upstream node's clean output averaged over all sequences (of every chunk) at each position, over real
    /// tokens only (0 where no sequence has one): [upstream, 1, pos, d_model].
    /// </summary>
    private Tensor MeanOutputs()
    {
        if (_meanOutputs is not null) return _meanOutputs;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        Tensor? sum = null, count = null;
        foreach (var chunk in _chunks)
        {
            var clean = chunk.Delta!.add(chunk.CorruptedOutputs!, Scalars.One);                  // [upstream, batch, pos, d_model]
            var real = chunk.Mask is null                                                           // [1, batch, pos, 1]
                ? ones([1, clean.shape[1], clean.shape[2], 1], Model.ComputeDType, Model.Device)
                : chunk.Mask.to(Model.ComputeDType).unsqueeze(0).unsqueeze(-1);
            var s = clean.mul(real).sum([1], keepdim: true);                                         // [upstream, 1, pos, d_model]
            var c = real.sum([1], keepdim: true);                                                    // [1, 1, pos, 1]
            sum = sum is null ? s : sum.add(s, Scalars.One);
            count = count is null ? c : count.add(c, Scalars.One);
        }
        _meanOutputs = sum!.div(count!.clamp_min(Scalars.One)).DetachFromDisposeScope();
        return _meanOutputs;
    }

    /// <summary>0, 1, 2, 5, 10, 20, 50, … below <paramref name="edges"/>, then <paramref name="edges"/>.</summary>
    public static IReadOnlyList<int> DefaultSizes(int edges)
    {
        var sizes = new List<int> { 0 };
        for (long scale = 1; scale < edges; scale *= 10)
            foreach (long m in new[] { 1L, 2, 5 })
                if (m * scale < edges) sizes.Add((int)(m * scale));
        sizes.Add(edges);
        return sizes;
    }

    /// <summary>One chunk's circuit run: removed edges carry <paramref name="replacement"/> [upstream, batch or 1, pos, d_model].</summary>
    private double CircuitPass(Chunk chunk, bool[,] kept, Tensor replacement)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var current = Outputs(chunk.Clean);
        var hooks = new List<(string, HookFunction)>();
        foreach (var (hook, row, rows) in UpstreamHooks())
            hooks.Add((hook, (act, _) =>
            {
                current.narrow(0, row, rows).copy_(AsRows(act));
                return null;
            }));
        foreach (var (hook, column, columns) in DownstreamHooks())
        {
            int prefix = Graph.UpstreamCount(column);
            var removed = new float[columns * prefix];
            bool any = false;
            for (int c = 0; c < columns; c++)
                for (int i = 0; i < prefix; i++)
                    if (!kept[i, column + c]) { removed[c * prefix + i] = 1; any = true; }
            if (!any) continue;   // every edge kept: the input is left exactly as it is
            var mask = tensor(removed, [columns, prefix]).to(Model.ComputeDType, Model.Device);   // [columns, prefix]: 1 = edge removed
            hooks.Add((hook, (act, _) =>
            {
                // Σ over the removed edges' upstream nodes of (replacement − this run's output), per column.
                var diff = (replacement.narrow(0, 0, prefix) - current.narrow(0, 0, prefix)).reshape(prefix, -1); // [prefix, batch·pos·d_model]
                var update = mask.mm(diff).view(columns, act.shape[0], act.shape[1], act.shape[^1]);               // [columns, batch, pos, d_model]
                return act.add(act.dim() == 4 ? update.permute(1, 2, 0, 3) : update.squeeze(0), Scalars.One);
            }));
        }
        var logits = WithSplitInputs(() => Model.RunWithHooks(chunk.Clean, chunk.Mask, hooks.ToArray()));
        return Metrics.Evaluate(Metric, logits, chunk.Clean);
    }

    /// <summary>
    /// The metric (mean over the batch) of the corrupted run with one edge patched: <paramref name="edge"/>'s downstream
    /// input receives its upstream node's clean output in place of the corrupted one, everything else as in the
    /// corrupted run (path patching of the single edge). The EAP score estimates this minus <see cref="CorruptedMetric"/>;
    /// where the metric is linear in the edge's input the two agree exactly.
    /// </summary>
    /// <exception cref="InterpException">The edge is not in the graph.</exception>
    public double EdgePatchedMetric(Edge edge, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!Graph.Contains(edge)) throw new InterpException($"edge patching: {edge} is not an edge of {Model.Config.Name}'s graph");
        int i = Graph.IndexOf(edge.Upstream), j = Graph.IndexOf(edge.Downstream);
        var (hook, column, _) = DownstreamHooks().Last(h => h.Column <= j);
        int c = j - column;
        double total = 0;
        foreach (var chunk in _chunks)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var delta = chunk.Delta![i];                                                   // [batch, pos, d_model]
            HookFunction patch = (act, _) =>
            {
                if (act.dim() == 3) return act.add(delta, Scalars.One);
                var patched = act.clone();                                                 // [batch, pos, head, d_model]
                patched.select(2, c).add_(delta, Scalars.One);
                return patched;
            };
            var logits = WithSplitInputs(() => Model.RunWithHooks(chunk.Corrupted, chunk.Mask, (hook, patch)));
            total += chunk.Weight * Metrics.Evaluate(Metric, logits, chunk.Corrupted);
        }
        return total;
    }

    /// <summary>Frees the stored runs.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var chunk in _chunks) chunk.Dispose();
        _chunks.Clear();
        _meanOutputs?.Dispose();
    }
}

using System.Text.Json.Serialization;
using Interp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>The architecture of a <see cref="HookedLstm"/>.</summary>
public sealed record LstmConfig
{
    /// <summary>A name for logs and reports.</summary>
    public string Name { get; init; } = "lstm";
    /// <summary>Vocabulary size (the embedding's rows and the unembedding's columns).</summary>
    public int DVocab { get; init; } = 64;
    /// <summary>Width of the embedding, the cell state and the hidden state of every layer.</summary>
    public int DHidden { get; init; } = 68;
    /// <summary>Stacked LSTM layers; layer l + 1 reads layer l's hidden states.</summary>
    public int NLayers { get; init; } = 1;

    /// <summary>Parameters: W_E, each layer's 4·d_hidden·(d_in + d_hidden) weights and two biases of 4·d_hidden, W_U and b_U.</summary>
    [JsonIgnore]
    public long ParameterCount => (long)DVocab * DHidden + NLayers * (4L * DHidden * (2 * DHidden) + 8L * DHidden) + (long)DHidden * DVocab + DVocab;

    /// <summary>Throws <see cref="InvalidModelConfigException"/> naming the first size that makes no sense.</summary>
    public LstmConfig Validate()
    {
        if (string.IsNullOrWhiteSpace(Name)) throw new InvalidModelConfigException(nameof(Name), "an LSTM's name must not be empty");
        if (DVocab is < 2 or > 10_000_000) throw new InvalidModelConfigException(nameof(DVocab), $"an LSTM's d_vocab must lie in [2, 10⁷], got {DVocab}");
        if (DHidden is < 1 or > 65_536) throw new InvalidModelConfigException(nameof(DHidden), $"an LSTM's d_hidden must lie in [1, 65536], got {DHidden}");
        if (NLayers is < 1 or > 64) throw new InvalidModelConfigException(nameof(NLayers), $"an LSTM's n_layers must lie in [1, 64], got {NLayers}");
        return this;
    }
}

/// <summary>
/// An LSTM language model with a hook point at every gate and state (the recurrent counterpart of
/// <see cref="HookedTransformer"/>): tokens [batch, pos] → embedding W_E → <see cref="LstmConfig.NLayers"/> LSTM layers
/// (TorchSharp's <c>nn.LSTM</c>, PyTorch's gate order i, f, g, o) → W_U, b_U → logits [batch, pos, d_vocab]. The state
/// starts at zero. Each layer l at step t, with x_t its input:
/// <code>
/// z = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh          [4·d_hidden] = i | f | g | o
/// i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)  hook_input_gate, hook_forget_gate, hook_cell_candidate, hook_output_gate
/// c_t = f ⊙ c_{t−1} + i ⊙ g                          hook_cell
/// h_t = o ⊙ tanh(c_t)                                hook_hidden
/// </code>
/// With no hook attached the pass is TorchSharp's fused LSTM (what training runs). With one attached, the recurrence is
/// unrolled step by step from the same weights, so a hook function is called once per position with [batch, 1, d_hidden]
/// (<see cref="Position"/> says which), and what it returns is what every later step computes from.
/// <see cref="RunWithCache"/> joins the steps: [batch, pos, d_hidden] per hook.
/// </summary>
public sealed class HookedLstm : nn.Module<Tensor, Tensor>
{
    private readonly Dictionary<string, HookPoint> _hooks;
    private readonly LSTM _lstm;
    private readonly HookPoint _embedHook;
    private readonly LayerHooks[] _layers;

    /// <summary>The architecture.</summary>
    public LstmConfig Config { get; }
    /// <summary>Token embedding [d_vocab, d_hidden].</summary>
    public Parameter W_E { get; }
    /// <summary>Unembedding [d_hidden, d_vocab].</summary>
    public Parameter W_U { get; }
    /// <summary>Unembedding bias [d_vocab].</summary>
    public Parameter b_U { get; }

    /// <summary>Every hook point in the order a step reaches them: <c>hook_embed</c>, then each layer's.</summary>
    public IReadOnlyList<HookPoint> HookPoints { get; }

    /// <summary>The position the unrolled recurrence is computing while a hook function runs; −1 outside a step.</summary>
    public int Position { get; private set; } = -1;

    /// <summary>Builds the model with every weight zero; <see cref="InitWeights"/> or load next.</summary>
    public HookedLstm(LstmConfig config) : base(config.Name)
    {
        Config = config.Validate();
        int d = config.DHidden;
        register_parameter("W_E", W_E = new Parameter(zeros(config.DVocab, d)));
        register_module("lstm", _lstm = nn.LSTM(d, d, config.NLayers, batchFirst: true));
        register_parameter("W_U", W_U = new Parameter(zeros(d, config.DVocab)));
        register_parameter("b_U", b_U = new Parameter(zeros(config.DVocab)));
        using (no_grad())
            foreach (var (_, p) in _lstm.named_parameters()) p.zero_();
        _embedHook = new HookPoint(HookNames.Embed, "batch", "pos", "d_hidden");
        _layers = Enumerable.Range(0, config.NLayers).Select(l => new LayerHooks(l)).ToArray();
        HookPoints = [_embedHook, .. _layers.SelectMany(l => l.All)];
        _hooks = HookPoints.ToDictionary(h => h.Name, StringComparer.Ordinal);
    }

    /// <summary>Layer <paramref name="layer"/>'s input-to-hidden weights [4·d_hidden, d_in] (rows i, f, g, o).</summary>
    public Tensor WeightIh(int layer) => LayerParameter("weight_ih", layer);
    /// <summary>Layer <paramref name="layer"/>'s hidden-to-hidden weights [4·d_hidden, d_hidden] (rows i, f, g, o).</summary>
    public Tensor WeightHh(int layer) => LayerParameter("weight_hh", layer);
    /// <summary>Layer <paramref name="layer"/>'s input bias [4·d_hidden].</summary>
    public Tensor BiasIh(int layer) => LayerParameter("bias_ih", layer);
    /// <summary>Layer <paramref name="layer"/>'s hidden bias [4·d_hidden].</summary>
    public Tensor BiasHh(int layer) => LayerParameter("bias_hh", layer);

    private Parameter LayerParameter(string kind, int layer)
    {
        if (layer < 0 || layer >= Config.NLayers)
            throw new ArgumentOutOfRangeException(nameof(layer), $"{Config.Name} has LSTM layers 0–{Config.NLayers - 1}, not {layer}");
        return _lstm.get_parameter($"{kind}_l{layer}") ?? throw new InvalidOperationException($"TorchSharp's LSTM has no {kind}_l{layer}");
    }

    /// <summary>
    /// Seeded initialisation (its own generator: the global RNG is untouched): W_E ~ N(0, 1) as <c>nn.Embedding</c>; the
    /// LSTM's weights and biases and W_U ~ U(−1/√d_hidden, 1/√d_hidden) as PyTorch's LSTM and Linear; b_U = 0; and the
    /// forget gate's input bias at 1 (Jozefowicz et al., 2015), so that an untrained cell starts out keeping its memory.
    /// </summary>
    public HookedLstm InitWeights(long seed)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var generator = new Generator((ulong)seed);
        double bound = 1 / Math.Sqrt(Config.DHidden);
        W_E.copy_(randn(W_E.shape, generator: generator));
        foreach (var (_, p) in _lstm.named_parameters()) p.uniform_(-bound, bound, generator);
        W_U.uniform_(-bound, bound, generator);
        b_U.zero_();
        int d = Config.DHidden;
        for (int l = 0; l < Config.NLayers; l++) BiasIh(l)[d..(2 * d)].fill_(Scalars.One);
        return this;
    }

    /// <summary>The hook point called <paramref name="name"/>; an unknown name lists the closest.</summary>
    public HookPoint GetHookPoint(string name) =>
        _hooks.TryGetValue(name, out var h) ? h : throw new UnknownHookException(name, NameSuggestions.Closest(name, _hooks.Keys));

    /// <summary>Attaches hooks until the returned scope is disposed. Unknown names fail before anything is attached.</summary>
    public HookScope Hooks(params (string Name, HookFunction Hook)[] hooks) => HookScope.Attach(GetHookPoint, hooks);

    /// <summary>The forward pass with <paramref name="hooks"/> attached for its duration (removed even if it throws).</summary>
    public Tensor RunWithHooks(Tensor tokens, params (string Name, HookFunction Hook)[] hooks)
    {
        using (Hooks(hooks)) return forward(tokens);
    }

    /// <summary>
    /// The forward pass, recording into an <see cref="ActivationCache"/> every hook point <paramref name="namesFilter"/>
    /// accepts (null: all), each as [batch, pos, d_hidden] (the steps joined along pos).
    /// </summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Func<string, bool>? namesFilter = null)
    {
        var names = HookPoints.Select(h => h.Name).Where(namesFilter ?? (_ => true)).ToArray();
        var steps = names.ToDictionary(n => n, _ => new List<Tensor>(), StringComparer.Ordinal);
        var cache = new ActivationCache();
        try
        {
            Tensor logits;
            using (var keep = NewDisposeScope())
            {
                var hooks = names.Select(n => (n, (HookFunction)((act, _) =>
                {
                    steps[n].Add(act.detach());
                    return null;
                }))).ToArray();
                logits = RunWithHooks(tokens, hooks);
                foreach (var n in names) cache.Add(n, cat(steps[n], 1).DetachFromDisposeScope());   // [batch, pos, d]
                logits.MoveToOuterDisposeScope();
            }
            return (logits, cache);
        }
        catch
        {
            cache.Dispose();
            throw;
        }
    }

    /// <summary>Checks tokens and returns them as int64 [batch, pos] on the model's device: 1-D input gains a batch axis; ids must lie in [0, d_vocab).</summary>
    public Tensor ValidateTokens(Tensor tokens) => TokenChecks.Validate(tokens, Config.DVocab, null, W_E.device);

    /// <summary>Tokens [batch, pos] → logits [batch, pos, d_vocab].</summary>
    public override Tensor forward(Tensor tokens)
    {
        tokens = ValidateTokens(tokens);
        var x = _embedHook.Run(W_E.index_select(0, tokens.flatten()).view(tokens.shape[0], tokens.shape[1], Config.DHidden));   // [batch, pos, d_hidden]
        var hidden = _layers.Any(l => l.Active) ? Unrolled(x) : _lstm.forward(x).Item1;                                          // [batch, pos, d_hidden]
        return hidden.matmul(W_U).add_(b_U, Scalars.One);                                                                                     // [batch, pos, d_vocab]
    }

    /// <summary>The recurrence one step at a time, running each layer's hooks at every step.</summary>
    private Tensor Unrolled(Tensor x)
    {
        long batch = x.shape[0], pos = x.shape[1];
        int d = Config.DHidden;
        for (int l = 0; l < Config.NLayers; l++)
        {
            var hooks = _layers[l];
            // Every step's input part at once: [batch, pos, 4·d_hidden].
            var input = x.matmul(WeightIh(l).t()).add_(BiasIh(l), Scalars.One).add_(BiasHh(l), Scalars.One);
            var wHh = WeightHh(l).t();                                                   // [d_hidden, 4·d_hidden]
            var h = zeros(batch, 1, d, dtype: x.dtype, device: x.device);                // [batch, 1, d_hidden]
            var c = zeros(batch, 1, d, dtype: x.dtype, device: x.device);
            var outputs = new Tensor[pos];
            try
            {
                for (int t = 0; t < pos; t++)
                {
                    Position = t;
                    var z = input[.., t..(t + 1)].add(h.matmul(wHh), Scalars.One);                      // [batch, 1, 4·d_hidden]
                    var gates = z.chunk(4, -1);                                            // i, f, g, o: [batch, 1, d_hidden] each
                    var i = hooks.InputGate.Run(gates[0].sigmoid());
                    var f = hooks.ForgetGate.Run(gates[1].sigmoid());
                    var g = hooks.CellCandidate.Run(gates[2].tanh());
                    var o = hooks.OutputGate.Run(gates[3].sigmoid());
                    c = hooks.Cell.Run(f.mul(c).add_(i.mul(g), Scalars.One));
                    h = hooks.Hidden.Run(o.mul(c.tanh()));
                    outputs[t] = h;
                }
            }
            finally { Position = -1; }
            x = cat(outputs, 1);                                                          // [batch, pos, d_hidden]
        }
        return x;
    }

    /// <summary>One layer's hook points.</summary>
    private sealed class LayerHooks(int layer)
    {
        public HookPoint InputGate { get; } = Point(HookNames.Lstm.InputGate(layer));
        public HookPoint ForgetGate { get; } = Point(HookNames.Lstm.ForgetGate(layer));
        public HookPoint CellCandidate { get; } = Point(HookNames.Lstm.CellCandidate(layer));
        public HookPoint OutputGate { get; } = Point(HookNames.Lstm.OutputGate(layer));
        public HookPoint Cell { get; } = Point(HookNames.Lstm.Cell(layer));
        public HookPoint Hidden { get; } = Point(HookNames.Lstm.Hidden(layer));
        public HookPoint[] All => [InputGate, ForgetGate, CellCandidate, OutputGate, Cell, Hidden];
        public bool Active => All.Any(h => h.IsActive);
        private static HookPoint Point(string name) => new(name, "batch", "pos", "d_hidden");
    }
}

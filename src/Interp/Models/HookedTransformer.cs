using Interp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Interp.Models;

/// <summary>
/// A decoder-only transformer with a hook point at every stage (TransformerLens's HookedTransformer), driven by a
/// <see cref="ModelConfig"/>: GPT-2 (LayerNorm, GELU, learned positions), LLaMA (RMSNorm, rotary, SwiGLU,
/// grouped-query attention), attention-only and sinusoidal-position models. Tokens [batch, pos] → logits
/// [batch, pos, d_vocab], causal, float32 by default. Weights are registered under TransformerLens's names
/// (<c>embed.W_E</c>, <c>blocks.0.attn.W_Q</c>, …); loading lives in <c>Interp.Loading</c>.
/// </summary>
public sealed partial class HookedTransformer : nn.Module<Tensor, Tensor>
{
    private readonly Dictionary<string, HookPoint> _hooks;

    /// <summary>The architecture.</summary>
    public ModelConfig Config { get; }
    /// <summary>Token embedding.</summary>
    public Embed Embed { get; }
    /// <summary>Additive position embedding (null for rotary or position-free models).</summary>
    public PosEmbed? PosEmbed { get; }
    /// <summary>Token-type embedding (BERT; null otherwise).</summary>
    public TokenTypeEmbed? TokenTypeEmbed { get; }
    /// <summary>The norm right after the embeddings (BERT; null otherwise).</summary>
    public Norm? EmbedLn { get; }
    /// <summary>The blocks, in order.</summary>
    public IReadOnlyList<TransformerBlock> Blocks { get; }
    /// <summary>The final norm (null without normalisation, and for post-norm models, whose blocks end with a norm).</summary>
    public Norm? LnFinal { get; }
    /// <summary>BERT's masked-LM head before the unembedding (null otherwise).</summary>
    public MlmHead? MlmHead { get; }
    /// <summary>Unembedding (null for a base encoder, whose output is its last hidden state).</summary>
    public Unembed? UnembedOrNull { get; }
    /// <summary>Unembedding; throws for a model without one (see <see cref="RequireUnembed"/>).</summary>
    public Unembed Unembed => UnembedOrNull ?? throw RequireUnembed("the unembedding");
    /// <summary>BERT's pooler (null unless <see cref="ModelConfig.Pooler"/>).</summary>
    public Pooler? Pooler { get; }

    /// <summary>
    /// The weight-processing steps applied so far (<see cref="WeightProcessing.ProcessWeights"/>, or
    /// <c>ModelLoadOptions.Processing</c> at load): <see cref="WeightProcessingOptions.None"/> for weights exactly as
    /// loaded or initialised. Downstream analyses read it to know, e.g., whether norm gains are folded into the weights.
    /// </summary>
    public WeightProcessingOptions Processing { get; internal set; } = WeightProcessingOptions.None;

    private readonly Scalar? _logitCap;   // owned: see Scalars

    /// <summary>Builds the model with all weights zero (norm gains one); load or <see cref="InitWeights"/> next.</summary>
    public HookedTransformer(ModelConfig config) : base(config.Name)
    {
        Config = config.Validate();
        register_module("embed", Embed = new Embed(config));
        if (config.Positional is PositionalKind.Learned or PositionalKind.Sinusoidal)
            register_module("pos_embed", PosEmbed = new PosEmbed(config));
        if (config.NTokenTypes > 0) register_module("token_type_embed", TokenTypeEmbed = new TokenTypeEmbed(config));
        if (config.EmbeddingNorm && config.Norm != NormKind.None) register_module("embed_ln", EmbedLn = new Norm(config, HookNames.EmbedNorm + "."));
        var blocks = Enumerable.Range(0, config.NLayers).Select(l => TransformerBlock.Create(config, l)).ToArray();
        register_module("blocks", new ModuleList<TransformerBlock>(blocks));
        Blocks = blocks;
        if (config.Norm != NormKind.None && config.Block != BlockKind.PostNorm) register_module("ln_final", LnFinal = new Norm(config, "ln_final."));
        if (config.Head == HeadKind.MaskedLM) register_module("mlm_head", MlmHead = new MlmHead(config));
        if (config.HasUnembed) register_module("unembed", UnembedOrNull = new Unembed(config));
        if (config.Pooler) register_module("pooler", Pooler = new Pooler(config));
        if (config.OutputLogitsSoftCap > 0) _logitCap = config.OutputLogitsSoftCap.ToScalar();

        _hooks = new Dictionary<string, HookPoint>(StringComparer.Ordinal);
        _ownPoints = OwnPoints();
        foreach (var h in _ownPoints) _hooks.Add(h.Name, h);
        HookPoints = _ownPoints;
    }

    /// <summary>The model's own hook points in forward order (without those of spliced SAEs).</summary>
    private HookPoint[] OwnPoints() => Embed.HookPoints.Concat(PosEmbed?.HookPoints ?? []).Concat(TokenTypeEmbed?.HookPoints ?? []).Concat(EmbedLn?.HookPoints ?? [])
        .Concat(Blocks.SelectMany(b => b.HookPoints))
        .Concat(LnFinal?.HookPoints ?? [])
        .Concat(MlmHead?.HookPoints ?? [])
        .ToArray();

    /// <summary>
    /// Split inputs (TransformerLens's <c>use_split_qkv_input</c> and <c>use_hook_mlp_in</c>): while true, every block
    /// has <c>blocks.{l}.hook_q_input</c>, <c>hook_k_input</c>, <c>hook_v_input</c> ([batch, pos, head_index or
    /// kv_head_index, d_model]: each head's own copy of resid_pre, before ln1, which that head's query, key or value
    /// path normalises on its own) and, with an MLP, <c>hook_mlp_in</c> ([batch, pos, d_model]: the MLP's own copy of
    /// its input, before ln2). The gradient at a copy is the gradient with respect to that head's (or the MLP's) input
    /// alone, which is what edge attribution needs. Nothing changes until a hook is attached to one of them; with hooks
    /// attached that replace nothing, the forward pass computes exactly the same values (bit for bit) as without. While
    /// the copies are in use, ln1's hooks see [batch, pos, head, …] copies too. False by default; not for post-norm
    /// blocks (BERT), which have no pre-norm input to split. Toggling it is not safe while another pass runs.
    /// </summary>
    /// <exception cref="InterpException">Set to true on a post-norm model.</exception>
    public bool UseSplitInputs
    {
        get => Blocks.Count > 0 && Blocks[0].SplitInputs;
        set
        {
            if (value == UseSplitInputs) return;
            if (value && Config.Block == BlockKind.PostNorm)
                throw new InterpException($"split inputs: {Config.Name} has post-norm blocks ({Config.Family}), whose attention reads the normalised stream of the previous block; only pre-norm and parallel blocks have split inputs");
            foreach (var b in Blocks) b.SplitInputs = value;
            foreach (var h in _ownPoints) _hooks.Remove(h.Name);
            _ownPoints = OwnPoints();
            foreach (var h in _ownPoints) _hooks.Add(h.Name, h);
            RebuildHookPoints();
        }
    }

    /// <summary>
    /// The error for a pass that needs logits over the vocabulary, on a model whose output is its hidden state (a base
    /// encoder such as BertModel); <paramref name="what"/> names the pass.
    /// </summary>
    public InterpException RequireUnembed(string what) =>
        new($"{what} needs a model with an unembedding (logits over the vocabulary), but {Config.Name} ({Config.Family}) has none: its output is its last hidden state [batch, pos, d_model]");

    /// <summary>Throws unless the model is causal; <paramref name="what"/> names the pass that needs a causal model.</summary>
    /// <exception cref="InterpException">The model is a bidirectional encoder.</exception>
    public void EnsureCausal(string what)
    {
        if (!Config.Causal)
            throw new InterpException($"{what} needs a causal (decoder) model, but {Config.Name} ({Config.Family}) is a bidirectional encoder: every position sees the whole sequence");
    }

    /// <summary>Throws unless the model has an unembedding; <paramref name="what"/> names the pass.</summary>
    /// <exception cref="InterpException">The model's output is its hidden state.</exception>
    public void EnsureUnembed(string what)
    {
        if (!Config.HasUnembed) throw RequireUnembed(what);
    }

    /// <summary>Submodules are registered explicitly under TransformerLens's names; skip reflection-based registration.</summary>
    protected override void RegisterComponents() { }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing) _logitCap?.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>Every hook point, in the order the forward pass reaches them (with those of spliced SAEs).</summary>
    public IReadOnlyList<HookPoint> HookPoints { get; private set; }

    private HookPoint[] _ownPoints;
    private readonly List<(HookPoint After, IReadOnlyList<HookPoint> Points)> _grafted = new();

    /// <summary>Adds <paramref name="points"/> (an SAE's own hook points) right after <paramref name="after"/>.</summary>
    internal void Graft(HookPoint after, IReadOnlyList<HookPoint> points)
    {
        foreach (var p in points)
            if (_hooks.ContainsKey(p.Name)) throw new HookException(p.Name, "already exists: two SAEs spliced at the same hook point");
        foreach (var p in points) _hooks.Add(p.Name, p);
        _grafted.Add((after, points));
        RebuildHookPoints();
    }

    /// <summary>Removes hook points added by <see cref="Graft"/>.</summary>
    internal void Ungraft(IReadOnlyList<HookPoint> points)
    {
        foreach (var p in points) _hooks.Remove(p.Name);
        _grafted.RemoveAll(g => ReferenceEquals(g.Points, points));
        RebuildHookPoints();
    }

    private void RebuildHookPoints()
    {
        var list = new List<HookPoint>(_hooks.Count);
        void Add(HookPoint h)
        {
            list.Add(h);
            foreach (var g in _grafted)
                if (ReferenceEquals(g.After, h)) foreach (var p in g.Points) Add(p);
        }
        foreach (var h in _ownPoints) Add(h);
        HookPoints = list;
    }

    /// <summary>The device the weights live on.</summary>
    public Device Device => Embed.W_E.device;

    /// <summary>Number of trainable parameters.</summary>
    public long ParameterCount => parameters().Sum(p => p.NumberOfElements);

    /// <summary>The hook point called <paramref name="name"/>; an unknown name lists the closest valid names.</summary>
    public HookPoint GetHookPoint(string name) =>
        _hooks.TryGetValue(name, out var h) ? h : throw new UnknownHookException(name, NameSuggestions.Closest(name, _hooks.Keys));

    /// <summary>The shape an activation at <paramref name="hook"/> has for a [batch, pos] input.</summary>
    public long[] HookShape(HookPoint hook, long batch, long pos) => hook.Axes.Select(axis => axis switch
    {
        "batch" => batch,
        "pos" or "query_pos" or "key_pos" => pos,
        "d_model" => Config.DModel,
        "head_index" => Config.NHeads,
        "kv_head_index" => Config.KvHeads,
        "d_head" => Config.HeadDim,
        "d_mlp" => Config.DMlp,
        "one" => 1L,
        _ when hook.AxisSizes is { } sizes && sizes.TryGetValue(axis, out long n) => n,
        _ => throw new InvalidOperationException($"hook {hook.Name}: unknown axis '{axis}'"),
    }).ToArray();

    /// <summary>Plain forward pass: tokens [batch, pos] (or [pos]) → logits [batch, pos, d_vocab].</summary>
    public override Tensor forward(Tensor tokens) => forward(tokens, null);

    /// <summary>
    /// Forward pass of a padded batch: tokens [batch, pos] with <paramref name="attentionMask"/> [batch, pos]
    /// (1 or true at real tokens, 0 or false at padding; null: no padding) → logits [batch, pos, d_vocab] (for a base
    /// encoder without an unembedding, the last hidden state [batch, pos, d_model]). Each row's real tokens are
    /// contiguous: right padding (for analysis) or left padding (for batched generation). Positions follow the mask:
    /// every row's first real token is position 0, and no query attends to a padded key, so at every real position
    /// the output and every activation equal those of the row run alone (up to float rounding). Values at padded
    /// positions are meaningless.
    /// </summary>
    /// <param name="tokens">Token ids [batch, pos].</param>
    /// <param name="attentionMask">1 at real tokens, 0 at padding, [batch, pos]; null: no padding.</param>
    /// <param name="tokenTypes">Token types (BERT segments) [batch, pos]; null: all 0. Only for models with token types.</param>
    /// <exception cref="InvalidTokensException">The tokens, the mask or the token types are invalid (see <see cref="PaddingMask"/>).</exception>
    public Tensor forward(Tensor tokens, Tensor? attentionMask, Tensor? tokenTypes = null)
    {
        using var scope = NewDisposeScope();
        tokens = ValidateTokens(tokens);
        var context = Context(attentionMask, tokens.shape[0], tokens.shape[1]);
        return RunFrom(0, Embedding(tokens, context, tokenTypes), context).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="forward(Tensor, Tensor?, Tensor?)"/> returning only the logits <paramref name="reads"/> names,
    /// [batch, reads.Columns.Count] (see <see cref="ForwardFrom(int, Tensor, Tensor?, LogitReads)"/>).
    /// </summary>
    /// <exception cref="InvalidTokensException">The tokens or the mask are invalid.</exception>
    /// <exception cref="InterpException">The reads cannot be taken (<see cref="CanRead"/>) or do not fit the batch.</exception>
    public Tensor forward(Tensor tokens, Tensor? attentionMask, LogitReads reads)
    {
        ArgumentNullException.ThrowIfNull(reads);
        if (!CanRead(reads, out var why)) throw new InterpException($"forward with logit reads: {why}");
        using var scope = NewDisposeScope();
        tokens = ValidateTokens(tokens);
        var context = Context(attentionMask, tokens.shape[0], tokens.shape[1]);
        return HeadAt(RunBlocks(0, Embedding(tokens, context, null), context), reads).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A forward pass over new tokens that extends <paramref name="cache"/> (TransformerLens's <c>past_kv_cache</c>):
    /// tokens [batch, pos] → logits [batch, pos, d_vocab] of the new positions, equal (up to float rounding) to those
    /// positions of one forward pass over everything cached so far followed by these tokens. Every attention layer
    /// appends the new keys and values to the cache and attends to the cached ones; each row's positions continue
    /// from its real tokens so far (<see cref="KeyValueCache.RealTokens"/>); sliding windows count cached positions
    /// too. Hooks fire on the new positions only (<c>hook_attn_scores</c> and <c>hook_pattern</c> have the whole key
    /// axis). If the pass throws (a hook, cancellation) the cache is left as it was. The first pass fixes the batch size.
    /// </summary>
    /// <param name="tokens">New token ids [batch, pos] (or [pos]).</param>
    /// <param name="cache">The cache of this model to extend (empty for the first pass).</param>
    /// <param name="attentionMask">
    /// 1 at real tokens, 0 at padding, [batch, pos]; null: all real. Over the cache and this pass together each row's real
    /// tokens are contiguous: a left-padded prompt, then its continuation; after padding that follows real tokens (a
    /// row that has finished) only padding may follow. A row may be all padding so far.
    /// </param>
    /// <exception cref="InterpException">The model is an encoder, or the cache belongs to another model.</exception>
    /// <exception cref="InvalidTokensException">The tokens or the mask are invalid, the batch differs from the cache's, or cache + tokens exceed n_ctx.</exception>
    public Tensor ForwardWithCache(Tensor tokens, KeyValueCache cache, Tensor? attentionMask = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        EnsureCausal("a key/value cache");
        if (!ReferenceEquals(cache.Model, this))
            throw new InterpException($"the key/value cache belongs to another model ({cache.Model.Config.Name}), not to {Config.Name}");
        using var scope = NewDisposeScope();
        tokens = ValidateTokens(tokens);
        int batch = (int)tokens.shape[0], pos = (int)tokens.shape[1];
        var context = cache.Begin(RealTokens(attentionMask, batch, pos), batch, pos);
        try
        {
            var output = RunFrom(0, Embedding(tokens, context, null), context);
            cache.Commit();
            return output.MoveToOuterDisposeScope();
        }
        finally
        {
            cache.Abandon(); // after Commit, nothing to drop
        }
    }

    /// <summary>
    /// An attention mask [batch, pos] (or [pos]) of 0/1 values as row-major booleans on the host, true at real tokens;
    /// null when <paramref name="attentionMask"/> is null. Rows may be all padding (a pass that extends a cache).
    /// </summary>
    private static bool[]? RealTokens(Tensor? attentionMask, long batch, long pos)
    {
        if (attentionMask is null) return null;
        using var scope = NewDisposeScope();
        var mask = attentionMask.dim() == 1 ? attentionMask.unsqueeze(0) : attentionMask;
        if (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != pos)
            throw new InvalidTokensException($"attention mask must have the tokens' shape [batch {batch}, pos {pos}], got [{string.Join(", ", attentionMask.shape)}]");
        var values = mask.to(ScalarType.Float64).cpu().contiguous().data<double>().ToArray();
        var real = new bool[values.Length];
        for (int j = 0; j < values.Length; j++)
        {
            if (values[j] is not (0.0 or 1.0))
                throw new InvalidTokensException($"attention mask value {values[j]} at [batch {j / pos}, pos {j % pos}] must be 1 (real token) or 0 (padding)");
            real[j] = values[j] == 1.0;
        }
        return real;
    }

    /// <summary>The embedding stage: tokens [batch, pos] → blocks.0.hook_resid_pre [batch, pos, d_model].</summary>
    private Tensor Embedding(Tensor tokens, AttentionContext context, Tensor? tokenTypes)
    {
        var resid = Embed.forward(tokens);
        if (PosEmbed is not null) resid = resid.add(PosEmbed.forward(tokens, context.Positions), Scalars.One);
        if (tokenTypes is not null && TokenTypeEmbed is null)
            throw new InvalidTokensException($"{Config.Name} ({Config.Family}) has no token-type embedding; pass no token types");
        if (TokenTypeEmbed is not null)
        {
            var types = tokenTypes is null ? zeros_like(tokens) : ValidateTokenTypes(tokenTypes, tokens.shape[0], tokens.shape[1]);
            resid = resid.add(TokenTypeEmbed.forward(types), Scalars.One);
        }
        return EmbedLn is null ? resid : EmbedLn.forward(resid);
    }

    private Tensor ValidateTokenTypes(Tensor tokenTypes, long batch, long pos)
    {
        var types = tokenTypes.dim() == 1 ? tokenTypes.unsqueeze(0) : tokenTypes;
        if (types.dim() != 2 || types.shape[0] != batch || types.shape[1] != pos)
            throw new InvalidTokensException($"token types must have the tokens' shape [batch {batch}, pos {pos}], got [{string.Join(", ", tokenTypes.shape)}]");
        if (types.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte))
            throw new InvalidTokensException($"token types must be an integer tensor, got {types.dtype}");
        types = types.to(ScalarType.Int64, Device);
        using var n = Config.NTokenTypes.ToScalar();
        var bad = types.lt(Scalars.Zero).logical_or(types.ge(n));
        if (bad.any().item<bool>())
        {
            long flat = bad.reshape(-1).to(ScalarType.Int32).argmax().item<long>();
            throw new InvalidTokensException(
                $"token type {types.reshape(-1)[flat].item<long>()} at [batch {flat / pos}, pos {flat % pos}] is outside [0, {Config.NTokenTypes})");
        }
        return types;
    }

    /// <summary>
    /// Checks an attention mask of a padded batch and returns where its padding is: bool [batch, pos] on the model's
    /// device, true at padding, or null when <paramref name="attentionMask"/> is null or marks no padding. The mask is
    /// [batch, pos] (or [pos] for one row) of bool, integer or float 0/1 values, 1 at real tokens; each row holds at
    /// least one real token, and its real tokens are contiguous (padding only before them, after them, or both).
    /// </summary>
    /// <exception cref="InvalidTokensException">The mask has another shape, a value other than 0 and 1, a row without a real token, or padding between real tokens.</exception>
    public Tensor? PaddingMask(Tensor? attentionMask, long batch, long pos)
    {
        if (attentionMask is null) return null;
        using var scope = NewDisposeScope();
        var mask = attentionMask.dim() == 1 ? attentionMask.unsqueeze(0) : attentionMask;
        if (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != pos)
            throw new InvalidTokensException($"attention mask must have the tokens' shape [batch {batch}, pos {pos}], got [{string.Join(", ", attentionMask.shape)}]");
        if (mask.dtype != ScalarType.Bool)
        {
            var values = mask.to(ScalarType.Float64, Device);
            var bad = values.ne(Scalars.Zero).logical_and(values.ne(Scalars.One));
            if (bad.any().item<bool>())
            {
                long flat = bad.reshape(-1).to(ScalarType.Int32).argmax().item<long>();
                throw new InvalidTokensException(
                    $"attention mask value {values.reshape(-1)[flat].item<double>()} at [batch {flat / pos}, pos {flat % pos}] must be 1 (real token) or 0 (padding)");
            }
        }
        var real = mask.to(ScalarType.Bool, Device);
        var empty = real.any(1).logical_not();
        if (empty.any().item<bool>())
            throw new InvalidTokensException($"attention mask row {empty.to(ScalarType.Int32).argmax().item<long>()} has no real token: every row needs at least one");
        if (pos > 2)
        {
            // Padding with real tokens on both sides: a real token that starts a second run of real tokens.
            var starts = real.narrow(1, 1, pos - 1).logical_and(real.narrow(1, 0, pos - 1).logical_not()).to(ScalarType.Int32); // [batch, pos-1]
            var runs = starts.sum(1).add(real.select(1, 0).to(ScalarType.Int32), Scalars.One);
            var gapped = runs.gt(Scalars.One);
            if (gapped.any().item<bool>())
            {
                long row = gapped.to(ScalarType.Int32).argmax().item<long>();
                var rowStarts = starts[row];
                long second = real.select(1, 0)[row].item<bool>() ? rowStarts.argmax().item<long>() + 1
                    : rowStarts.cumsum(0).eq(Scalars.Two).to(ScalarType.Int32).argmax().item<long>() + 1;
                throw new InvalidTokensException(
                    $"attention mask row {row}: position {second} is a real token after padding that follows real tokens; the real tokens must be contiguous (left or right padding)");
            }
        }
        if (real.all().item<bool>()) return null;
        return real.logical_not().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The attention context of a pass: the padding of <paramref name="attentionMask"/> and, when some row is
    /// left-padded, each token's position counted from its row's first real token.
    /// </summary>
    private AttentionContext Context(Tensor? attentionMask, long batch, long pos)
    {
        var padding = PaddingMask(attentionMask, batch, pos);
        if (padding is null) return AttentionContext.None;
        Tensor? positions = null;
        if (padding.select(1, 0).any().item<bool>())
        {
            // [batch, pos]: 0 at each row's first real token; padding before it gets 0 too (its values are meaningless).
            positions = padding.logical_not().to(ScalarType.Int64).cumsum(1).sub(Scalars.One).clamp_min(Scalars.Zero);
        }
        return new AttentionContext(padding, positions);
    }

    /// <summary>
    /// The forward pass from block <paramref name="layer"/> on: <paramref name="residPre"/> [batch, pos, d_model] enters
    /// as <c>blocks.{layer}.hook_resid_pre</c>, then blocks <paramref name="layer"/>…n_layers−1, the final norm and the
    /// unembedding run as in <see cref="forward(Tensor)"/>, with every hook from <c>blocks.{layer}.hook_resid_pre</c> on firing
    /// as usual → logits [batch, pos, d_vocab]. Fed the resid_pre that a run on some tokens recorded, it returns that
    /// run's logits, so an intervention at layer l can reuse a cached prefix instead of recomputing layers 0…l−1.
    /// Positions need no input: learned and sinusoidal ones are already in the residual stream, rotary angles follow
    /// the mask as in the forward pass. <paramref name="layer"/> = n_layers runs only the final norm and the unembedding.
    /// </summary>
    /// <param name="layer">The block whose resid_pre <paramref name="residPre"/> is.</param>
    /// <param name="residPre">The residual stream [batch, pos, d_model].</param>
    /// <param name="attentionMask">The attention mask [batch, pos] of a padded batch, as in <see cref="forward(Tensor, Tensor?, Tensor?)"/> (null: no padding).</param>
    /// <exception cref="InterpException">The layer is outside [0, n_layers], residPre is not [batch, pos ≤ n_ctx, d_model], or the mask does not fit.</exception>
    public Tensor ForwardFrom(int layer, Tensor residPre, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        var (resid, context) = ResumeAt(layer, residPre, attentionMask);
        return RunFrom(layer, resid, context).MoveToOuterDisposeScope();
    }

    /// <summary>Checks a resumed pass's input (<see cref="ForwardFrom(int, Tensor, Tensor?)"/>) and returns it in the model's dtype and device, with its context.</summary>
    private (Tensor Resid, AttentionContext Context) ResumeAt(int layer, Tensor residPre, Tensor? attentionMask)
    {
        if (layer < 0 || layer > Config.NLayers)
            throw new InterpException($"ForwardFrom: layer {layer} is outside [0, {Config.NLayers}] ({Config.NLayers} layers; {Config.NLayers} = final norm and unembedding only)");
        if (residPre.dim() != 3 || residPre.shape[2] != Config.DModel || residPre.shape[0] == 0 || residPre.shape[1] == 0 || residPre.shape[1] > Config.NCtx)
            throw new InterpException($"ForwardFrom: {HookNames.ResidPre(Math.Min(layer, Config.NLayers - 1))} must be [batch, pos, d_model = {Config.DModel}] with 1 ≤ pos ≤ n_ctx = {Config.NCtx}, got [{string.Join(", ", residPre.shape)}]");
        return (residPre.to(ComputeDType, Device), Context(attentionMask, residPre.shape[0], residPre.shape[1]));
    }

    /// <summary>
    /// <see cref="ForwardFrom(int, Tensor, Tensor?)"/> from the middle of block <paramref name="layer"/>: <paramref name="residMid"/> enters as
    /// <c>blocks.{layer}.hook_resid_mid</c>, then that block's MLP and everything after it run as in <see cref="forward(Tensor)"/>.
    /// </summary>
    /// <param name="layer">The block whose resid_mid <paramref name="residMid"/> is.</param>
    /// <param name="residMid">The residual stream [batch, pos, d_model].</param>
    /// <param name="attentionMask">The attention mask [batch, pos] of a padded batch, as in <see cref="forward(Tensor, Tensor?, Tensor?)"/> (null: no padding).</param>
    /// <exception cref="InterpException">The layer is outside the model, its blocks have no resid_mid (attention-only or parallel), residMid is not [batch, pos ≤ n_ctx, d_model], or the mask does not fit.</exception>
    public Tensor ForwardFromMid(int layer, Tensor residMid, Tensor? attentionMask = null) => ForwardFromMid(layer, residMid, attentionMask, null);

    /// <summary>
    /// <see cref="ForwardFromMid(int, Tensor, Tensor?)"/> returning only the logits <paramref name="reads"/> names
    /// (null: every logit), as <see cref="ForwardFrom(int, Tensor, Tensor?, LogitReads)"/> does.
    /// </summary>
    /// <exception cref="InterpException">As <see cref="ForwardFromMid(int, Tensor, Tensor?)"/> and <see cref="ForwardFrom(int, Tensor, Tensor?, LogitReads)"/>.</exception>
    public Tensor ForwardFromMid(int layer, Tensor residMid, Tensor? attentionMask, LogitReads? reads)
    {
        if (reads is not null && !CanRead(reads, out var why)) throw new InterpException($"ForwardFromMid with logit reads: {why}");
        if (layer < 0 || layer >= Config.NLayers)
            throw new InterpException($"ForwardFromMid: layer {layer} is outside [0, {Config.NLayers - 1}]");
        if (!Config.HasResidMid)
            throw new InterpException($"ForwardFromMid: {Config.Name} has {(Config.AttentionOnly ? "attention-only" : "parallel")} blocks, which have no {HookNames.ResidMid(layer)} (resume at {HookNames.ResidPre(layer + 1 < Config.NLayers ? layer + 1 : layer)} with ForwardFrom)");
        if (residMid.dim() != 3 || residMid.shape[2] != Config.DModel || residMid.shape[0] == 0 || residMid.shape[1] == 0 || residMid.shape[1] > Config.NCtx)
            throw new InterpException($"ForwardFromMid: {HookNames.ResidMid(layer)} must be [batch, pos, d_model = {Config.DModel}] with 1 ≤ pos ≤ n_ctx = {Config.NCtx}, got [{string.Join(", ", residMid.shape)}]");
        using var scope = NewDisposeScope();
        var context = Context(attentionMask, residMid.shape[0], residMid.shape[1]);
        var next = Blocks[layer].ForwardFromMid(residMid.to(ComputeDType, Device));
        return (reads is null ? RunFrom(layer + 1, next, context) : HeadAt(RunBlocks(layer + 1, next, context), reads)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Blocks <paramref name="layer"/>… and the head: resid [batch, pos, d_model] → the output (logits, or the last
    /// hidden state for a base encoder); attention follows <paramref name="context"/>.
    /// </summary>
    private Tensor RunFrom(int layer, Tensor resid, AttentionContext context) => Head(RunBlocks(layer, resid, context));

    /// <summary>Blocks <paramref name="layer"/>… : resid [batch, pos, d_model] → the last residual stream.</summary>
    private Tensor RunBlocks(int layer, Tensor resid, AttentionContext context)
    {
        for (int l = layer; l < Blocks.Count; l++)
        {
            // Each block's intermediates are freed when it ends (a hook that keeps one detaches it, as HookPoint says),
            // not when the whole pass ends: the next block reuses their memory instead of faulting in fresh pages.
            using var scope = NewDisposeScope();
            resid = Blocks[l].forward(resid, context);
            if (scope.Contains(resid)) resid = scope.MoveToOuter(resid);
        }
        return resid;
    }

    /// <summary>
    /// <see cref="ForwardFrom(int, Tensor, Tensor?)"/> that returns only the logits <paramref name="reads"/> names,
    /// [batch, reads.Columns.Count] (sequence r at its position): the final norm runs at one position per sequence and
    /// the unembedding is a product with those columns of W_U. Equal, up to float rounding, to reading them from the
    /// full logits. For causal language models whose final-norm hooks are not in use (they would see [batch, 1, d_model]).
    /// </summary>
    /// <exception cref="InterpException">As <see cref="ForwardFrom(int, Tensor, Tensor?)"/>; or the model has no plain unembedding, a final-norm hook is attached, the batch is not a multiple of the prompts, or a position or column is out of range.</exception>
    public Tensor ForwardFrom(int layer, Tensor residPre, Tensor? attentionMask, LogitReads reads)
    {
        ArgumentNullException.ThrowIfNull(reads);
        if (!CanRead(reads, out var why)) throw new InterpException($"ForwardFrom with logit reads: {why}");
        using var scope = NewDisposeScope();
        var (resid, context) = ResumeAt(layer, residPre, attentionMask);
        return HeadAt(RunBlocks(layer, resid, context), reads).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// True when <see cref="ForwardFrom(int, Tensor, Tensor?, LogitReads)"/> can compute <paramref name="reads"/>: a
    /// causal model with a plain unembedding and no hook attached to the final norm; else false with the reason.
    /// </summary>
    public bool CanRead(LogitReads reads, out string why)
    {
        ArgumentNullException.ThrowIfNull(reads);
        why = UnembedOrNull is null ? $"{Config.Name} has no unembedding"
            : MlmHead is not null ? $"{Config.Name} has a masked-LM head"
            : reads.Positions.Count == 0 ? "no positions to read"
            : LnFinal is not null && LnFinal.HookPoints.Any(h => h.IsActive) ? "a hook is attached to the final norm, which would see one position per sequence"
            : "";
        return why.Length == 0;
    }

    /// <summary>The last residual stream [batch, pos, d_model] → the logits <paramref name="reads"/> names, [batch, columns].</summary>
    private Tensor HeadAt(Tensor resid, LogitReads reads)
    {
        long rows = resid.shape[0], pos = resid.shape[1];
        int n = reads.Positions.Count;
        if (rows % n != 0)
            throw new InterpException($"logit reads of {n} prompts: the batch of {rows} sequences is not the prompts tiled k times");
        var index = new long[rows];
        for (long r = 0; r < rows; r++)
        {
            long p = reads.Positions[(int)(r % n)];
            if (p < -pos || p >= pos) throw new InterpException($"logit reads: prompt {r % n}'s position {p} is outside a sequence of {pos} tokens");
            index[r] = r * pos + (p < 0 ? pos + p : p);
        }
        var columns = reads.Columns.Select(c => (long)c).ToArray();
        foreach (long c in columns)
            if (c < 0 || c >= Config.DVocab) throw new InterpException($"logit reads: column {c} is outside the vocabulary [0, {Config.DVocab})");
        var x = resid.reshape(rows * pos, Config.DModel).index_select(0, tensor(index, device: Device)).unsqueeze(1); // [batch, 1, d_model]
        if (LnFinal is not null) x = LnFinal.forward(x);
        var cols = tensor(columns, device: Device);
        var unembed = UnembedOrNull!;
        var logits = x.squeeze(1).matmul(Gemm.Like(unembed.W_U.index_select(1, cols), x)).add(unembed.b_U.index_select(0, cols), Scalars.One); // [batch, columns]
        if (_logitCap is null) return logits;
        return logits.requires_grad ? logits.div(_logitCap).tanh().mul(_logitCap) : logits.div_(_logitCap).tanh_().mul_(_logitCap);
    }

    /// <summary>The last residual stream [batch, pos, d_model] → the output: final norm, masked-LM head, unembedding, soft cap.</summary>
    private Tensor Head(Tensor resid)
    {
        if (LnFinal is not null) resid = LnFinal.forward(resid);
        if (UnembedOrNull is null) return resid;
        if (MlmHead is not null) resid = MlmHead.forward(resid);
        var logits = UnembedOrNull.forward(resid);
        if (_logitCap is null) return logits;
        // Out of place while gradients are recorded: tanh's backward reads its output.
        return logits.requires_grad ? logits.div(_logitCap).tanh().mul(_logitCap) : logits.div_(_logitCap).tanh_().mul_(_logitCap);
    }

    /// <summary>
    /// BERT's pooled output, tanh(dense(h[:, 0])): <paramref name="hidden"/> [batch, pos, d_model] (the last hidden state
    /// that <see cref="forward(Tensor, Tensor?, Tensor?)"/> returns) → [batch, d_model].
    /// </summary>
    /// <exception cref="InterpException">The model has no pooler.</exception>
    public Tensor Pool(Tensor hidden)
    {
        if (Pooler is null) throw new InterpException($"{Config.Name} ({Config.Family}) has no pooler");
        if (hidden.dim() != 3 || hidden.shape[2] != Config.DModel)
            throw new InterpException($"Pool: the hidden state must be [batch, pos, d_model = {Config.DModel}], got [{string.Join(", ", hidden.shape)}]");
        return Pooler.forward(hidden);
    }

    /// <summary>The forward pass with <paramref name="hooks"/> attached for its duration (removed even if it throws).</summary>
    public Tensor RunWithHooks(Tensor tokens, params (string Name, HookFunction Hook)[] hooks) => RunWithHooks(tokens, null, hooks);

    /// <summary>
    /// The forward pass of a padded batch (<see cref="forward(Tensor, Tensor?, Tensor?)"/>) with <paramref name="hooks"/>
    /// attached for its duration (removed even if it throws).
    /// </summary>
    public Tensor RunWithHooks(Tensor tokens, Tensor? attentionMask, params (string Name, HookFunction Hook)[] hooks) =>
        RunWithHooks(tokens, attentionMask, null, hooks);

    /// <summary>
    /// The forward pass of a padded batch with token types (BERT; <see cref="forward(Tensor, Tensor?, Tensor?)"/>) with
    /// <paramref name="hooks"/> attached for its duration (removed even if it throws).
    /// </summary>
    public Tensor RunWithHooks(Tensor tokens, Tensor? attentionMask, Tensor? tokenTypes, params (string Name, HookFunction Hook)[] hooks)
    {
        using (Hooks(hooks)) return forward(tokens, attentionMask, tokenTypes);
    }

    /// <summary>
    /// The forward pass, recording activations into an <see cref="ActivationCache"/>. With no filter every hook
    /// point is cached except the per-head <c>hook_result</c> (large, and computed only when asked for, as in
    /// TransformerLens); a filter caches exactly the names it accepts, <c>hook_result</c> included.
    /// </summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Func<string, bool>? namesFilter = null) =>
        RunWithCache(tokens, null, namesFilter);

    /// <summary>
    /// <see cref="RunWithCache(Tensor, Func{string, bool}?)"/> for a padded batch with its
    /// <paramref name="attentionMask"/> [batch, pos] (<see cref="forward(Tensor, Tensor?, Tensor?)"/>): the cached activations
    /// at real positions equal each row's run alone; those at padded positions are meaningless.
    /// </summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Tensor? attentionMask, Func<string, bool>? namesFilter = null) =>
        RunWithCache(tokens, attentionMask, null, namesFilter);

    /// <summary>
    /// <see cref="RunWithCache(Tensor, Tensor?, Func{string, bool}?)"/> with token types (BERT segments) [batch, pos].
    /// </summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Tensor? attentionMask, Tensor? tokenTypes, Func<string, bool>? namesFilter = null)
    {
        namesFilter ??= name => !HookNames.Is(name, HookNames.Result);
        EnsureCacheFits(tokens, namesFilter);
        var cache = new ActivationCache();
        try
        {
            var hooks = HookPoints.Where(h => namesFilter(h.Name))
                .Select(h => (h.Name, (HookFunction)((act, _) =>
                {
                    cache.Add(h.Name, act.detach().DetachFromDisposeScope());
                    return null;
                })))
                .ToArray();
            var logits = RunWithHooks(tokens, attentionMask, tokenTypes, hooks);
            return (logits, cache);
        }
        catch
        {
            cache.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The bytes a <see cref="RunWithCache(Tensor, Func{string, bool}?)"/> of a [batch, pos] input keeps: the activations
    /// of every hook point <paramref name="namesFilter"/> accepts (null: RunWithCache's default, every point but
    /// <c>hook_result</c>), as <see cref="ActivationCache.Bytes"/> will count them, and the logits.
    /// </summary>
    public (long Activations, long Logits) CacheBytes(long batch, long pos, Func<string, bool>? namesFilter = null)
    {
        namesFilter ??= name => !HookNames.Is(name, HookNames.Result);
        long element = ElementBytes;
        Int128 activations = 0;
        foreach (var h in HookPoints.Where(h => namesFilter(h.Name)))
            activations += HookShape(h, batch, pos).Aggregate((Int128)1, (n, d) => n * d) * element;
        Int128 logits = (Int128)batch * pos * (UnembedOrNull is null ? Config.DModel : Config.DVocab) * element;
        return ((long)Int128.Min(activations, long.MaxValue), (long)Int128.Min(logits, long.MaxValue));
    }

    private long ElementBytes => DType switch { ScalarType.Float64 or ScalarType.Int64 => 8, ScalarType.Float16 or ScalarType.BFloat16 => 2, _ => 4 };

    /// <summary>Refuses, before anything runs, a cache that cannot fit in the memory this process has left (CPU).</summary>
    private void EnsureCacheFits(Tensor tokens, Func<string, bool> namesFilter)
    {
        if (Device.type != DeviceType.CPU || tokens.dim() is < 1 or > 2) return;
        long batch = tokens.dim() == 1 ? 1 : tokens.shape[0], pos = tokens.shape[^1];
        if (MemoryBudget.AvailableBytes() is not { } available) return;
        var (activations, logits) = CacheBytes(batch, pos, namesFilter);
        if (activations + logits <= available) return;
        // Memory the allocator kept from earlier passes (NativeEnvironment) counts as used: give it back, then look again
        // (a fresh reading: a refusal never rests on a recent one).
        NativeEnvironment.ReleaseFreedMemory();
        if (MemoryBudget.AvailableBytes(fresh: true) is { } after) available = after;
        if (activations + logits <= available) return;
        long element = ElementBytes;
        var largest = HookPoints.Where(h => namesFilter(h.Name))
            .Select(h => (h.Name, Bytes: HookShape(h, batch, pos).Aggregate(1L, (n, d) => n * d) * element))
            .GroupBy(h => HookNames.LayerOf(h.Name) is null ? h.Name : h.Name[(h.Name.IndexOf('.', h.Name.IndexOf('.') + 1) + 1)..])
            .Select(g => (Kind: g.Key, Bytes: g.Sum(x => x.Bytes), Count: g.Count()))
            .OrderByDescending(g => g.Bytes).Take(3);
        throw new InterpException(
            $"RunWithCache of [batch {batch}, pos {pos}] on {Config.Name} would keep {MemoryBudget.Format(activations)} of activations and " +
            $"{MemoryBudget.Format(logits)} of logits, but this process has {MemoryBudget.Format(available)} left; largest: " +
            string.Join(", ", largest.Select(g => $"{g.Kind} {MemoryBudget.Format(g.Bytes)}{(g.Count > 1 ? $" ({g.Count} layers)" : "")}")) +
            ". Cache fewer hook points (a names filter), fewer sequences or fewer positions.");
    }

    /// <summary>Attaches hooks until the returned scope is disposed. Unknown names fail before anything is attached.</summary>
    public HookScope Hooks(params (string Name, HookFunction Hook)[] hooks) => HookScope.Attach(GetHookPoint, hooks);

    /// <summary>Detaches every hook from every hook point.</summary>
    public void ResetHooks()
    {
        foreach (var h in HookPoints) h.Clear();
    }

    /// <summary>
    /// Checks tokens and returns them as int64 [batch, pos] on the model's device: 1-D input gains a batch axis;
    /// ids must lie in [0, d_vocab) and the length in [1, n_ctx].
    /// </summary>
    public Tensor ValidateTokens(Tensor tokens) => TokenChecks.Validate(tokens, Config.DVocab, Config.NCtx, Device);

    /// <summary>
    /// Random initialisation as TransformerLens does by default: weights ~ N(0, std) with std = 0.8/√d_model
    /// unless given, biases zero, norm gains one. Deterministic for a given seed. Resets <see cref="Processing"/>.
    /// </summary>
    public void InitWeights(long seed, double? std = null)
    {
        using var scale = (std ?? 0.8 / Math.Sqrt(Config.DModel)).ToScalar();
        var generator = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            string leaf = name[(name.LastIndexOf('.') + 1)..];
            if (leaf.StartsWith("b", StringComparison.Ordinal)) p.zero_();
            else if (leaf == "w") p.fill_(Scalars.One);
            else p.copy_(randn(p.shape, generator: generator).mul_(scale));
        }
        Processing = WeightProcessingOptions.None;
    }
}

using Interp.Saes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Interp.Training.Saes;

/// <summary>The losses of one training step; <see cref="Loss"/> carries the graph, the rest are detached.</summary>
/// <param name="Loss">Total loss (MSE + sparsity + auxiliary), with gradients.</param>
/// <param name="Mse">MSE: squared error summed over d_in, mean over the batch.</param>
/// <param name="Sparsity">Standard: the weighted L1 term; JumpReLU: the L0 term; TopK: 0.</param>
/// <param name="Aux">TopK: the AuxK loss; otherwise 0.</param>
/// <param name="Acts">The feature activations [batch, d_sae], detached.</param>
/// <param name="Output">The reconstruction [batch, d_in], detached.</param>
public sealed record SaeStepLosses(Tensor Loss, double Mse, double Sparsity, double Aux, Tensor Acts, Tensor Output);

/// <summary>
/// The trainable SAE: SAELens 6's <c>StandardTrainingSAE</c>, <c>TopKTrainingSAE</c> and <c>JumpReLUTrainingSAE</c> with
/// their losses. Parameters in SAELens's names: <c>W_enc</c> [d_in, d_sae], <c>b_enc</c> [d_sae], <c>W_dec</c>
/// [d_sae, d_in], <c>b_dec</c> [d_in], and for JumpReLU <c>log_threshold</c> [d_sae] (saved as
/// <c>threshold = exp(log_threshold)</c>). Initialisation as SAELens: W_dec Kaiming-uniform, each row rescaled to norm
/// <c>decoder_init_norm</c>, W_enc = W_decᵀ, biases zero, log_threshold = log(init threshold).
/// <list type="bullet">
/// <item>Standard: acts = relu(pre); loss = MSE + λ · mean_batch Σ_f |acts_f| · ‖W_dec,f‖.</item>
/// <item>TopK: acts = relu of the k largest pre-activations; loss = MSE + AuxK, where the ≤ d_in/2 largest
/// pre-activations of dead features reconstruct the detached residual x − x̂ (scaled by min(dead / (d_in/2), 1)).</item>
/// <item>JumpReLU: acts = pre · H(pre − θ), θ = exp(log_threshold); loss = MSE + λ₀ · mean_batch Σ_f H(pre_f − θ_f).
/// H has no gradient in its input; its gradient in θ is the straight-through estimate
/// −(1/ε)·rect((pre − θ)/ε) for the step and −(θ/ε)·rect((pre − θ)/ε) for the JumpReLU output (rect = 1 on
/// (−½, ½)), summed over the batch, as SAELens's <c>Step</c> and <c>JumpReLU</c> autograd functions. They are
/// written as value + (θ − stop_grad θ) · stop_grad(estimate), which adds exactly 0 to the value and gives θ exactly
/// that gradient.</item>
/// </list>
/// </summary>
public sealed class TrainingSae : IDisposable
{
    private readonly Scalar _invBandwidth, _negInvBandwidth, _half, _negHalf;   // owned: see Scalars

    /// <summary>A freshly initialised SAE of width <paramref name="dSae"/> on inputs of width <paramref name="dIn"/>.</summary>
    public TrainingSae(int dIn, int dSae, SaeTrainingOptions options, long seed)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (dIn <= 0 || dSae <= 0) throw new ArgumentException($"d_in {dIn} and d_sae {dSae} must be positive");
        if (options.Architecture == SaeArchitecture.TopK && options.K > dSae)
            throw new ArgumentException($"SAE training option k: {options.K} is more than d_sae = {dSae}");
        (DIn, DSae, Options) = (dIn, dSae, options);
        using var generator = new Generator((ulong)seed);
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            // nn.init.kaiming_uniform_ (a = 0, fan_in = d_in): U(−√(6 / d_in), √(6 / d_in)).
            using var bound = Math.Sqrt(6.0 / dIn).ToScalar();
            using var twice = (2 * Math.Sqrt(6.0 / dIn)).ToScalar();
            using var norm = options.DecoderInitNorm.ToScalar();
            var wDec = rand([dSae, dIn], generator: generator).mul_(twice).sub_(bound);
            wDec = wDec.div(wDec.norm(1, keepdim: true)).mul_(norm);
            WDec = new Parameter(wDec.contiguous().DetachFromDisposeScope());
            WEnc = new Parameter(wDec.t().contiguous().DetachFromDisposeScope());
            BEnc = new Parameter(zeros(dSae).DetachFromDisposeScope());
            BDec = new Parameter(zeros(dIn).DetachFromDisposeScope());
            if (options.Architecture == SaeArchitecture.JumpRelu)
            {
                using var logThreshold = Math.Log(options.JumpReluInitThreshold).ToScalar();
                LogThreshold = new Parameter(full(dSae, logThreshold).DetachFromDisposeScope());
            }
        }
        _invBandwidth = (1 / options.JumpReluBandwidth).ToScalar();
        _negInvBandwidth = (-1 / options.JumpReluBandwidth).ToScalar();
        _half = 0.5.ToScalar();
        _negHalf = (-0.5).ToScalar();
    }

    /// <summary>Input width.</summary>
    public int DIn { get; }
    /// <summary>Number of features.</summary>
    public int DSae { get; }
    /// <summary>The options it trains with.</summary>
    public SaeTrainingOptions Options { get; }
    /// <summary>Encoder weights [d_in, d_sae].</summary>
    public Parameter WEnc { get; }
    /// <summary>Encoder bias [d_sae].</summary>
    public Parameter BEnc { get; }
    /// <summary>Decoder weights [d_sae, d_in].</summary>
    public Parameter WDec { get; }
    /// <summary>Decoder bias [d_in].</summary>
    public Parameter BDec { get; }
    /// <summary>JumpReLU only: log of the thresholds [d_sae]; null otherwise.</summary>
    public Parameter? LogThreshold { get; }

    /// <summary>Every trainable parameter.</summary>
    public IEnumerable<Parameter> Parameters()
    {
        yield return WEnc;
        yield return BEnc;
        yield return WDec;
        yield return BDec;
        if (LogThreshold is not null) yield return LogThreshold;
    }

    /// <summary>
    /// One training forward on <paramref name="x"/> [batch, d_in] (already scaled): the losses, with
    /// <paramref name="sparsityCoefficient"/> the current L1 (standard) or L0 (JumpReLU) coefficient and
    /// <paramref name="deadMask"/> [d_sae] bool (TopK's AuxK; null: no dead features). Tensors live in the caller's dispose scope.
    /// </summary>
    public SaeStepLosses Step(Tensor x, double sparsityCoefficient, Tensor? deadMask)
    {
        ArgumentNullException.ThrowIfNull(x);
        var saeIn = Options.ApplyBDecToInput ? x - BDec : x;
        var pre = saeIn.matmul(WEnc).add(BEnc, Scalars.One);   // [batch, d_sae]
        Tensor acts, sparsity;
        Tensor? aux = null;
        using var coefficient = sparsityCoefficient.ToScalar();
        switch (Options.Architecture)
        {
            case SaeArchitecture.Standard:
                acts = nn.functional.relu(pre);
                // SAELens: (λ · (acts · ‖W_dec‖).norm(p = 1, dim = −1)).mean()
                sparsity = (acts * WDec.norm(1, keepdim: false)).abs().sum(-1).mean().mul(coefficient);
                break;
            case SaeArchitecture.TopK:
                acts = TopK(pre, Options.K);
                sparsity = zeros(1).squeeze();
                break;
            case SaeArchitecture.JumpRelu:
            {
                var threshold = LogThreshold!.exp();
                var (jump, step) = JumpRelu(pre, threshold);
                acts = jump;
                sparsity = step.sum(-1).mean().mul(coefficient);
                break;
            }
            default:
                throw new InvalidOperationException($"cannot train a {Options.Architecture} SAE");
        }
        var output = acts.matmul(WDec).add(BDec, Scalars.One);
        var diff = output - x;
        var mse = (diff * diff).sum(-1).mean();
        var loss = mse.add(sparsity, Scalars.One);
        if (Options.Architecture == SaeArchitecture.TopK && Options.AuxKCoefficient > 0 && deadMask is not null)
        {
            aux = AuxK(x, output, pre, deadMask);
            if (aux is not null)
            {
                using var auxCoefficient = Options.AuxKCoefficient.ToScalar();
                loss = loss.add(aux, auxCoefficient);
            }
        }
        return new SaeStepLosses(loss, mse.item<float>(), sparsity.item<float>(), aux?.item<float>() ?? 0, acts.detach(), output.detach());
    }

    /// <summary>relu of the <paramref name="k"/> largest entries of each row of <paramref name="pre"/>, zeros elsewhere.</summary>
    private static Tensor TopK(Tensor pre, int k)
    {
        var (values, indices) = pre.topk(k, dim: -1);
        return zeros_like(pre).scatter(-1, indices, nn.functional.relu(values));
    }

    /// <summary>
    /// JumpReLU pre·H(pre − θ) and the step H(pre − θ) [batch, d_sae], with SAELens's straight-through gradients in θ
    /// (none in pre through H). Exposed for the gradient test.
    /// </summary>
    public (Tensor JumpRelu, Tensor Step) JumpRelu(Tensor pre, Tensor threshold)
    {
        ArgumentNullException.ThrowIfNull(pre);
        ArgumentNullException.ThrowIfNull(threshold);
        var preD = pre.detach();
        var thetaD = threshold.detach();
        var mask = preD.gt(thetaD).to(pre.dtype);                                   // H(pre − θ), constant
        var u = (preD - thetaD).mul(_invBandwidth);
        var rect = u.gt(_negHalf).logical_and(u.lt(_half)).to(pre.dtype);          // rect((pre − θ)/ε)
        var zero = threshold - thetaD;                                              // exactly 0, gradient 1 in θ
        var stepEstimate = rect.mul(_negInvBandwidth);                              // −(1/ε)·rect
        var jumpEstimate = stepEstimate * thetaD;                                   // −(θ/ε)·rect
        var jump = (pre * mask).add(zero * jumpEstimate, Scalars.One);
        var step = mask.add(zero * stepEstimate, Scalars.One);
        return (jump, step);
    }

    /// <summary>SAELens's TopK auxiliary loss, or null when no feature is dead.</summary>
    private Tensor? AuxK(Tensor x, Tensor output, Tensor pre, Tensor deadMask)
    {
        long dead = deadMask.sum().item<long>();
        if (dead == 0) return null;
        int kAux = DIn / 2;
        double scale = Math.Min((double)dead / kAux, 1.0);
        kAux = (int)Math.Min(kAux, dead);
        if (kAux == 0) return null;
        var residual = (x - output).detach();
        var latents = pre.masked_fill(deadMask.logical_not().unsqueeze(0), Scalars.NegativeInfinity);
        var (values, indices) = latents.topk(kAux, dim: -1, sorted: false);
        var auxActs = zeros_like(pre).scatter(-1, indices, values);
        var recons = auxActs.matmul(WDec).add(BDec, Scalars.One);
        var err = recons - residual;
        using var s = scale.ToScalar();
        return (err * err).sum(-1).mean().mul(s);
    }

    /// <summary>
    /// The inference SAE (copies) for <paramref name="config"/>, with the activation scaling factor
    /// <paramref name="scalingFactor"/> folded in as SAELens's <c>fold_activation_norm_scaling_factor</c> does
    /// (W_enc · s, W_dec / s, b_dec / s; b_enc and the JumpReLU threshold unchanged, since the pre-activation is), so
    /// that on raw inputs it computes what this SAE computes on inputs × s, divided by s.
    /// </summary>
    public Sae ToSae(SaeConfig config, double scalingFactor = 1.0)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!(scalingFactor > 0) || !double.IsFinite(scalingFactor)) throw new ArgumentException($"scaling factor {scalingFactor} must be positive", nameof(scalingFactor));
        // Sae.Create copies into the current dispose scope, if any: the inputs are made and freed here, outside any scope.
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var noGrad = no_grad();
            using var s = scalingFactor.ToScalar();
            bool fold = scalingFactor != 1.0;
            tensors["W_enc"] = (fold ? WEnc.detach().mul(s) : WEnc.detach()).DetachFromDisposeScope();
            tensors["b_enc"] = BEnc.detach().DetachFromDisposeScope();
            tensors["W_dec"] = (fold ? WDec.detach().div(s) : WDec.detach()).DetachFromDisposeScope();
            tensors["b_dec"] = (fold ? BDec.detach().div(s) : BDec.detach()).DetachFromDisposeScope();
            if (LogThreshold is not null) tensors["threshold"] = LogThreshold.detach().exp().DetachFromDisposeScope();
            return Sae.Create(config, tensors);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Frees the parameters.</summary>
    public void Dispose()
    {
        foreach (var p in Parameters()) p.Dispose();
        _invBandwidth.Dispose();
        _negInvBandwidth.Dispose();
        _half.Dispose();
        _negHalf.Dispose();
    }
}

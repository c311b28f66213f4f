using System.Text.Json;
using Interp.Hooks;
using Interp.Loading;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>What one SAE forward computed, stage by stage (SAELens's hook points inside the SAE). Owns its tensors.</summary>
/// <param name="Input">The input as the SAE reads it, <c>hook_sae_input</c>, [..., d_in] (a <c>hook_z</c> input flattened).</param>
/// <param name="ActsPre">The encoder pre-activation, <c>hook_sae_acts_pre</c>, [..., d_sae] (gated: the magnitude
/// pre-activation; TopK: before any decoder-norm rescaling).</param>
/// <param name="ActsPost">The feature activations, <c>hook_sae_acts_post</c>, [..., d_sae].</param>
/// <param name="Recons">The decoder output before de-normalisation, <c>hook_sae_recons</c>, [..., d_out].</param>
/// <param name="Output">The reconstruction the model continues from, <c>hook_sae_output</c> without the error term, in the
/// input's own shape (de-normalised, a <c>hook_z</c> output unflattened, a skip transcoder's skip path added).</param>
public sealed record SaeStages(Tensor Input, Tensor ActsPre, Tensor ActsPost, Tensor Recons, Tensor Output) : IDisposable
{
    /// <summary>Input minus reconstruction, <c>hook_sae_error</c>, in the output's shape; a new tensor the caller owns.
    /// Not defined for transcoders, whose error is against the activation at their output hook.</summary>
    public Tensor Error() => Input.reshape(Output.shape) - Output;

    /// <summary>The stages by their full hook names, for an SAE at <paramref name="hookName"/>.</summary>
    public IReadOnlyDictionary<string, Tensor> ByHookName(string hookName) => new Dictionary<string, Tensor>(StringComparer.Ordinal)
    {
        [HookNames.SaeLeaf.Of(hookName, HookNames.SaeLeaf.Input)] = Input,
        [HookNames.SaeLeaf.Of(hookName, HookNames.SaeLeaf.ActsPre)] = ActsPre,
        [HookNames.SaeLeaf.Of(hookName, HookNames.SaeLeaf.ActsPost)] = ActsPost,
        [HookNames.SaeLeaf.Of(hookName, HookNames.SaeLeaf.Recons)] = Recons,
        [HookNames.SaeLeaf.Of(hookName, HookNames.SaeLeaf.Output)] = Output,
    };

    /// <summary>Disposes every stage.</summary>
    public void Dispose()
    {
        Input.Dispose();
        ActsPre.Dispose();
        ActsPost.Dispose();
        Recons.Dispose();
        Output.Dispose();
    }
}

/// <summary>
/// A sparse autoencoder (or transcoder) in SAELens's on-disk format (<c>cfg.json</c> + <c>sae_weights.safetensors</c>),
/// computing in float32 on the CPU as SAELens 6 does: normalise → subtract <c>b_dec</c> → encode → activation →
/// <c>acts @ W_dec + b_dec</c> → de-normalise.
/// </summary>
public sealed class Sae : IDisposable
{
    /// <summary>The config file name in an SAE folder.</summary>
    public const string ConfigFile = "cfg.json";
    /// <summary>The weights file name in an SAE folder.</summary>
    public const string WeightsFile = "sae_weights.safetensors";
    /// <summary>The feature-density file name in an SAE folder (log10 of each feature's firing fraction).</summary>
    public const string SparsityFile = "sparsity.safetensors";

    private readonly Dictionary<string, Tensor> _weights;
    private readonly Scalar _sqrtDIn, _eps;   // owned: see Scalars

    private Sae(SaeConfig config, Dictionary<string, Tensor> weights)
    {
        Config = config;
        _weights = weights;
        _sqrtDIn = Math.Sqrt(config.DIn).ToScalar();
        _eps = 1e-5.ToScalar();
    }

    /// <summary>The configuration read from <c>cfg.json</c>.</summary>
    public SaeConfig Config { get; }
    /// <summary>Encoder weights, [d_in, d_sae].</summary>
    public Tensor WEnc => _weights["W_enc"];
    /// <summary>Encoder bias, [d_sae].</summary>
    /// <exception cref="InvalidOperationException">A gated SAE (it has <c>b_gate</c> and <c>b_mag</c> instead).</exception>
    public Tensor BEnc => Get("b_enc");
    /// <summary>Decoder weights, [d_sae, d_out]: row f is feature f's decoder direction.</summary>
    public Tensor WDec => _weights["W_dec"];
    /// <summary>Decoder bias, [d_out].</summary>
    public Tensor BDec => _weights["b_dec"];
    /// <summary>JumpReLU thresholds, [d_sae].</summary>
    /// <exception cref="InvalidOperationException">The SAE is not JumpReLU.</exception>
    public Tensor Threshold => Get("threshold");

    /// <summary>The tensors in SAELens's names, in the order SAELens saves them (what <see cref="Save"/> writes).</summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> StateDict =>
        TensorNames(Config).Select(n => new KeyValuePair<string, Tensor>(n, _weights[n])).ToArray();

    private Tensor Get(string name) =>
        _weights.TryGetValue(name, out var t) ? t : throw new InvalidOperationException($"a {Config.ArchitectureName} SAE has no {name}");

    /// <summary>The tensors an SAE of <paramref name="config"/>'s architecture has, in SAELens's names.</summary>
    public static IReadOnlyList<string> TensorNames(SaeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.Architecture switch
        {
            SaeArchitecture.Gated => ["W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"],
            SaeArchitecture.JumpRelu or SaeArchitecture.JumpReluTranscoder => ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"],
            SaeArchitecture.SkipTranscoder => ["W_enc", "b_enc", "W_dec", "b_dec", "W_skip"],
            _ => ["W_enc", "b_enc", "W_dec", "b_dec"],
        };
    }

    private static long[] ShapeOf(SaeConfig c, string name) => name switch
    {
        "W_enc" => [c.DIn, c.DSae],
        "W_dec" => [c.DSae, c.DOut],
        "b_dec" => [c.DOut],
        "W_skip" => [c.DOut, c.DIn],
        _ => [c.DSae],   // b_enc, threshold, b_gate, r_mag, b_mag
    };

    /// <summary>Loads the SAE in <paramref name="folder"/>, checking every tensor's shape against the config.</summary>
    /// <exception cref="ModelFileException">A file is missing or malformed, or a tensor is missing, mistyped, misshapen or not finite.</exception>
    public static Sae Load(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new ModelFileException(folder, null, "is not a directory");
        var config = SaeConfig.Load(Path.Combine(folder, ConfigFile));
        string weights = Path.Combine(folder, WeightsFile);
        if (!File.Exists(weights)) throw new ModelFileException(weights, null, "does not exist");
        using var file = SafeTensorsFile.Open(weights);
        var read = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            var names = TensorNames(config);
            foreach (var name in names)
            {
                if (!file.Contains(name)) throw new ModelFileException(weights, name, $"missing, but a {config.ArchitectureName} SAE needs it");
                var info = file.GetInfo(name);
                if (!info.DType.IsFloatingPoint())
                    throw new ModelFileException(weights, name, $"has dtype {info.DType.HeaderName()}, but SAE weights must be floating point");
                // The SAE owns its weights: never let a caller's dispose scope free them.
                read[name] = file.ReadTensor(name, ShapeOf(config, name)).DetachFromDisposeScope();
                CheckFinite(weights, name, read[name]);
            }
            foreach (var extra in file.Tensors.Select(t => t.Name).Where(n => !read.ContainsKey(n)).Order(StringComparer.Ordinal))
            {
                // Pre-6 SAELens saved a scaling_factor of ones for a while; SAELens drops it, and so do we.
                if (extra == "scaling_factor")
                {
                    using var s = file.ReadTensor(extra);
                    using var ones = s.eq(Scalars.One);
                    if (s.dim() == 1 && s.shape[0] == config.DSae && ones.all().item<bool>()) continue;
                    throw new ModelFileException(weights, extra, "is not all ones: a finetuning scaling factor is not supported (SAELens 6 dropped it)");
                }
                throw new ModelFileException(weights, extra, $"is not a tensor of a {config.ArchitectureName} SAE: the config and the weights disagree");
            }
            return new Sae(config, read);
        }
        catch
        {
            foreach (var t in read.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// An SAE of <paramref name="config"/> from <paramref name="tensors"/> in SAELens's names (copied, as float32 on the
    /// CPU); every tensor the architecture needs must be there with its shape, and no other.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor is missing, extra, misshapen or not finite.</exception>
    public static Sae Create(SaeConfig config, IReadOnlyDictionary<string, Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        var names = TensorNames(config);
        var extra = tensors.Keys.Where(k => !names.Contains(k)).Order(StringComparer.Ordinal).FirstOrDefault();
        if (extra is not null) throw new ArgumentException($"tensor '{extra}' is not part of a {config.ArchitectureName} SAE ({string.Join(", ", names)})", nameof(tensors));
        var copies = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var name in names)
            {
                if (!tensors.TryGetValue(name, out var t)) throw new ArgumentException($"tensor '{name}' is missing: a {config.ArchitectureName} SAE needs it", nameof(tensors));
                var shape = ShapeOf(config, name);
                if (!t.shape.SequenceEqual(shape))
                    throw new ArgumentException($"tensor '{name}' has shape [{string.Join(", ", t.shape)}] but the config needs [{string.Join(", ", shape)}]", nameof(tensors));
                copies[name] = t.detach().to(ScalarType.Float32, CPU).clone().DetachFromDisposeScope();
                using var finite = copies[name].isfinite();
                if (!finite.all().item<bool>()) throw new ArgumentException($"tensor '{name}' has a non-finite value", nameof(tensors));
            }
            return new Sae(config, copies);
        }
        catch
        {
            foreach (var t in copies.Values) t.Dispose();
            throw;
        }
    }

    private static void CheckFinite(string file, string name, Tensor t)
    {
        using var finite = t.isfinite();
        if (!finite.all().item<bool>()) throw new ModelFileException(file, name, "has a non-finite value (NaN or infinity)");
    }

    /// <summary>
    /// Writes the SAE to <paramref name="folder"/> as SAELens 6.x's <c>save_model</c> does: <c>cfg.json</c> and
    /// <c>sae_weights.safetensors</c> (F32), plus <c>sparsity.safetensors</c> when <paramref name="logSparsity"/> [d_sae] is
    /// given. Each file is written whole and renamed into place.
    /// </summary>
    public void Save(string folder, Tensor? logSparsity = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (logSparsity is not null && !logSparsity.shape.SequenceEqual([(long)Config.DSae]))
            throw new ArgumentException($"log sparsity must have shape [{Config.DSae}], got [{string.Join(", ", logSparsity.shape)}]", nameof(logSparsity));
        Directory.CreateDirectory(folder);
        SafeTensorsWriter.Write(Path.Combine(folder, WeightsFile), StateDict);
        if (logSparsity is not null) SafeTensorsWriter.Write(Path.Combine(folder, SparsityFile), [new("sparsity", logSparsity)]);
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), Config.ToJson().ToJsonString());
    }

    /// <summary>
    /// A <c>hook_z</c> SAE's input [..., n_heads, d_head] flattened to [..., d_in]; any other input as it is. The
    /// result may share memory with <paramref name="x"/>.
    /// </summary>
    public Tensor FlattenInput(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (Config.ReshapeHookZ && x.dim() >= 2 && x.shape[^1] != Config.DIn && x.shape[^2] * x.shape[^1] == Config.DIn)
            return x.flatten(-2);   // [..., n_heads, d_head] → [..., n_heads·d_head]
        return x.alias();
    }

    /// <summary>The encoder pre-activation (<c>hook_sae_acts_pre</c>) of <paramref name="x"/> [..., d_in].</summary>
    public Tensor EncodePre(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (saeIn, _) = Prepare(x);
        return PreActivation(saeIn).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The activation function applied to a pre-activation from <see cref="EncodePre"/> (TopK with decoder-norm rescaling
    /// rescales first).
    /// </summary>
    /// <exception cref="InvalidOperationException">A gated SAE: its gate reads the input, so use <see cref="Encode"/>.</exception>
    public Tensor Activate(Tensor pre)
    {
        if (Config.Architecture == SaeArchitecture.Gated)
            throw new InvalidOperationException("a gated SAE's gate reads the input, not the pre-activation: use Encode");
        CheckWidth(pre, Config.DSae, "d_sae");
        using var scope = NewDisposeScope();
        return ActivateFrom(pre.to(ScalarType.Float32), null).MoveToOuterDisposeScope();
    }

    /// <summary>The feature activations of <paramref name="x"/> [..., d_in], [..., d_sae].</summary>
    public Tensor Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (saeIn, _) = Prepare(x);
        return ActivateFrom(PreActivation(saeIn), saeIn).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The decoder output <c>acts @ W_dec + b_dec</c> (<c>hook_sae_recons</c>), [..., d_out]: the reconstruction, for an
    /// SAE that normalises its input in normalised space (see <see cref="Forward"/> for the input's own space).
    /// </summary>
    public Tensor Decode(Tensor acts)
    {
        CheckWidth(acts, Config.DSae, "d_sae");
        using var scope = NewDisposeScope();
        return DecodeRaw(acts.to(ScalarType.Float32)).MoveToOuterDisposeScope();
    }

    /// <summary>Every stage of encode and decode on <paramref name="x"/> ([..., d_in], or [..., n_heads, d_head] for <c>hook_z</c>).</summary>
    public SaeStages Forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (saeIn, norm) = Prepare(x, out var input);
        var pre = PreActivation(saeIn);
        var acts = ActivateFrom(pre, saeIn);
        var recons = DecodeRaw(acts);
        var output = Finish(recons, norm, x, input);
        var stages = new SaeStages(input.clone(), pre, acts, recons, output);
        stages.Input.MoveToOuterDisposeScope();
        pre.MoveToOuterDisposeScope();
        acts.MoveToOuterDisposeScope();
        recons.MoveToOuterDisposeScope();
        output.MoveToOuterDisposeScope();
        return stages;
    }

    /// <summary>decode(encode(x)) in the input's own space and shape: <see cref="SaeStages.Output"/> alone.</summary>
    public Tensor Reconstruct(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (saeIn, norm) = Prepare(x, out var input);
        var acts = ActivateFrom(PreActivation(saeIn), saeIn);
        return Finish(DecodeRaw(acts), norm, x, input).MoveToOuterDisposeScope();
    }

    /// <summary>The spliced forward with the SAE's hook points (see <see cref="SaeSplice"/>); runs in the caller's dispose scope.</summary>
    internal Tensor RunHooked(Tensor x, SaeHookPoints hooks, Tensor? errorTarget)
    {
        bool hooked = hooks.AnyInnerActive;
        var flat = FlattenInput(x.to(ScalarType.Float32));
        CheckWidth(flat, Config.DIn, "d_in");
        // A hook may edit its activation in place: never let that reach the model's own tensor.
        var input = hooks.Input.Run(hooked ? flat.clone() : flat);
        var (normed, norm) = NormalizeIn(input);
        var saeIn = SubtractBDec(normed);
        var pre = hooks.ActsPre.Run(PreActivation(saeIn));
        var acts = hooks.ActsPost.Run(ActivateFrom(pre, saeIn));
        var recons = hooks.Recons.Run(DecodeRaw(acts));
        var output = Finish(recons, norm, x, flat);
        if (errorTarget is null) return hooks.Output.Run(output);

        // The error term (SAELens use_error_term): target − the reconstruction computed without any SAE hook, taken
        // as a constant. Written target + (output − clean), so that with no edit the output is the target exactly
        // and an edit moves it by exactly the change of the reconstruction; gradients flow through `output` only.
        Tensor clean;
        if (hooked) using (no_grad()) clean = Reconstruct(x);
        else clean = output.detach();
        var target = errorTarget.detach().to(ScalarType.Float32);
        var error = target - clean;
        Tensor result;
        if (!hooks.Error.IsActive) result = target.add(output - clean, Scalars.One);
        else
        {
            using var before = error.clone();
            var edited = hooks.Error.Run(error);
            bool unedited = ReferenceEquals(edited, error) && edited.equal(before).all().item<bool>();
            result = unedited ? target.add(output - clean, Scalars.One) : output.add(edited, Scalars.One);
        }
        return hooks.Output.Run(result);
    }

    private (Tensor SaeIn, NormState Norm) Prepare(Tensor x) => Prepare(x, out _);

    private (Tensor SaeIn, NormState Norm) Prepare(Tensor x, out Tensor input)
    {
        ArgumentNullException.ThrowIfNull(x);
        input = FlattenInput(x.to(ScalarType.Float32));
        CheckWidth(input, Config.DIn, "d_in");
        var (normed, norm) = NormalizeIn(input);
        return (SubtractBDec(normed), norm);
    }

    private Tensor SubtractBDec(Tensor normed) => Config.ApplyBDecToInput && !Config.IsTranscoder ? normed - BDec : normed;

    private readonly record struct NormState(Tensor? Scale, Tensor? Mean, Tensor? Std);

    private (Tensor, NormState) NormalizeIn(Tensor x)
    {
        switch (Config.Normalization)
        {
            case SaeNormalization.ConstantNormRescale:
            {
                var coeff = x.norm(-1, keepdim: true).reciprocal().mul(_sqrtDIn);   // [..., 1]: √d_in / ‖x‖
                return (x * coeff, new NormState(coeff, null, null));
            }
            case SaeNormalization.LayerNorm:
            {
                var mu = x.mean([-1L], keepdim: true);
                var centred = x - mu;
                var std = centred.std(-1, unbiased: true, keepdim: true);   // torch's default: Bessel-corrected
                return (centred / std.add(_eps, Scalars.One), new NormState(null, mu, std));
            }
            default:
                return (x, default);
        }
    }

    private static Tensor NormalizeOut(Tensor r, NormState norm) =>
        norm.Scale is { } s ? r / s : norm.Std is { } std ? (r * std).add(norm.Mean!, Scalars.One) : r;

    private Tensor PreActivation(Tensor saeIn) => Config.Architecture == SaeArchitecture.Gated
        ? saeIn.matmul(WEnc * Get("r_mag").exp()).add(Get("b_mag"), Scalars.One)
        : saeIn.matmul(WEnc).add(BEnc, Scalars.One);

    private Tensor ActivateFrom(Tensor pre, Tensor? saeIn)
    {
        switch (Config.Architecture)
        {
            case SaeArchitecture.Standard or SaeArchitecture.Transcoder or SaeArchitecture.SkipTranscoder:
                return nn.functional.relu(pre);
            case SaeArchitecture.JumpRelu or SaeArchitecture.JumpReluTranscoder:
                return nn.functional.relu(pre) * pre.gt(Threshold).to(ScalarType.Float32);
            case SaeArchitecture.TopK:
            {
                var scored = Config.RescaleActsByDecoderNorm ? pre * DecoderNorms() : pre;
                var (values, indices) = scored.topk(Config.K!.Value, dim: -1);
                return zeros_like(scored).scatter(-1, indices, nn.functional.relu(values));
            }
            case SaeArchitecture.Gated:
            {
                var gate = saeIn!.matmul(WEnc).add(Get("b_gate"), Scalars.One).gt(Scalars.Zero).to(ScalarType.Float32);
                return gate * nn.functional.relu(pre);
            }
            default:
                throw new InvalidOperationException($"unknown architecture {Config.Architecture}");
        }
    }

    private Tensor DecoderNorms() => WDec.norm(-1);   // [d_sae]

    private Tensor DecodeRaw(Tensor acts)
    {
        var a = Config.Architecture == SaeArchitecture.TopK && Config.RescaleActsByDecoderNorm ? acts / DecoderNorms() : acts;
        return a.matmul(WDec).add(BDec, Scalars.One);
    }

    /// <summary>De-normalise, unflatten a hook_z output, add a skip transcoder's skip path.</summary>
    private Tensor Finish(Tensor recons, NormState norm, Tensor x, Tensor flatInput)
    {
        var output = Config.IsTranscoder ? recons : NormalizeOut(recons, norm);
        if (Config.Architecture == SaeArchitecture.SkipTranscoder)
            output = output.add(flatInput.matmul(Get("W_skip").t()), Scalars.One);   // SAELens: x @ W_skipᵀ, x as the SAE received it
        if (Config.ReshapeHookZ && x.dim() >= 2 && x.shape[^1] != Config.DIn)
            output = output.reshape(x.shape);   // [..., n_heads·d_head] → [..., n_heads, d_head]
        return output;
    }

    /// <summary>Non-zero features per position of <paramref name="acts"/> [..., d_sae], as [...] int64.</summary>
    public static Tensor L0(Tensor acts)
    {
        ArgumentNullException.ThrowIfNull(acts);
        using var nz = acts.ne(Scalars.Zero);
        return nz.sum(-1, type: ScalarType.Int64);
    }

    /// <summary>
    /// Explained variance <c>1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²</c> over the positions of [n, d] tensors, in float64: the
    /// conventional R² with the total variance about the per-dimension mean summed over dimensions (SAELens's current
    /// definition).
    /// </summary>
    public static double ExplainedVariance(Tensor x, Tensor reconstruction)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(reconstruction);
        if (!x.shape.SequenceEqual(reconstruction.shape))
            throw new ArgumentException($"x has shape [{string.Join(", ", x.shape)}] but the reconstruction has [{string.Join(", ", reconstruction.shape)}]", nameof(reconstruction));
        using var scope = NewDisposeScope();
        var a = x.to(ScalarType.Float64).reshape(-1, x.shape[^1]);
        var b = reconstruction.to(ScalarType.Float64).reshape(-1, x.shape[^1]);
        var diff = a - b;
        var mean = a.mean([0]);
        double mse = (diff * diff).sum(-1).mean().item<double>();
        double total = (a * a).sum(-1).mean().item<double>() - (mean * mean).sum().item<double>();
        return 1 - mse / total;
    }

    private static void CheckWidth(Tensor t, int width, string what)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.dim() == 0 || t.shape[^1] != width)
            throw new ArgumentException($"expected a last dimension of {what} = {width}, got shape [{string.Join(", ", t.shape)}]");
    }

    /// <summary>Disposes the weights.</summary>
    public void Dispose()
    {
        foreach (var t in _weights.Values) t.Dispose();
        _weights.Clear();
        _sqrtDIn.Dispose();
        _eps.Dispose();
    }
}

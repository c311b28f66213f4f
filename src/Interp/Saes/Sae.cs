using Interp.Hooks;
using Interp.Loading;
using static TorchSharp.torch;

namespace Interp.Saes;

/// <summary>What one SAE forward computed, stage by stage (SAELens's hook points inside the SAE). Owns its tensors.</summary>
/// <param name="Input">The input, <c>hook_sae_input</c>, [..., d_in].</param>
/// <param name="ActsPre">The encoder pre-activation, <c>hook_sae_acts_pre</c>, [..., d_sae].</param>
/// <param name="ActsPost">The feature activations, <c>hook_sae_acts_post</c>, [..., d_sae].</param>
/// <param name="Recons">The decoder output, <c>hook_sae_recons</c>, [..., d_in].</param>
/// <param name="Output">The reconstruction the model continues from, <c>hook_sae_output</c> (no error term), [..., d_in].</param>
public sealed record SaeStages(Tensor Input, Tensor ActsPre, Tensor ActsPost, Tensor Recons, Tensor Output) : IDisposable
{
    /// <summary>Input minus reconstruction, <c>hook_sae_error</c>, [..., d_in]; a new tensor the caller owns.</summary>
    public Tensor Error() => Input - Output;

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
/// A sparse autoencoder in SAELens's on-disk format (<c>cfg.json</c> + <c>sae_weights.safetensors</c>), computing in
/// float32 on the CPU: encode <c>act((x − b_dec) @ W_enc + b_enc)</c>, decode <c>acts @ W_dec + b_dec</c>.
/// </summary>
public sealed class Sae : IDisposable
{
    /// <summary>The config file name in an SAE folder.</summary>
    public const string ConfigFile = "cfg.json";
    /// <summary>The weights file name in an SAE folder.</summary>
    public const string WeightsFile = "sae_weights.safetensors";

    private readonly Tensor? _threshold;

    private Sae(SaeConfig config, Tensor wEnc, Tensor bEnc, Tensor wDec, Tensor bDec, Tensor? threshold)
    {
        Config = config;
        WEnc = wEnc;
        BEnc = bEnc;
        WDec = wDec;
        BDec = bDec;
        _threshold = threshold;
    }

    /// <summary>The configuration read from <c>cfg.json</c>.</summary>
    public SaeConfig Config { get; }
    /// <summary>Encoder weights, [d_in, d_sae].</summary>
    public Tensor WEnc { get; }
    /// <summary>Encoder bias, [d_sae].</summary>
    public Tensor BEnc { get; }
    /// <summary>Decoder weights, [d_sae, d_in].</summary>
    public Tensor WDec { get; }
    /// <summary>Decoder bias, [d_in].</summary>
    public Tensor BDec { get; }
    /// <summary>JumpReLU thresholds, [d_sae].</summary>
    /// <exception cref="InvalidOperationException">The SAE is not JumpReLU.</exception>
    public Tensor Threshold => _threshold ?? throw new InvalidOperationException($"a {Config.Architecture} SAE has no threshold");

    /// <summary>Loads the SAE in <paramref name="folder"/>, checking every tensor's shape against the config.</summary>
    /// <exception cref="ModelFileException">A file is missing or malformed, or a tensor is missing, mistyped or misshapen.</exception>
    public static Sae Load(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new ModelFileException(folder, null, "is not a directory");
        var config = SaeConfig.Load(Path.Combine(folder, ConfigFile));
        string weights = Path.Combine(folder, WeightsFile);
        if (!File.Exists(weights)) throw new ModelFileException(weights, null, "does not exist");
        using var file = SafeTensorsFile.Open(weights);
        var read = new List<Tensor>();
        try
        {
            Tensor Read(string name, params long[] shape)
            {
                if (!file.Contains(name)) throw new ModelFileException(weights, name, $"missing, but a {config.Architecture} SAE needs it");
                var info = file.GetInfo(name);
                if (!info.DType.IsFloatingPoint())
                    throw new ModelFileException(weights, name, $"has dtype {info.DType.HeaderName()}, but SAE weights must be floating point");
                var t = file.ReadTensor(name, shape);
                read.Add(t);
                return t;
            }
            long dIn = config.DIn, dSae = config.DSae;
            var wEnc = Read("W_enc", dIn, dSae);
            var bEnc = Read("b_enc", dSae);
            var wDec = Read("W_dec", dSae, dIn);
            var bDec = Read("b_dec", dIn);
            var threshold = config.Architecture == SaeArchitecture.JumpRelu ? Read("threshold", dSae) : null;
            var known = new HashSet<string>(StringComparer.Ordinal) { "W_enc", "b_enc", "W_dec", "b_dec" };
            if (threshold is not null) known.Add("threshold");
            var extra = file.Tensors.Select(t => t.Name).Where(n => !known.Contains(n)).Order(StringComparer.Ordinal).FirstOrDefault();
            if (extra is not null)
                throw new ModelFileException(weights, extra, $"is not a tensor of a {config.Architecture} SAE: the config and the weights disagree");
            return new Sae(config, wEnc, bEnc, wDec, bDec, threshold);
        }
        catch
        {
            foreach (var t in read) t.Dispose();
            throw;
        }
    }

    /// <summary>The encoder pre-activation <c>(x − b_dec) @ W_enc + b_enc</c> (no b_dec subtraction when the config says so).</summary>
    public Tensor EncodePre(Tensor x)
    {
        CheckInput(x, Config.DIn, "d_in");
        using var scope = NewDisposeScope();
        var input = x.to(ScalarType.Float32);
        var centred = Config.ApplyBDecToInput ? input - BDec : input;
        return centred.matmul(WEnc).add(BEnc, Scalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>The activation function applied to a pre-activation from <see cref="EncodePre"/>.</summary>
    public Tensor Activate(Tensor pre)
    {
        CheckInput(pre, Config.DSae, "d_sae");
        using var scope = NewDisposeScope();
        Tensor result = Config.Architecture switch
        {
            SaeArchitecture.Standard => nn.functional.relu(pre),
            SaeArchitecture.JumpRelu => nn.functional.relu(pre) * pre.gt(Threshold).to(ScalarType.Float32),
            SaeArchitecture.TopK => TopK(pre, Config.K!.Value),
            _ => throw new InvalidOperationException($"unknown architecture {Config.Architecture}"),
        };
        return result.MoveToOuterDisposeScope();
    }

    private static Tensor TopK(Tensor pre, int k)
    {
        var (values, indices) = pre.topk(k, dim: -1);
        return zeros_like(pre).scatter(-1, indices, nn.functional.relu(values));
    }

    /// <summary>The feature activations of <paramref name="x"/>, [..., d_sae].</summary>
    public Tensor Encode(Tensor x)
    {
        using var pre = EncodePre(x);
        return Activate(pre);
    }

    /// <summary>The reconstruction <c>acts @ W_dec + b_dec</c>, [..., d_in].</summary>
    public Tensor Decode(Tensor acts)
    {
        CheckInput(acts, Config.DSae, "d_sae");
        using var scope = NewDisposeScope();
        return acts.to(ScalarType.Float32).matmul(WDec).add(BDec, Scalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>Every stage of encode and decode on <paramref name="x"/>, [..., d_in].</summary>
    public SaeStages Forward(Tensor x)
    {
        var input = x.to(ScalarType.Float32).clone();
        Tensor? pre = null, acts = null, recons = null;
        try
        {
            pre = EncodePre(input);
            acts = Activate(pre);
            recons = Decode(acts);
            return new SaeStages(input, pre, acts, recons, recons.clone());
        }
        catch
        {
            input.Dispose();
            pre?.Dispose();
            acts?.Dispose();
            recons?.Dispose();
            throw;
        }
    }

    /// <summary>Non-zero features per position of <paramref name="acts"/> [..., d_sae], as [...] int64.</summary>
    public static Tensor L0(Tensor acts)
    {
        ArgumentNullException.ThrowIfNull(acts);
        using var nz = acts.ne(Scalars.Zero);
        return nz.sum(-1, type: ScalarType.Int64);
    }

    /// <summary>
    /// Explained variance <c>1 − mean‖x − x̂‖² / (mean‖x‖² − ‖mean x‖²)</c> over the positions of [n, d_in] tensors, in float64.
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

    private static void CheckInput(Tensor t, int width, string what)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.dim() == 0 || t.shape[^1] != width)
            throw new ArgumentException($"expected a last dimension of {what} = {width}, got shape [{string.Join(", ", t.shape)}]");
    }

    /// <summary>Disposes the weights.</summary>
    public void Dispose()
    {
        WEnc.Dispose();
        BEnc.Dispose();
        WDec.Dispose();
        BDec.Dispose();
        _threshold?.Dispose();
    }
}

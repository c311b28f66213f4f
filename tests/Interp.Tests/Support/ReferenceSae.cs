namespace Interp.Tests.Support;

/// <summary>
/// An independent reference of SAELens 6's inference forward (<c>sae_lens/saes/*.py</c>), in double arithmetic over
/// plain float arrays (row-major, as SAELens stores them), written from SAELens's source and not from
/// <c>Interp.Saes.Sae</c>. Every architecture SAELens 6 loads from disk is covered:
/// <list type="bullet">
/// <item><c>SAE.process_sae_in</c>: (hook_z: flatten [..., n_heads, d_head], a no-op on row-major data) → hook_sae_input →
/// run_time_activation_norm_fn_in → minus <c>b_dec · apply_b_dec_to_input</c> (transcoders: no b_dec).</item>
/// <item>standard / transcoder / skip_transcoder: <c>relu(sae_in @ W_enc + b_enc)</c>; jumprelu (and its transcoder):
/// <c>relu(pre) · (pre &gt; threshold)</c>; topk: <c>pre · ‖W_dec[f]‖</c> when rescale_acts_by_decoder_norm, then the k
/// largest, relu, scattered; gated: <c>(sae_in @ W_enc + b_gate &gt; 0) · relu(sae_in @ (W_enc · exp r_mag) + b_mag)</c>,
/// hook_sae_acts_pre being the magnitude pre-activation.</item>
/// <item>decode: <c>acts @ W_dec + b_dec</c> (topk with rescaling: <c>acts · (1/‖W_dec[f]‖)</c> first) → hook_sae_recons →
/// run_time_activation_norm_fn_out (never for transcoders) → hook_z unflatten; skip_transcoder adds <c>x @ W_skipᵀ</c> on the
/// raw input.</item>
/// <item>normalisations: none and expected_average_only_in are the identity; constant_norm_rescale multiplies by
/// <c>√d_in / ‖x‖</c> and divides the output by it; layer_norm subtracts the mean μ, divides by (σ + 1e-5) with σ the
/// Bessel-corrected std of the centred input (torch's <c>x.std()</c>), and the output is <c>r · σ + μ</c>.</item>
/// </list>
/// </summary>
internal sealed class ReferenceSae
{
    public required string Architecture { get; init; }
    public required int DIn { get; init; }
    public required int DSae { get; init; }
    public int DOut { get; init; }
    public string Normalize { get; init; } = "none";
    public bool ApplyBDecToInput { get; init; } = true;
    public int K { get; init; }
    public bool RescaleActsByDecoderNorm { get; init; }

    /// <summary>[d_in, d_sae].</summary>
    public required float[] WEnc { get; init; }
    /// <summary>[d_sae, d_out].</summary>
    public required float[] WDec { get; init; }
    /// <summary>[d_out].</summary>
    public required float[] BDec { get; init; }
    public float[]? BEnc { get; init; }
    public float[]? Threshold { get; init; }
    public float[]? BGate { get; init; }
    public float[]? RMag { get; init; }
    public float[]? BMag { get; init; }
    /// <summary>[d_out, d_in].</summary>
    public float[]? WSkip { get; init; }

    private bool IsTranscoder => Architecture is "transcoder" or "skip_transcoder" or "jumprelu_transcoder";
    private int Out => IsTranscoder ? DOut : DIn;

    /// <summary>Every stage for <paramref name="n"/> rows, each [n, width] row-major; <c>Margin[r]</c> is the smallest
    /// distance of any active/inactive decision from its boundary, in the units of the quantity compared.</summary>
    public sealed record Stages(double[] Input, double[] ActsPre, double[] ActsPost, double[] Recons, double[] Output, int[] L0, double[] Margin);

    public Stages Forward(float[] x, int n)
    {
        if (x.Length != n * DIn) throw new ArgumentException($"expected {n} × {DIn} inputs, got {x.Length}");
        int dOut = Out;
        var input = new double[n * DIn];
        var pre = new double[n * DSae];
        var post = new double[n * DSae];
        var recons = new double[n * dOut];
        var output = new double[n * dOut];
        var l0 = new int[n];
        var margins = new double[n];
        double[]? decNorm = null;
        if (Architecture == "topk" && RescaleActsByDecoderNorm)
        {
            decNorm = new double[DSae];
            for (int f = 0; f < DSae; f++)
            {
                double s = 0;
                for (int j = 0; j < dOut; j++) s += (double)WDec[f * dOut + j] * WDec[f * dOut + j];
                decNorm[f] = Math.Sqrt(s);
            }
        }

        for (int r = 0; r < n; r++)
        {
            double margin = double.PositiveInfinity;
            var row = new double[DIn];
            for (int i = 0; i < DIn; i++) row[i] = x[r * DIn + i];
            Array.Copy(row, 0, input, r * DIn, DIn);

            // run_time_activation_norm_fn_in
            double coeff = 1, mu = 0, std = 1;
            var normed = (double[])row.Clone();
            if (Normalize == "constant_norm_rescale")
            {
                double ss = 0;
                foreach (double v in row) ss += v * v;
                coeff = Math.Sqrt(DIn) / Math.Sqrt(ss);
                for (int i = 0; i < DIn; i++) normed[i] = row[i] * coeff;
            }
            else if (Normalize == "layer_norm")
            {
                foreach (double v in row) mu += v;
                mu /= DIn;
                double ss = 0;
                for (int i = 0; i < DIn; i++) ss += (row[i] - mu) * (row[i] - mu);
                std = Math.Sqrt(ss / (DIn - 1));
                for (int i = 0; i < DIn; i++) normed[i] = (row[i] - mu) / (std + 1e-5);
            }
            else if (Normalize is not ("none" or "expected_average_only_in")) throw new ArgumentException($"unknown normalisation {Normalize}");

            var saeIn = new double[DIn];
            for (int i = 0; i < DIn; i++) saeIn[i] = normed[i] - (!IsTranscoder && ApplyBDecToInput ? BDec[i] : 0);

            // The encoder.
            var h = new double[DSae];
            var acts = new double[DSae];
            if (Architecture == "gated")
            {
                for (int f = 0; f < DSae; f++)
                {
                    double gate = BGate![f], mag = BMag![f], scale = Math.Exp(RMag![f]);
                    for (int i = 0; i < DIn; i++)
                    {
                        gate += saeIn[i] * WEnc[i * DSae + f];
                        mag += saeIn[i] * (WEnc[i * DSae + f] * scale);
                    }
                    h[f] = mag;
                    acts[f] = gate > 0 ? Math.Max(mag, 0) : 0;
                    margin = Math.Min(margin, Math.Abs(gate));
                    if (gate > 0) margin = Math.Min(margin, Math.Abs(mag));
                }
            }
            else
            {
                for (int f = 0; f < DSae; f++)
                {
                    double s = BEnc![f];
                    for (int i = 0; i < DIn; i++) s += saeIn[i] * WEnc[i * DSae + f];
                    h[f] = s;
                }
                switch (Architecture)
                {
                    case "standard" or "transcoder" or "skip_transcoder":
                        for (int f = 0; f < DSae; f++)
                        {
                            acts[f] = Math.Max(h[f], 0);
                            margin = Math.Min(margin, Math.Abs(h[f]));
                        }
                        break;
                    case "jumprelu" or "jumprelu_transcoder":
                        for (int f = 0; f < DSae; f++)
                        {
                            acts[f] = h[f] > Threshold![f] ? Math.Max(h[f], 0) : 0;
                            margin = Math.Min(margin, Math.Min(Math.Abs(h[f] - Threshold[f]), Math.Abs(h[f])));
                        }
                        break;
                    case "topk":
                    {
                        var scored = new double[DSae];
                        for (int f = 0; f < DSae; f++) scored[f] = decNorm is null ? h[f] : h[f] * decNorm[f];
                        var order = Enumerable.Range(0, DSae).OrderByDescending(f => scored[f]).ToArray();
                        for (int j = 0; j < K; j++)
                        {
                            int f = order[j];
                            acts[f] = Math.Max(scored[f], 0);
                            margin = Math.Min(margin, Math.Abs(scored[f]));
                        }
                        if (K < DSae) margin = Math.Min(margin, scored[order[K - 1]] - scored[order[K]]);
                        break;
                    }
                    default:
                        throw new ArgumentException($"unknown architecture {Architecture}");
                }
            }
            Array.Copy(h, 0, pre, r * DSae, DSae);
            Array.Copy(acts, 0, post, r * DSae, DSae);
            l0[r] = acts.Count(a => a != 0);
            margins[r] = margin;

            // The decoder.
            for (int j = 0; j < dOut; j++)
            {
                double s = BDec[j];
                for (int f = 0; f < DSae; f++)
                {
                    double a = decNorm is null ? acts[f] : acts[f] * (1 / decNorm[f]);
                    s += a * WDec[f * dOut + j];
                }
                recons[r * dOut + j] = s;
                double o = s;
                if (!IsTranscoder)
                {
                    if (Normalize == "constant_norm_rescale") o = s / coeff;
                    else if (Normalize == "layer_norm") o = s * std + mu;
                }
                if (Architecture == "skip_transcoder")
                    for (int i = 0; i < DIn; i++) o += row[i] * WSkip![j * DIn + i];
                output[r * dOut + j] = o;
            }
        }
        return new Stages(input, pre, post, recons, output, l0, margins);
    }
}

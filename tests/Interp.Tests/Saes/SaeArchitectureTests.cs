using Interp.Hooks;
using Interp.Loading;
using Interp.Saes;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Saes;

/// <summary>
/// JumpReLU and TopK SAEs, and the older flat cfg.json layout, on small hand-made SAEs whose pre-activation is the
/// input itself (W_enc = I, zero biases), so that the expected activations can be written down.
/// </summary>
public sealed class SaeArchitectureTests
{
    private static string WriteSae(TempDir dir, string configJson, float[]? threshold = null)
    {
        File.WriteAllText(dir.File(Sae.ConfigFile), configJson);
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("W_enc", eye(4)),
            new("b_enc", zeros(4)),
            new("W_dec", eye(4)),
            new("b_dec", zeros(4)),
        };
        if (threshold is not null) tensors.Add(new("threshold", tensor(threshold)));
        SafeTensorsWriter.Write(dir.File(Sae.WeightsFile), tensors);
        return dir.Path;
    }

    private static string V6(string architecture, string extra = "") =>
        $"{{\"d_in\": 4, \"d_sae\": 4, \"dtype\": \"float32\", \"device\": \"cpu\", \"apply_b_dec_to_input\": false, " +
        $"\"normalize_activations\": \"none\", \"reshape_activations\": \"none\"{extra}, " +
        $"\"metadata\": {{\"hook_name\": \"{HookNames.ResidPre(0)}\"}}, \"architecture\": \"{architecture}\"}}";

    private static float[] Acts(Sae sae, float[] x)
    {
        using var scope = NewDisposeScope();
        return sae.Encode(tensor(x, [1, 4])).data<float>().ToArray();
    }

    [Fact]
    public void JumpRelu_keeps_only_pre_activations_above_their_threshold()
    {
        using var dir = new TempDir();
        using var sae = Sae.Load(WriteSae(dir, V6("jumprelu"), [0.6f, 0.2f, 1.0f, 0.2f]));
        Assert.Equal(SaeArchitecture.JumpRelu, sae.Config.Architecture);
        Assert.Equal([4L], sae.Threshold.shape);
        Assert.Equal([0f, 0f, 2f, 0f], Acts(sae, [0.5f, -1f, 2f, 0.1f]));
        Assert.Equal([0.7f, 0f, 0f, 0.3f], Acts(sae, [0.7f, -1f, 0.9f, 0.3f]));
    }

    [Fact]
    public void JumpRelu_without_a_threshold_tensor_names_it()
    {
        using var dir = new TempDir();
        var ex = Assert.Throws<ModelFileException>(() => Sae.Load(WriteSae(dir, V6("jumprelu"))));
        Assert.Equal("threshold", ex.TensorName);
    }

    [Fact]
    public void TopK_keeps_the_k_largest_then_relu()
    {
        using var dir = new TempDir();
        using var sae = Sae.Load(WriteSae(dir, V6("topk", ", \"k\": 2, \"rescale_acts_by_decoder_norm\": false")));
        Assert.Equal(2, sae.Config.K);
        Assert.Equal([0.5f, 0f, 2f, 0f], Acts(sae, [0.5f, -1f, 2f, 0.1f]));
        Assert.Equal([0f, 0f, 2f, 0f], Acts(sae, [-0.5f, -1f, 2f, -0.1f]));
    }

    [Fact]
    public void TopK_refuses_a_missing_or_too_large_k()
    {
        using (var dir = new TempDir())
            Assert.Equal("k", Assert.Throws<ModelFileException>(() => Sae.Load(WriteSae(dir, V6("topk")))).TensorName);
        using (var dir = new TempDir())
            Assert.Equal("k", Assert.Throws<ModelFileException>(() => Sae.Load(WriteSae(dir, V6("topk", ", \"k\": 5")))).TensorName);
    }

    [Fact]
    public void Flat_pre_6_config_with_activation_fn_str_loads()
    {
        using var dir = new TempDir();
        string json = $"{{\"d_in\": 4, \"d_sae\": 4, \"hook_name\": \"{HookNames.ResidPre(0)}\", \"model_name\": \"m\", " +
                      "\"activation_fn_str\": \"topk\", \"activation_fn_kwargs\": {\"k\": 1}, \"apply_b_dec_to_input\": false}";
        using var sae = Sae.Load(WriteSae(dir, json));
        Assert.Equal(HookNames.ResidPre(0), sae.Config.HookName);
        Assert.Equal("m", sae.Config.ModelName);
        Assert.Equal(SaeArchitecture.TopK, sae.Config.Architecture);
        Assert.Equal(1, sae.Config.K);
        Assert.Equal([0f, 0f, 2f, 0f], Acts(sae, [0.5f, -1f, 2f, 0.1f]));
    }

    [Fact]
    public void Wrong_input_width_is_an_argument_error()
    {
        using var dir = new TempDir();
        using var sae = Sae.Load(WriteSae(dir, V6("standard")));
        using var x = zeros(2, 5);
        Assert.Throws<ArgumentException>(() => sae.Forward(x));
    }

    [Fact]
    public void Extra_tensor_or_oversized_config_names_the_file()
    {
        using (var dir = new TempDir())
        {
            var ex = Assert.Throws<ModelFileException>(() => Sae.Load(WriteSae(dir, V6("standard"), [1f, 1f, 1f, 1f])));
            Assert.Equal("threshold", ex.TensorName);
            Assert.Equal(Sae.WeightsFile, Path.GetFileName(ex.FilePath));
        }
        using (var dir = new TempDir())
        {
            WriteSae(dir, V6("standard"));
            File.WriteAllText(dir.File(Sae.ConfigFile), new string(' ', (int)SaeConfig.MaxBytes + 1));
            var ex = Assert.Throws<ModelFileException>(() => Sae.Load(dir.Path));
            Assert.Equal(Sae.ConfigFile, Path.GetFileName(ex.FilePath));
        }
    }
}

using Interp.Models;
using Interp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace Interp.Tests.Models;

/// <summary>
/// Moving a model to another device (<see cref="HookedTransformer.ToDevice"/>; TorchSharp's Module.to threw on the
/// components' read-only weight properties) moves every weight and buffer and keeps the values. The meta device stands in
/// for a GPU, which this CPU build has not; a round trip through it back to the CPU is not possible (meta holds no data),
/// so the values are checked by moving to the CPU itself.
/// </summary>
public sealed class DeviceMoveTests
{
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void To_another_device_moves_every_parameter_and_weight_property(string arch)
    {
        using var cpu = TestModels.Random(arch == "gpt2" ? TestModels.Gpt2Like : TestModels.LlamaLike);
        using var m = cpu.ToDevice(new Device(DeviceType.META));
        Assert.Equal(DeviceType.META, m.Device.type);
        Assert.All(m.buffers(), b => Assert.Equal(DeviceType.META, b.device.type));
        Assert.All(m.parameters(), p => Assert.Equal(DeviceType.META, p.device.type));
        Assert.Equal(DeviceType.META, m.Blocks[1].Attn.W_Q.device.type);
        Assert.Equal(DeviceType.META, m.Unembed.W_U.device.type);
        Assert.Equal(DeviceType.META, m.Blocks[0].Mlp!.W_in.device.type);

        using var same = cpu.ToDevice(new Device(DeviceType.CPU));
        using var scope = NewDisposeScope();
        var tokens = TestModels.RandomTokens(cpu.Config.DVocab, 2, 6);
        TensorAssert.Close(cpu.forward(tokens), same.forward(tokens), 0, "logits after the move");
    }

    [Fact]
    public void A_device_this_build_lacks_is_a_clear_error()
    {
        using var cpu = TestModels.Random(TestModels.Gpt2Like);
        var ex = Assert.Throws<InterpException>(() => cpu.ToDevice(new Device(DeviceType.CUDA)));
        Assert.Contains("cannot place", ex.Message);
    }
}

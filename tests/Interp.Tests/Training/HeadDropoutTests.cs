using Interp.Models;
using Interp.Tests.Support;
using Interp.Training;
using static TorchSharp.torch;

namespace Interp.Tests.Training;

/// <summary>Head dropout zeroes exactly the heads it names, as often as it says.</summary>
public sealed class HeadDropoutTests
{
    private static Tensor Apply(HeadDropout rule, Tensor z, ulong seed = 1) => rule.ToHook(new Generator(seed)).Hook(z, null!)!;

    [Fact]
    public void One_at_a_time_drops_exactly_one_listed_head_per_dropped_sequence()
    {
        using var scope = NewDisposeScope();
        var z = ones([4000, 3, 4, 2]);                        // [batch, pos, head, d_head]
        var kept = Apply(new HeadDropout(0, [1, 3], 0.5, OneAtATime: true), z)[.., 0, .., 0];   // [batch, head]
        Assert.True(kept[.., 0].eq(1).all().item<bool>() && kept[.., 2].eq(1).all().item<bool>());   // unlisted heads untouched
        var dropped = 2 - kept[.., 1] - kept[.., 3];
        Assert.True(dropped.le(1).all().item<bool>());                                              // never both
        double fraction = dropped.mean().item<float>();
        Assert.InRange(fraction, 0.45, 0.55);                                                       // p = 0.5 of the sequences
        double firstShare = (1 - kept[.., 1]).sum().item<float>() / dropped.sum().item<float>();
        Assert.InRange(firstShare, 0.45, 0.55);                                                     // uniform over the listed heads
        // Same position-independent mask along pos and d_head.
        var full = Apply(new HeadDropout(0, [1, 3], 0.5, OneAtATime: true), z);
        Assert.True(full.eq(full[.., ..1, .., ..1]).all().item<bool>());
    }

    [Fact]
    public void Independent_drops_follow_the_probability_per_head()
    {
        using var scope = NewDisposeScope();
        var z = ones([4000, 2, 2, 3]);
        Assert.True(Apply(new HeadDropout(1, [0, 1], 0, OneAtATime: false), z).eq(1).all().item<bool>());
        var all = Apply(new HeadDropout(1, [1], 1, OneAtATime: false), z);
        Assert.True(all[.., .., 1].eq(0).all().item<bool>() && all[.., .., 0].eq(1).all().item<bool>());
        double kept = Apply(new HeadDropout(1, [0], 0.3, OneAtATime: false), z)[.., 0, 0, 0].mean().item<float>();
        Assert.InRange(kept, 0.65, 0.75);
    }

    [Fact]
    public void Rules_that_do_not_fit_the_model_are_clear_errors()
    {
        var cfg = TestModels.Gpt2Like;   // 2 layers, 4 heads
        Assert.Contains("layer 2 is outside the model's 2 layers", Assert.Throws<ArgumentException>(() => new HeadDropout(2, [0], 0.5, true).Validate(cfg)).Message);
        Assert.Contains("heads [4] of layer 0", Assert.Throws<ArgumentException>(() => new HeadDropout(0, [4], 0.5, true).Validate(cfg)).Message);
        Assert.Contains("probability 1.5", Assert.Throws<ArgumentException>(() => new HeadDropout(0, [0], 1.5, true).Validate(cfg)).Message);
    }
}

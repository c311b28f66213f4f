using System.Buffers.Binary;
using Interp.Plots;
using Interp.Saes;
using Interp.Tests.Saes;
using Interp.Tests.Support;
using ScottPlot.Plottables;

namespace Interp.Tests.Plots;

/// <summary>The SAE feature figures: one box per window token, one bar per bin or effect, and PNGs of the expected size.</summary>
public sealed class SaeFeatureFiguresTests
{
    /// <summary>Width and height from a PNG's IHDR chunk (bytes 16–23, big-endian).</summary>
    private static (int Width, int Height) PngSize(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], bytes[..4]);
        return (BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)), BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
    }

    /// <summary>Keeps a copy of each figure in $INTERP_KEEP_FIGURES, when set, for a look by eye.</summary>
    private static void Keep(string path)
    {
        if (Environment.GetEnvironmentVariable("INTERP_KEEP_FIGURES") is { Length: > 0 } dir)
        {
            Directory.CreateDirectory(dir);
            File.Copy(path, Path.Combine(dir, Path.GetFileName(path)), overwrite: true);
        }
    }

    [Fact]
    public void Whitespace_and_control_characters_are_made_visible_and_long_tokens_cut()
    {
        Assert.Equal("↵·the", Figures.VisibleToken("\n the"));
        Assert.Equal("⇥a␍\\x07", Figures.VisibleToken("\ta\r\u0007"));
        Assert.Equal("∅", Figures.VisibleToken(""));
        Assert.Equal("abcd…", Figures.VisibleToken("abcdefgh", 5));
    }

    [Fact]
    public void The_context_grid_draws_one_box_per_window_token_and_renders_at_its_size()
    {
        using var fx = new SaeFeatureFixture();
        using var tok = SaeFeatureFixture.Gpt2Tokenizer();
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens());
        var top = acts.Stats.OrderByDescending(s => s.Max).Take(4).Select(s => s.Feature).ToArray();
        var contexts = SaeFeatureContexts.Top(acts, tok, new SaeFeatureContextOptions { TopN = 4, Before = 5, After = 2, Features = top }).Contexts;
        var plot = Figures.FeatureContexts(contexts, acts.Stats, columns: 2);
        var boxes = plot.GetPlottables().OfType<Rectangle>().ToArray();
        Assert.Equal(contexts.Sum(c => c.Tokens.Count), boxes.Length);
        Assert.Equal(contexts.Count, boxes.Count(b => b.LineWidth == 2));   // each maximum outlined
        var texts = plot.GetPlottables().OfType<Text>().Select(t => t.LabelText).ToArray();
        Assert.All(contexts.SelectMany(c => c.Tokens), t => Assert.Contains(Figures.VisibleToken(t.Token), texts));
        Assert.All(top, f => Assert.Contains(texts, t => t.StartsWith($"feature {f} ·", StringComparison.Ordinal)));

        var (w, h) = Figures.FeatureContextsSize(contexts, columns: 2);
        Assert.InRange(w, 200, 4000);
        Assert.InRange(h, 100, 4000);
        using var tmp = new TempDir();
        string path = tmp.File("sae_feature_contexts.png");
        Figures.SavePng(plot, path, w, h);
        Assert.Equal((w, h), PngSize(path));
        Assert.True(new FileInfo(path).Length > 2000);
        Keep(path);

        Assert.Contains("at least one context", Assert.Throws<InterpException>(() => Figures.FeatureContexts([])).Message);
        Assert.Contains("at least 1 column, got 0", Assert.Throws<InterpException>(() => Figures.FeatureContexts(contexts, columns: 0)).Message);
    }

    [Fact]
    public void The_density_histogram_has_one_bar_per_bin_and_the_logit_effects_one_per_token()
    {
        using var fx = new SaeFeatureFixture();
        using var tok = SaeFeatureFixture.Gpt2Tokenizer();
        var acts = SaeFeatureActivations.Collect(fx.Model, fx.Sae, SaeFeatureFixture.Tokens());
        var hist = FeatureDensityHistogram.Of(acts.Stats, bins: 20);
        var density = Figures.FeatureDensity(hist);
        var bars = density.GetPlottables().OfType<BarPlot>().Single().Bars;
        Assert.Equal(hist.Counts.Select(c => (double)c), bars.Select(b => b.Value));
        Assert.Equal(hist.Edges.Zip(hist.Edges.Skip(1), (a, b) => (a + b) / 2), bars.Select(b => b.Position));

        var effects = SaeLogitEffects.Compute(fx.Model, fx.Sae, new SaeLogitEffectOptions { TopK = 6, Features = [3, 22] }, tok);
        var logit = Figures.LogitEffects(effects.Rows);
        var effectBars = logit.GetPlottables().OfType<BarPlot>().Single().Bars;
        Assert.Equal(2 * 2 * 6, effectBars.Count);
        Assert.Equal(effects.Of(3, LogitEffectDirection.Promoted).Select(r => r.Value), effectBars.Take(6).Select(b => b.Value));
        Assert.Contains("no effects for feature 9", Assert.Throws<InterpException>(() => Figures.LogitEffects(effects.Rows, [9])).Message);

        using var tmp = new TempDir();
        foreach (var (name, plot, w, h) in new[] { ("sae_feature_density.png", density, 640, 420), ("sae_logit_effects.png", logit, 640, 900) })
        {
            string path = tmp.File(name);
            Figures.SavePng(plot, path, w, h);
            Assert.Equal((w, h), PngSize(path));
            Assert.True(new FileInfo(path).Length > 2000);
            Keep(path);
        }
    }
}

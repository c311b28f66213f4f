using System.ComponentModel;
using Interp.Experiments;

namespace Interp.Tests.Experiments;

/// <summary>Binding <c>--set key=value</c> to typed settings records.</summary>
public sealed class ExperimentSettingsTests
{
    public enum Mode { Fast, VerySlow }

    public sealed record Sample : RepeatedInputSettings
    {
        [Description("a duration")] public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
        [Description("a flag")] public bool Verbose { get; init; }
        [Description("a list")] public int[] Layers { get; init; } = [0, 1];
        [Description("names")] public string[] Names { get; init; } = [];
        [Description("a choice")] public Mode Speed { get; init; } = Mode.Fast;
        [Description("a number")] public double Scale { get; init; } = 0.5;
        [Description("optional")] public string? Prompts { get; init; }
    }

    private static Sample Bind(params (string Key, string Value)[] pairs) =>
        ExperimentSettings.Bind<Sample>(pairs.ToDictionary(p => p.Key, p => p.Value), "sample");

    [Fact]
    public void Values_are_parsed_by_the_property_type()
    {
        var s = Bind(("batch", "8"), ("low", "3"), ("timeout", "90s"), ("verbose", "true"), ("layers", "2, 3,5"), ("names", "a,b"),
            ("speed", "very_slow"), ("scale", "1e-3"), ("prompts", "x.jsonl"));
        Assert.Equal(new Sample { Batch = 8, Low = 3, Timeout = TimeSpan.FromSeconds(90), Verbose = true, Speed = Mode.VerySlow, Scale = 1e-3, Prompts = "x.jsonl",
            Layers = s.Layers, Names = s.Names }, s);   // arrays compare by reference: checked below
        Assert.Equal([2, 3, 5], s.Layers);
        Assert.Equal(["a", "b"], s.Names);
        Assert.Null(Bind(("low", "none")).Low);
        Assert.Equal(TimeSpan.FromHours(2), Bind(("timeout", "2h")).Timeout);
        Assert.Equal(TimeSpan.FromMinutes(90), Bind(("timeout", "01:30:00")).Timeout);
        Assert.Equal(TimeSpan.FromDays(1.5), Bind(("timeout", "1.5d")).Timeout);
        Assert.False(Bind(("verbose", "no")).Verbose);
        Assert.Equal(ExperimentSettings.ToJson(new Sample()).ToJsonString(), ExperimentSettings.ToJson(Bind()).ToJsonString());
    }

    [Theory]
    [InlineData("batch", "eight", "setting 'batch' = 'eight': 'eight' is not an integer (expected integer; default 32)")]
    [InlineData("timeout", "soon", "setting 'timeout' = 'soon': 'soon' is not a duration")]
    [InlineData("verbose", "maybe", "'maybe' is not a boolean")]
    [InlineData("layers", "1,x", "'x' is not an integer (expected comma list of integer; default 0,1)")]
    [InlineData("speed", "slow", "'slow' is not one of fast, very_slow")]
    [InlineData("scale", "NaN", "'NaN' is not a finite number")]
    public void A_bad_value_names_the_key_the_value_and_what_was_expected(string key, string value, string message)
    {
        var ex = Assert.Throws<InterpException>(() => Bind((key, value)));
        Assert.Contains(message, ex.Message);
        Assert.StartsWith("sample: ", ex.Message);
    }

    [Fact]
    public void An_unknown_key_lists_every_valid_key_with_its_default()
    {
        var ex = Assert.Throws<InterpException>(() => Bind(("batchh", "8")));
        Assert.Contains("sample: unknown setting 'batchh' (did you mean batch", ex.Message);
        foreach (var s in ExperimentSettings.Describe<Sample>())
            Assert.Contains($"{s.Key} ({s.Default})", ex.Message);
        Assert.Equal(["batch", "half", "low", "high", "timeout", "verbose", "layers", "names", "speed", "scale", "prompts"],
            ExperimentSettings.Describe<Sample>().Select(s => s.Key));
    }

    [Fact]
    public void The_manifest_form_keeps_the_types()
    {
        var json = ExperimentSettings.ToJson(Bind(("batch", "8"), ("layers", "4")));
        Assert.Equal("""{"batch":8,"half":24,"low":null,"high":null,"timeout":"00:05:00","verbose":false,"layers":[4],"names":[],"speed":"fast","scale":0.5,"prompts":null}""",
            json.ToJsonString());
    }

    [Theory]
    [InlineData("AblationsPerForward", "ablations_per_forward")]
    [InlineData("DModel", "d_model")]
    [InlineData("Batch", "batch")]
    [InlineData("ExcludeBos", "exclude_bos")]
    public void Keys_are_snake_case(string property, string key) => Assert.Equal(key, ExperimentSettings.SnakeCase(property));
}

namespace Interp.Cli;

/// <summary>Settings of the <c>interp</c> command, bound from the "Interp" section of appsettings.json and INTERP_ environment variables.</summary>
public sealed class InterpOptions
{
    /// <summary>The configuration section name.</summary>
    public const string Section = "Interp";

    /// <summary>Device for the model weights ("cpu", or e.g. "cuda:0").</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>Root folder of generated outputs; runs go to <c>{ArtifactsRoot}/runs/</c>.</summary>
    public string ArtifactsRoot { get; set; } = "artifacts";

    /// <summary>Default seed of experiment runs.</summary>
    public int Seed { get; set; }

    /// <summary>Number of CPU threads torch may use (0 = torch's default).</summary>
    public int Threads { get; set; }
}

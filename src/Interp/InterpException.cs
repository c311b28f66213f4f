namespace Interp;

/// <summary>Base class of every error the toolkit raises on purpose: bad files, bad requests, bad inputs.</summary>
public class InterpException : Exception
{
    /// <summary>Creates the exception with a message that names the file, tensor, hook or value at fault.</summary>
    public InterpException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>A model, checkpoint, config or tokenizer file is missing, malformed, or disagrees with itself.</summary>
public class ModelFileException : InterpException
{
    /// <summary>The file at fault.</summary>
    public string FilePath { get; }

    /// <summary>The tensor (or config key) at fault, when there is one.</summary>
    public string? TensorName { get; }

    /// <summary>Creates the exception; the message reads "<c>file</c>: tensor '<c>name</c>': problem".</summary>
    public ModelFileException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Format(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    private static string Format(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}

/// <summary>Token ids or text that the model or tokenizer cannot accept (out of the vocabulary, too long, empty).</summary>
public class InvalidTokensException : InterpException
{
    /// <summary>Creates the exception.</summary>
    public InvalidTokensException(string message) : base(message) { }
}

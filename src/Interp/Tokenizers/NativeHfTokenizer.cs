using Tokenizers.DotNet;

namespace Interp.Tokenizers;

/// <summary>
/// One instance of Hugging Face's Rust tokenizer (the <c>tokenizers</c> crate 0.22.2, through Tokenizers.DotNet),
/// built from a tokenizer.json document that <see cref="TokenizerJson"/> wrote and checked. Its encode always passes
/// <c>add_special_tokens=true</c> and its decode <c>skip_special_tokens=true</c>; <see cref="HuggingFaceTokenizer"/>
/// gets the other settings from documents written for them (<see cref="TokenizerJsonVariant"/>).
/// </summary>
/// <remarks>
/// The native library keeps its last error message in one unsynchronised global, so every call goes through one
/// process-wide lock. It only reads documents from a file: the document goes to a temporary file that is deleted as
/// soon as the library has read it.
/// </remarks>
internal sealed class NativeHfTokenizer : IDisposable
{
    private static readonly Lock Gate = new();

    private readonly Tokenizer _native;
    private readonly string _source;
    private bool _disposed;

    private NativeHfTokenizer(Tokenizer native, string source)
    {
        _native = native;
        _source = source;
    }

    /// <summary>Builds the tokenizer from <paramref name="json"/>; errors name <paramref name="source"/>, the file it came from.</summary>
    /// <exception cref="ModelFileException">The library refused the document.</exception>
    /// <exception cref="InterpException">The native library could not be loaded on this platform.</exception>
    public static NativeHfTokenizer Create(string source, byte[] json)
    {
        string temp = Path.Combine(Path.GetTempPath(), $"interp-tokenizer-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllBytes(temp, json);
            lock (Gate) return new NativeHfTokenizer(Call(() => new Tokenizer(temp), source, "load"), source);
        }
        catch (TokenizerException ex)
        {
            throw new ModelFileException(source, null, $"Hugging Face tokenizers refused it: {ex.Message}", ex);
        }
        catch (IOException ex)
        {
            throw new InterpException($"{source}: cannot write the checked tokenizer to the temporary folder ({temp}): {ex.Message}", ex);
        }
        finally
        {
            try { File.Delete(temp); }
            catch (IOException) { }
        }
    }

    /// <summary>HF <c>encode(text, add_special_tokens=True)</c>: the ids.</summary>
    public uint[] Encode(string text)
    {
        lock (Gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try { return Call(() => _native.Encode(text), _source, "encode"); }
            catch (TokenizerException ex) { throw new ModelFileException(_source, null, $"Hugging Face tokenizers could not encode a text: {ex.Message}", ex); }
        }
    }

    /// <summary>HF <c>decode(ids, skip_special_tokens=True)</c>; ids must have been range-checked.</summary>
    public string Decode(uint[] ids)
    {
        lock (Gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            try { return Call(() => _native.Decode(ids), _source, "decode"); }
            catch (TokenizerException ex) { throw new ModelFileException(_source, null, $"Hugging Face tokenizers could not decode ids: {ex.Message}", ex); }
        }
    }

    private static T Call<T>(Func<T> call, string source, string what)
    {
        try { return call(); }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw new InterpException(
                $"{source}: cannot {what} with Hugging Face tokenizers: its native library (hf_tokenizers, from the package " +
                $"Tokenizers.DotNet.runtime.<platform>) did not load on this platform: {ex.Message}", ex);
        }
    }

    /// <summary>Frees the native tokenizer.</summary>
    public void Dispose()
    {
        lock (Gate)
        {
            if (_disposed) return;
            _disposed = true;
            _native.Dispose();
        }
    }
}

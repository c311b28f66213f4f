using Interp.Cli.Commands;
using Interp.Loading;
using Interp.Tokenizers;

namespace Interp.Tests.Cli;

/// <summary>
/// <c>interp info</c>'s text (<see cref="InfoCommand.Describe"/>) for every shared model: the family and each
/// architecture feature its config.json declares (read from the files and their READMEs, not from the loader).
/// </summary>
public sealed class InfoCommandTests
{
    public static TheoryData<string, string[]> Models => new()
    {
        { "gpt2-tiny-random", [
            "family:      gpt2", "block:       pre-norm", "attention:   causal", "positions:   Learned",
            "head:        final norm, unembedding", "vocab:       1000   n_ctx: 128   biases: yes", "tokenizer:   none"] },
        { "gemma2-tiny-random", [
            "family:      gemma2", "block:       pre-norm, with norms on each sublayer's output (ln1_post, ln2_post)",
            "attention:   causal, scores / 5.65685 (not √d_head), scores soft-capped at 50, sliding window of 16 on layers 0, 2",
            "positions:   Rotary (Halves, base 10000, 24 of 24 dims)", "embedding:   × 8", "head:        final norm, unembedding, logits soft-capped at 30"] },
        { "gpt_neox-tiny-random", [
            "family:      gpt_neox", "block:       parallel (attention and MLP both read resid_pre; no resid_mid)", "attention:   causal",
            "positions:   Rotary (Halves, base 10000, 4 of 16 dims)"] },
        { "llama-tiny-random", [
            "family:      llama", "layers:      3   d_model: 64   heads: 4 (key/value heads: 2)   d_head: 16",
            "positions:   Rotary (Halves, base 500000, 16 of 16 dims), llama3 scaling (factor 8, low_freq_factor 1, high_freq_factor 4, original context 8192)",
            "vocab:       512   n_ctx: 131072   biases: no"] },
        { "mistral-tiny-random", ["family:      mistral", "attention:   causal, sliding window of 16 on every layer"] },
        { "qwen2-tiny-random", ["family:      qwen2", "attention:   causal", "vocab:       512   n_ctx: 32768   biases: q/k/v only"] },
        { "qwen3-tiny-random", ["family:      qwen3", "attention:   causal, q/k RMSNorm per head", "layers:      3   d_model: 64   heads: 4 (key/value heads: 2)   d_head: 32"] },
        { "bert-tiny-random", [
            "family:      bert", "block:       post-norm (ln1 after attention's residual sum, ln2 at the block's end)", "attention:   bidirectional",
            "positions:   Learned", "embedding:   2 token types, normed (embed.ln)", "head:        masked-LM (dense, activation, LayerNorm, unembedding)"] },
        { "all-MiniLM-L6-v2", [
            "family:      bert", "attention:   bidirectional", "head:        none (the output is the last hidden state); pooler (tanh(dense(h[:, 0])))",
            "mlp:         Standard, d_mlp 1536, Gelu"] },
        { "stories260K/stories260K.bin", [
            "family:      llama2.c", "positions:   Rotary (AdjacentPairs, base 10000, 8 of 8 dims)",
            "tokenizer:   llama2.c (SentencePiece-style BPE, tokenizer.bin), 512 tokens, BOS 1, EOS 2"] },
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void Describe_names_the_family_and_every_feature_the_config_declares(string model, string[] lines)
    {
        using var loaded = ModelLoader.Load(SharedData.Model(model));
        string text = InfoCommand.Describe(loaded.Model, loaded.Format, loaded.Source, loaded.Tokenizer);
        var actual = text.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        foreach (var line in lines) Assert.True(actual.Contains(line), $"missing line \"{line}\" in:\n{text}");
        // Features a model lacks print nothing: no embedding line without a scale, token types or an embedding norm.
        Assert.Equal(loaded.Model.Config.EmbeddingScale != 1 || loaded.Model.Config.NTokenTypes > 0, actual.Any(l => l.StartsWith("embedding:", StringComparison.Ordinal)));
        Assert.Contains($"model:       {loaded.Model.Config.Name} ({loaded.Format}, {loaded.Source})", actual);
    }

    [Fact]
    public void The_tokenizer_line_gives_its_kind_vocabulary_and_special_ids()
    {
        Assert.Equal("GPT-2 byte-level BPE, 50257 tokens, BOS 50256, EOS 50256", InfoCommand.TokenizerKind(new Gpt2Tokenizer()));
        Assert.Equal("none", InfoCommand.TokenizerKind(null));
    }
}

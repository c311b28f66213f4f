using Interp.Cli;
using Interp.Cli.Commands;
using Interp.Loading;
using Interp.Tests.Support;
using static TorchSharp.torch;

namespace Interp.Tests.Cli;

/// <summary>
/// <c>interp cache</c>, run in-process; the safetensors file is read back with <see cref="NaiveSafeTensors"/> (written
/// from the format's description, not the project's reader) and compared with RunWithCache and the shared references.
/// </summary>
public sealed class CacheCommandTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    private static string Reference(string model, string file) => File.ReadAllText(SharedData.Model($"{model}/reference/{file}")).Trim();

    private static long[] Ids(string csv) => csv.Split(',').Select(long.Parse).ToArray();

    /// <summary>Every tensor of the file equals the cache's (same names in the same order, same shapes, same values up to rounding).</summary>
    private static void AssertSameAsCache(List<(string Name, NaiveSafeTensors.Entry Tensor)> file, Interp.Hooks.ActivationCache cache)
    {
        Assert.Equal(cache.Names, file.Select(t => t.Name));
        foreach (var (name, entry) in file)
        {
            Assert.Equal(cache[name].shape, entry.Shape);
            var expected = cache[name].to(ScalarType.Float32).contiguous().data<float>().ToArray();
            for (int i = 0; i < expected.Length; i++)
            {
                // −∞ where attention scores are masked must come back as −∞; everything else as computed.
                bool same = expected[i] == entry.Values[i] || Math.Abs(expected[i] - entry.Values[i]) <= 1e-5 * (1 + Math.Abs(expected[i]));
                Assert.True(same, $"{name}[{i}]: file {entry.Values[i]}, cache {expected[i]}");
            }
        }
    }

    private static Tensor ToTensor(NaiveSafeTensors.Entry entry) => tensor(entry.Values, entry.Shape);

    [Fact]
    public async Task Gpt2_cache_holds_every_default_hook_as_run_with_cache_does_and_the_reference_pattern()
    {
        using var tmp = new TempDir();
        string file = tmp.File("gpt2.safetensors");
        string tokens = Reference("gpt2-tiny-random", "tokens.txt");
        var (code, output, err) = await Run("cache", "--model", TestModels.Gpt2TinyDir, "--tokens", tokens, "--out", file);
        Assert.True(code == 0, err);
        Assert.Contains("1 sequence(s) × 40 positions", output);
        Assert.Equal([file], Directory.GetFiles(tmp.Path)); // no temporary file left beside it

        var (tensors, metadata) = NaiveSafeTensors.Read(file);
        Assert.Equal(tokens, metadata["tokens"]);
        Assert.Equal("huggingface-gpt2", metadata["format"]);
        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (_, cache) = loaded.Model.RunWithCache(tensor(Ids(tokens), [1, 40]));
        using (cache)
        {
            Assert.DoesNotContain("blocks.0.attn.hook_result", tensors.Select(t => t.Name)); // as RunWithCache's default
            Assert.Contains("blocks.2.hook_resid_post", tensors.Select(t => t.Name));
            AssertSameAsCache(tensors, cache);
        }
        // Layer 1's pattern against the independent C implementation's [layer, head, query, key].
        var reference = TensorAssert.ReadRawFloats(SharedData.Model("gpt2-tiny-random/reference/attn.f32"), 3, 4, 40, 40);
        var pattern = ToTensor(tensors.Single(t => t.Name == "blocks.1.attn.hook_pattern").Tensor);
        Assert.Equal([1, 4, 40, 40], pattern.shape);
        TensorAssert.Close(reference[1], pattern[0], 1e-4, "blocks.1.attn.hook_pattern");
    }

    [Fact]
    public async Task Bert_batch_with_token_types_and_a_padded_row_matches_run_with_cache_and_both_references()
    {
        using var tmp = new TempDir();
        string file = tmp.File("bert.safetensors");
        string bert = SharedData.Model("bert-tiny-random");
        string tokens = Reference("bert-tiny-random", "tokens.txt"), types = Reference("bert-tiny-random", "token_type_ids.txt");
        string mask = Reference("bert-tiny-random", "attention_mask.txt");
        string paddedTokens = Reference("bert-tiny-random", "padded/tokens.txt"), paddedTypes = Reference("bert-tiny-random", "padded/token_type_ids.txt");
        string paddedMask = Reference("bert-tiny-random", "padded/attention_mask.txt");
        // Rows given both ways: the option repeated (tokens, types) and ';'-separated (mask).
        var (code, _, err) = await Run("cache", "--model", bert, "--tokens", tokens, "--tokens", paddedTokens,
            "--token-types", types, "--token-types", paddedTypes, "--attention-mask", mask + ";" + paddedMask,
            "--hooks", "blocks.*.attn.hook_pattern, *hook_normalized_resid_post", "--hooks", "embed.ln.hook_normalized", "--out", file);
        Assert.True(code == 0, err);

        var (tensors, metadata) = NaiveSafeTensors.Read(file);
        Assert.Equal(tokens + ";" + paddedTokens, metadata["tokens"]);
        Assert.Equal(types + ";" + paddedTypes, metadata["token_types"]);
        Assert.Equal(mask + ";" + paddedMask, metadata["attention_mask"]);
        // The globs' names, spelled out here, in forward order.
        string[] expected =
        [
            "embed.ln.hook_normalized",
            "blocks.0.attn.hook_pattern", "blocks.0.hook_normalized_resid_post",
            "blocks.1.attn.hook_pattern", "blocks.1.hook_normalized_resid_post",
            "blocks.2.attn.hook_pattern", "blocks.2.hook_normalized_resid_post",
        ];
        Assert.Equal(expected, tensors.Select(t => t.Name));

        using var loaded = ModelLoader.Load(bert);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(Ids(tokens).Concat(Ids(paddedTokens)).ToArray(), [2, 40]);
        var tokenTypes = tensor(Ids(types).Concat(Ids(paddedTypes)).ToArray(), [2, 40]);
        var attentionMask = tensor(Ids(mask).Concat(Ids(paddedMask)).ToArray(), [2, 40]);
        var (_, cache) = loaded.Model.RunWithCache(ids, attentionMask, tokenTypes, expected.Contains);
        using (cache) AssertSameAsCache(tensors, cache);

        // Layer 1's pattern: row 0 against the main reference, row 1's 32 real queries against the padded one.
        var pattern = ToTensor(tensors.Single(t => t.Name == "blocks.1.attn.hook_pattern").Tensor);
        Assert.Equal([2, 4, 40, 40], pattern.shape);
        var main = TensorAssert.ReadRawFloats(SharedData.Model("bert-tiny-random/reference/attn.f32"), 3, 4, 40, 40);
        var padded = TensorAssert.ReadRawFloats(SharedData.Model("bert-tiny-random/reference/padded/attn.f32"), 3, 4, 40, 40);
        TensorAssert.Close(main[1], pattern[0], 1e-4, "row 0, blocks.1.attn.hook_pattern");
        TensorAssert.Close(padded[1].narrow(1, 0, 32), pattern[1].narrow(1, 0, 32), 1e-4, "row 1 (padded), blocks.1.attn.hook_pattern");
        Assert.Equal(0.0, pattern[1].narrow(2, 32, 8).abs().max().item<float>()); // nothing attends to padding
        // The encoder's output is the last block's normalized resid_post: the reference's last_hidden_state [40, 64].
        var hidden = ToTensor(tensors.Single(t => t.Name == "blocks.2.hook_normalized_resid_post").Tensor);
        var lastHidden = TensorAssert.ReadRawFloats(SharedData.Model("bert-tiny-random/reference/padded/last_hidden_state.f32"), 40, 64);
        TensorAssert.Close(lastHidden.narrow(0, 0, 32), hidden[1].narrow(0, 0, 32), 1e-4, "row 1, last hidden state");
    }

    [Fact]
    public async Task Texts_of_different_lengths_are_right_padded_and_each_row_equals_its_run_alone()
    {
        using var tmp = new TempDir();
        string file = tmp.File("stories.safetensors");
        string[] texts = ["Once upon a time, there was a little girl", "Lily"];
        var (code, _, err) = await Run("cache", "--model", TestModels.StoriesBin, "--text", texts[0], "--text", texts[1],
            "--hooks", "blocks.4.hook_resid_post,blocks.0.attn.hook_pattern", "--out", file);
        Assert.True(code == 0, err);
        var (tensors, metadata) = NaiveSafeTensors.Read(file);
        Assert.Equal(["blocks.0.attn.hook_pattern", "blocks.4.hook_resid_post"], tensors.Select(t => t.Name));

        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var rows = texts.Select(t => loaded.Model.ToTokens(t)).ToArray(); // BOS first, as the tokenizer has one
        long longest = rows.Max(r => r.shape[1]);
        Assert.Equal(1, rows[0][0, 0].item<long>());
        Assert.Equal(string.Join(';', rows.Select(r => string.Join(',', Enumerable.Range(0, (int)longest).Select(p => p < r.shape[1] ? "1" : "0")))),
            metadata["attention_mask"]);
        var resid = ToTensor(tensors[1].Tensor);
        var pattern = ToTensor(tensors[0].Tensor);
        Assert.Equal([2, longest, 64], resid.shape);
        for (int b = 0; b < 2; b++)
        {
            long n = rows[b].shape[1];
            var (_, alone) = loaded.Model.RunWithCache(rows[b]);
            using (alone)
            {
                TensorAssert.Close(alone["blocks.4.hook_resid_post"][0], resid[b].narrow(0, 0, n), 1e-4, $"row {b} resid_post");
                TensorAssert.Close(alone["blocks.0.attn.hook_pattern"][0], pattern[b].narrow(1, 0, n).narrow(2, 0, n), 1e-5, $"row {b} pattern");
            }
        }
    }

    [Theory]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2,3", "--hooks", "blocks.*.attn.hook_patern", "--out", "OUT" },
        "--hooks: 'blocks.*.attn.hook_patern' matches no hook point of gpt2-tiny-random; closest names: blocks.0.attn.hook_pattern")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2,3", "--attention-mask", "1,1", "--out", "OUT" },
        "--attention-mask: row 0 has 2 entries, but --tokens sequence 0 has 3 token(s)")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2;3,4", "--attention-mask", "1,1", "--out", "OUT" },
        "--attention-mask: 1 row(s) for 2 sequence(s)")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,1000", "--out", "OUT" },
        "token id 1000 at [batch 0, pos 1] is outside the vocabulary [0, 1000)")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2", "--out", "MISSING" }, "the folder MISSINGDIR does not exist")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2", "--out", "TMPDIR" }, "is a folder; name the .safetensors file to write")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2;3", "--out", "OUT" }, "--tokens: sequence 1 has 1 tokens but sequence 0 has 2")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,x", "--out", "OUT" }, "--tokens: 'x' in row 0 is not an integer")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2;", "--out", "OUT" }, "--tokens: row 1 is empty")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2,3", "--attention-mask", "1,0,1", "--out", "OUT" }, "the real tokens must be contiguous")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2", "--attention-mask", "1,2", "--out", "OUT" }, "attention mask value 2 at [batch 0, pos 1] must be 1 (real token) or 0 (padding)")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2", "--token-types", "0,1", "--out", "OUT" }, "has no token-type embedding")]
    [InlineData(new[] { "--model", "BERT", "--tokens", "1,2", "--token-types", "0,2", "--out", "OUT" }, "token type 2 at [batch 0, pos 1] is outside [0, 2)")]
    [InlineData(new[] { "--model", "BERT", "--tokens", "1,2", "--token-types", "0", "--out", "OUT" }, "--token-types: row 0 has 1 entries, but --tokens sequence 0 has 2 token(s)")]
    [InlineData(new[] { "--model", "GPT2", "--text", "hello", "--out", "OUT" }, "no tokenizer for this model")]
    [InlineData(new[] { "--model", "STORIES", "--text", "hello", "--attention-mask", "1,1", "--out", "OUT" }, "--attention-mask goes with --tokens")]
    [InlineData(new[] { "--model", "GPT2", "--tokens", "1,2", "--hooks", "hook_embed,", "--out", "OUT" }, "--hooks: an empty hook name")]
    public async Task Bad_requests_exit_with_code_1_and_a_message_naming_the_option_or_value(string[] args, string message)
    {
        using var tmp = new TempDir();
        string missing = Path.Combine(tmp.Path, "no-such-folder");
        args = args.Select(a => a switch
        {
            "GPT2" => TestModels.Gpt2TinyDir,
            "BERT" => SharedData.Model("bert-tiny-random"),
            "STORIES" => TestModels.StoriesBin,
            "OUT" => tmp.File("out.safetensors"),
            "MISSING" => Path.Combine(missing, "out.safetensors"),
            "TMPDIR" => tmp.Path,
            _ => a,
        }).ToArray();
        var (code, _, err) = await Run(["cache", .. args]);
        Assert.True(code == 1, $"exit code {code}: {err}");
        Assert.Contains(message.Replace("MISSINGDIR", missing), err);
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path)); // nothing written, not even a temporary file
    }

    [Fact]
    public async Task Tokens_and_text_together_or_neither_are_rejected_by_the_parser()
    {
        var (code, _, err) = await Run("cache", "--model", TestModels.Gpt2TinyDir, "--tokens", "1", "--text", "a", "--out", "x.safetensors");
        Assert.NotEqual(0, code);
        Assert.Contains("exactly one of --tokens and --text", err);
        (code, _, err) = await Run("cache", "--model", TestModels.Gpt2TinyDir, "--out", "x.safetensors");
        Assert.NotEqual(0, code);
        Assert.Contains("exactly one of --tokens and --text", err);
    }

    [Theory]
    [InlineData("blocks.*.attn.hook_pattern", "blocks.10.attn.hook_pattern", true)]
    [InlineData("blocks.*.attn.hook_pattern", "blocks.0.attn.hook_attn_scores", false)]
    [InlineData("*hook_pattern", "blocks.0.attn.hook_pattern", true)]
    [InlineData("blocks.*", "blocks.0.hook_resid_pre", true)]
    [InlineData("blocks.0", "blocks.0.hook_resid_pre", false)]
    [InlineData("hook_embed", "hook_embed", true)]
    [InlineData("*", "hook_embed", true)]
    [InlineData("a*b*c", "abc", true)]
    [InlineData("a*b*c", "axxbyyc", true)]
    [InlineData("a*b*c", "acb", false)]
    [InlineData("ab*ba", "aba", false)]
    [InlineData("a**a", "a", false)]
    [InlineData("a**a", "aa", true)]
    public void Globs_match_whole_names_with_star_as_any_run_of_characters(string glob, string name, bool matches) =>
        Assert.Equal(matches, HookGlobs.IsMatch(glob, name));
}

using Interp.Cli;
using Interp.Loading;
using Interp.Tests.Support;
using ParquetSharp;
using static TorchSharp.torch;

namespace Interp.Tests.Cli;

/// <summary>The <c>interp</c> verbs, run in-process; Parquet output is read back with ParquetSharp (an independent reader).</summary>
public sealed class CliTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await CliApp.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Info_lists_architecture_parameters_and_every_hook_with_its_shape()
    {
        var (code, output, _) = await Run("info", "--model", TestModels.StoriesBin);
        Assert.Equal(0, code);
        Assert.Contains("layers:      5", output);
        Assert.Contains("family:      llama2.c", output);
        Assert.Contains("attention:   causal", output);
        Assert.Contains("tokenizer:   llama2.c (SentencePiece-style BPE, tokenizer.bin), 512 tokens, BOS 1, EOS 2", output);
        Assert.Contains("(key/value heads: 4)", output);
        Assert.Contains("Rotary (AdjacentPairs", output);
        Assert.Contains("parameters:  292,800", output);
        Assert.Matches(@"blocks\.4\.attn\.hook_k\s+\[batch, pos, 4, 8\]", output);
        Assert.Matches(@"blocks\.0\.attn\.hook_pattern\s+\[batch, 8, query_pos, key_pos\]", output);
        Assert.Matches(@"ln_final\.hook_scale\s+\[batch, pos, 1\]", output);
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        Assert.Contains($"hook points: {loaded.Model.HookPoints.Count}", output);
    }

    [Fact]
    public async Task Logits_writes_every_position_and_vocabulary_entry_to_parquet()
    {
        using var tmp = new TempDir();
        string file = tmp.File("logits.parquet");
        var (code, _, err) = await Run("logits", "--model", TestModels.Gpt2TinyDir, "--tokens", "5, 17,999,0", "--out", file);
        Assert.True(code == 0, err);

        using var reader = new ParquetFileReader(file);
        var schema = reader.FileMetaData.Schema;
        Assert.Equal(["position", "vocab", "logit"], Enumerable.Range(0, schema.NumColumns).Select(i => schema.Column(i).Name));
        var positions = new List<int>(); var vocab = new List<int>(); var logits = new List<float>();
        for (int g = 0; g < reader.FileMetaData.NumRowGroups; g++)
        {
            using var group = reader.RowGroup(g);
            long n = group.MetaData.NumRows;
            positions.AddRange(group.Column(0).LogicalReader<int>().ReadAll((int)n));
            vocab.AddRange(group.Column(1).LogicalReader<int>().ReadAll((int)n));
            logits.AddRange(group.Column(2).LogicalReader<float>().ReadAll((int)n));
        }
        Assert.Equal(4 * 1000, positions.Count);

        using var loaded = ModelLoader.Load(TestModels.Gpt2TinyDir);
        using var scope = NewDisposeScope();
        var expected = loaded.Model.forward(tensor(new long[] { 5, 17, 999, 0 }, [1, 4]))[0].data<float>().ToArray();
        for (int i = 0; i < positions.Count; i++)
        {
            Assert.Equal(i / 1000, positions[i]);
            Assert.Equal(i % 1000, vocab[i]);
            Assert.Equal(expected[positions[i] * 1000 + vocab[i]], logits[i]);
        }
    }

    [Fact]
    public async Task Generate_prints_a_fluent_continuation()
    {
        var (code, output, err) = await Run("generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "20");
        Assert.True(code == 0, err);
        Assert.StartsWith("Once upon a time, there was a little", output);
    }

    [Fact]
    public async Task Generate_samples_reproducibly_with_a_seed()
    {
        string[] args = ["generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "40", "--temperature", "1.2"];
        var a = await Run([.. args, "--seed", "5"]);
        var b = await Run([.. args, "--seed", "5"]);
        var c = await Run([.. args, "--seed", "6"]);
        Assert.True(a.Code == 0, a.Err);
        Assert.StartsWith("Once upon a time", a.Out);
        Assert.Equal(a.Out, b.Out);
        Assert.NotEqual(a.Out, c.Out);
        var greedy = await Run("generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "40");
        Assert.NotEqual(greedy.Out, a.Out);
        // Top-k 1 and a tiny top-p leave only the most likely token: greedy again.
        Assert.Equal(greedy.Out, (await Run([.. args, "--seed", "5", "--top-k", "1"])).Out);
        Assert.Equal(greedy.Out, (await Run([.. args, "--seed", "5", "--top-p", "1e-9"])).Out);
    }

    [Fact]
    public async Task Generate_stops_at_a_stop_token_given_as_text_or_as_id()
    {
        var byText = await Run("generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "40", "--stop", ".");
        Assert.True(byText.Code == 0, byText.Err);
        Assert.Equal("Once upon a time, there was a little girl named Lily.", byText.Out.TrimEnd());
        var comma = await Run("generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "40", "--stop", "\\,, .");
        Assert.Equal("Once upon a time,", comma.Out.TrimEnd());
        using var loaded = ModelLoader.Load(TestModels.StoriesBin);
        int commaId = Interp.Tokenizers.SingleTokens.Of(loaded.RequireTokenizer(), ",");
        int there = Interp.Tokenizers.SingleTokens.Of(loaded.RequireTokenizer(), " there");
        var byId = await Run("generate", "--model", TestModels.StoriesBin, "--text", "Once upon a time", "--max-new", "20", "--stop", $"{there}, {commaId}");
        Assert.Equal("Once upon a time,", byId.Out.TrimEnd());
    }

    [Theory]
    [InlineData(new[] { "logits", "--model", "MODEL:gpt2", "--text", "hello", "--out", "OUT" }, "no tokenizer for this model (its vocabulary of 1000 is smaller than GPT-2's 50257)")]
    [InlineData(new[] { "logits", "--model", "MODEL:gpt2", "--tokens", "1,x,3", "--out", "OUT" }, "'x' is not an integer token id")]
    [InlineData(new[] { "logits", "--model", "MODEL:gpt2", "--tokens", "1,2,3", "--device", "cuda:0", "--out", "OUT" }, "cannot place")]
    [InlineData(new[] { "logits", "--model", "MODEL:gpt2", "--tokens", "1,2,3", "--device", "gpu-please", "--out", "OUT" }, "is not a device name")]
    [InlineData(new[] { "logits", "--model", "MODEL:gpt2", "--tokens", "1,1000", "--out", "OUT" }, "token id 1000 at [batch 0, pos 1] is outside the vocabulary [0, 1000)")]
    [InlineData(new[] { "logits", "--model", "/no/such/model", "--tokens", "1", "--out", "OUT" }, "/no/such/model: no such file or directory")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--max-new", "-3" }, "--max-new must not be negative")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--temperature", "-1" }, "--temperature must be 0 (greedy) or positive, got -1")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--temperature", "1", "--top-p", "0" }, "--top-p must lie in (0, 1], got 0")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--temperature", "1", "--top-k", "-2" }, "--top-k must be 0 (off) or positive, got -2")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--top-k", "3" }, "--top-k and --top-p shape sampling: give a --temperature > 0 too")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--stop", "9999" }, "--stop: token id 9999 is outside the vocabulary [0, 512)")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--stop", "upon a" }, "--stop: a stop text must be one token, but \"upon a\" is")]
    [InlineData(new[] { "generate", "--model", "MODEL:stories", "--text", "hi", "--max-new", "600" }, "exceeds the model's context n_ctx = 512")]
    public async Task Bad_requests_give_one_clear_line_and_exit_code_1(string[] args, string message)
    {
        using var tmp = new TempDir();
        args = args.Select(a => a switch
        {
            "MODEL:gpt2" => TestModels.Gpt2TinyDir,
            "MODEL:stories" => TestModels.StoriesBin,
            "OUT" => tmp.File("out.parquet"),
            _ => a,
        }).ToArray();
        var (code, _, err) = await Run(args);
        Assert.Equal(1, code);
        Assert.Contains(message, err);
        Assert.False(File.Exists(tmp.File("out.parquet")));
    }

    [Fact]
    public async Task Unwritable_output_is_a_clear_error()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("blocker"), "a file where a folder should be");
        string target = Path.Combine(tmp.File("blocker"), "logits.parquet");
        var (code, _, err) = await Run("logits", "--model", TestModels.Gpt2TinyDir, "--tokens", "1,2", "--out", target);
        Assert.Equal(1, code);
        Assert.Contains($"cannot create the folder for Parquet table {target}", err);
    }

    [Fact]
    public async Task Tokens_and_text_together_are_rejected_by_the_parser()
    {
        var (code, _, err) = await Run("logits", "--model", TestModels.Gpt2TinyDir, "--tokens", "1", "--text", "a", "--out", "x.parquet");
        Assert.NotEqual(0, code);
        Assert.Contains("exactly one of --tokens and --text", err);
    }

    // ---- tokens ----

    private static string Gpt2Tokenizer => Path.Combine(SharedData.Root, "tokenizers", "gpt2");

    [Fact]
    public async Task Tokens_prints_ids_and_display_strings()
    {
        var (code, output, err) = await Run("tokens", "--tokenizer", Gpt2Tokenizer, "--text", "Hello world");
        Assert.True(code == 0, err);
        Assert.Equal("ids:    [15496,995]\ntokens: [\"Hello\",\" world\"]\n", output.Replace("\r\n", "\n"));

        (code, output, err) = await Run("tokens", "--tokenizer", Gpt2Tokenizer, "--text", "a \"b\"\n 🙂");
        Assert.True(code == 0, err);
        Assert.Contains("tokens: [\"a\",\" \\\"\",\"b\",\"\\\"\",\"\\n\",\" 🙂\"]", output); // JSON, with emoji as they are

        (code, output, err) = await Run("tokens", "--tokenizer", SharedData.Model("all-MiniLM-L6-v2"), "--text", "The cat sat on the mat.");
        Assert.True(code == 0, err);
        Assert.Contains("ids:    [101,1996,4937,2938,2006,1996,13523,1012,102]", output); // reference/input_ids.txt, row 1
        Assert.Contains("tokens: [\"[CLS]\",\"the\",\"cat\",\"sat\",\"on\",\"the\",\"mat\",\".\",\"[SEP]\"]", output);
        (code, output, _) = await Run("tokens", "--tokenizer", SharedData.Model("all-MiniLM-L6-v2") + "/tokenizer.json", "--text", "The cat sat on the mat.", "--no-special");
        Assert.Equal(0, code);
        Assert.Contains("ids:    [1996,4937,2938,2006,1996,13523,1012]", output);
    }

    [Fact]
    public async Task Tokens_of_a_jsonl_data_set_are_hugging_faces_line_by_line()
    {
        // strings.jsonl holds each text with the ids Hugging Face's tokenizers library gave it, with and without special tokens.
        string data = Path.Combine(Gpt2Tokenizer, "reference", "strings.jsonl");
        var reference = File.ReadAllLines(data).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!).ToArray();
        foreach (bool special in new[] { true, false })
        {
            string[] args = special ? ["tokens", "--tokenizer", Gpt2Tokenizer, "--jsonl", data] : ["tokens", "--tokenizer", Gpt2Tokenizer, "--jsonl", data, "--no-special"];
            var (code, output, err) = await Run(args);
            Assert.True(code == 0, err);
            var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(reference.Length, lines.Length);
            for (int i = 0; i < lines.Length; i++)
            {
                var result = System.Text.Json.Nodes.JsonNode.Parse(lines[i])!;
                var ids = result["ids"]!.AsArray().Select(n => (int)n!).ToArray();
                Assert.Equal(reference[i][special ? "ids_with_special" : "ids"]!.AsArray().Select(n => (int)n!).ToArray(), ids);
                Assert.Equal(ids.Length, result["tokens"]!.AsArray().Count);
            }
        }
    }

    [Fact]
    public async Task Tokens_with_a_llama2c_model_adds_its_bos_and_checks_another_tokenizer_against_its_vocabulary()
    {
        var (code, output, err) = await Run("tokens", "--model", TestModels.StoriesBin, "--text", "Once upon a time");
        Assert.True(code == 0, err);
        var tok = Interp.Tokenizers.Llama2CTokenizer.Load(TestModels.StoriesTokenizer);
        Assert.Contains("ids:    " + System.Text.Json.JsonSerializer.Serialize(tok.Encode("Once upon a time", prependBos: true)), output);
        Assert.StartsWith("ids:    [1,", output);

        (code, _, err) = await Run("tokens", "--model", TestModels.StoriesBin, "--tokenizer", Gpt2Tokenizer, "--text", "x");
        Assert.Equal(1, code);
        Assert.Contains("(vocabulary of 50257), but the model's vocabulary has only 512 entries", err);
    }

    [Fact]
    public async Task Tokens_names_the_bad_line_of_a_jsonl_file()
    {
        using var tmp = new TempDir();
        string data = tmp.File("data.jsonl");
        File.WriteAllText(data, "{\"text\": \"fine\"}\n\n{\"text\": 3}\n");
        var (code, output, err) = await Run("tokens", "--tokenizer", Gpt2Tokenizer, "--jsonl", data);
        Assert.Equal(1, code);
        Assert.Contains($"{data}: line 3: has no \"text\" string", err);
        var fine = new Interp.Tokenizers.Gpt2Tokenizer().Encode("fine");
        Assert.Contains($"{{\"ids\":{System.Text.Json.JsonSerializer.Serialize(fine)},\"tokens\":[\"fine\"]}}", output); // the good line came out first
        File.WriteAllText(data, "not json\n");
        (code, _, err) = await Run("tokens", "--tokenizer", Gpt2Tokenizer, "--jsonl", data);
        Assert.Equal(1, code);
        Assert.Contains($"{data}: line 1: is not valid JSON", err);
        (code, _, err) = await Run("tokens", "--text", "x");
        Assert.NotEqual(0, code);
        Assert.Contains("give --model or --tokenizer", err);
    }
}

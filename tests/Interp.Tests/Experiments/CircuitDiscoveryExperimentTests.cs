using Interp.Tests.Support;

namespace Interp.Tests.Experiments;

/// <summary>The circuit_discovery experiment end to end: its tables are read back and checked against each other and against the built-in model's induction circuit.</summary>
public sealed class CircuitDiscoveryExperimentTests
{
    [Fact]
    public async Task Built_in_model_edge_scores_faithfulness_and_the_induction_circuit()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "circuit_discovery", "--set", "batch=16", "--set", "steps=10");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;

        var edges = ParquetRead.Columns(Path.Combine(tmp.Path, "edge_attribution.parquet"));
        Assert.Equal(["upstream", "downstream", "input", "method", "score", "run_id"], edges.Keys);
        int rows = edges["score"].Length;
        int count = (int)Number("edges");
        // The built-in model: embed, pos_embed, 2 + 2 heads; every edge once per method.
        Assert.Equal(2 * 3 * 2 + 4 * 3 * 2 + 6, count);
        Assert.Equal(2 * count, rows);
        var ig = Enumerable.Range(0, rows).Where(i => (string)edges["method"][i] == "eap_ig")
            .Select(i => (Up: (string)edges["upstream"][i], Down: (string)edges["downstream"][i], Input: (string)edges["input"][i], Score: (double)edges["score"][i]))
            .OrderByDescending(e => Math.Abs(e.Score)).ToArray();
        Assert.Equal(count, ig.Length);
        Assert.Equal(count, ig.Select(e => (e.Up, e.Down, e.Input)).Distinct().Count());
        var top = ig.Take(6).ToArray();
        Assert.Contains(top, e => e.Up is "L0H0" or "L0H1" && e.Down == "L1H0" && e.Input == "k");
        Assert.Contains(top, e => e.Up == "L1H0" && e.Down == "logits" && e.Input == "logits");

        var curve = ParquetRead.Columns(Path.Combine(tmp.Path, "circuit_faithfulness.parquet"));
        Assert.Equal(["method", "edges", "faithfulness", "ablation", "run_id"], curve.Keys);
        var all = Enumerable.Range(0, curve["edges"].Length)
            .Select(i => (Method: (string)curve["method"][i], Edges: (int)curve["edges"][i], F: (double)curve["faithfulness"][i], Ablation: (string)curve["ablation"][i])).ToArray();
        foreach (var ablation in new[] { "corrupted", "mean" })
            foreach (var method in new[] { "eap", "eap_ig" })
            {
                var mine = all.Where(p => p.Method == method && p.Ablation == ablation).OrderBy(p => p.Edges).ToArray();
                Assert.Equal(0, mine[0].Edges);
                Assert.Equal(0.0, mine[0].F, 1e-4);              // nothing kept: the corrupted (or every-edge-mean-ablated) run
                Assert.Equal(count, mine[^1].Edges);
                Assert.Equal(1.0, mine[^1].F, 1e-12);            // everything kept: the clean run, exactly
            }
        var points = all.Where(p => p.Ablation == "corrupted").ToArray();
        // The key numbers follow from the tables.
        double at10 = points.Where(p => p.Method == "eap_ig" && p.Edges <= 10).OrderBy(p => p.Edges).Last().F;
        Assert.Equal(at10, Number("faithfulness_eap_ig_10_edges"), 1e-9);
        Assert.True(at10 >= 0.9, $"10 EAP-IG edges recover {at10:0.000}");
        Assert.Equal(points.Where(p => p.Method == "eap_ig" && p.F >= 0.9).Min(p => p.Edges), (int)Number("edges_for_90_percent_eap_ig"));
        Assert.True(Number("metric_clean") > Number("metric_corrupted") + 2);
        Assert.True(Number("correlation_eap_vs_edge_patching") > 0.5, $"r = {Number("correlation_eap_vs_edge_patching")}");
        foreach (var figure in new[] { "circuit_graph.png", "circuit_faithfulness.png", "edge_attribution_vs_patching.png", "input_attribution.png" })
            Assert.Contains(manifest.Artifacts, a => a.File == figure);

        // Input attribution: every real token of every clean sequence, and each sequence complete to the gap it states.
        var inputs = ParquetRead.Columns(Path.Combine(tmp.Path, "input_attribution.parquet"));
        Assert.Equal(["sequence", "position", "token_id", "token", "attribution", "completeness_gap", "run_id"], inputs.Keys);
        Assert.Equal(16 * 49, inputs["position"].Length);                 // batch 16, [BOS] + 24 + 24
        Assert.True(inputs["completeness_gap"].Max(g => Math.Abs((double)g!)) <= Number("input_attribution_completeness_gap") + 1e-12);
    }

    [Fact]
    public async Task Stories260K_name_prompts_run_end_to_end_with_a_complete_input_attribution()
    {
        using var tmp = new TempDir();
        var (code, _, err, manifest) = await ExperimentScriptTests.Run(tmp.Path, "run", "circuit_discovery", "--model", TestModels.StoriesBin,
            "--prompts", RepoFiles.Path("experiments/prompts/stories_names.jsonl"), "--set", "steps=10", "--set", "scatter_edges=20");
        Assert.True(code == 0, err);
        ExperimentScriptTests.AssertArtifactsComplete(tmp.Path, manifest);
        double Number(string name) => manifest.KeyNumbers.Single(k => k.Name == name).Value;
        // 5 layers of 8 heads and an MLP: embed + 40 heads + 5 MLPs upstream (no position embedding).
        var edges = ParquetRead.Columns(Path.Combine(tmp.Path, "edge_attribution.parquet"));
        Assert.DoesNotContain(edges["upstream"], u => (string)u! == "pos_embed");
        Assert.Equal(2 * (int)Number("edges"), edges["score"].Length);
        // The corrupted prompts as the baseline: each prompt's attributions add up to its logit difference's change.
        var inputs = ParquetRead.Columns(Path.Combine(tmp.Path, "input_attribution.parquet"));
        var gaps = inputs["completeness_gap"].Select(g => Math.Abs((double)g!)).ToArray();
        Assert.True(gaps.Max() <= 1e-3, $"completeness gap up to {gaps.Max():G3}");
        var curve = ParquetRead.Columns(Path.Combine(tmp.Path, "circuit_faithfulness.parquet"));
        Assert.Contains(curve["ablation"], a => (string)a! == "mean");
        Assert.True(Number("correlation_eap_vs_edge_patching") > 0.5, $"r = {Number("correlation_eap_vs_edge_patching")}");
    }
}

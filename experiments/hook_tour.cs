#:project ../src/Interp/Interp.csproj
// A tour of the hooks on any supported model: cache every activation, print the residual-stream norms per layer,
// find each layer's most previous-token-like head, and zero-ablate it.
// Run: dotnet run experiments/hook_tour.cs -- PATH-TO-MODEL ["some text"]
using Interp.Hooks;
using Interp.Loading;
using static TorchSharp.torch;

if (args.Length < 1)
{
    Console.Error.WriteLine("usage: dotnet run experiments/hook_tour.cs -- MODEL [TEXT]");
    return 2;
}
using var loaded = ModelLoader.Load(args[0]);
var model = loaded.Model;
string text = args.Length > 1 ? args[1] : "Once upon a time, there was a little girl named Lily. She loved to play outside.";
var ids = loaded.RequireTokenizer().Encode(text, prependBos: true);
var tokens = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
using var scope = NewDisposeScope();
using var _ = no_grad();

var (logits, cache) = model.RunWithCache(tokens);
using (cache)
{
    Console.WriteLine($"{model.Config.Name}: {cache.Count} activations cached, {cache.Bytes / 1024.0:F1} KiB");
    for (int l = 0; l < model.Config.NLayers; l++)
    {
        var pattern = cache[HookNames.Pattern(l)][0];                     // [head, query_pos, key_pos]
        var prevToken = pattern.diagonal(offset: -1, dim1: 1, dim2: 2).mean([1]); // attention to the previous token, per head
        int best = (int)prevToken.argmax().item<long>();
        double norm = cache[HookNames.ResidPost(l)].norm(-1).mean().item<float>();
        Console.WriteLine($"layer {l}: mean |resid_post| = {norm:F2}; most previous-token head = {l}.{best} ({prevToken[best].item<float>():F2})");
    }
}

var loss = nn.functional.cross_entropy(logits[0, ..^1], tokens[0, 1..]).item<float>();
int layer = 0, head = 0;
var ablated = model.RunWithHooks(tokens, (HookNames.Z(layer), (z, _) =>
{
    var copy = z.clone();
    copy[.., .., head] = 0;
    return copy;
}));
var ablatedLoss = nn.functional.cross_entropy(ablated[0, ..^1], tokens[0, 1..]).item<float>();
Console.WriteLine($"loss {loss:F3}; with head {layer}.{head} zero-ablated {ablatedLoss:F3}");
return 0;

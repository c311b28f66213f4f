#!/usr/bin/python3
"""The benchmark's peer: the same GPT-2 or LLaMA forward in PyTorch eager, on the same weights (a Hugging Face
safetensors file parsed here with numpy, no pip; F32, F16 or BF16, widened to float32), with TransformerLens-style hook
points whose forward hooks cache the
same activations as Interp's RunWithCache. Driven over stdin/stdout so that `interp bench` can interleave its
repetitions with its own:

  plain B P      -> "ok SECONDS"   one forward pass of tokens [B, P] (no hooks)
  cached B P     -> "ok SECONDS"   the same with a caching forward hook on every hook point, cache dropped after
  matmul N       -> "ok SECONDS"   one float32 N x N x N matmul
  logits B P     -> "ok V1 V2 ..."  logits[0, -1, :8] (to check that both sides compute the same function)
  info           -> "ok torch=... threads=... blas=..."
  quit

Tokens are the same deterministic function of (B, P, vocab) on both sides: (i * 7919 + 13) % vocab.
Run with Debian's /usr/bin/python3 (python3-torch on libopenblas0-pthread); OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
"""
import json, math, struct, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "F32":
            x = np.frombuffer(data, dtype=np.float32, count=(b - a) // 4, offset=a).copy()
        elif info["dtype"] == "F16":
            x = np.frombuffer(data, dtype=np.float16, count=(b - a) // 2, offset=a).astype(np.float32)
        elif info["dtype"] == "BF16":  # bfloat16 is the high half of a float32
            x = (np.frombuffer(data, dtype=np.uint16, count=(b - a) // 2, offset=a).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: dtype {info['dtype']} not supported")
        out[name] = torch.from_numpy(x).reshape(info["shape"])
    del data
    return out


class HookPoint(nn.Identity):
    """TransformerLens's HookPoint: an identity module whose forward hooks see the activation."""


class Gpt2(nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        self.cfg, self.w = cfg, w
        self.d, self.h = cfg["n_embd"], cfg["n_head"]
        self.e = self.d // self.h
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale", "ln_final.hook_normalized"]
        for l in range(cfg["n_layer"]):
            for s in ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                      "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
                      "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]:
                names.append(f"blocks.{l}.{s}")
        self.hooks = nn.ModuleDict({n.replace(".", "/"): HookPoint() for n in names})
        self.wte_t = w["wte.weight"].t().contiguous()  # tied unembedding [d_model, vocab]

    def hp(self, name, x):
        return self.hooks[name.replace(".", "/")](x)

    def ln(self, x, prefix, wname):
        x = x - x.mean(-1, keepdim=True)
        scale = self.hp(prefix + "hook_scale", (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hp(prefix + "hook_normalized", x / scale * self.w[wname + ".weight"] + self.w[wname + ".bias"])

    def forward(self, tokens):
        w, d, h, e = self.w, self.d, self.h, self.e
        B, P = tokens.shape
        x = self.hp("hook_embed", w["wte.weight"][tokens]) + self.hp("hook_pos_embed", w["wpe.weight"][:P].unsqueeze(0).expand(B, P, d))
        mask = torch.ones(P, P, dtype=torch.bool).triu(1)
        for l in range(self.cfg["n_layer"]):
            p, s = f"h.{l}.", f"blocks.{l}."
            x = self.hp(s + "hook_resid_pre", x)
            a = self.ln(x, s + "ln1.", p + "ln_1")
            qkv = torch.addmm(w[p + "attn.c_attn.bias"], a.reshape(B * P, d), w[p + "attn.c_attn.weight"]).view(B, P, 3, h, e)
            q = self.hp(s + "attn.hook_q", qkv[:, :, 0])
            k = self.hp(s + "attn.hook_k", qkv[:, :, 1])
            v = self.hp(s + "attn.hook_v", qkv[:, :, 2])
            scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) / math.sqrt(e)   # [B, h, q, k]
            scores = self.hp(s + "attn.hook_attn_scores", scores.masked_fill(mask, float("-inf")))
            pattern = self.hp(s + "attn.hook_pattern", scores.softmax(-1))
            z = self.hp(s + "attn.hook_z", torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))  # [B, P, h, e]
            attn_out = torch.addmm(w[p + "attn.c_proj.bias"], z.reshape(B * P, d), w[p + "attn.c_proj.weight"]).view(B, P, d)
            x = self.hp(s + "hook_resid_mid", x + self.hp(s + "hook_attn_out", attn_out))
            m = self.ln(x, s + "ln2.", p + "ln_2")
            pre = self.hp(s + "mlp.hook_pre", torch.addmm(w[p + "mlp.c_fc.bias"], m.reshape(B * P, d), w[p + "mlp.c_fc.weight"]))
            post = self.hp(s + "mlp.hook_post", 0.5 * pre * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (pre + 0.044715 * pre.pow(3)))))
            mlp_out = torch.addmm(w[p + "mlp.c_proj.bias"], post, w[p + "mlp.c_proj.weight"]).view(B, P, d)
            x = self.hp(s + "hook_resid_post", x + self.hp(s + "hook_mlp_out", mlp_out))
        x = self.ln(x, "ln_final.", "ln_f")
        return torch.matmul(x, self.wte_t)


class Llama(nn.Module):
    """Hugging Face's LlamaForCausalLM forward: RMSNorm, rotary (rotate-half, Llama 3's frequency scaling), grouped-query
    attention, SwiGLU, tied or untied lm_head."""

    def __init__(self, cfg, w):
        super().__init__()
        self.cfg, self.w = cfg, w
        self.d, self.h = cfg["hidden_size"], cfg["num_attention_heads"]
        self.kv = cfg.get("num_key_value_heads", self.h)
        self.e = cfg.get("head_dim", self.d // self.h)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        names = ["hook_embed", "ln_final.hook_scale", "ln_final.hook_normalized"]
        for l in range(cfg["num_hidden_layers"]):
            for s in ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                      "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
                      "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre",
                      "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]:
                names.append(f"blocks.{l}.{s}")
        self.hooks = nn.ModuleDict({n.replace(".", "/"): HookPoint() for n in names})
        self.lm_head = w["lm_head.weight"] if "lm_head.weight" in w and not cfg.get("tie_word_embeddings", False) else w["model.embed_tokens.weight"]
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.e, 2, dtype=torch.float64) / self.e))
        rs = cfg.get("rope_scaling")
        if rs and rs.get("rope_type", rs.get("type")) == "llama3":  # transformers' _compute_llama3_parameters
            factor, low, high, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
            wavelen = 2 * math.pi / inv
            scaled = torch.where(wavelen > old / low, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            medium = ~(wavelen < old / high) & ~(wavelen > old / low)
            inv = torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
        self.inv_freq = inv.float()

    def hp(self, name, x):
        return self.hooks[name.replace(".", "/")](x)

    def rms(self, x, prefix, weight):
        scale = self.hp(prefix + "hook_scale", (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hp(prefix + "hook_normalized", x / scale * weight)

    @staticmethod
    def rotate(x, cos, sin):  # x [B, P, heads, e]; rotate-half pairs i and i + e/2
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, tokens):
        w, d, h, kv, e = self.w, self.d, self.h, self.kv, self.e
        B, P = tokens.shape
        x = self.hp("hook_embed", w["model.embed_tokens.weight"][tokens])
        freqs = torch.outer(torch.arange(P, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
        mask = torch.ones(P, P, dtype=torch.bool).triu(1)
        for l in range(self.cfg["num_hidden_layers"]):
            p, s = f"model.layers.{l}.", f"blocks.{l}."
            x = self.hp(s + "hook_resid_pre", x)
            a = self.rms(x, s + "ln1.", w[p + "input_layernorm.weight"])
            q = self.hp(s + "attn.hook_q", F.linear(a, w[p + "self_attn.q_proj.weight"]).view(B, P, h, e))
            k = self.hp(s + "attn.hook_k", F.linear(a, w[p + "self_attn.k_proj.weight"]).view(B, P, kv, e))
            v = self.hp(s + "attn.hook_v", F.linear(a, w[p + "self_attn.v_proj.weight"]).view(B, P, kv, e))
            q = self.hp(s + "attn.hook_rot_q", self.rotate(q, cos, sin))
            k = self.hp(s + "attn.hook_rot_k", self.rotate(k, cos, sin))
            k, v = k.repeat_interleave(h // kv, dim=2), v.repeat_interleave(h // kv, dim=2)  # each KV head serves h/kv query heads
            scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) / math.sqrt(e)   # [B, h, q, k]
            scores = self.hp(s + "attn.hook_attn_scores", scores.masked_fill(mask, float("-inf")))
            pattern = self.hp(s + "attn.hook_pattern", scores.softmax(-1))
            z = self.hp(s + "attn.hook_z", torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2))  # [B, P, h, e]
            attn_out = F.linear(z.reshape(B, P, h * e), w[p + "self_attn.o_proj.weight"])
            x = self.hp(s + "hook_resid_mid", x + self.hp(s + "hook_attn_out", attn_out))
            m = self.rms(x, s + "ln2.", w[p + "post_attention_layernorm.weight"])
            pre = self.hp(s + "mlp.hook_pre", F.linear(m, w[p + "mlp.gate_proj.weight"]))
            lin = self.hp(s + "mlp.hook_pre_linear", F.linear(m, w[p + "mlp.up_proj.weight"]))
            post = self.hp(s + "mlp.hook_post", F.silu(pre) * lin)
            mlp_out = F.linear(post, w[p + "mlp.down_proj.weight"])
            x = self.hp(s + "hook_resid_post", x + self.hp(s + "hook_mlp_out", mlp_out))
        x = self.rms(x, "ln_final.", w["model.norm.weight"])
        return F.linear(x, self.lm_head)


def tokens_for(b, p, vocab):
    return ((torch.arange(b * p, dtype=torch.int64) * 7919 + 13) % vocab).view(b, p)


def main():
    model_dir = sys.argv[1]
    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))  # as many threads as the C# side's torch
    cfg = json.load(open(model_dir + "/config.json"))
    kinds = {"gpt2": Gpt2, "llama": Llama}
    if cfg.get("model_type") not in kinds:
        print(f"error model_type {cfg.get('model_type')} has no peer (peer.py runs {', '.join(kinds)})", flush=True)
        return
    model = kinds[cfg["model_type"]](cfg, read_safetensors(model_dir + "/model.safetensors"))
    torch.set_grad_enabled(False)
    cache = {}

    def cacher(name):
        def hook(module, inputs, output):
            cache[name] = output.detach()
        return hook

    hook_names = list(model.hooks.keys())
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        try:
            if cmd[0] == "quit":
                break
            if cmd[0] == "info":
                blas = "openblas" if "openblas" in open("/proc/self/maps").read() else "other"  # Debian links BLAS via alternatives
                print(f"ok torch={torch.__version__} threads={torch.get_num_threads()} blas={blas}", flush=True)
            elif cmd[0] in ("plain", "cached", "logits"):
                tokens = tokens_for(int(cmd[1]), int(cmd[2]), cfg["vocab_size"])
                handles = [model.hooks[n].register_forward_hook(cacher(n)) for n in hook_names] if cmd[0] == "cached" else []
                t = time.perf_counter()
                logits = model(tokens)
                cache.clear()
                elapsed = time.perf_counter() - t
                for hd in handles:
                    hd.remove()
                if cmd[0] == "logits":
                    print("ok " + " ".join(f"{v:.6g}" for v in logits[0, -1, :8].tolist()), flush=True)
                else:
                    print(f"ok {elapsed:.6f}", flush=True)
                del logits
            elif cmd[0] == "matmul":
                n = int(cmd[1])
                a, b = torch.randn(n, n), torch.randn(n, n)
                t = time.perf_counter()
                c = a @ b
                elapsed = time.perf_counter() - t
                del c
                print(f"ok {elapsed:.6f}", flush=True)
            else:
                print("error unknown command " + cmd[0], flush=True)
        except Exception as ex:  # report, keep serving
            print("error " + repr(ex).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()

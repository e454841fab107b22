#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers, for quantbench's equivalence tests.

Builds small random GPT-2 models, saves them in both layouts found in the wild, and
records transformers' greedy tokens and last-prompt-position logits for a few prompts:

  tests/fixtures/gpt2-hub-layout/        hub layout: keys without prefix, h.N.attn.bias
                                          mask buffers, no lm_head.weight
  tests/fixtures/gpt2-pretrained-layout/  save_pretrained layout: prefix "transformer.",
                                          plus an explicit lm_head.weight
  tests/fixtures/reference.json           prompts and greedy tokens for both, and for
                                          quantbench's synthetic:tiny (exported by the
                                          binary, not committed: the test regenerates it)
  tests/fixtures/reference-logits.safetensors  the last prompt position's logits

Needs: pip install torch transformers safetensors; a built quantbench (cargo build
--release). The GPT-2 tokenizer comes from `quantbench export` (tiktoken-rs' r50k_base
rebuilt as vocab.json + merges.txt), since the hub is not reachable here.

    python3 scripts/make_reference.py
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
BIN = os.path.join(ROOT, "target", "release", "quantbench")
PROMPTS = ["Once upon a time", "The meaning of life is",
           "In the beginning there was a small house, and"]
NEW_TOKENS = 20


def random_model(seed, **cfg):
    torch.manual_seed(seed)
    config = GPT2Config(**cfg)
    model = GPT2LMHeadModel(config)
    # Wider weights than GPT-2's 0.02 so logits are spread out and greedy choices are
    # clear, and random biases and LayerNorm parameters so every term is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    model.eval()
    return model


def greedy(model, ids, n):
    """Greedy decoding by full forward passes: the plainest possible reference."""
    seq = list(ids)
    margins = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):], min(margins)


def record(model, tok, vocab_size):
    out = []
    for text in PROMPTS:
        ids = tok(text)["input_ids"]
        assert max(ids) < vocab_size, f"{text!r} has ids beyond {vocab_size}"
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        new_ids, margin = greedy(model, ids, NEW_TOKENS)
        out.append({
            "prompt": text,
            "prompt_ids": ids,
            "greedy_new_ids": new_ids,
            "min_top2_margin": margin,
            "last_logits": logits.clone(),
        })
    return out


def save_hub_layout(model, path):
    """The hub's gpt2 files: no prefix, causal-mask buffers, LM head left to the tie."""
    os.makedirs(path, exist_ok=True)
    sd = {k[len("transformer."):]: v.contiguous() for k, v in model.state_dict().items()
          if k.startswith("transformer.")}
    n = model.config.n_positions
    mask = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n).float()
    for i in range(model.config.n_layer):
        sd[f"h.{i}.attn.bias"] = mask.clone()
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(os.path.join(path, "config.json"))


def save_pretrained_layout(model, path):
    """transformers' save_pretrained, then lm_head.weight written out explicitly."""
    model.save_pretrained(path, safe_serialization=True)
    f = os.path.join(path, "model.safetensors")
    sd = load_file(f)
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["transformer.wte.weight"].clone()
    save_file({k: v.contiguous() for k, v in sd.items()}, f, metadata={"format": "pt"})
    for extra in ["generation_config.json"]:
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: run `cargo build --release` first")
    torch.set_num_threads(2)
    tmp = tempfile.mkdtemp(prefix="qb-ref-")
    tiny_dir = os.path.join(tmp, "synthetic-tiny")
    subprocess.run([BIN, "export", "--model", "synthetic:tiny", "--out", tiny_dir], check=True)
    tok = AutoTokenizer.from_pretrained(tiny_dir)

    reference = {
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "new_tokens": NEW_TOKENS,
        "models": {},
    }

    hub = random_model(1, vocab_size=8192, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                       activation_function="gelu_new", attn_implementation="eager")
    hub_dir = os.path.join(FIXTURES, "gpt2-hub-layout")
    save_hub_layout(hub, hub_dir)
    reference["models"]["gpt2-hub-layout"] = record(hub, tok, 8192)

    pre = random_model(2, vocab_size=8192, n_positions=96, n_embd=32, n_layer=3, n_head=2,
                       n_inner=80, layer_norm_epsilon=1e-6, activation_function="gelu_new",
                       attn_implementation="eager")
    pre_dir = os.path.join(FIXTURES, "gpt2-pretrained-layout")
    save_pretrained_layout(pre, pre_dir)
    reference["models"]["gpt2-pretrained-layout"] = record(pre, tok, 8192)

    tiny = GPT2LMHeadModel.from_pretrained(tiny_dir, attn_implementation="eager").float().eval()
    reference["models"]["synthetic:tiny"] = record(tiny, tok, tiny.config.vocab_size)

    # Check that the saved layouts load back into transformers with the same logits.
    for name, d in [("gpt2-hub-layout", hub_dir), ("gpt2-pretrained-layout", pre_dir)]:
        back = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
        ids = reference["models"][name][0]["prompt_ids"]
        with torch.no_grad():
            l = back(torch.tensor([ids])).logits[0, -1]
        want = reference["models"][name][0]["last_logits"]
        assert torch.allclose(l, want, atol=1e-5), f"{name} does not reload identically"

    # Logits go to a safetensors file ("MODEL/PROMPT_INDEX" -> f32 [vocab]), tokens to JSON.
    logits = {}
    for name, recs in reference["models"].items():
        for i, r in enumerate(recs):
            logits[f"{name}/{i}"] = r.pop("last_logits").contiguous()
    save_file(logits, os.path.join(FIXTURES, "reference-logits.safetensors"))
    with open(os.path.join(FIXTURES, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    for name, recs in reference["models"].items():
        print(name, "min top-2 margin", min(r["min_top2_margin"] for r in recs),
              "tokens", recs[0]["greedy_new_ids"][:8])


if __name__ == "__main__":
    main()

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

The Llama family (`--only llama`): five tiny random models made by transformers and
saved with save_pretrained under tests/fixtures/llama-family/, each with its own small
byte-level BPE tokenizer.json trained here with the tokenizers library on the project's
evaluation essay (assets/eval/default.txt), so no GPT-2 vocabulary is involved:

  llama-gqa-llama3   LlamaForCausalLM: 4 query heads over 2 key/value heads, llama3 rope
                     scaling whose three frequency bands are all populated, untied head;
                     transformers 5's config form (rope_parameters)
  llama-bf16-linear  LlamaForCausalLM stored in bf16 with the older config form (top-level
                     rope_theta + rope_scaling {"type": "linear"}), attention and MLP
                     biases, tied head; its reference is the bf16 values widened to f32
  qwen2-bias-tied    Qwen2ForCausalLM: q/k/v biases, one key/value head, tied head
  mistral-window     MistralForCausalLM: a sliding window of 8 positions, which the
                     prompts plus 20 new tokens run past
  qwen3-qknorm       Qwen3ForCausalLM: per-head q/k RMSNorm, head_dim 24 (not width /
                     heads), untied head

  and quantbench's own synthetic:tiny-llama, exported by the binary (not committed: the
  test regenerates it from its seed)

  tests/fixtures/reference-llama.json, tests/fixtures/reference-llama-logits.safetensors

Needs: pip install torch transformers safetensors tokenizers; for GPT-2 a built
quantbench (cargo build --release). The GPT-2 tokenizer comes from `quantbench export`
(tiktoken-rs' r50k_base rebuilt as vocab.json + merges.txt), since the hub is not
reachable here.

    python3 scripts/make_reference.py                # both families
    python3 scripts/make_reference.py --only llama   # the Llama family alone
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


def train_tokenizer(path, vocab_size):
    """A byte-level BPE trained on the project's own essay: every byte is a token, so any
    text encodes, and merges make ordinary words a few tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    with open(os.path.join(ROOT, "assets", "eval", "default.txt"), encoding="utf-8") as f:
        text = f.read()
    tok.train_from_iterator([text], trainer=trainer)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    tok.save(path)
    return tok


def llama_family_models():
    """(name, class, config kwargs, stored dtype, older config form?)."""
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig,
                              MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                              Qwen3Config, Qwen3ForCausalLM)
    common = dict(vocab_size=LLAMA_VOCAB, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                  rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=0)
    return [
        ("llama-gqa-llama3", LlamaForCausalLM, LlamaConfig(
            **common, num_key_value_heads=2, tie_word_embeddings=False,
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 32}), torch.float32, False),
        ("llama-bf16-linear", LlamaForCausalLM, LlamaConfig(
            **common, num_key_value_heads=4, tie_word_embeddings=True, attention_bias=True,
            mlp_bias=True, rope_parameters={"rope_type": "linear", "rope_theta": 5000.0,
                                            "factor": 2.0}), torch.bfloat16, True),
        ("qwen2-bias-tied", Qwen2ForCausalLM, Qwen2Config(
            **common, num_key_value_heads=1, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         torch.float32, False),
        ("mistral-window", MistralForCausalLM, MistralConfig(
            **common, num_key_value_heads=2, tie_word_embeddings=False, sliding_window=8,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
         torch.float32, False),
        ("qwen3-qknorm", Qwen3ForCausalLM, Qwen3Config(
            **common, num_key_value_heads=2, head_dim=24, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         torch.float32, False),
    ]


LLAMA_VOCAB = 512
MIN_MARGIN = 2e-3


def to_older_config_form(path):
    """Rewrite a saved config.json in the form hub checkpoints ship: top-level rope_theta
    and rope_scaling (with the legacy "type" key), torch_dtype."""
    f = os.path.join(path, "config.json")
    with open(f) as fh:
        cfg = json.load(fh)
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    kind = rope.pop("rope_type")
    cfg["rope_scaling"] = None if kind == "default" else {"type": kind, **rope}
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(f, "w") as fh:
        json.dump(cfg, fh, indent=2)


def make_llama_family():
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    out_dir = os.path.join(FIXTURES, "llama-family")
    os.makedirs(out_dir, exist_ok=True)
    reference = {
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "new_tokens": NEW_TOKENS,
        "models": {},
    }
    logits = {}
    for index, (name, cls, config, dtype, older) in enumerate(llama_family_models()):
        path = os.path.join(out_dir, name)
        os.makedirs(path, exist_ok=True)
        tok_file = os.path.join(path, "tokenizer.json")
        train_tokenizer(tok_file, LLAMA_VOCAB)
        tok = PreTrainedTokenizerFast(tokenizer_file=tok_file)
        config._attn_implementation = "eager"
        # Seeds are tried until every greedy choice is clear (top-2 margin >= MIN_MARGIN),
        # so that a difference of float rounding cannot flip a token in the test.
        for seed in range(100 * index, 100 * index + 50):
            torch.manual_seed(seed)
            model = cls(config)
            # Wider weights than the 0.02 init so logits spread and greedy choices are
            # clear, and random norm weights and biases so every term is exercised.
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    if "norm" in pname:
                        p.copy_(1.0 + 0.1 * torch.randn_like(p))
                    elif pname.endswith("bias"):
                        p.copy_(0.05 * torch.randn_like(p))
                    elif "embed_tokens" in pname or "lm_head" in pname:
                        p.copy_(0.3 * torch.randn_like(p))
                    else:
                        p.copy_(0.1 * torch.randn_like(p))
            model = model.to(dtype)
            model.save_pretrained(path, safe_serialization=True)
            for extra in ["generation_config.json"]:
                if os.path.exists(os.path.join(path, extra)):
                    os.remove(os.path.join(path, extra))
            if older:
                to_older_config_form(path)
            # The reference is what transformers computes from the saved files, in f32.
            back = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                        attn_implementation="eager").eval()
            recs = record(back, lambda text: {"input_ids": tok.encode(text)}, LLAMA_VOCAB)
            margin = min(r["min_top2_margin"] for r in recs)
            if margin >= MIN_MARGIN:
                break
        else:
            sys.exit(f"{name}: no seed gave top-2 margins >= {MIN_MARGIN}")
        for i, r in enumerate(recs):
            logits[f"{name}/{i}"] = r.pop("last_logits").contiguous()
        reference["models"][name] = recs
        print(name, "seed", seed, "min top-2 margin", margin,
              "tokens", recs[0]["greedy_new_ids"][:8], "prompt ids", recs[0]["prompt_ids"])
    # quantbench's own synthetic:tiny-llama (GPT-2's tokenizer files; llama3 rope), exported
    # by the binary and run through transformers: the synthetic presets' code path.
    if os.path.exists(BIN):
        tiny_dir = os.path.join(tempfile.mkdtemp(prefix="qb-ref-"), "tiny-llama")
        subprocess.run([BIN, "export", "--model", "synthetic:tiny-llama", "--out", tiny_dir],
                       check=True)
        tok = AutoTokenizer.from_pretrained(tiny_dir)
        tiny = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
        recs = record(tiny, tok, tiny.config.vocab_size)
        for i, r in enumerate(recs):
            logits[f"synthetic:tiny-llama/{i}"] = r.pop("last_logits").contiguous()
        reference["models"]["synthetic:tiny-llama"] = recs
        print("synthetic:tiny-llama min top-2 margin",
              min(r["min_top2_margin"] for r in recs), "tokens", recs[0]["greedy_new_ids"][:8])
    else:
        print(f"{BIN} not found: synthetic:tiny-llama skipped (cargo build --release first)")
    save_file(logits, os.path.join(FIXTURES, "reference-llama-logits.safetensors"))
    with open(os.path.join(FIXTURES, "reference-llama.json"), "w") as f:
        json.dump(reference, f, indent=1)


def main():
    torch.set_num_threads(2)
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if only not in (None, "gpt2", "llama"):
        sys.exit("--only takes gpt2 or llama")
    if only in (None, "llama"):
        make_llama_family()
    if only in (None, "gpt2"):
        make_gpt2()


def make_gpt2():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: run `cargo build --release` first")
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

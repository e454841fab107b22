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

GGUF (`--only gguf`): the same tiny models converted by llama.cpp's own converter
(convert_hf_to_gguf.py, with the gguf package from llama.cpp's tree) and quantized by
llama-quantize, under tests/fixtures/gguf/ (needs the llama.cpp tree and build that
scripts/peers/cpu-speed.sh makes, or LLAMA_CPP pointing at one):

  gpt2-f32.gguf, gpt2-q8_0.gguf    gpt2-pretrained-layout, with GPT-2's tokenizer cut to
                                   the model's 8,192 ids (the first 8,192 tokens and the
                                   merges that make them: the prompts tokenize the same)
  llama-gqa-llama3-f32.gguf, -q8_0.gguf, llama-bf16-linear-f32.gguf,
  qwen2-bias-tied-f32.gguf, qwen3-qknorm-f32.gguf
                                   the Llama-family fixtures (mistral-window is left out:
                                   GGUF's llama architecture has no sliding window)
  llama-wide-q4_k_m.gguf           a wider random Llama (rows of 256, so the k-quants
                                   apply) quantized to Q4_K_M: a real q4_k / q6_k mix
  spm-tiny-f32.gguf                a tiny Llama whose tokenizer is a SentencePiece BPE
                                   (tokenizer.ggml.model = llama), with sentencepiece's
                                   own ids for a few texts
  reference-gguf.json              per file: its source fixture, and what gguf-py (llama.cpp's
                                   reader) counts per tensor type; llama-quantize's summary

The converter identifies a BPE pre-tokenizer by hashing its output on a test text; the
fixtures' tokenizers are byte-level BPEs with GPT-2's split, which it does not know by
hash, so the script tells it "gpt-2" (what they are).

    python3 scripts/make_reference.py                # GPT-2 and Llama families
    python3 scripts/make_reference.py --only llama   # the Llama family alone
    python3 scripts/make_reference.py --only gguf    # the GGUF fixtures (after the others)
    python3 scripts/make_reference.py --only families  # Gemma 3 (and later families),
                                                       # with their GGUFs (needs LLAMA_CPP)

The later families (`--only families`), under tests/fixtures/families/, recorded in
reference-families.json / reference-families-logits.safetensors:

  gemma3-window   Gemma3ForCausalLM: 6 layers, llama.cpp's pattern (5 sliding of window 6,
                  then 1 global), two rotations (1e6 global, 1e4 local), q/k norms,
                  final logit soft-cap 30, tied head; also model.gguf (F32) and
                  model-q8_0.gguf made by llama.cpp's converter and llama-quantize
  gemma3-custom   Gemma3ForCausalLM stored in bf16: an irregular layer_types, a window of
                  5, query_pre_attn_scalar 24 apart from head_dim 32, linear scaling of
                  the global rotation, an untied head (no GGUF: it cannot state these)
  qwen3moe-experts  Qwen3MoeForCausalLM: 4 experts, 2 a token, renormalised (what llama.cpp's
                  qwen3moe graph does), per-head q/k norms; with its GGUFs
  mixtral-experts MixtralForCausalLM: 4 experts, 2 a token; with its GGUFs (llama.cpp
                  writes Mixtral as `llama` with stacked experts)
  olmoe-experts   OlmoeForCausalLM: q/k norms over the whole projection, top-k weights not
                  renormalised; with its GGUFs
  qwen3moe-mixed  Qwen3MoeForCausalLM: 8 experts, 3 a token, not renormalised, layer 1 dense
                  (mlp_only_layers) (no GGUF)
  phi3-longrope-short, phi3-longrope-long
                  Phi3ForCausalLM: fused qkv and gate_up projections, partial rotary (0.5),
                  LongRoPE whose original context is 64 (short factors throughout) or 4
                  (long factors throughout), a sliding window of 10; with their GGUFs
  gpt-oss-experts GptOssForCausalLM: attention sinks, biases on q/k/v/o, router and experts,
                  sliding (window 6) and full layers in turn, 4 experts routed
                  top-k-then-softmax, clamped SwiGLU, YaRN whose correction range is the
                  same truncated or not; with its GGUFs (and model-mxfp4.gguf and
                  model-iq4_nl.gguf, llama-quantize's MXFP4_MOE and IQ4_NL)
  gpt-oss-custom  GptOssForCausalLM in bf16: swiglu_limit 0.4 (the clamp bites), YaRN
                  untruncated at gpt-oss-20b's numbers, an irregular layer_types (no GGUF)

    python3 scripts/make_reference.py --only quantizers
                  ggml's own quantizers (ggml_quantize_chunk from the libggml-base the
                  peers script builds, via scripts/peers/ggml_quantize.c) on rows drawn for
                  every branch, with and without an importance matrix, every ggml type
                  quantbench makes: tests/fixtures/quantizers/reference.safetensors

    python3 scripts/make_reference.py --only families --family gpt-oss-experts
                  regenerates that one model, merged into the records already there
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
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


def seed_search(name, cls, config, dtype, path, tok, seeds, norm, embed_std,
                older=False, min_distinct=0):
    """Draw `cls(config)` from each seed in turn (wider weights than the 0.02 init so
    logits spread and greedy choices are clear; random norms (`norm`) and biases so every
    term is exercised), save it to `path` in `dtype`, and keep the first whose every
    greedy choice is clear (top-2 margin >= MIN_MARGIN, so that float rounding cannot flip
    a token in the test) and whose continuations hold `min_distinct` distinct tokens.
    (seed, records, margin, the model transformers loads back in f32)."""
    from transformers import AutoModelForCausalLM
    config._attn_implementation = "eager"
    for seed in seeds:
        torch.manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    p.copy_(norm(p))
                elif pname.endswith("bias"):
                    p.copy_(0.05 * torch.randn_like(p))
                elif "embed_tokens" in pname:
                    p.copy_(embed_std * torch.randn_like(p))
                elif "lm_head" in pname:
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
        varied = min(len(set(r["greedy_new_ids"])) for r in recs) >= min_distinct
        if margin >= MIN_MARGIN and varied:
            return seed, recs, margin, back
    sys.exit(f"{name}: no seed gave top-2 margins >= {MIN_MARGIN}")


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
        seed, recs, margin, _ = seed_search(
            name, cls, config, dtype, path, tok, range(100 * index, 100 * index + 50),
            norm=lambda p: 1.0 + 0.1 * torch.randn_like(p), embed_std=0.3, older=older)
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


def family_models():
    """The architectures added after the Llama family: (name, class, config, dtype,
    convert to GGUF?). Each turns on every switch its architecture has."""
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GptOssConfig,
                              GptOssForCausalLM, MixtralConfig,
                              MixtralForCausalLM, OlmoeConfig, OlmoeForCausalLM,
                              Phi3Config, Phi3ForCausalLM, Qwen3MoeConfig,
                              Qwen3MoeForCausalLM)

    def longrope(original):
        return {"rope_type": "longrope", "rope_theta": 10000.0,
                "short_factor": [1.0, 1.3, 2.1, 3.7], "long_factor": [1.2, 2.5, 5.0, 11.0],
                "original_max_position_embeddings": original, "partial_rotary_factor": 0.5}
    common = dict(vocab_size=LLAMA_VOCAB, hidden_size=64, intermediate_size=128,
                  max_position_embeddings=128, rms_norm_eps=1e-6, bos_token_id=0,
                  eos_token_id=0, pad_token_id=0)
    return [
        # llama.cpp's pattern (every 6th layer global), its scale (query_pre_attn_scalar
        # = head_dim) and window: what a GGUF states, so llama.cpp runs it as transformers.
        ("gemma3-window", Gemma3ForCausalLM, Gemma3TextConfig(
            **common, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
            final_logit_softcapping=30.0, tie_word_embeddings=True,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
         torch.float32, True),
        # What GGUF cannot state: an irregular layer pattern, query_pre_attn_scalar apart
        # from head_dim, linear scaling of the global rotation, an untied head, bf16.
        ("gemma3-custom", Gemma3ForCausalLM, Gemma3TextConfig(
            **common, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
            head_dim=32, query_pre_attn_scalar=24, sliding_window=5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            final_logit_softcapping=None, tie_word_embeddings=False,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                                "rope_theta": 100000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
         torch.bfloat16, False),
        # Mixtures of experts: 4 experts, 2 a token, two layers.
        ("qwen3moe-experts", Qwen3MoeForCausalLM, Qwen3MoeConfig(
            **common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            norm_topk_prob=True, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         torch.float32, True),
        ("mixtral-experts", MixtralForCausalLM, MixtralConfig(
            **common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         torch.float32, True),
        # OLMoE: q/k norms over the whole projection, top-k weights not renormalised.
        # (Every head its own key/value head, as OLMoE-1B-7B: llama.cpp's olmoe graph
        # sizes the k norm by the width.)
        # rms_norm_eps 1e-5: llama.cpp's converter writes 1e-5 for every OLMoE.
        ("olmoe-experts", OlmoeForCausalLM, OlmoeConfig(
            **{**common, "rms_norm_eps": 1e-5}, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
         torch.float32, True),
        # A dense layer among the sparse ones (mlp_only_layers) and top-k weights not
        # renormalised: what only a config.json states (no GGUF).
        ("qwen3moe-mixed", Qwen3MoeForCausalLM, Qwen3MoeConfig(
            **common, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
            head_dim=32, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=32,
            norm_topk_prob=False, mlp_only_layers=[1], tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
         torch.float32, False),
        # Phi-3: fused qkv_proj and gate_up_proj, half of each head rotated, LongRoPE, a
        # sliding window of 10. Within original_max_position_embeddings (64) the short
        # factors rotate; past it (4: every prompt) the long ones.
        ("phi3-longrope-short", Phi3ForCausalLM, Phi3Config(
            **common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            sliding_window=10, partial_rotary_factor=0.5, original_max_position_embeddings=64,
            rope_parameters=longrope(64), tie_word_embeddings=False), torch.float32, True),
        ("phi3-longrope-long", Phi3ForCausalLM, Phi3Config(
            **common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            sliding_window=10, partial_rotary_factor=0.5, original_max_position_embeddings=4,
            rope_parameters=longrope(4), tie_word_embeddings=False), torch.float32, True),
        # gpt-oss: attention sinks, biases on q/k/v/o, router and experts, sliding and full
        # layers in turn (window 6), experts routed top-k-then-softmax with the clamped
        # SwiGLU, YaRN. The YaRN numbers are chosen so that its correction range is the
        # same floored and ceiled or not (0 and 15 after the clamps): transformers runs
        # gpt-oss untruncated, llama.cpp always truncates (and takes beta_fast 32,
        # beta_slow 1 whatever the file says), and this fixture is for both.
        ("gpt-oss-experts", GptOssForCausalLM, GptOssConfig(
            **{**common, "rms_norm_eps": 1e-5, "intermediate_size": 32,
               "max_position_embeddings": 800},
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            num_local_experts=4, num_experts_per_tok=2, sliding_window=6,
            swiglu_limit=7.0, attention_bias=True, tie_word_embeddings=False,
            rope_parameters={"rope_type": "yarn", "rope_theta": 6.0, "factor": 4.0,
                             "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                             "original_max_position_embeddings": 200}),
         torch.float32, True),
        # What GGUF cannot state: a limit low enough to clamp, YaRN untruncated at
        # gpt-oss-20b's numbers (where llama.cpp's truncation differs), an irregular
        # layer_types, bf16.
        ("gpt-oss-custom", GptOssForCausalLM, GptOssConfig(
            **{**common, "rms_norm_eps": 1e-5, "intermediate_size": 32},
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            num_local_experts=8, num_experts_per_tok=3, sliding_window=5,
            layer_types=["full_attention", "sliding_attention", "sliding_attention"],
            swiglu_limit=0.4, attention_bias=True, tie_word_embeddings=False,
            rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                             "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                             "original_max_position_embeddings": 64}),
         torch.bfloat16, False),
    ]


def make_families():
    """Fixtures of the architectures after the Llama family, under tests/fixtures/families/:
    the same seed search and records as make_llama_family, into reference-families.json and
    reference-families-logits.safetensors; those marked for it also converted by llama.cpp's
    converter to F32 and Q8_0 GGUF files beside them (model.gguf, model-q8_0.gguf)."""
    from transformers import PreTrainedTokenizerFast
    out_dir = os.path.join(FIXTURES, "families")
    os.makedirs(out_dir, exist_ok=True)
    reference = {
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "new_tokens": NEW_TOKENS,
        "models": {},
    }
    logits = {}
    # --family NAME: that model alone, merged into the records already there.
    chosen = sys.argv[sys.argv.index("--family") + 1] if "--family" in sys.argv else None
    if chosen:
        with open(os.path.join(FIXTURES, "reference-families.json")) as f:
            reference = json.load(f)
        reference["transformers_version"] = __import__("transformers").__version__
        reference["torch_version"] = torch.__version__
        logits = dict(load_file(os.path.join(FIXTURES, "reference-families-logits.safetensors")))
    for index, (name, cls, config, dtype, to_gguf) in enumerate(family_models()):
        if chosen and name != chosen:
            continue
        path = os.path.join(out_dir, name)
        os.makedirs(path, exist_ok=True)
        tok_file = os.path.join(path, "tokenizer.json")
        train_tokenizer(tok_file, LLAMA_VOCAB)
        tok = PreTrainedTokenizerFast(tokenizer_file=tok_file)
        # Gemma multiplies embeddings by sqrt(hidden): drawn narrower, so that the
        # residual stream is not the last token's embedding alone. A continuation that
        # repeats one token proves little about positions: at least 6 distinct ones.
        embed_std = 0.3 / (config.hidden_size ** 0.5 if "Gemma" in cls.__name__ else 1.0)
        seed, recs, margin, back = seed_search(
            name, cls, config, dtype, path, tok,
            range(1000 + 100 * index, 1000 + 100 * index + 100),
            norm=lambda p: 0.1 * torch.randn_like(p), embed_std=embed_std, min_distinct=6)
        for i, r in enumerate(recs):
            logits[f"{name}/{i}"] = r.pop("last_logits").contiguous()
        reference["models"][name] = recs
        # What transformers counts of the model loaded in f32 (parameters and buffers).
        reference.setdefault("footprints_f32", {})[name] = back.get_memory_footprint()
        print(name, "seed", seed, "min top-2 margin", margin,
              "tokens", recs[0]["greedy_new_ids"][:8], "prompt ids", recs[0]["prompt_ids"])
        if to_gguf:
            # The converter opens the tokenizer with AutoTokenizer, which would take the
            # model type's own class (Gemma's adds its special tokens): name the plain one.
            # (Phi-3's converter takes a vocabulary of GPT-2's kind only when the class
            # says GPT2Tokenizer; the tokenizer is one.)
            klass = "GPT2Tokenizer" if "Phi3" in cls.__name__ else "PreTrainedTokenizerFast"
            with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
                json.dump({"tokenizer_class": klass}, f)
            f32 = os.path.join(path, "model.gguf")
            convert(path, f32)
            quantize(f32, os.path.join(path, "model-q8_0.gguf"), "Q8_0")
            if "GptOss" in cls.__name__:
                quantize(f32, os.path.join(path, "model-mxfp4.gguf"), "MXFP4_MOE")
                quantize(f32, os.path.join(path, "model-iq4_nl.gguf"), "IQ4_NL")
    save_file(logits, os.path.join(FIXTURES, "reference-families-logits.safetensors"))
    with open(os.path.join(FIXTURES, "reference-families.json"), "w") as f:
        json.dump(reference, f, indent=1)


def main():
    torch.set_num_threads(2)
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if only not in (None, "gpt2", "llama", "gguf", "families", "quantizers", "mixes", "plans"):
        sys.exit("--only takes gpt2, llama, gguf, families, quantizers, mixes or plans")
    if only == "plans":
        make_plans()
        return
    if only == "gguf":
        make_gguf()
        return
    if only == "quantizers":
        make_quantizers()
        return
    if only == "mixes":
        make_mixes()
        return
    if only in (None, "families"):
        make_families()
        if only:
            return
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


LLAMA_CPP = os.environ.get("LLAMA_CPP", os.path.expanduser("~/.cache/quantbench-peers/llama.cpp"))
GGUF_DIR = os.path.join(FIXTURES, "gguf")
TOKENIZER_TEXTS = ["Once upon a time", "The meaning of life is",
                   "Hello, world! It's 2026 and the caf\u00e9 costs \u20ac3.50.\n\n  indented\tcode();",
                   "    many   spaces   ", "unbelievable tokenization 12345"]


# ggml's types quantbench quantizes, by ggml.h's ids.
QUANTIZER_TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10,
                   "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14, "iq4_nl": 20,
                   "mxfp4": 39, "iq4_xs": 23, "iq3_xxs": 18, "iq3_s": 21, "iq2_xxs": 16,
                   "iq2_xs": 17, "iq2_s": 22, "iq1_s": 19, "iq1_m": 29, "tq1_0": 34,
                   "tq2_0": 35, "nvfp4": 40, "q1_0": 41, "q2_0": 42}
# ggml_quantize_requires_imatrix: ggml asserts an importance matrix for these.
NEEDS_IMATRIX = {"iq2_xxs", "iq2_xs", "iq1_s", "iq1_m"}
# The types read by dequantization (format/ggml_blocks.rs): ggml's to_float of their blocks
# is kept too, for three of the inputs.
DEQUANT_TYPES = ["iq4_xs", "iq3_xxs", "iq3_s", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m",
                 "tq1_0", "tq2_0", "nvfp4", "q1_0", "q2_0"]
DEQUANT_INPUTS = ["normal", "outliers", "zeros"]


def quantizer_inputs():
    """Rows (8 of 512) drawn to reach each branch of the quantizers: weights-like normals,
    outliers, all-positive rows (a k-quant minimum of 0), all-zero and tiny blocks (below
    GROUP_MAX_EPS), uniform values, mostly-zero rows."""
    g = torch.Generator().manual_seed(1234)
    rows, cols = 8, 512
    n = lambda: torch.randn(rows, cols, generator=g)
    outliers = 0.02 * n()
    outliers[:, ::37] *= 60.0
    zeros = 0.02 * n()
    zeros[1] = 0.0
    zeros[2, :256] = 0.0
    zeros[3] = 1e-20 * torch.sign(n()[0])
    sparse = 0.02 * n() * (torch.rand(rows, cols, generator=g) < 0.05)
    return {
        "normal": 0.02 * n(),
        "outliers": outliers,
        "positive": 0.1 * n().abs() + 0.01,
        "zeros": zeros,
        "uniform": torch.rand(rows, cols, generator=g) * 2.0 - 1.0,
        "sparse": sparse,
    }


def make_quantizers():
    """ggml's own quantizers (ggml_quantize_chunk from the libggml-base llama-quantize links,
    through scripts/peers/ggml_quantize.c) on quantizer_inputs(), with and without an
    importance matrix: tests/fixtures/quantizers/reference.safetensors holds the inputs,
    the importance weights and each type's bytes."""
    tmp = tempfile.mkdtemp(prefix="qb-quantizers-")
    obj = os.path.join(tmp, "ggml_quantize.o")
    exe = os.path.join(tmp, "ggml_quantize")
    subprocess.run(["cc", "-O2", "-c", os.path.join(ROOT, "scripts", "peers", "ggml_quantize.c"),
                    "-I", os.path.join(LLAMA_CPP, "ggml", "include"), "-o", obj], check=True)
    subprocess.run(["c++", obj, os.path.join(LLAMA_CPP, "build", "ggml", "src", "libggml-base.a"),
                    "-fopenmp", "-lm", "-lpthread", "-o", exe], check=True)
    out = {}
    for dist, x in quantizer_inputs().items():
        x = x.to(torch.float32).contiguous()
        rows, cols = x.shape
        imatrix = (x.pow(2).mean(0) * 10.0 + torch.linspace(0.1, 2.0, cols)).to(torch.float32)
        out[f"input/{dist}"] = x
        out[f"imatrix/{dist}"] = imatrix.contiguous()
        xin, win = os.path.join(tmp, "x.f32"), os.path.join(tmp, "w.f32")
        x.numpy().tofile(xin)
        imatrix.numpy().tofile(win)
        for name, tid in QUANTIZER_TYPES.items():
            for suffix, extra in (("", ["-"]), ("+imatrix", [win])):
                if name in NEEDS_IMATRIX and not suffix:
                    continue
                dst, back = os.path.join(tmp, "q.bin"), os.path.join(tmp, "back.f32")
                keep_back = name in DEQUANT_TYPES and dist in DEQUANT_INPUTS and suffix == "+imatrix"
                subprocess.run([exe, str(tid), str(rows), str(cols), xin, dst] + extra
                               + ([back] if keep_back else []), check=True)
                with open(dst, "rb") as f:
                    out[f"{name}{suffix}/{dist}"] = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
                if keep_back:
                    out[f"dequant/{name}/{dist}"] = torch.from_numpy(
                        np.fromfile(back, dtype=np.float32).reshape(rows, cols).copy())
    path = os.path.join(FIXTURES, "quantizers")
    os.makedirs(path, exist_ok=True)
    save_file(out, os.path.join(path, "reference.safetensors"),
              metadata={"llama_cpp": os.path.basename(os.path.realpath(LLAMA_CPP)),
                        "types": json.dumps(QUANTIZER_TYPES)})
    print("quantizers:", len(out), "tensors")


# llama-quantize's mixes (quantbench's own engine makes every one) that it makes without an
# importance matrix ...
MIXES = ["Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "IQ4_XS", "IQ4_NL",
         "TQ1_0", "TQ2_0", "Q1_0", "Q2_0", "MXFP4_MOE", "IQ3_S", "IQ3_M", "Q2_K"]
# ... and with one (Q2_K_S, IQ3_XS, IQ3_XXS and the IQ2 / IQ1 mixes require one).
MIXES_IMATRIX = ["Q2_K", "Q2_K_S", "Q3_K_M", "Q4_K_M", "Q5_K_S", "IQ4_XS", "IQ4_NL", "IQ3_M", "IQ3_S",
                 "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S"]


def qb_mix_name(mix):
    """quantbench's name of a llama-quantize file type: lower case, but Q2_K is `q2_k_mix`
    (quantbench's `q2_k` is every matrix Q2_K)."""
    return {"Q2_K": "q2_k_mix"}.get(mix, mix.lower())


def make_mixes():
    """llama-quantize's mixes of quantbench's synthetic:tiny-llama (rows of 256 and 512, so
    the k-quants stay k-quants), its F32 GGUF written by quantbench itself (the synthetic
    weights are a function of the seed): per mix, each tensor's type and the sha256 of its
    bytes, into tests/fixtures/gguf/mixes-tiny-llama.json (the files themselves are tens of
    MB)."""
    import hashlib
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    from gguf import GGUFReader
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: cargo build --release first")
    tmp = tempfile.mkdtemp(prefix="qb-mixes-")
    f32 = os.path.join(tmp, "tiny-llama-f32.gguf")
    subprocess.run([BIN, "export", "--model", "synthetic:tiny-llama", "--format", "gguf",
                    "--precision", "f32", "--out", f32], check=True, capture_output=True)
    out = {"model": "synthetic:tiny-llama", "llama_cpp": os.path.basename(os.path.realpath(LLAMA_CPP)),
           "mixes": {}}
    for mix in MIXES:
        dst = os.path.join(tmp, f"{mix}.gguf")
        quantize(f32, dst, mix)
        r = GGUFReader(dst)
        out["mixes"][qb_mix_name(mix)] = {
            t.name: [t.tensor_type.name, hashlib.sha256(t.data.tobytes()).hexdigest()]
            for t in r.tensors}
    # With an importance matrix: llama-imatrix's over the project's essay (assets/eval),
    # kept as a fixture (a few KB) in both of its forms, and the mixes it changes.
    imatrix = os.path.join(FIXTURES, "gguf", "tiny-llama.imatrix.gguf")
    for form, dst in (("gguf", imatrix), ("dat", imatrix[:-len(".gguf")] + ".dat")):
        r = subprocess.run([os.path.join(LLAMA_CPP, "build", "bin", "llama-imatrix"), "-m", f32,
                            "-f", os.path.join(ROOT, "assets", "eval", "default.txt"), "-c", "128",
                            "--chunks", "8", "-t", "2", "--output-format", form, "-o", dst],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"llama-imatrix failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out["imatrix"] = "tiny-llama.imatrix.gguf"
    out["mixes+imatrix"] = {}
    for mix in MIXES_IMATRIX:
        dst = os.path.join(tmp, f"{mix}-imatrix.gguf")
        quantize(f32, dst, mix, imatrix)
        r = GGUFReader(dst)
        out["mixes+imatrix"][qb_mix_name(mix)] = {
            t.name: [t.tensor_type.name, hashlib.sha256(t.data.tobytes()).hexdigest()]
            for t in r.tensors}
    # quantbench's own importance matrix (`quantbench imatrix`, the same text and chunks),
    # kept as a fixture, and llama-quantize's mixes made with it: llama-quantize takes it.
    ours = os.path.join(FIXTURES, "gguf", "tiny-llama.quantbench.imatrix.gguf")
    subprocess.run([BIN, "imatrix", "--model", "synthetic:tiny-llama", "--ctx", "128", "--chunks", "8",
                    "--out", ours, "--force"], check=True, capture_output=True)
    out["mixes+quantbench-imatrix"] = {}
    for mix in ["Q4_K_M", "IQ4_XS"]:
        dst = os.path.join(tmp, f"{mix}-ours.gguf")
        quantize(f32, dst, mix, ours)
        r = GGUFReader(dst)
        out["mixes+quantbench-imatrix"][qb_mix_name(mix)] = {
            t.name: [t.tensor_type.name, hashlib.sha256(t.data.tobytes()).hexdigest()]
            for t in r.tensors}
    with open(os.path.join(FIXTURES, "gguf", "mixes-tiny-llama.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("mixes:", ", ".join(out["mixes"]), "; with the importance matrix:",
          ", ".join(out["mixes+imatrix"]))


def plan_models(tmp):
    """The F32 GGUF files whose llama-quantize plans are recorded: the repository's small
    F32 fixtures (fallbacks: their rows are 64 wide) and GGUF files written here with the
    shapes the rules key on and rows of 256 (no fallbacks): a 16-layer Llama with 4 query
    heads a key/value head, an 80-layer one (llama.cpp's LLM_TYPE_70B), a Mixtral of 8
    experts, a 12-layer Phi-3 with fused qkv. Their weights are zeros: llama-quantize's
    --dry-run reads only the shapes and the metadata."""
    import numpy as np
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    import gguf
    files = {}
    for rel in ["gguf/llama-gqa-llama3-f32.gguf", "gguf/qwen2-bias-tied-f32.gguf",
                "gguf/qwen3-qknorm-f32.gguf", "gguf/gpt2-f32.gguf",
                "families/gemma3-window/model.gguf", "families/gpt-oss-experts/model.gguf",
                "families/mixtral-experts/model.gguf", "families/olmoe-experts/model.gguf",
                "families/phi3-longrope-short/model.gguf", "families/qwen3moe-experts/model.gguf"]:
        files[rel] = os.path.join(FIXTURES, rel)

    def write(name, arch, n_layer, n_head, n_head_kv, n_expert=0, vocab=512, d=256, ff=512,
              fused_qkv=False):
        path = os.path.join(tmp, f"{name}.gguf")
        w = gguf.GGUFWriter(path, arch)
        w.add_block_count(n_layer)
        w.add_context_length(256)
        w.add_embedding_length(d)
        w.add_feed_forward_length(ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_rope_dimension_count(d // n_head)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_file_type(0)
        if n_expert:
            w.add_expert_count(n_expert)
            w.add_expert_used_count(2)
        z = lambda *shape: np.zeros(shape, dtype=np.float32)
        kv = d // n_head * n_head_kv
        w.add_tensor("token_embd.weight", z(vocab, d))
        w.add_tensor("output_norm.weight", z(d))
        w.add_tensor("output.weight", z(vocab, d))
        for i in range(n_layer):
            b = f"blk.{i}."
            w.add_tensor(b + "attn_norm.weight", z(d))
            if fused_qkv:
                w.add_tensor(b + "attn_qkv.weight", z(d + 2 * kv, d))
            else:
                w.add_tensor(b + "attn_q.weight", z(d, d))
                w.add_tensor(b + "attn_k.weight", z(kv, d))
                w.add_tensor(b + "attn_v.weight", z(kv, d))
            w.add_tensor(b + "attn_output.weight", z(d, d))
            w.add_tensor(b + "ffn_norm.weight", z(d))
            if n_expert:
                w.add_tensor(b + "ffn_gate_inp.weight", z(n_expert, d))
                w.add_tensor(b + "ffn_gate_exps.weight", z(n_expert, ff, d))
                w.add_tensor(b + "ffn_up_exps.weight", z(n_expert, ff, d))
                w.add_tensor(b + "ffn_down_exps.weight", z(n_expert, d, ff))
            elif fused_qkv:
                w.add_tensor(b + "ffn_up.weight", z(2 * ff, d))
                w.add_tensor(b + "ffn_down.weight", z(d, ff))
            else:
                w.add_tensor(b + "ffn_gate.weight", z(ff, d))
                w.add_tensor(b + "ffn_up.weight", z(ff, d))
                w.add_tensor(b + "ffn_down.weight", z(d, ff))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        files[f"written:{name}"] = path

    write("llama-16-gqa4", "llama", 16, 8, 2)
    write("llama-80-gqa8", "llama", 80, 8, 1, d=256, ff=256)
    write("mixtral-8-experts", "llama", 8, 8, 2, n_expert=8)
    write("phi3-12-fused", "phi3", 12, 8, 8, fused_qkv=True)
    return files


def make_plans():
    """llama-quantize's type for every tensor (`--dry-run`, no weights read) of the models of
    plan_models() at every file type it makes from F32, without and with an importance matrix
    (any: it only switches has_imatrix): tests/fixtures/gguf/mix-plans.json, which
    tests/mix_plan.rs holds format/mix_plan.rs to."""
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    import gguf
    header = open(os.path.join(LLAMA_CPP, "include", "llama.h")).read()
    numbers = {m.group(1): int(m.group(2)) for m in
               re.finditer(r"^\s*LLAMA_FTYPE_(\w+)\s*=\s*(\d+)", header, re.M)}
    # llama-quantize's own option names (QUANT_OPTIONS), the quantized ones.
    options = open(os.path.join(LLAMA_CPP, "tools", "quantize", "quantize.cpp")).read()
    ftypes = {m.group(1): numbers[m.group(2)] for m in
              re.finditer(r'\{\s*"(\w+)",\s*LLAMA_FTYPE_(\w+),', options)
              if m.group(2) not in ("ALL_F32", "MOSTLY_F16", "MOSTLY_BF16")}
    exe = os.path.join(LLAMA_CPP, "build", "bin", "llama-quantize")
    imatrix = os.path.join(FIXTURES, "gguf", "tiny-llama.imatrix.gguf")
    line = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[([\d,\s]+)\], type =\s+(\w+),.*?(?:\((\w+)\))?$")
    tmp = tempfile.mkdtemp(prefix="qb-plans-")
    out = {"llama_cpp": os.path.basename(os.path.realpath(LLAMA_CPP)), "ftypes": ftypes, "models": {}}
    for name, path in plan_models(tmp).items():
        r = gguf.GGUFReader(path)
        arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        val = lambda k, d=None: (int(r.fields[f"{arch}.{k}"].parts[-1][0])
                                 if f"{arch}.{k}" in r.fields else d)
        model = {"arch": arch, "n_layer": val("block_count"), "n_expert": val("expert_count", 0),
                 "n_head": val("attention.head_count"),
                 "n_head_kv": val("attention.head_count_kv", val("attention.head_count")),
                 "tensors": None, "lists": [], "plans": {}}
        for kind, ft in sorted(ftypes.items(), key=lambda kv: kv[1]):
            for suffix, extra in (("", []), ("+imatrix", ["--imatrix", imatrix])):
                p = subprocess.run([exe, "--dry-run"] + extra + [path, kind], capture_output=True, text=True)
                rows = []
                for ln in (p.stdout + p.stderr).splitlines():
                    m = line.match(ln.strip())
                    if m:
                        ne = [int(v) for v in m.group(2).split(",")]
                        while len(ne) > 1 and ne[-1] == 1:
                            ne.pop()
                        rows.append((m.group(1), ne, (m.group(4) or m.group(3)).upper()))
                if "no tensor type fallback is defined" in p.stdout + p.stderr:
                    model["plans"][kind.lower() + suffix] = None  # refused
                    continue
                if not rows:
                    sys.exit(f"llama-quantize --dry-run {kind} {path}: no tensors\n{p.stderr[-2000:]}")
                tensors = [[n, ne] for n, ne, _ in rows]
                if model["tensors"] is None:
                    model["tensors"] = tensors
                assert model["tensors"] == tensors, (name, kind)
                types = ",".join(t for _, _, t in rows)
                if types not in model["lists"]:
                    model["lists"].append(types)
                model["plans"][kind.lower() + suffix] = model["lists"].index(types)
        out["models"][name] = model
        print(name, arch, len(model["tensors"]), "tensors,", len(model["lists"]), "distinct plans")
    with open(os.path.join(FIXTURES, "gguf", "mix-plans.json"), "w") as f:
        json.dump(out, f, indent=0)


def convert(model_dir, out, outtype="f32"):
    """llama.cpp's convert_hf_to_gguf.py, told that the byte-level BPE is GPT-2's split."""
    code = f"""
import sys
sys.path.insert(0, {LLAMA_CPP!r}); sys.path.insert(0, {os.path.join(LLAMA_CPP, "gguf-py")!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
import convert_hf_to_gguf as c
sys.argv = ["convert", {model_dir!r}, "--outfile", {out!r}, "--outtype", {outtype!r}]
c.main()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"converting {model_dir} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def quantize(src, out, kind, imatrix=None):
    exe = os.path.join(LLAMA_CPP, "build", "bin", "llama-quantize")
    extra = ["--imatrix", imatrix] if imatrix else []
    r = subprocess.run([exe] + extra + [src, out, kind], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llama-quantize {kind} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    summary = [line.strip() for line in (r.stdout + r.stderr).splitlines()
               if "model size" in line or "quant size" in line]
    return summary


def gguf_bytes_by_type(path):
    """What llama.cpp's own reader (gguf-py) counts: bytes and tensors per type."""
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    from gguf import GGUFReader
    r = GGUFReader(path)
    by = {}
    for t in r.tensors:
        k = t.tensor_type.name
        e = by.setdefault(k, {"bytes": 0, "tensors": 0})
        e["bytes"] += int(t.n_bytes)
        e["tensors"] += 1
    types = {t.name: t.tensor_type.name for t in r.tensors}
    return by, types


def make_gguf():
    import shutil
    from transformers import LlamaConfig, LlamaForCausalLM
    if not os.path.exists(os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py")):
        sys.exit(f"{LLAMA_CPP} has no convert_hf_to_gguf.py: run scripts/peers/cpu-speed.sh "
                 "once (it fetches and builds llama.cpp) or set LLAMA_CPP")
    os.makedirs(GGUF_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="qb-gguf-")
    files = {}

    def done(name, source, extra=None):
        path = os.path.join(GGUF_DIR, name)
        by, _ = gguf_bytes_by_type(path)
        files[name] = {"source": source, "bytes_by_type": by, **(extra or {})}
        print(name, os.path.getsize(path), "bytes", by)

    # GPT-2: the pretrained-layout fixture with GPT-2's tokenizer cut to its 8,192 ids.
    gpt2_dir = os.path.join(tmp, "gpt2")
    shutil.copytree(os.path.join(FIXTURES, "gpt2-pretrained-layout"), gpt2_dir)
    full = os.path.join(tmp, "gpt2-tokenizer")
    subprocess.run([BIN, "export", "--model", "synthetic:tiny", "--out", full], check=True,
                   capture_output=True)
    with open(os.path.join(full, "vocab.json")) as f:
        vocab = json.load(f)
    with open(os.path.join(full, "merges.txt")) as f:
        merges = f.read().splitlines()[1:]
    keep = 8192
    vocab = {t: i for t, i in vocab.items() if i < keep}
    with open(os.path.join(gpt2_dir, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(gpt2_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges[:keep - 256]) + "\n")
    with open(os.path.join(gpt2_dir, "tokenizer_config.json"), "w") as f:
        # <|endoftext|> (id 50256) is beyond the cut: no special tokens, or transformers
        # would add it as id 8192.
        json.dump({"tokenizer_class": "GPT2Tokenizer", "unk_token": None, "bos_token": None,
                   "eos_token": None, "add_prefix_space": False}, f)
    with open(os.path.join(gpt2_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["n_ctx"] = cfg["n_positions"]  # the converter reads GPT-2's context from n_ctx
    with open(os.path.join(gpt2_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    convert(gpt2_dir, os.path.join(GGUF_DIR, "gpt2-f32.gguf"))
    done("gpt2-f32.gguf", "gpt2-pretrained-layout")
    summary = quantize(os.path.join(GGUF_DIR, "gpt2-f32.gguf"),
                       os.path.join(GGUF_DIR, "gpt2-q8_0.gguf"), "Q8_0")
    done("gpt2-q8_0.gguf", "gpt2-pretrained-layout", {"llama_quantize": summary})

    # The Llama family, as saved by make_llama_family.
    for name in ["llama-gqa-llama3", "llama-bf16-linear", "qwen2-bias-tied", "qwen3-qknorm"]:
        out = os.path.join(GGUF_DIR, f"{name}-f32.gguf")
        convert(os.path.join(FIXTURES, "llama-family", name), out)
        done(f"{name}-f32.gguf", name)
    summary = quantize(os.path.join(GGUF_DIR, "llama-gqa-llama3-f32.gguf"),
                       os.path.join(GGUF_DIR, "llama-gqa-llama3-q8_0.gguf"), "Q8_0")
    done("llama-gqa-llama3-q8_0.gguf", "llama-gqa-llama3", {"llama_quantize": summary})

    # A wider Llama whose rows take k-quant blocks of 256, quantized to Q4_K_M.
    wide_dir = os.path.join(tmp, "llama-wide")
    os.makedirs(wide_dir)
    train_tokenizer(os.path.join(wide_dir, "tokenizer.json"), LLAMA_VOCAB)
    torch.manual_seed(7)
    wide = LlamaForCausalLM(LlamaConfig(
        vocab_size=LLAMA_VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False))
    with torch.no_grad():
        for pname, p in wide.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in pname else 0.1 * torch.randn_like(p))
    wide.save_pretrained(wide_dir, safe_serialization=True)
    wide_f32 = os.path.join(tmp, "llama-wide-f32.gguf")
    convert(wide_dir, wide_f32)
    summary = quantize(wide_f32, os.path.join(GGUF_DIR, "llama-wide-q4_k_m.gguf"), "Q4_K_M")
    _, types = gguf_bytes_by_type(os.path.join(GGUF_DIR, "llama-wide-q4_k_m.gguf"))
    done("llama-wide-q4_k_m.gguf", "a random LlamaForCausalLM, hidden 256 (made here)",
         {"llama_quantize": summary, "tensor_types": types})

    # A SentencePiece tokenizer (tokenizer.ggml.model = llama) on a tiny Llama.
    import sentencepiece as spm
    spm_dir = os.path.join(tmp, "spm-tiny")
    os.makedirs(spm_dir)
    with open(os.path.join(ROOT, "assets", "eval", "default.txt"), encoding="utf-8") as f:
        essay = f.read()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(essay.splitlines()), model_prefix=os.path.join(spm_dir, "tokenizer"),
        vocab_size=LLAMA_VOCAB, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
        # As Llama's tokenizer.model: no NFKC, whitespace kept (llama.cpp normalizes none).
        normalization_rule_name="identity", remove_extra_whitespaces=False)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(spm_dir, "tokenizer.model"))
    torch.manual_seed(8)
    micro = LlamaForCausalLM(LlamaConfig(
        vocab_size=LLAMA_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2))
    micro.save_pretrained(spm_dir, safe_serialization=True)
    convert(spm_dir, os.path.join(GGUF_DIR, "spm-tiny-f32.gguf"))
    done("spm-tiny-f32.gguf", "a random LlamaForCausalLM with a sentencepiece BPE tokenizer (made here)",
         {"sentencepiece_ids": {t: sp.encode(t) for t in TOKENIZER_TEXTS}})

    with open(os.path.join(GGUF_DIR, "reference-gguf.json"), "w") as f:
        json.dump({"llama_cpp": os.path.basename(LLAMA_CPP), "files": files}, f, indent=1)


if __name__ == "__main__":
    main()

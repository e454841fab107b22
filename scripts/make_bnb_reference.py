#!/usr/bin/env python3
"""Reference bytes and outputs from bitsandbytes and PyTorch for quantbench's formats.

Writes tests/fixtures/bnb/formats.safetensors: for a few weight matrices, exactly what
the reference libraries store and compute, on the CPU:

  w.NAME                     the f32 weight, [out, in] (what is quantized)
  x.NAME                     f32 activations [tokens, in], some above LLM.int8's 6.0
  {nf4,fp4}.NAME.packed      bitsandbytes.functional.quantize_4bit: packed codes (u8)
  {nf4,fp4}.NAME.absmax      ... one f32 absmax per block of 64
  {nf4,fp4}.NAME.dequant     dequantize_4bit(...) in f32
  {nf4,fp4}.NAME.y           bnb.nn.Linear4bit (compute dtype f32) on x, with a bias
  {nf4,fp4}_dq.NAME.packed / .qabsmax (u8) / .absmax2 (f32 per 256) / .offset (f32[1])
                             / .code2 (the 8-bit map as the state holds it) / .dequant / .y
  llm_int8.NAME.cb / .scb    Int8Params' row-wise int8 weights and f32 row absmax
  llm_int8.NAME.y            bnb.nn.Linear8bitLt (threshold 6.0) on x, f32 activations
  dyn.NAME.qweight / .scale  torch.ao quantize_dynamic, per-tensor qint8 weight and scale
  dyn.NAME.y                 the quantized dynamic Linear on x
  dynpc.NAME.qweight / .scales / .y   the same with per_channel_dynamic_qconfig
  bias.NAME                  the bias every .y used

Weights: "normal" (seeded N(0, 0.02) with a few large values), "smol" (a slice of the real
SmolLM2-135M-Instruct q_proj, dequantized from the Q4_1 GGUF, when the file is present;
else a heavy-tailed seeded stand-in, and the json says which), and "ties" (values placed
exactly on the codes' midpoints, zeros, negative zeros, an all-zero block, a block of
tiny values, and rows of 32 so bitsandbytes' blocks of 64 straddle rows).

Also tests/fixtures/bnb/gpt2-bnb/ (a tiny random GPT-2 saved by transformers, rows of 128)
and tests/fixtures/bnb/reference.json: transformers + bitsandbytes on the CPU at nf4, fp4,
nf4 with double quantization and LLM.int8 (dtype f32, 4-bit compute dtype f32): greedy
tokens for prompts of ids, last-position logits (in formats.safetensors as
model.PRECISION.PROMPT.logits), and get_memory_footprint() for each; the same for two of
the Llama-family fixtures (llama-gqa-llama3, qwen2-bias-tied: reference.json's "llama",
logits as llama.MODEL.PRECISION.PROMPT.logits).

Needs: pip install torch transformers bitsandbytes safetensors gguf (CPU is enough).
Run: python scripts/make_bnb_reference.py
"""
import json
import os
import sys
from pathlib import Path

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
import transformers
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "bnb"
SMOL = Path(os.environ.get("SMOLLM2_GGUF", Path.home() / ".cache/quantbench/models/SmolLM2-135M-Instruct.Q4_1.gguf"))

torch.manual_seed(1234)
out = {}
meta = {"bitsandbytes": bnb.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def weights():
    g = torch.Generator().manual_seed(7)
    normal = torch.randn(96, 256, generator=g) * 0.02
    normal[3, 17] = 0.31
    normal[40, 200] = -0.5
    ws = {"normal": normal}
    if SMOL.exists():
        from gguf import GGUFReader
        from gguf.quants import dequantize
        r = GGUFReader(str(SMOL))
        t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
        full = dequantize(t.data, t.tensor_type).reshape(576, 576)
        ws["smol"] = torch.tensor(full[:64, :], dtype=torch.float32)
        meta["smol"] = "SmolLM2-135M-Instruct blk.0.attn_q.weight rows 0..64, dequantized from Q4_1"
    else:
        t = torch.distributions.StudentT(3.0).sample((64, 576)) * 0.01
        ws["smol"] = t.float()
        meta["smol"] = "seeded Student-t stand-in (SmolLM2 GGUF not found)"
    nf4 = F.get_4bit_type("nf4", device="cpu")
    mids = ((nf4[:-1] + nf4[1:]) / 2).tolist()
    fp4 = sorted(set(abs(v) for v in F.get_4bit_type("fp4", device="cpu").tolist()))
    fmids = [(a + b) / 2 for a, b in zip(fp4[:-1], fp4[1:])]
    vals = []
    for m in mids + fmids:
        vals += [m, -m]
    ties = torch.zeros(24, 32)
    flat = ties.view(-1)
    # block 0 (elements 0..64): absmax 1 exactly, the midpoints themselves
    flat[0] = 1.0
    for i, v in enumerate(vals[:63]):
        flat[1 + i] = v
    # block 1: zeros and negative zeros only
    flat[64:128] = -0.0
    flat[64:96:2] = 0.0
    # block 2: tiny values
    flat[128:192] = torch.linspace(-1e-30, 1e-30, 64)
    # block 3: the rest of the midpoints, scaled by 0.37
    rest = vals[63:] + [0.99, -0.99, 0.001, -0.001]
    flat[192] = -0.37
    for i, v in enumerate(rest[:63]):
        flat[193 + i] = v * 0.37
    # remaining blocks: seeded values with a few exact zeros
    n = flat[256:].numel()
    flat[256:] = torch.randn(n, generator=g) * 0.05
    flat[300] = 0.0
    flat[301] = -0.0
    ws["ties"] = ties
    return ws


for name, w in weights().items():
    w = w.contiguous()
    rows, cols = w.shape
    out[f"w.{name}"] = w
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, cols, generator=g)
    x[1, 3] = 7.5
    x[3, cols - 1] = -9.0
    x[4, 10] = 6.0
    out[f"x.{name}"] = x
    bias = torch.randn(rows, generator=g) * 0.1
    out[f"bias.{name}"] = bias
    for qt in ["nf4", "fp4"]:
        for dq in [False, True]:
            key = f"{qt}_dq" if dq else qt
            packed, st = F.quantize_4bit(w, blocksize=64, compress_statistics=dq, quant_type=qt)
            out[f"{key}.{name}.packed"] = packed.reshape(-1).contiguous()
            if dq:
                out[f"{key}.{name}.qabsmax"] = st.absmax.contiguous()
                out[f"{key}.{name}.absmax2"] = st.state2.absmax.contiguous()
                out[f"{key}.{name}.offset"] = st.offset.reshape(1).float()
                out[f"{key}.{name}.code2"] = st.state2.code.float().contiguous()
            else:
                out[f"{key}.{name}.absmax"] = st.absmax.contiguous()
            out[f"{key}.{name}.dequant"] = F.dequantize_4bit(packed, st).float().contiguous()
            lin = bnb.nn.Linear4bit(cols, rows, bias=True, compute_dtype=torch.float32,
                                    compress_statistics=dq, quant_type=qt)
            lin.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, compress_statistics=dq,
                                           quant_type=qt, blocksize=64).to("cpu")
            lin.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)
            lin.eval()
            with torch.no_grad():
                out[f"{key}.{name}.y"] = lin(x).float().contiguous()
    # LLM.int8
    lin = bnb.nn.Linear8bitLt(cols, rows, bias=True, has_fp16_weights=False, threshold=6.0)
    lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")
    lin.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)
    # eval(), as in a loaded model: in training mode bitsandbytes' CPU path multiplies by
    # dequantized weights instead (MatMul8bitFp)
    lin.eval()
    out[f"llm_int8.{name}.cb"] = lin.weight.data.clone().contiguous()
    out[f"llm_int8.{name}.scb"] = lin.weight.SCB.float().clone().contiguous()
    with torch.no_grad():
        y = lin(x)
    out[f"llm_int8.{name}.y"] = y.float().contiguous()
    with torch.no_grad():
        y1 = lin(x[1:2])
    out[f"llm_int8.{name}.y_row1"] = y1.float().contiguous()
    # PyTorch dynamic int8
    from torch.ao.quantization import quantize_dynamic, per_channel_dynamic_qconfig
    for key, spec in [("dyn", {torch.nn.Linear}), ("dynpc", {torch.nn.Linear: per_channel_dynamic_qconfig})]:
        m = torch.nn.Sequential(torch.nn.Linear(cols, rows))
        with torch.no_grad():
            m[0].weight.copy_(w)
            m[0].bias.copy_(bias)
        qm = quantize_dynamic(m, spec, dtype=torch.qint8)
        qw = qm[0].weight()
        out[f"{key}.{name}.qweight"] = qw.int_repr().contiguous()
        if key == "dyn":
            out[f"{key}.{name}.scale"] = torch.tensor([qw.q_scale()], dtype=torch.float32)
        else:
            out[f"{key}.{name}.scales"] = qw.q_per_channel_scales().float().contiguous()
        with torch.no_grad():
            out[f"{key}.{name}.y"] = qm(x).float().contiguous()
            out[f"{key}.{name}.y_row1"] = qm(x[1:2]).float().contiguous()
    meta.setdefault("engine", torch.backends.quantized.engine)


def model_reference():
    from transformers import GPT2Config, GPT2LMHeadModel, BitsAndBytesConfig
    torch.manual_seed(99)
    cfg = GPT2Config(vocab_size=512, n_positions=64, n_embd=128, n_layer=2, n_head=4, n_inner=256,
                     bos_token_id=0, eos_token_id=0)
    m = GPT2LMHeadModel(cfg).eval()
    # widen the weights so the formats' rounding shows (GPT-2's init std 0.02 is tiny)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    d = OUT / "gpt2-bnb"
    m.save_pretrained(d)
    prompts = [[5, 77, 300, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    ref = {"model": "gpt2-bnb", "new_tokens": 12, "prompts": prompts, "precisions": {}}
    configs = {
        "f32": None,
        "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
        "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
        "nf4_dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.float32),
        "llm_int8": dict(load_in_8bit=True),
    }
    for pname, kw in configs.items():
        extra = {} if kw is None else dict(quantization_config=BitsAndBytesConfig(**kw))
        q = GPT2LMHeadModel.from_pretrained(d, dtype=torch.float32, device_map="cpu", **extra).eval()
        entry = {"footprint": q.get_memory_footprint(), "greedy": []}
        for i, p in enumerate(prompts):
            ids = torch.tensor([p])
            with torch.no_grad():
                logits = q(ids).logits[0, -1].float()
                gen = q.generate(ids, max_new_tokens=ref["new_tokens"], do_sample=False,
                                 pad_token_id=0)
            out[f"model.{pname}.{i}.logits"] = logits.contiguous()
            entry["greedy"].append(gen[0, len(p):].tolist())
            top2 = torch.topk(logits, 2).values
            entry.setdefault("top2_margin", []).append(float(top2[0] - top2[1]))
        ref["precisions"][pname] = entry
    # the footprint as transformers counts it for distilgpt2's shapes (random weights)
    dcfg = GPT2Config(n_layer=6)
    fps = {}
    for pname, dtype, kw in [("f32", torch.float32, None), ("f16", torch.float16, None),
                             ("llm_int8 (rest f16)", torch.float16, dict(load_in_8bit=True)),
                             ("fp4 (rest f16)", torch.float16, dict(load_in_4bit=True)),
                             ("nf4_dq (rest f16)", torch.float16, dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True))]:
        dd = OUT.parent.parent.parent / "target" / "distilgpt2-shapes"
        if not dd.exists():
            GPT2LMHeadModel(dcfg).save_pretrained(dd)
        extra = {} if kw is None else dict(quantization_config=BitsAndBytesConfig(**kw))
        q = GPT2LMHeadModel.from_pretrained(dd, dtype=dtype, device_map="cpu", **extra)
        fps[pname] = q.get_memory_footprint()
    ref["distilgpt2_footprint"] = fps
    ref["versions"] = meta
    ref["llama"] = llama_reference(configs, prompts, ref["new_tokens"])
    return ref


def llama_reference(configs, prompts, new_tokens):
    """The same formats on two of the Llama-family fixtures (tests/fixtures/llama-family:
    GQA with llama3 rope and an untied head; Qwen2 with q/k/v biases and a tied head)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    out_ref = {}
    for name in ["llama-gqa-llama3", "qwen2-bias-tied"]:
        d = ROOT / "tests" / "fixtures" / "llama-family" / name
        entry_all = {}
        for pname, kw in configs.items():
            extra = {} if kw is None else dict(quantization_config=BitsAndBytesConfig(**kw))
            q = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, device_map="cpu", **extra).eval()
            entry = {"footprint": q.get_memory_footprint(), "greedy": []}
            for i, p in enumerate(prompts):
                ids = torch.tensor([p])
                with torch.no_grad():
                    logits = q(ids).logits[0, -1].float()
                    gen = q.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
                out[f"llama.{name}.{pname}.{i}.logits"] = logits.contiguous()
                entry["greedy"].append(gen[0, len(p):].tolist())
                top2 = torch.topk(logits, 2).values
                entry.setdefault("top2_margin", []).append(float(top2[0] - top2[1]))
            entry_all[pname] = entry
        out_ref[name] = entry_all
    return out_ref


def sum_reference():
    """absmax.mean() as PyTorch computes it, for double quantization's offset: a vector of
    GPT-2 c_fc's length (36,864 blocks), on 1 thread and on 2 (PyTorch splits a reduction
    this long between threads, so its result depends on the thread count)."""
    g = torch.Generator().manual_seed(5)
    v = torch.rand(36864, generator=g) * 0.1
    out["sum.large"] = v
    n = torch.get_num_threads()
    for t in (1, 2):
        torch.set_num_threads(t)
        out[f"sum.large.mean_threads{t}"] = v.mean().reshape(1)
    torch.set_num_threads(n)


OUT.mkdir(parents=True, exist_ok=True)
sum_reference()
ref = model_reference()
save_file({k: v.contiguous() for k, v in out.items()}, OUT / "formats.safetensors")
(OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
print("wrote", OUT, len(out), "tensors;", json.dumps(ref["distilgpt2_footprint"]))

#!/usr/bin/env python3
"""Greedy 50-token generation with Hugging Face transformers, timed the way quantbench
times it, for side-by-side tables (scripts/peers/cpu-speed.sh on the CPU,
scripts/gpu/run.sh on a GPU).

For each precision asked: load the model from a Hugging Face directory (the same weights
quantbench runs: `quantbench export --model synthetic:gpt2 --out DIR`), read memory,
warm up, then time `repeats` generations of exactly `new_tokens` tokens (min = max new
tokens, greedy, the device synchronised before each clock read) and `repeats` one-token
generations (the prefill), and report the median 50-token time, decode tokens/s
((new_tokens - 1) / (median 50-token time - median one-token time)), and memory: the
process's RSS and, on CUDA, torch's allocated bytes and NVML-level device use after load,
at the peak and after cleanup (model deleted, gc, empty_cache).

    python3 transformers_generate.py DIR --device cpu --precisions fp32 bf16 int8 nf4 \
        --threads 2 --out transformers.json

Precisions: fp32, fp16, bf16, int8 (bitsandbytes LLM.int8), nf4 (bitsandbytes 4-bit NF4,
bf16 compute); llm_int8-fp32, nf4-fp32, fp4-fp32 (bitsandbytes' formats on the linear
layers, everything else f32, 4-bit products in f32: what quantbench's llm_int8 / nf4 /
fp4 compute with --policy linear --rest f32). A precision that cannot run here (bitsandbytes missing, fp16 matmul on a
CPU ...) is recorded with its error and the others still run.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_used_bytes(torch, device):
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        return total - free
    return None


def load(transformers, torch, model_dir, precision, device):
    kw = {}
    if precision == "fp32":
        kw["dtype"] = torch.float32
    elif precision == "fp16":
        kw["dtype"] = torch.float16
    elif precision == "bf16":
        kw["dtype"] = torch.bfloat16
    elif precision in ("int8", "nf4"):
        from transformers import BitsAndBytesConfig

        if precision == "int8":
            kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        kw["device_map"] = device if device.startswith("cuda") else "cpu"
    elif precision in ("llm_int8-fp32", "nf4-fp32", "fp4-fp32"):
        # quantbench's bitsandbytes formats with --policy linear --rest f32: the linear
        # layers quantized, everything else f32, 4-bit products in f32
        from transformers import BitsAndBytesConfig

        kw["dtype"] = torch.float32
        if precision == "llm_int8-fp32":
            kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=precision.split("-")[0],
                bnb_4bit_compute_dtype=torch.float32,
            )
        kw["device_map"] = device if device.startswith("cuda") else "cpu"
    else:
        raise ValueError(
            f"unknown precision {precision!r}: fp32, fp16, bf16, int8, nf4, llm_int8-fp32, nf4-fp32, fp4-fp32"
        )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="eager", **kw
    )
    if "quantization_config" not in kw:
        model = model.to(device)
    model.eval()
    return model


def run_one(args, transformers, torch, tok, precision):
    device = args.device
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    rec = {"precision": precision, "device": device}
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        rec["cuda_allocated_before_load"] = torch.cuda.memory_allocated()
    rec["device_used_before_load"] = device_used_bytes(torch, device)
    rec["rss_before_load"] = rss_bytes()
    t0 = time.perf_counter()
    model = load(transformers, torch, args.model, precision, device)
    sync()
    rec["load_seconds"] = time.perf_counter() - t0
    rec["rss_after_load"] = rss_bytes()
    rec["device_used_after_load"] = device_used_bytes(torch, device)
    if device.startswith("cuda"):
        rec["cuda_allocated_after_load"] = torch.cuda.memory_allocated()
    rec["footprint_bytes"] = model.get_memory_footprint()
    ids = tok(args.prompt, return_tensors="pt").input_ids.to(device)

    def gen(n):
        with torch.inference_mode():
            sync()
            start = time.perf_counter()
            out = model.generate(
                ids,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
            sync()
            elapsed = time.perf_counter() - start
        assert out.shape[1] - ids.shape[1] == n, "generated a different number of tokens"
        return elapsed, out[0, ids.shape[1]:].tolist()

    for _ in range(args.warmup):
        gen(args.new_tokens)
    full, first = [], []
    tokens = None
    for _ in range(args.repeats):
        s, t = gen(args.new_tokens)
        full.append(s)
        tokens = tokens or t
        first.append(gen(1)[0])
    med, med1 = statistics.median(full), statistics.median(first)
    rec.update(
        generate_seconds=full,
        prefill_seconds=first,
        median_generate_seconds=med,
        tokens_per_second=args.new_tokens / med,
        decode_tokens_per_second=(args.new_tokens - 1) / (med - med1) if med > med1 else None,
        generated_token_ids=tokens,
    )
    if device.startswith("cuda"):
        rec["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        rec["cuda_allocated_after_cleanup"] = torch.cuda.memory_allocated()
    rec["device_used_after_cleanup"] = device_used_bytes(torch, device)
    rec["rss_after_cleanup"] = rss_bytes()
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a Hugging Face model directory")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8", "nf4"])
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--new-tokens", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", help="write the records here as JSON (else stdout)")
    args = ap.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    records = []
    for p in args.precisions:
        try:
            records.append(run_one(args, transformers, torch, tok, p))
        except Exception as e:  # a precision that cannot run here is recorded, not fatal
            records.append({"precision": p, "device": args.device, "error": f"{type(e).__name__}: {e}"})
        r = records[-1]
        print(
            f"transformers {p:5} {args.device}: "
            + (f"error: {r['error']}" if "error" in r else
               f"{r['median_generate_seconds']:.3f} s / {args.new_tokens} tokens, "
               f"decode {r['decode_tokens_per_second'] or float('nan'):.1f} tok/s, "
               f"footprint {r['footprint_bytes'] / 1e6:.1f} MB"),
            file=sys.stderr,
        )
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "model": os.path.abspath(args.model),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    try:
        import bitsandbytes

        meta["bitsandbytes"] = bitsandbytes.__version__
    except Exception:
        meta["bitsandbytes"] = None
    out = json.dumps({"meta": meta, "records": records}, indent=1)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(out)
        os.replace(tmp, args.out)
    else:
        print(out)


if __name__ == "__main__":
    main()

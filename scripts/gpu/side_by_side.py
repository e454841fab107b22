#!/usr/bin/env python3
"""quantbench's GPU quickstart beside transformers on the same GPU and weights:

    side_by_side.py QUANTBENCH_RESULTS_JSON TRANSFORMERS_JSON

One row per precision pair (f32/fp32, f16/fp16, q8_0/int8 bitsandbytes, q4_0/nf4
bitsandbytes): median 50-token time of each and the ratio; weight bytes (quantbench's
exact count, transformers' get_memory_footprint); GPU memory after load (quantbench: the
device's used bytes minus before load, from NVML; transformers: torch's allocated bytes)
and after cleanup (quantbench: before and after its CUDA pool is trimmed; transformers:
after empty_cache). Then the issue's three goals, checked.
"""

import json
import sys

PAIRS = [("f32", "fp32"), ("f16", "fp16"), ("q8_0", "int8"), ("q4_0", "nf4")]


def mb(b):
    return "n/a" if b is None else f"{b / 1e6:.1f} MB"


def main(qb_path, tf_path):
    qb = json.load(open(qb_path))
    tf = {r["precision"]: r for r in json.load(open(tf_path))["records"]}
    qv = {v["precision"]: v for v in qb["variants"]}
    rows, verdicts = [], []
    print("| precision | quantbench 50 tok | transformers 50 tok | speed-up | quantbench weights | transformers footprint | quantbench GPU after load | transformers allocated after load | quantbench after cleanup (pool held / trimmed) | transformers after cleanup |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for q, t in PAIRS:
        v, r = qv.get(q), tf.get(t)
        if v is None or v.get("status") != "ok":
            qs = None
        else:
            qs = v["timing"]["generate_seconds"]["median"]
        ts = r.get("median_generate_seconds") if r and "error" not in r else None
        m = (v or {}).get("memory", {})
        used = lambda reading: (reading or {}).get("gpu_used_bytes")
        before = used(m.get("before_load"))
        after = used(m.get("after_load"))
        loaded = after - before if after is not None and before is not None else None
        held = used(m.get("after_cleanup"))
        trimmed = used(m.get("after_pool_trim"))
        clean = lambda x: None if x is None or before is None else x - before
        print(
            f"| {q} / {t} | {qs and f'{qs:.3f} s' or 'n/a'} | "
            f"{ts and f'{ts:.3f} s' or (r and r.get('error', 'n/a')[:50]) or 'n/a'} | "
            f"{qs and ts and f'{ts / qs:.2f}x' or 'n/a'} | {mb((v or {}).get('weights_bytes'))} | "
            f"{mb(r and r.get('footprint_bytes'))} | {mb(loaded)} | "
            f"{mb(r and r.get('cuda_allocated_after_load'))} | {mb(clean(held))} / {mb(clean(trimmed))} | "
            f"{mb(r and r.get('cuda_allocated_after_cleanup'))} |"
        )
        if qs and ts:
            verdicts.append((f"quantbench faster than transformers at {q}", qs < ts))
    int4, nf4, f32 = qv.get("q4_0"), tf.get("nf4"), qv.get("f32")
    if int4 and nf4 and "footprint_bytes" in nf4 and int4.get("weights_bytes"):
        verdicts.append(("int4 weights under half of bitsandbytes 4-bit", int4["weights_bytes"] < nf4["footprint_bytes"] / 2))
    if int4 and f32 and int4.get("timing") and f32.get("timing"):
        verdicts.append(("int4 no slower than f32", int4["timing"]["generate_seconds"]["median"] <= f32["timing"]["generate_seconds"]["median"]))
    print()
    for what, ok in verdicts:
        print(f"- {what}: {'yes' if ok else 'NO'}")
    env = qb.get("environment", {})
    gpus = env.get("gpus") or [{}]
    print(f"\nGPU: {gpus[0].get('name', '?')}, driver {gpus[0].get('driver_version', '?')}, CUDA {gpus[0].get('cuda_version', '?')}; quantbench {env.get('git_commit', '?')}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])

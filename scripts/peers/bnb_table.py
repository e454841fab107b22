#!/usr/bin/env python3
"""One table: quantbench's bitsandbytes formats against bitsandbytes itself (through
transformers), decode tokens/s on the same weights and this CPU.

    python3 bnb_table.py QUANTBENCH_RESULTS_JSON TRANSFORMERS_JSON

quantbench: the median decode tokens/s of each variant (`quantbench run ... --precisions
llm_int8,nf4,fp4 --policy linear --rest f32`); transformers: (50 - 1) / (50-token generate
- 1-token generate), medians, from transformers_generate.py's llm_int8-fp32 / nf4-fp32 /
fp4-fp32 (the same formats on the linear layers, everything else f32).
"""
import json
import sys

qb = json.load(open(sys.argv[1]))
tf = {r["precision"]: r for r in json.load(open(sys.argv[2]))["records"]}
print("| format | quantbench decode tok/s | bitsandbytes (transformers) decode tok/s | ratio |")
print("|---|---:|---:|---:|")
for v in qb["variants"]:
    p = v["precision"]
    t = v.get("timing") or {}
    d = (t.get("decode_tokens_per_second") or {}).get("median")
    r = tf.get(f"{p}-fp32", {})
    b = r.get("decode_tokens_per_second")
    err = r.get("error")
    ratio = f"{d / b:.2f}x" if d and b else "-"
    print(f"| {p} | {d:.1f} | {b:.1f} | {ratio} |" if d and b else
          f"| {p} | {d or '-'} | {err or b or '-'} | {ratio} |")

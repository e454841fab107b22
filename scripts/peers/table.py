#!/usr/bin/env python3
"""One table from the three peers' raw results (see cpu-speed.sh):

    table.py QUANTBENCH_RUNS_DIR LLAMA_BENCH_JSONL TRANSFORMERS_JSON

QUANTBENCH_RUNS_DIR holds one `quantbench run --precisions native` per GGUF file, in a
folder named by its type (F32/results.json ...). Rows are the GGUF files, which both
engines ran; transformers' matching precision is named in its cell (it ran the Hugging
Face export of the same weights; TRANSFORMERS_JSON may be absent). Ratios are
quantbench / peer (above 1: quantbench is faster).
"""

import json
import os
import sys

# GGUF type -> transformers precision
MATCH = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "Q8_0": "int8", "Q4_0": "nf4", "Q4_K_M": None}


def main(qb_dir, llama_path, tf_path):
    llama = {}
    for line in open(llama_path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            name = r.get("model_filename", "")
            t = name.rsplit("-", 1)[-1].removesuffix(".gguf")
            if r.get("n_gen") == 50 and r.get("n_prompt", 0) == 0:
                llama[t] = r
    tf_all = json.load(open(tf_path)) if os.path.exists(tf_path) else None
    tf = {r["precision"]: r for r in tf_all["records"]} if tf_all else {}

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    def ratio(a, b):
        return "n/a" if a is None or not b else f"{a / b:.2f}x"

    print("| GGUF file | weight bytes | quantbench tok/s | llama.cpp tok/s | transformers tok/s | vs llama.cpp | vs transformers |")
    print("|---|---|---|---|---|---|---|")
    env = {}
    for t in MATCH:
        path = os.path.join(qb_dir, t, "results.json")
        if not os.path.exists(path):
            continue
        qb = json.load(open(path))
        env = qb.get("environment", env)
        v = qb["variants"][0]
        q = (v.get("timing") or {}).get("decode_tokens_per_second", {}).get("median") if v["status"] == "ok" else None
        wb = v.get("weights_bytes")
        lr = llama.get(t)
        l = lr["avg_ts"] if lr else None
        tp = MATCH[t]
        tr = tf.get(tp) if tp else None
        tv = tr.get("decode_tokens_per_second") if tr and "error" not in tr else None
        tcell = f"{fmt(tv)} ({tp})" if tr else "n/a"
        if tr and "error" in tr:
            tcell = f"failed ({tp}: {tr['error'][:60]})"
        size = f"{wb / 1e6:.0f} MB" if wb else "n/a"
        print(f"| {t} | {size} | {fmt(q)} | {fmt(l)} | {tcell} | {ratio(q, l)} | {ratio(q, tv)} |")
    some = next(iter(llama.values()), {})
    print()
    tfv = f"transformers {tf_all['meta'].get('transformers')} / torch {tf_all['meta'].get('torch')}" if tf_all else "transformers not run"
    print(
        f"quantbench {env.get('git_commit', '?')} ({env.get('kernels', '?')}), "
        f"llama.cpp {some.get('build_commit', '?')} ({some.get('n_threads', '?')} threads), "
        f"{tfv}; CPU: {env.get('cpu_model', '?')}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])

#!/usr/bin/env python3
"""One table from the three peers' raw results (see cpu-speed.sh):

    table.py QUANTBENCH_RESULTS_JSON LLAMA_BENCH_JSONL TRANSFORMERS_JSON

Rows are quantbench's precisions; each peer's matching precision is named in the cell.
Ratios are quantbench / peer (above 1: quantbench is faster).
"""

import json
import sys

# quantbench precision -> (llama.cpp GGUF type in the file name, transformers precision)
MATCH = {
    "f32": ("F32", "fp32"),
    "f16": ("F16", "fp16"),
    "bf16": ("BF16", "bf16"),
    "q8_0": ("Q8_0", "int8"),
    "q4_0": ("Q4_0", "nf4"),
    "q4_k": ("Q4_K_M", None),
}


def main(qb_path, llama_path, tf_path):
    qb = json.load(open(qb_path))
    llama = {}
    for line in open(llama_path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            name = r.get("model_filename", "")
            t = name.rsplit("-", 1)[-1].removesuffix(".gguf")
            if r.get("n_gen") == 50 and r.get("n_prompt", 0) == 0:
                llama[t] = r
    tf = {r["precision"]: r for r in json.load(open(tf_path))["records"]}

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    def ratio(a, b):
        return "n/a" if a is None or not b else f"{a / b:.2f}x"

    print("| precision | quantbench tok/s | llama.cpp tok/s | transformers tok/s | vs llama.cpp | vs transformers |")
    print("|---|---|---|---|---|---|")
    for v in qb["variants"]:
        p = v["precision"]
        if p not in MATCH:
            continue
        q = (v.get("timing") or {}).get("decode_tokens_per_second", {}).get("median") if v["status"] == "ok" else None
        lt, tp = MATCH[p]
        lr = llama.get(lt)
        l = lr["avg_ts"] if lr else None
        tr = tf.get(tp) if tp else None
        t = tr.get("decode_tokens_per_second") if tr and "error" not in tr else None
        lcell = f"{fmt(l)} ({lt})" if lr else "n/a"
        tcell = f"{fmt(t)} ({tp})" if tp else "n/a"
        if tr and "error" in tr:
            tcell = f"failed ({tp}: {tr['error'][:60]})"
        print(f"| {p} | {fmt(q)} | {lcell} | {tcell} | {ratio(q, l)} | {ratio(q, t)} |")
    env = qb.get("environment", {})
    some = next(iter(llama.values()), {})
    print()
    print(
        f"quantbench {env.get('git_commit', '?')} ({env.get('kernels', '?')}), "
        f"llama.cpp {some.get('build_commit', '?')} ({some.get('n_threads', '?')} threads), "
        f"transformers {json.load(open(tf_path))['meta'].get('transformers')} / torch "
        f"{json.load(open(tf_path))['meta'].get('torch')}; CPU: {env.get('cpu_model', '?')}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])

"""Join quantbench's llama-bench-shaped rows with llama-bench's on (type, n_prompt,
n_gen, n_depth) and print a Markdown table with the ratio. quantbench's tokens/s per
test: prefill_ts for a prompt-only test, decode_ts for a generation-only one (medians);
llama-bench's avg_ts (mean), as each tool reports.

usage: context_table.py QUANTBENCH.jsonl LLAMA_BENCH.jsonl "F32 Q4_0"
"""
import json
import sys


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def main():
    qb, lb, types = rows(sys.argv[1]), rows(sys.argv[2]), sys.argv[3].split()
    print("| file | test | quantbench tok/s | llama.cpp tok/s | ratio | quantbench GB/s (of measured) |")
    print("|---|---|---:|---:|---:|---:|")
    for t in types:
        for r in lb:
            if not r["model_filename"].endswith(f"-{t}.gguf"):
                continue
            key = (r["n_prompt"], r["n_gen"], r["n_depth"])
            match = [
                q for q in qb
                if q["precision"] == t and q["n_sequences"] == 1
                and (q["n_prompt"], q["n_gen"], q["n_depth"]) == key
            ]
            if not match:
                continue
            q = match[0]
            mine = q["prefill_ts"] if key[1] == 0 else q["decode_ts"]
            name = f"pp{key[0]}" if key[1] == 0 else f"tg{key[1]}"
            if key[2]:
                name += f" @ d{key[2]}"
            bw = "-"
            if q.get("decode_bandwidth_gbps"):
                bw = f"{q['decode_bandwidth_gbps']:.1f} ({100 * q['bandwidth_fraction']:.0f}%)"
            print(f"| {t} | {name} | {mine:.1f} | {r['avg_ts']:.1f} | {mine / r['avg_ts']:.2f}x | {bw} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# quantbench's KL statistics beside llama-perplexity --kl-divergence on the same text and
# the same weights: SmolLM2-135M-Instruct (scripts/fetch-models.sh) dequantized to F32 by
# llama-quantize --allow-requantize (the base of both), q8_0 / q4_0 / q4_k made from it
# (llama-quantize --pure Q8_0 / Q4_0 / Q4_K_M for llama.cpp; quantbench's own quantizer
# for quantbench), the project's evaluation essay, chunks of 512 with the second half of
# each scored (quantbench: quality.scoring = "second-half"), f32 KV caches, 2 threads.
# Prints the statistics side by side and each pass's throughput (tokens forwarded / s).
#
#   bash scripts/fetch-models.sh && bash scripts/peers/kl-vs-llama-perplexity.sh
#
# MODEL_NAME=gemma-3-270m runs the same on Gemma 3 270M (Q4_K_M as shipped). Either way the
# file as shipped is compared too: llama-perplexity on it against the F32 base, and
# quantbench's own engine on it (precision native) against its dequantized f32.
#
# Needs the llama.cpp build of scripts/peers/cpu-speed.sh (it adds llama-perplexity).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
L=$CACHE/llama.cpp
CMAKE=${CMAKE:-$(command -v cmake || echo "$CACHE/venv/bin/cmake")}
MODEL_NAME=${MODEL_NAME:-smollm2-135m-instruct}
MODEL=$(bash "$ROOT/scripts/fetch-models.sh" "$MODEL_NAME")
TEXT=$ROOT/assets/eval/default.txt
OUT=${OUT:-$CACHE/runs/kl-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ -x "$L/build/bin/llama-perplexity" ] || "$CMAKE" --build "$L/build" --target llama-perplexity -j "$(nproc)"
( cd "$ROOT" && cargo build --release -q )
QB=$ROOT/target/release/quantbench
Q=$L/build/bin/llama-quantize
P=$L/build/bin/llama-perplexity
$Q --allow-requantize "$MODEL" "$OUT/F32.gguf" F32 > "$OUT/quantize.log" 2>&1
for t in Q8_0 Q4_0 Q4_K_M; do $Q --pure "$OUT/F32.gguf" "$OUT/$t.gguf" "$t" >> "$OUT/quantize.log" 2>&1; done
ARGS=(-f "$TEXT" -c 512 -t 2 -ctk f32 -ctv f32 -fa off --kl-divergence-base "$OUT/base.kld")
$P -m "$OUT/F32.gguf" "${ARGS[@]}" > "$OUT/llama-F32.log" 2>&1
for t in Q8_0 Q4_0 Q4_K_M; do $P -m "$OUT/$t.gguf" "${ARGS[@]}" --kl-divergence > "$OUT/llama-$t.log" 2>&1; done
$P -m "$MODEL" "${ARGS[@]}" --kl-divergence > "$OUT/llama-shipped.log" 2>&1
cat > "$OUT/quantbench.toml" <<EOF
name = "kl-vs-llama-perplexity"
model = "$OUT/F32.gguf"
precisions = ["f32", "q8_0", "q4_0", "q4_k"]
new_tokens = 8
warmup = 0
repeats = 1
[quality]
text = "$TEXT"
scoring = "second-half"
window = 512
EOF
"$QB" run "$OUT/quantbench.toml" --quiet --out "$OUT/quantbench" > /dev/null
sed -e "s|^model = .*|model = \"$MODEL\"|" -e 's|^precisions = .*|precisions = ["f32", "native"]\nrequantize = true|' \
  "$OUT/quantbench.toml" > "$OUT/quantbench-shipped.toml"
"$QB" run "$OUT/quantbench-shipped.toml" --quiet --out "$OUT/quantbench-shipped" > /dev/null
python3 - "$OUT" <<'PYEOF'
import json, re, sys
out = sys.argv[1]
r = json.load(open(f"{out}/quantbench/results.json"))
qb = {v["precision"]: v["quality"] for v in r["variants"]}
shipped = json.load(open(f"{out}/quantbench-shipped/results.json"))
qb["native"] = next(v["quality"] for v in shipped["variants"] if v["precision"] == "native")
def llama(t):
    s = open(f"{out}/llama-{t}.log").read()
    g = lambda pat: re.search(pat, s)
    kl = g(r"Mean    KLD:\s+([\d.]+)\s*±\s*([\d.]+)")
    same = g(r"Same top p:\s+([\d.]+)\s*±\s*([\d.]+) %")
    ppl = g(r"Mean PPL\(Q\)\s+:\s+([\d.]+)")
    med = g(r"Median  KLD:\s+([\d.]+)")
    p99 = g(r"99.0%   KLD:\s+([\d.]+)")
    # Throughput: llama-perplexity evaluates n_seq chunks of n_ctx tokens per pass and
    # logs the seconds one pass took (its first; the ETA is built from it).
    shape = g(r"computing over (\d+) chunks, n_ctx=(\d+), batch_size=\d+, n_seq=(\d+)")
    per_pass = g(r"([\d.]+) seconds per pass")
    tps = float("nan")
    if shape and per_pass:
        chunks, n_ctx, n_seq = (int(x) for x in shape.groups())
        tps = min(chunks, n_seq) * n_ctx / float(per_pass[1])
    return dict(kl=float(kl[1]), kl_se=float(kl[2]), same=float(same[1]), same_se=float(same[2]),
                ppl=float(ppl[1]), median=float(med[1]), p99=float(p99[1]),
                tps=tps)
base = re.search(r"PPL = ([\d.]+)", open(f"{out}/llama-F32.log").read())[1]
print(f"reference perplexity: quantbench {r['quality_reference']['perplexity']:.4f}, llama.cpp {base} "
      f"({r['quality_reference']['positions']} positions scored by quantbench)\n")
ref = r["quality_reference"]
forwarded = ref["windows"] * ref["window"]
print("| precision | engine | perplexity | mean KL ± SE | median KL | 99% KL | same top-1 ± SE | pass tokens/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for p, t in [("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("q4_k", "Q4_K_M"), ("native", "shipped")]:
    q, l = qb[p], llama(t)
    print(f"| {p} | quantbench | {q['perplexity']:.3f} | {q['kl_mean']:.6f} ± {q['kl_stderr']:.6f} | "
          f"{q['kl_median']:.6f} | {q['kl_p99']:.6f} | {100*q['same_top1']:.2f} ± {100*q['same_top1_stderr']:.2f} % | "
          f"{forwarded / q['seconds']:.0f} |")
    print(f"| {p} | llama.cpp ({t}) | {l['ppl']:.3f} | {l['kl']:.6f} ± {l['kl_se']:.6f} | "
          f"{l['median']:.6f} | {l['p99']:.6f} | {l['same']:.2f} ± {l['same_se']:.2f} % | {l['tps']:.0f} |")
print(f"\npass tokens/s: tokens forwarded ({forwarded:,}: {ref['windows']} windows of {ref['window']}) over the "
      "variant's whole quality pass (forward passes and KL statistics) for quantbench; for llama.cpp, the "
      "tokens of one pass (n_seq chunks of n_ctx) over the seconds per pass llama-perplexity logs")
PYEOF
echo "(raw results under $OUT)"

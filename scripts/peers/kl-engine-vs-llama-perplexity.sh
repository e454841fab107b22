#!/usr/bin/env bash
# The llama.cpp engine's quality pass beside llama-perplexity --kl-divergence on the same
# files and text: SmolLM2-135M-Instruct (scripts/fetch-models.sh) as shipped (Q4_1), and
# the F32 / Q8_0 / Q4_K_M files llama.cpp's quantizer made for the engine (its cache),
# F32 the base of both; the project's evaluation essay in chunks of 512 with the second
# half of each scored; llama.cpp's default f16 KV cache, flash attention off, 2 threads.
# Prints the statistics side by side.
#
#   bash scripts/fetch-models.sh && bash scripts/peers/kl-engine-vs-llama-perplexity.sh
#
# Needs: a release build with --features llama-cpp, and llama-perplexity from the llama.cpp
# of scripts/peers/cpu-speed.sh ($QB_PEERS_CACHE/llama.cpp; built without AMX on CPUs
# that have it: see docs/engines.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
P=${LLAMA_PERPLEXITY:-$CACHE/llama.cpp/build/bin/llama-perplexity}
MODEL=$(bash "$ROOT/scripts/fetch-models.sh" smollm2-135m-instruct)
TEXT=$ROOT/assets/eval/default.txt
OUT=${OUT:-$CACHE/runs/kl-engine-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
export QUANTBENCH_LLAMA_CACHE=$OUT/llama-cache
QB=$ROOT/target/release/quantbench
[ -x "$QB" ] || ( cd "$ROOT" && cargo build --release --features llama-cpp -q )
cat > "$OUT/engine.toml" <<EOF
name = "kl-engine-vs-llama-perplexity"
model = "$MODEL"
engines = ["llama.cpp"]
precisions = ["f32", "native", "q8_0", "q4_k_m"]
requantize = true
new_tokens = 8
warmup = 0
repeats = 1
[engine]
flash_attention = false
threads = 2
[quality]
text = "$TEXT"
scoring = "second-half"
window = 512
EOF
"$QB" run "$OUT/engine.toml" --quiet --out "$OUT/quantbench" > /dev/null
F32=$(ls "$QUANTBENCH_LLAMA_CACHE"/*.f32.*.gguf)
ARGS=(-f "$TEXT" -c 512 -t 2 -fa off --kl-divergence-base "$OUT/base.kld")
$P -m "$F32" "${ARGS[@]}" > "$OUT/llama-f32.log" 2>&1
$P -m "$MODEL" "${ARGS[@]}" --kl-divergence > "$OUT/llama-native.log" 2>&1
for t in q8_0 q4_k_m; do
  $P -m "$(ls "$QUANTBENCH_LLAMA_CACHE"/*."$t".*.gguf)" "${ARGS[@]}" --kl-divergence > "$OUT/llama-$t.log" 2>&1
done
python3 - "$OUT" <<'PYEOF'
import json, re, sys
out = sys.argv[1]
r = json.load(open(f"{out}/quantbench/results.json"))
qb = {v["precision"]: v["quality"] for v in r["variants"]}
def llama(t):
    s = open(f"{out}/llama-{t}.log").read()
    g = lambda pat: re.search(pat, s)
    kl = g(r"Mean    KLD:\s+([-\d.]+)\s*±\s*([\d.]+)")
    same = g(r"Same top p:\s+([\d.]+)\s*±\s*([\d.]+) %")
    ppl = g(r"Mean PPL\(Q\)\s+:\s+([\d.]+)\s*±\s*([\d.]+)")
    return dict(kl=float(kl[1]), kl_se=float(kl[2]), same=float(same[1]), same_se=float(same[2]),
                ppl=float(ppl[1]), ppl_se=float(ppl[2]))
base = re.search(r"PPL = ([\d.]+) \+/- ([\d.]+)", open(f"{out}/llama-f32.log").read())
ref = r["quality_reference"]
print(f"f32 perplexity: engine {ref['perplexity']:.4f}, llama-perplexity {base[1]} ± {base[2]} "
      f"({ref['positions']} positions scored by quantbench)\n")
print("| precision | by | perplexity | mean KL ± SE | same top-1 ± SE | KL difference / SE |")
print("|---|---|---:|---:|---:|---:|")
for p in ["native", "q8_0", "q4_k_m"]:
    q, l = qb[p], llama(p)
    d = (q["kl_mean"] - l["kl"]) / max(q["kl_stderr"], l["kl_se"])
    print(f"| {p} | llama.cpp engine | {q['perplexity']:.3f} | {q['kl_mean']:.6f} ± {q['kl_stderr']:.6f} | "
          f"{100*q['same_top1']:.2f} ± {100*q['same_top1_stderr']:.2f} % | {d:+.2f} |")
    print(f"| {p} | llama-perplexity | {l['ppl']:.3f} | {l['kl']:.6f} ± {l['kl_se']:.6f} | "
          f"{l['same']:.2f} ± {l['same_se']:.2f} % | |")
PYEOF
echo "(files in $OUT)"

#!/usr/bin/env bash
# quantbench's own engine's quality pass beside llama-perplexity --kl-divergence, on the
# same weights: SmolLM2-135M-Instruct's f32 GGUF (its shipped Q4_1 dequantized, written
# by quantbench), llama-quantize's Q4_K_M, IQ4_XS, Q3_K_M and Q2_K files of it (the own engine
# makes those very bytes: tests/gguf.rs), scored by the own engine from the f32 file and
# by llama-perplexity from the files; the project's essay in chunks of 512 with the
# second half scored, f32 KV caches on both sides (the own engine's), 2 threads.
#
#   bash scripts/fetch-models.sh && bash scripts/peers/kl-own-vs-llama-perplexity.sh
#
# Needs: a release build, and llama-quantize / llama-perplexity from the peers' llama.cpp
# ($QB_PEERS_CACHE/llama.cpp, built for the baseline CPU: see docs/gguf.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
BIN=$CACHE/llama.cpp/build/bin
MODEL=$(bash "$ROOT/scripts/fetch-models.sh" smollm2-135m-instruct)
TEXT=$ROOT/assets/eval/default.txt
OUT=${OUT:-$CACHE/runs/kl-own-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
QB=$ROOT/target/release/quantbench
[ -x "$QB" ] || ( cd "$ROOT" && cargo build --release -q )
TYPES=${TYPES:-"q4_k_m iq4_xs q3_k_m q2_k_mix"}
# llama-quantize's name of a quantbench mix (its Q2_K is quantbench's q2_k_mix).
llama_name() { [ "$1" = q2_k_mix ] && echo Q2_K || echo "${1^^}"; }
"$QB" export --model "$MODEL" --requantize --format gguf --precision f32 --out "$OUT/f32.gguf" --force > /dev/null
for t in $TYPES; do
  "$BIN/llama-quantize" "$OUT/f32.gguf" "$OUT/$t.gguf" "$(llama_name "$t")" > "$OUT/quantize-$t.log" 2>&1
done
cat > "$OUT/own.toml" <<TOML
name = "kl-own-vs-llama-perplexity"
model = "$OUT/f32.gguf"
precisions = ["f32", $(for t in $TYPES; do printf '"%s", ' "$t"; done | sed 's/, $//')]
new_tokens = 8
warmup = 0
repeats = 1
[quality]
text = "$TEXT"
scoring = "second-half"
window = 512
TOML
"$QB" run "$OUT/own.toml" --quiet --out "$OUT/quantbench" > /dev/null
ARGS=(-f "$TEXT" -c 512 -t 2 -fa off -ctk f32 -ctv f32 --kl-divergence-base "$OUT/base.kld")
"$BIN/llama-perplexity" -m "$OUT/f32.gguf" "${ARGS[@]}" > "$OUT/llama-f32.log" 2>&1
for t in $TYPES; do
  "$BIN/llama-perplexity" -m "$OUT/$t.gguf" "${ARGS[@]}" --kl-divergence > "$OUT/llama-$t.log" 2>&1
done
python3 - "$OUT" $TYPES <<'PYEOF'
import json, re, sys
out, types = sys.argv[1], sys.argv[2:]
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
print(f"f32 perplexity: own engine {ref['perplexity']:.4f}, llama-perplexity {base[1]} ± {base[2]} "
      f"({ref['positions']} positions scored by quantbench)\n")
print("| precision | by | perplexity | mean KL ± SE | same top-1 ± SE | KL difference / SE |")
print("|---|---|---:|---:|---:|---:|")
for p in types:
    q, l = qb[p], llama(p)
    d = (q["kl_mean"] - l["kl"]) / max(q["kl_stderr"], l["kl_se"])
    print(f"| {p} | own engine | {q['perplexity']:.3f} | {q['kl_mean']:.6f} ± {q['kl_stderr']:.6f} | "
          f"{100*q['same_top1']:.2f} ± {100*q['same_top1_stderr']:.2f} % | {d:+.2f} |")
    print(f"| {p} | llama-perplexity | {l['ppl']:.3f} | {l['kl']:.6f} ± {l['kl_se']:.6f} | "
          f"{l['same']:.2f} ± {l['same_se']:.2f} % | |")
PYEOF
echo "(files in $OUT)"

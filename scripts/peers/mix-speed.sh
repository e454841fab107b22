#!/usr/bin/env bash
# Both engines on the same bytes, one llama-quantize file type at a time: llama-quantize
# (the peers' build) makes each TYPE from an F32 GGUF (with an importance matrix for the
# types it requires one for), then one `quantbench run` measures that file as stored
# (`--precisions native`) by quantbench's own engine and by the llama.cpp engine, in
# ROUNDS interleaved rounds: a PROMPT-token prefill and GEN new tokens, one sequence.
# Prints a table: the type, the file's bits per weight, and prefill / decode tok/s of
# each engine (medians; the rounds' spread beside).
#
#   quantbench export --model synthetic:qwen3-0.6b --format gguf --precision f32 --out /tmp/q.gguf
#   quantbench imatrix --model /tmp/q.gguf --ctx 128 --chunks 4 --out /tmp/q.imatrix.gguf
#   F32=/tmp/q.gguf IMATRIX=/tmp/q.imatrix.gguf bash scripts/peers/mix-speed.sh
#
# Needs a release build with the llama.cpp engine (cargo build --release --features
# llama-cpp) and llama-quantize from the peers' llama.cpp. Nothing else heavy should run
# meanwhile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
BIN=$CACHE/llama.cpp/build/bin
QB=${QB:-$ROOT/target/release/quantbench}
F32=${F32:?an F32 GGUF file}
IMATRIX=${IMATRIX:-}
TYPES=${TYPES:-Q8_0 Q4_K_M IQ4_XS IQ4_NL IQ3_M IQ3_S IQ3_XXS Q2_K IQ2_M IQ2_S IQ2_XS IQ2_XXS IQ1_M IQ1_S TQ2_0 TQ1_0}
PROMPT=${PROMPT:-64}
GEN=${GEN:-16}
ROUNDS=${ROUNDS:-2}
REPS=${REPS:-3}
OUT=${OUT:-$CACHE/runs/mix-speed-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
for t in $TYPES; do
  f="$OUT/$t.gguf"
  extra=()
  case $t in IQ3_XS|IQ3_XXS|IQ2_*|IQ1_*|Q2_K_S) extra=(--imatrix "${IMATRIX:?$t needs IMATRIX}") ;; esac
  [ -f "$f" ] || "$BIN/llama-quantize" "${extra[@]}" "$F32" "$f" "$t" > "$OUT/quantize-$t.log" 2>&1
  "$QB" run --model "$f" --engine quantbench,llama.cpp --precisions native \
    --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --new-tokens "$GEN" --rounds "$ROUNDS" --warmup 1 --repeats "$REPS" \
    --no-quality --quiet --out "$OUT/run-$t" > /dev/null
done
python3 - "$OUT" $TYPES <<'PYEOF'
import json, statistics, sys
out, types = sys.argv[1], sys.argv[2:]
print("| type | bpw | engine | prefill tok/s | decode tok/s |")
print("|---|---:|---|---:|---:|")
for t in types:
    r = json.load(open(f"{out}/run-{t}/results.json"))
    for engine in ("quantbench", "llama.cpp"):
        pp, tg, bpw = [], [], None
        for v in r["variants"]:
            if v["engine"] != engine or v["status"] != "ok":
                continue
            bpw = v["weights"]["bits_per_weight"]
            for w in v["tests"]:
                pp.append(w["prefill_tokens_per_second"]["median"])
                tg.append(w["decode_tokens_per_second"]["median"])
        cell = lambda xs: (f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})" if xs else "failed")
        print(f"| {t} | {bpw:.2f} | {engine} | {cell(pp)} | {cell(tg)} |" if bpw
              else f"| {t} | - | {engine} | failed | failed |")
PYEOF
echo "(files in $OUT)"

#!/usr/bin/env bash
# quantbench's workload tests against llama-bench's on the same GGUF bytes: pp512, and
# tg16 at depth 0 and 512, one sequence, THREADS threads, both tools' median/mean of
# REPS repetitions after warm-up. Joined on llama-bench's own columns (n_prompt, n_gen,
# n_depth), which `quantbench export-results --format jsonl` writes too.
#
#   MODEL=synthetic:gpt2 TYPES="F32 Q4_0" bash scripts/peers/context-speed.sh
#
# Needs llama.cpp built by scripts/peers/cpu-speed.sh (it also exports the GGUF files:
# run it once for the MODEL first). Nothing else heavy should run meanwhile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QUANTBENCH_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
MODEL=${MODEL:-synthetic:gpt2}
NAME=${MODEL#synthetic:}
TYPES=${TYPES:-F32 Q4_0}
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
DEPTHS=${DEPTHS:-0,512}
PYTHON=${PYTHON:-python3}
cd "$CACHE"
M=model-$NAME
for t in $TYPES; do
  if [ ! -f "$M/gguf/$NAME-$t.gguf" ]; then
    echo "missing $CACHE/$M/gguf/$NAME-$t.gguf: run MODEL=$MODEL bash scripts/peers/cpu-speed.sh first" >&2
    exit 2
  fi
done
( cd "$ROOT" && cargo build --release -q )
QB=$ROOT/target/release/quantbench
OUT=runs/context-$NAME-$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$OUT"
: > "$OUT/quantbench.jsonl"
: > "$OUT/llama-bench.jsonl"
for t in $TYPES; do
  "$QB" run --model "$CACHE/$M/gguf/$NAME-$t.gguf" --precisions native --new-tokens 2 \
    --prompt-tokens 0,512 --gen-tokens 0,16 --depth "$DEPTHS" --threads "$THREADS" \
    --warmup 1 --repeats "$REPS" --no-quality --quiet --out "$OUT/quantbench-$t"
  "$QB" export-results "$OUT/quantbench-$t" --format jsonl | sed "s/\"precision\":\"native\"/\"precision\":\"$t\"/" \
    >> "$OUT/quantbench.jsonl"
done
for t in $TYPES; do
  llama.cpp/build/bin/llama-bench -m "$M/gguf/$NAME-$t.gguf" -p 512 -n 16 -d "$DEPTHS" \
    -r "$REPS" -t "$THREADS" -o jsonl | grep '^{' >> "$OUT/llama-bench.jsonl"
done
"$PYTHON" "$ROOT/scripts/peers/context_table.py" "$OUT/quantbench.jsonl" "$OUT/llama-bench.jsonl" \
  "$TYPES" | tee "$OUT/table.md"
echo "runs kept in $CACHE/$OUT"

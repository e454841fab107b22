#!/usr/bin/env bash
# quantbench against llama.cpp on the same GGUF bytes, the whole comparison in one run:
# for each MODEL and each TYPE, tg50 (50 new tokens from an empty cache), tg50 at depth
# 512 (512 tokens already in the cache) and pp512 (a 512-token prompt), one sequence,
# THREADS threads, both tools' workload tests (`quantbench run --prompt-tokens/--gen-tokens
# /--depth`, `llama-bench -p/-n/-d`), REPS timed repetitions after a warm-up each. Prints
# one table per model: tokens/s of each, the ratio, and for decode the weight-streaming
# rate each reaches (the bytes one decode step reads, from quantbench's record, times
# tokens/s) with its fraction of the memory bandwidth quantbench measured in the same run.
#
#   bash scripts/peers/speed.sh                                  # both models, six types
#   MODELS=synthetic:gpt2 TYPES="F32 Q4_K_M" REPS=2 bash scripts/peers/speed.sh
#   QB=/tmp/quantbench-base bash scripts/peers/speed.sh          # another build of quantbench
#   ROUNDS=3 bash scripts/peers/speed.sh                         # every pair of tests 3 times
#
# ROUNDS (default 1) runs the whole sequence of pairs that many times over; each cell is
# then the median of its rounds on each side, with the ratio of every round beside it
# (a shared machine's phases move decode cells by tens of percent between minutes).
# Default MODELS: synthetic:gpt2 synthetic:llama-3.2-1b; TYPES: F32 F16 BF16 Q8_0 Q4_0
# Q4_K_M (Q4_K_M is llama-quantize's mix of q4_k and q6_k). The files are quantbench's
# own exports (`export --format gguf`), made with llama.cpp by scripts/peers/cpu-speed.sh
# on its first run for a model; this script runs it (without transformers) where they
# are missing. Nothing else heavy should run meanwhile: the machine's noise is the error
# bar (compare runs with `quantbench compare`, not single figures).
#
# Which number is which: quantbench's prefill_ / decode_tokens_per_second_median, llama-bench's
# avg_ts (mean), as each tool reports.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
MODELS=${MODELS:-synthetic:gpt2 synthetic:llama-3.2-1b}
TYPES=${TYPES:-F32 F16 BF16 Q8_0 Q4_0 Q4_K_M}
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
GEN=${GEN:-50}
PROMPT=${PROMPT:-512}
DEPTH=${DEPTH:-512}
ROUNDS=${ROUNDS:-1}
PYTHON=${PYTHON:-python3}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
  echo "speed.sh: ROUNDS=$ROUNDS is not a number of rounds: use a whole number from 1" >&2
  exit 2
fi
cd "$CACHE" 2>/dev/null || { mkdir -p "$CACHE" && cd "$CACHE"; }
for MODEL in $MODELS; do
  NAME=${MODEL#synthetic:}
  for t in $TYPES; do
    if [ ! -f "model-$NAME/gguf/$NAME-$t.gguf" ] || [ ! -x llama.cpp/build/bin/llama-bench ]; then
      MODEL=$MODEL TYPES=F32 TRANSFORMERS=0 BNB=0 bash "$ROOT/scripts/peers/cpu-speed.sh" >/dev/null
      break
    fi
  done
done
if [ -z "${QB:-}" ]; then
  ( cd "$ROOT" && cargo build --release -q )
  QB=$ROOT/target/release/quantbench
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
for MODEL in $MODELS; do
  NAME=${MODEL#synthetic:}
  M=model-$NAME
  OUT=runs/speed-$NAME-$STAMP; mkdir -p "$OUT"
  : > "$OUT/quantbench.jsonl"
  : > "$OUT/llama-bench.jsonl"
  for round in $(seq 1 "$ROUNDS"); do
    for t in $TYPES; do
      f="$CACHE/$M/gguf/$NAME-$t.gguf"
      # Each test of quantbench, then the same test of llama.cpp on the same file, so that
      # both tools of a row meet the same phase of a shared machine (its bandwidth drifts
      # by tens of percent over minutes). Two quantbench runs, so that no prompt is timed
      # at depth (not asked for) and no test repeats.
      "$QB" run --model "$f" --precisions native --new-tokens 2 --prompt-tokens "$PROMPT" \
        --gen-tokens 0 --depth 0 --threads "$THREADS" --warmup 1 --repeats "$REPS" \
        --no-quality --quiet --out "$OUT/quantbench-$t-pp-$round"
      llama.cpp/build/bin/llama-bench -m "$f" -p "$PROMPT" -n 0 -d 0 -r "$REPS" -t "$THREADS" \
        -o jsonl | grep '^{' >> "$OUT/llama-bench.jsonl"
      "$QB" run --model "$f" --precisions native --new-tokens 2 --prompt-tokens 0 \
        --gen-tokens "$GEN" --depth "0,$DEPTH" --threads "$THREADS" --warmup 1 --repeats "$REPS" \
        --no-quality --quiet --out "$OUT/quantbench-$t-tg-$round"
      llama.cpp/build/bin/llama-bench -m "$f" -p 0 -n "$GEN" -d "0,$DEPTH" -r "$REPS" -t "$THREADS" \
        -o jsonl | grep '^{' >> "$OUT/llama-bench.jsonl"
      for part in pp tg; do
        "$QB" export-results "$OUT/quantbench-$t-$part-$round" --format jsonl \
          | sed "s/\"precision\":\"native\"/\"precision\":\"$t\"/" >> "$OUT/quantbench.jsonl"
      done
    done
  done
  echo "## $MODEL"
  "$PYTHON" "$ROOT/scripts/peers/speed_table.py" "$OUT/quantbench.jsonl" "$OUT/llama-bench.jsonl" \
    "$TYPES" | tee "$OUT/table.md"
  echo
  echo "(raw rows in $CACHE/$OUT)"
  echo
done

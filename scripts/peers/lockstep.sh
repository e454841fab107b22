#!/usr/bin/env bash
# quantbench against llama.cpp in one timeline: for each MODEL, TYPE and TEST, ROUNDS
# repetitions of each engine in turn on the same GGUF bytes (`examples/lockstep.rs`;
# llama.cpp's side is scripts/peers/llama-step.cpp, llama-bench's test loop, linked here
# against the llama.cpp that cpu-speed.sh builds). Separate runs on this shared VM move
# by ±30% between minutes; repetitions a few hundred milliseconds apart do not, so the
# median of the per-round ratios is the comparison to quote. Prints one line per cell
# (tokens/s of each, the ratio of every round, and for decode the weight-streaming rate
# each reaches with its fraction of the read bandwidth measured in the same round) and, at
# the end, a table (also in $CACHE/runs/lockstep-STAMP/table.md).
#
#   bash scripts/peers/lockstep.sh                                 # both models, six types, three tests
#   MODELS=synthetic:gpt2 TYPES="F32" TESTS="tg50" ROUNDS=9 bash scripts/peers/lockstep.sh
#
# Defaults: MODELS synthetic:gpt2 synthetic:llama-3.2-1b; TYPES F32 F16 BF16 Q8_0 Q4_0
# Q4_K_M; TESTS tg50 tg50@d512 pp512; ROUNDS 5 (the engines alternate which goes first);
# THREADS all cores. The GGUF files are the speed script's (cpu-speed.sh makes them).
# Nothing else heavy should run meanwhile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
MODELS=${MODELS:-synthetic:gpt2 synthetic:llama-3.2-1b}
TYPES=${TYPES:-F32 F16 BF16 Q8_0 Q4_0 Q4_K_M}
TESTS=${TESTS:-tg50 tg50@d512 pp512}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-$(nproc)}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
  echo "lockstep.sh: ROUNDS=$ROUNDS is not a number of rounds: use a whole number from 1" >&2
  exit 2
fi
cd "$CACHE" 2>/dev/null || { mkdir -p "$CACHE" && cd "$CACHE"; }
for MODEL in $MODELS; do
  NAME=${MODEL#synthetic:}
  for t in $TYPES; do
    if [ ! -f "model-$NAME/gguf/$NAME-$t.gguf" ] || [ ! -f llama.cpp/build/src/libllama.a ]; then
      MODEL=$MODEL TYPES=F32 TRANSFORMERS=0 BNB=0 bash "$ROOT/scripts/peers/cpu-speed.sh" >/dev/null
      break
    fi
  done
done
L=$CACHE/llama.cpp
if [ ! -f "$L/build/src/libllama.a" ]; then
  ( cd "$L/build" && "${CMAKE:-$CACHE/venv/bin/cmake}" --build . --target llama -j "$(nproc)" )
fi
# llama-step: the static libraries cpu-speed.sh's build left (GGML_NATIVE, OpenMP).
g++ -O2 -std=c++17 -o "$CACHE/llama-step" "$ROOT/scripts/peers/llama-step.cpp" \
  -I "$L/include" -I "$L/ggml/include" "$L/build/src/libllama.a" "$L/build/ggml/src/libggml.a" \
  "$L/build/ggml/src/libggml-cpu.a" "$L/build/ggml/src/libggml-base.a" -fopenmp -lpthread -lm -ldl
( cd "$ROOT" && cargo build --release -q --example lockstep )
STEP=$ROOT/target/release/examples/lockstep
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$CACHE/runs/lockstep-$STAMP
mkdir -p "$OUT"
ls "$CACHE/sdist" > "$OUT/llama.cpp-source"   # llama-cpp-python's sdist, which holds llama.cpp
( cd "$ROOT" && git rev-parse --short HEAD ) > "$OUT/quantbench-commit"
for MODEL in $MODELS; do
  NAME=${MODEL#synthetic:}
  for t in $TYPES; do
    f=$CACHE/model-$NAME/gguf/$NAME-$t.gguf
    for test in $TESTS; do
      "$STEP" "$f" "$test" "$ROUNDS" "$CACHE/llama-step" "$THREADS" | tee -a "$OUT/log.txt"
    done
  done
done
{
  echo "| file | test | quantbench tok/s | llama.cpp tok/s | ratio (median of rounds) | range | rounds >= 1.00 | quantbench GB/s (of the round's bandwidth) | llama.cpp GB/s (of the round's bandwidth) |"
  echo "|---|---|---:|---:|---:|---|---|---:|---:|"
  sed -n 's/^row|/|/p' "$OUT/log.txt"
} > "$OUT/table.md"
echo
cat "$OUT/table.md"
echo "runs in $OUT"

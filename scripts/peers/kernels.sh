#!/usr/bin/env bash
# quantbench's dense decode products against ggml's, pass by pass in one timeline:
# builds scripts/peers/ggml-stream.c against the llama.cpp that cpu-speed.sh builds and
# runs `examples/streaming -- FORMAT SHAPES ggml=...` for each FORMAT and SHAPES, PROCS
# processes each (the ratio of every pair of passes is quantbench's speed over ggml's,
# on the same shapes and 1 GiB of distinct matrices a pass, both on 2 MB pages).
#
#   bash scripts/peers/kernels.sh
#   FORMATS=f16 SHAPES=1b PROCS=5 bash scripts/peers/kernels.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
FORMATS=${FORMATS:-f32 f16 bf16}
SHAPES=${SHAPES:-gpt2 1b}
PROCS=${PROCS:-3}
L=$CACHE/llama.cpp
if [ ! -f "$L/build/ggml/src/libggml-cpu.a" ]; then
  MODEL=synthetic:gpt2 TYPES=F32 TRANSFORMERS=0 BNB=0 bash "$ROOT/scripts/peers/cpu-speed.sh" >/dev/null
fi
gcc -O2 -o "$CACHE/ggml-stream" "$ROOT/scripts/peers/ggml-stream.c" -I "$L/ggml/include" \
  "$L/build/ggml/src/libggml-cpu.a" "$L/build/ggml/src/libggml-base.a" -lstdc++ -fopenmp -lm -lpthread
( cd "$ROOT" && cargo build --release -q --example streaming )
for f in $FORMATS; do
  for s in $SHAPES; do
    for _ in $(seq 1 "$PROCS"); do
      "$ROOT/target/release/examples/streaming" "$f" "$s" "ggml=$CACHE/ggml-stream"
    done
  done
done

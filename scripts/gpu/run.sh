#!/usr/bin/env bash
# On the GPU machine, from the repository root, with target/cuda/quantbench.xz (or the
# unpacked target/cuda/quantbench) and target/cuda/site carried there (bash
# scripts/gpu/build.sh builds both): the quickstart on the GPU, then transformers on the
# same GPU and the same weights, then one side-by-side table.
#
#   bash scripts/gpu/run.sh [OUT]        # OUT defaults to $OUT or reports/gpu
#   PARTS=llama bash scripts/gpu/run.sh  # one part only: gpt2 (the quickstart), llama (1B)
#
# target/cuda/site holds bitsandbytes (its CUDA 13.0 library only) for transformers'
# int8 and NF4 rows; without it those rows say bitsandbytes is missing.
# The binary needs CUDA 13's cublas, cublasLt, cudart and curand: the GPU machine's
# PyTorch ships them (nvidia-* wheels); they are found and put on LD_LIBRARY_PATH.
# Nothing here needs the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-${OUT:-reports/gpu}}
BIN=${QB_BIN:-target/cuda/quantbench}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then
  # The stripped binary with the repository is over what the device tool carries: it
  # travels compressed and is unpacked outside the tree.
  UNPACK_DIR=$(mktemp -d)
  trap 'rm -rf "$UNPACK_DIR"' EXIT
  UNPACKED=$UNPACK_DIR/quantbench
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$BIN.xz" "$UNPACKED" && chmod +x "$UNPACKED" && BIN=$UNPACKED
fi
[ -x "$BIN" ] || { echo "no CUDA binary at $BIN (or $BIN.xz): run bash scripts/gpu/build.sh first" >&2; exit 1; }
[ -d target/cuda/site ] && export PYTHONPATH="$PWD/target/cuda/site${PYTHONPATH:+:$PYTHONPATH}"

LIBDIR=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '*/proc/*' 2>/dev/null | head -1)")
[ -d "$LIBDIR" ] || { echo "no libcublas.so.13 on this machine: install CUDA 13 or PyTorch with CUDA 13" >&2; exit 1; }
for lib in libcudart.so.13 libcurand.so.10 libcublasLt.so.13; do
  d=$(dirname "$(find / -name "$lib*" -not -path '*/proc/*' 2>/dev/null | head -1)")
  LIBDIR="$LIBDIR:$d"
done
export LD_LIBRARY_PATH="$LIBDIR:${LD_LIBRARY_PATH:-}"

PARTS=" ${PARTS:-gpt2 llama} "

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$DEST/nvidia-smi.csv"
if [[ $PARTS == *" gpt2 "* ]]; then
  "$BIN" run scenarios/gpu-quickstart.toml --out "$DEST/quickstart"

  # The same weights for transformers: synthetic:gpt2 in the Hugging Face layout.
  MODEL=$(mktemp -d)/synthetic-gpt2
  "$BIN" export --model synthetic:gpt2 --out "$MODEL"
  "$PY" scripts/peers/transformers_generate.py "$MODEL" --device cuda --precisions fp32 fp16 int8 nf4 \
    --warmup 2 --repeats 10 --out "$DEST/transformers.json"
  "$PY" scripts/gpu/side_by_side.py "$DEST/quickstart/results.json" "$DEST/transformers.json" \
    | tee "$DEST/side-by-side.md"
  rm -rf "$(dirname "$MODEL")"
fi

# The Llama family on the same GPU: Llama 3.2 1B's shapes with synthetic
# weights, quantbench at f32 / f16 / q8_0 / q4_0 / q4_k, transformers at fp32 / fp16 /
# bitsandbytes int8 / NF4 on the same weights, and the same table.
if [[ $PARTS == *" llama "* ]]; then
  "$BIN" run --model synthetic:llama-3.2-1b --device cuda --precisions f32,f16,q8_0,q4_0,q4_k \
    --new-tokens 50 --warmup 2 --repeats 10 --no-quality --quiet --out "$DEST/llama-1b"
  MODEL=$(mktemp -d)/synthetic-llama-3.2-1b
  "$BIN" export --model synthetic:llama-3.2-1b --out "$MODEL"
  "$PY" scripts/peers/transformers_generate.py "$MODEL" --device cuda --precisions fp32 fp16 int8 nf4 \
    --warmup 2 --repeats 10 --out "$DEST/transformers-llama-1b.json"
  "$PY" scripts/gpu/side_by_side.py "$DEST/llama-1b/results.json" "$DEST/transformers-llama-1b.json" \
    | tee "$DEST/side-by-side-llama-1b.md"
  rm -rf "$(dirname "$MODEL")"
fi

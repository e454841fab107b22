#!/usr/bin/env bash
# On the GPU machine, from the repository root, with target/cuda/quantbench carried
# there (bash scripts/gpu/build.sh builds it): the quickstart on the GPU, then
# transformers on the same GPU and the same weights, then one side-by-side table.
#
#   bash scripts/gpu/run.sh [OUT]        # OUT defaults to $OUT or reports/gpu
#
# The binary needs CUDA 13's cublas, cublasLt, cudart and curand: the GPU machine's
# PyTorch ships them (nvidia-* wheels); they are found and put on LD_LIBRARY_PATH.
# Nothing here needs the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-${OUT:-reports/gpu}}
BIN=${QB_BIN:-target/cuda/quantbench}
PY=${PYTHON:-python3}
mkdir -p "$DEST"

LIBDIR=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '*/proc/*' 2>/dev/null | head -1)")
[ -d "$LIBDIR" ] || { echo "no libcublas.so.13 on this machine: install CUDA 13 or PyTorch with CUDA 13" >&2; exit 1; }
for lib in libcudart.so.13 libcurand.so.10 libcublasLt.so.13; do
  d=$(dirname "$(find / -name "$lib*" -not -path '*/proc/*' 2>/dev/null | head -1)")
  LIBDIR="$LIBDIR:$d"
done
export LD_LIBRARY_PATH="$LIBDIR:${LD_LIBRARY_PATH:-}"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$DEST/nvidia-smi.csv"
"$BIN" run scenarios/gpu-quickstart.toml --out "$DEST/quickstart"

# The same weights for transformers: synthetic:gpt2 in the Hugging Face layout.
MODEL=$(mktemp -d)/synthetic-gpt2
"$BIN" export --model synthetic:gpt2 --out "$MODEL"
"$PY" scripts/peers/transformers_generate.py "$MODEL" --device cuda --precisions fp32 fp16 int8 nf4 \
  --out "$DEST/transformers.json"
"$PY" scripts/gpu/side_by_side.py "$DEST/quickstart/results.json" "$DEST/transformers.json" \
  | tee "$DEST/side-by-side.md"

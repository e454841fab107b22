#!/usr/bin/env bash
# Build a CUDA quantbench on a machine without a GPU (this one or CI's kind), ready to
# carry to a GPU machine: target/cuda/quantbench, stripped, and target/cuda/quantbench.xz,
# the same compressed; and bitsandbytes for transformers' side (target/cuda/site, from
# scripts/gpu/bnb-site.sh; BNB=0 skips it).
#
#   bash scripts/gpu/build.sh
#
# scripts/gpu/build-cuda.sh (a copy of the team's shared recipe) fetches the CUDA 13.0
# toolkit from PyPI's nvidia-* packages into ~/.cache/quantbench-cuda (once, ~2 GB) and
# links against a stub of the driver library; the real driver resolves it on the GPU
# machine. The first build compiles candle's CUDA kernels with nvcc: ~15 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/gpu/build-cuda.sh --features cuda --bin quantbench
strip -o target/cuda/quantbench target/cuda/release/quantbench
# Stripped it is still ~62 MiB: with the repository (~24 MB) over the 64 MiB the device
# tool carries, so it travels compressed (~9.7 MB); run.sh unpacks it.
xz -T0 -6 -k -f target/cuda/quantbench
[ "${BNB:-1}" = 1 ] && bash scripts/gpu/bnb-site.sh
ls -l target/cuda/quantbench target/cuda/quantbench.xz
echo "carry target/cuda/quantbench.xz and target/cuda/site; on the GPU machine run: bash scripts/gpu/run.sh"

#!/usr/bin/env bash
# bitsandbytes for transformers' int8 and NF4 rows on a GPU machine that has PyTorch but
# no bitsandbytes and no network: its wheel from PyPI (here), unpacked into
# target/cuda/site with only the CUDA 13.0 library kept (the whole wheel, 43 MB, with the
# CUDA binary is over what the device tool carries; its one CUDA 13.0 library is 3.9 MB).
# scripts/gpu/run.sh puts target/cuda/site on PYTHONPATH when it is there.
#
#   bash scripts/gpu/bnb-site.sh            # BNB_VERSION=0.50.2 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=${BNB_VERSION:-0.50.2}
SITE=target/cuda/site
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_24_x86_64 -d "$TMP" "bitsandbytes==$VERSION"
rm -rf "$SITE"; mkdir -p "$SITE"
python3 -m zipfile -e "$TMP"/bitsandbytes-*.whl "$SITE"
find "$SITE/bitsandbytes" -maxdepth 1 -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda130.so' -delete
du -sh "$SITE"

#!/usr/bin/env bash
# Decode speed of quantbench, llama.cpp and transformers on this CPU, on the same weights,
# side by side: MODEL (default synthetic:gpt2, GPT-2 small's shapes, weights from a seed;
# or another synthetic preset, such as synthetic:llama-3.2-1b); greedy, "Once upon a
# time", 50 new tokens, THREADS threads (default 2). Prints one table: GGUF type,
# quantbench tok/s, llama.cpp tok/s, transformers tok/s and the ratios.
#
#   bash scripts/peers/cpu-speed.sh                 # everything (first run: ~15 min setup)
#   MODEL=synthetic:llama-3.2-1b bash scripts/peers/cpu-speed.sh   # the Llama family
#   PYTHON=/path/to/python bash scripts/peers/cpu-speed.sh   # reuse a Python with torch
#   TYPES="F32 Q4_K_M" TRANSFORMERS=0 bash scripts/peers/cpu-speed.sh  # a subset, no transformers
#
# Not part of the tests or CI: it downloads the peers (PyPI only) on first use, into
# $QB_PEERS_CACHE (default ~/.cache/quantbench-peers):
#   - llama.cpp from the llama-cpp-python source package (vendor/llama.cpp), built with
#     cmake from PyPI, CPU only, native ISA: llama-bench and llama-quantize;
#   - gguf and sentencepiece (the converter's), torch and transformers, bitsandbytes.
#
# The same files for both engines, no converter between them: quantbench exports the
# model as GGUF at each precision (`export --format gguf`: the very blocks it measures)
# and llama-bench runs those files; Q4_K_M (llama.cpp's mix, mostly q4_k with some q6_k)
# is llama-quantize's from quantbench's F32 export, and quantbench runs that file as
# stored (`--precisions native`), as it runs every file here. transformers runs the
# Hugging Face export (`export --format hf`) of the same weights.
#
# What each number is:
#   quantbench    median decode tokens/s of `quantbench run --precisions native` on the
#                 file (5 timed repetitions after a warm-up; (50 - 1) / decode time, the
#                 prompt's prefill excluded);
#   llama.cpp     llama-bench tg50 (-p 0 -n 50 -r 5) on the file: 50 tokens / their time, mean;
#   transformers  (50 - 1) / (median 50-token generate - median 1-token generate).
# transformers' matching precisions: F32=fp32, F16=fp16, BF16=bf16, Q8_0=int8
# (bitsandbytes LLM.int8), Q4_0=nf4 (bitsandbytes NF4); none for Q4_K_M.
# Then a second table, bitsandbytes' own formats (BNB=0 skips it): quantbench's llm_int8,
# nf4 and fp4 (--policy linear --rest f32) against bitsandbytes' (transformers, the same
# formats on the linear layers, everything else f32, 4-bit products in f32), decode tok/s.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
THREADS=${THREADS:-2}
MODEL=${MODEL:-synthetic:gpt2}
TYPES=${TYPES:-F32 F16 BF16 Q8_0 Q4_0 Q4_K_M}
TRANSFORMERS=${TRANSFORMERS:-1}
BNB=${BNB:-1}
NAME=${MODEL#synthetic:}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-0.3.36}
mkdir -p "$CACHE"
cd "$CACHE"

# 1. Python with torch, transformers, gguf, cmake, bitsandbytes.
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x venv/bin/peers-ready ]; then
    python3 -m venv venv
    venv/bin/pip install -q torch transformers safetensors numpy
    touch venv/bin/peers-ready; chmod +x venv/bin/peers-ready
  fi
  PYTHON=$CACHE/venv/bin/python
fi
"$PYTHON" -m pip install -q cmake gguf sentencepiece bitsandbytes accelerate 2>/dev/null \
  || "$PYTHON" -m pip install -q cmake gguf sentencepiece
BIN=$(dirname "$PYTHON")

# 2. llama.cpp: source from the llama-cpp-python sdist, built here.
if [ ! -x llama.cpp/build/bin/llama-bench ]; then
  SDIST=$("$PYTHON" "$ROOT/scripts/peers/fetch_sdist.py" llama-cpp-python "$LLAMA_CPP_PYTHON" sdist)
  rm -rf llama-src && mkdir llama-src && tar -xzf "$SDIST" -C llama-src
  rm -rf llama.cpp && mv llama-src/*/vendor/llama.cpp llama.cpp
  "$BIN/cmake" -S llama.cpp -B llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
  "$BIN/cmake" --build llama.cpp/build --target llama-bench llama-quantize -j "$(nproc)"
fi

# 3. The weights, once: quantbench's synthetic model exported by quantbench itself, as
# GGUF files (one per type) and in the Hugging Face layout for transformers.
( cd "$ROOT" && cargo build --release -q )
QB=$ROOT/target/release/quantbench
M=model-$NAME
if [ ! -f "$M/gguf/$NAME-Q4_K_M.gguf" ]; then
  rm -rf "$M" && "$QB" export --model "$MODEL" --out "$M/hf"
  mkdir -p "$M/gguf"
  for t in F32 F16 BF16 Q8_0 Q4_0; do
    "$QB" export --model "$MODEL" --format gguf --precision "${t,,}" --out "$M/gguf/$NAME-$t.gguf"
  done
  llama.cpp/build/bin/llama-quantize "$M/gguf/$NAME-F32.gguf" "$M/gguf/$NAME-Q4_K_M.gguf" Q4_K_M \
    > "$M/gguf/$NAME-Q4_K_M.quantize.log" 2>&1
fi

# 4. Measure, one tool at a time (nothing else heavy should run).
OUT=runs/$NAME-$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$OUT/quantbench"
for t in $TYPES; do
  "$QB" run --model "$CACHE/$M/gguf/$NAME-$t.gguf" --precisions native \
    --prompt "Once upon a time" --new-tokens 50 --warmup 1 --repeats 5 --no-quality \
    --quiet --out "$OUT/quantbench/$t"
done
: > "$OUT/llama-bench.jsonl"
for t in $TYPES; do
  llama.cpp/build/bin/llama-bench -m "$M/gguf/$NAME-$t.gguf" -p 0 -n 50 -r 5 -t "$THREADS" -o jsonl \
    | grep '^{' >> "$OUT/llama-bench.jsonl"
done
if [ "$TRANSFORMERS" = 1 ]; then
  OMP_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/scripts/peers/transformers_generate.py" "$M/hf" \
    --device cpu --precisions fp32 fp16 bf16 int8 nf4 --threads "$THREADS" --out "$OUT/transformers.json"
fi

"$PYTHON" "$ROOT/scripts/peers/table.py" "$OUT/quantbench" "$OUT/llama-bench.jsonl" \
  "$OUT/transformers.json" | tee "$OUT/table.md"
if [ "$BNB" = 1 ]; then
  "$QB" run --model "$CACHE/$M/hf" --precisions llm_int8,nf4,fp4 --policy linear --rest f32 \
    --prompt "Once upon a time" --new-tokens 50 --warmup 1 --repeats 5 --no-quality \
    --quiet --out "$OUT/quantbench-bnb"
  OMP_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/scripts/peers/transformers_generate.py" "$M/hf" \
    --device cpu --precisions llm_int8-fp32 nf4-fp32 fp4-fp32 --threads "$THREADS" \
    --out "$OUT/transformers-bnb.json"
  echo
  "$PYTHON" "$ROOT/scripts/peers/bnb_table.py" "$OUT/quantbench-bnb/results.json" \
    "$OUT/transformers-bnb.json" | tee "$OUT/bnb-table.md"
fi
echo "(raw results under $CACHE/$OUT; llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON)"

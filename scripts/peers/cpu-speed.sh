#!/usr/bin/env bash
# Decode speed of quantbench, llama.cpp and transformers on this CPU, on the same weights,
# side by side: MODEL (default synthetic:gpt2, GPT-2 small's shapes, weights from a seed;
# or another synthetic preset, such as synthetic:llama-3.2-1b) exported in the Hugging
# Face layout, converted to GGUF for llama.cpp; greedy, "Once upon a time" (4 tokens),
# 50 new tokens, THREADS threads (default 2). Prints one table: precision,
# quantbench tok/s, llama.cpp tok/s, transformers tok/s and the ratios.
#
#   bash scripts/peers/cpu-speed.sh                 # everything (first run: ~15 min setup)
#   MODEL=synthetic:llama-3.2-1b bash scripts/peers/cpu-speed.sh   # the Llama family
#   PYTHON=/path/to/python bash scripts/peers/cpu-speed.sh   # reuse a Python with torch
#
# Not part of the tests or CI: it downloads the peers (PyPI only) on first use, into
# $QB_PEERS_CACHE (default ~/.cache/quantbench-peers):
#   - llama.cpp from the llama-cpp-python source package (vendor/llama.cpp), built with
#     cmake from PyPI, CPU only, native ISA: llama-bench and llama-quantize;
#   - gguf and sentencepiece (the converter's), torch and transformers, bitsandbytes.
#
# What each number is:
#   quantbench    median decode tokens/s of `quantbench run` (5 timed repetitions after a
#                 warm-up; (50 - 1) / decode time, the prompt's prefill excluded);
#   llama.cpp     llama-bench tg50 (-p 0 -n 50 -r 5): 50 tokens / their time, mean;
#   transformers  (50 - 1) / (median 50-token generate - median 1-token generate).
# Matching precisions: f32=fp32/f32, f16=fp16, bf16=bf16, q8_0=Q8_0/int8 (bitsandbytes
# LLM.int8), q4_0=Q4_0/nf4 (bitsandbytes NF4), q4_k=Q4_K_M (llama.cpp's mix: mostly q4_k,
# some q6_k; quantbench's q4_k is q4_k throughout). llama.cpp's models are quantized with
# --pure where a pure type exists (Q8_0, Q4_0), as quantbench's `all` policy is.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${QB_PEERS_CACHE:-$HOME/.cache/quantbench-peers}
THREADS=${THREADS:-2}
MODEL=${MODEL:-synthetic:gpt2}
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

# 3. The weights, once: quantbench's synthetic model in the HF layout, then GGUF. (A
# Llama-family preset carries GPT-2's tokenizer files, which the converter recognises;
# it pads the vocabulary to the model's.)
( cd "$ROOT" && cargo build --release -q )
QB=$ROOT/target/release/quantbench
M=model-$NAME
if [ ! -f "$M/gguf/$NAME-Q4_K_M.gguf" ]; then
  rm -rf "$M" && "$QB" export --model "$MODEL" --out "$M/hf"
  if [ "$NAME" != "${NAME#gpt2}" ] || [ "$NAME" = distilgpt2 ] || [ "$NAME" = tiny ]; then
    # The converter reads GPT-2's context length from n_ctx.
    "$PYTHON" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["n_ctx"] = c.get("n_positions", 1024); json.dump(c, open(p, "w"), indent=1)' "$M/hf/config.json"
  fi
  mkdir -p "$M/gguf"
  for t in F32 F16 BF16; do
    "$PYTHON" llama.cpp/convert_hf_to_gguf.py "$M/hf" --outtype "${t,,}" --outfile "$M/gguf/$NAME-$t.gguf"
  done
  Q=llama.cpp/build/bin/llama-quantize
  $Q --pure "$M/gguf/$NAME-F32.gguf" "$M/gguf/$NAME-Q8_0.gguf" Q8_0
  $Q --pure "$M/gguf/$NAME-F32.gguf" "$M/gguf/$NAME-Q4_0.gguf" Q4_0
  $Q "$M/gguf/$NAME-F32.gguf" "$M/gguf/$NAME-Q4_K_M.gguf" Q4_K_M
fi

# 4. Measure, one tool at a time (nothing else heavy should run).
OUT=runs/$NAME-$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$OUT"
"$QB" run --model "$CACHE/$M/hf" --precisions f32,f16,bf16,q8_0,q4_0,q4_k \
  --prompt "Once upon a time" --new-tokens 50 --warmup 1 --repeats 5 --no-quality \
  --quiet --out "$OUT/quantbench"
: > "$OUT/llama-bench.jsonl"
for t in F32 F16 BF16 Q8_0 Q4_0 Q4_K_M; do
  llama.cpp/build/bin/llama-bench -m "$M/gguf/$NAME-$t.gguf" -p 0 -n 50 -r 5 -t "$THREADS" -o jsonl \
    | grep '^{' >> "$OUT/llama-bench.jsonl"
done
OMP_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/scripts/peers/transformers_generate.py" "$M/hf" \
  --device cpu --precisions fp32 fp16 bf16 int8 nf4 --threads "$THREADS" --out "$OUT/transformers.json"

"$PYTHON" "$ROOT/scripts/peers/table.py" "$OUT/quantbench/results.json" "$OUT/llama-bench.jsonl" \
  "$OUT/transformers.json" | tee "$OUT/table.md"
echo "(raw results under $CACHE/$OUT; llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON)"

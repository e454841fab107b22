#!/usr/bin/env bash
# An adversarial pass over every command and flag of a quantbench binary: hostile but
# realistic input, each case with the exit statuses it may end with. A case is a fault
# when it ends otherwise, panics, takes longer than its limit, prints an error without
# naming what it was given, or leaves a lock or temporary file behind.
#
#   cargo build --release && bash scripts/adversarial.sh [path/to/quantbench]
#
# Prints one line per fault and a closing "N passed, M failed" line.
set -uo pipefail
QB=$(realpath "${1:-$(dirname "$0")/../target/release/quantbench}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXAMPLE=$ROOT/reports/example/results.json
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
export HF_HUB_OFFLINE=1 HF_HOME="$W/hf"
pass=0
fail=0

# check NAME "CODES" NEEDLE -- command...   (NEEDLE: text stderr+stdout must hold, or -)
check() {
  local name=$1 codes=$2 needle=$3
  shift 4
  local out code
  out=$(timeout 120 "$@" 2>&1 </dev/null | tr -d '\000'; exit "${PIPESTATUS[0]}")
  code=$?
  local bad=""
  [[ " $codes " == *" $code "* ]] || bad="exit $code, expected one of: $codes"
  [[ "$out" == *panicked* ]] && bad="$bad; panicked"
  [[ "$code" == 124 ]] && bad="$bad; timed out"
  if [[ "$needle" != "-" && "$out" != *"$needle"* ]]; then bad="$bad; output lacks '$needle'"; fi
  if [[ -n "$bad" ]]; then
    fail=$((fail + 1))
    echo "FAULT $name: $bad"
    echo "$out" | tail -3 | sed 's/^/    /'
  else
    pass=$((pass + 1))
  fi
}

# Fixtures: a tiny model, a scenario writer, results files.
"$QB" export --model synthetic:tiny --out model >/dev/null 2>&1 || { echo "export failed"; exit 1; }
sc() { printf 'name = "adv"\nmodel = "synthetic:tiny"\ndevice = "cpu"\nprecisions = ["q8_0"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n[quality]\nenabled = false\n%s\n' "$1" >"$2"; }
py() { python3 -c "$1"; }
mkres() { py "import json,sys; d=json.load(open('$EXAMPLE')); $1; json.dump(d, open('$2','w'))"; }
# Runs of one thing: the example, and re-runs of it (other start times).
mkdir -p runs/a runs/b runs2/c runs2/d
cp "$EXAMPLE" runs/a/results.json
for r in runs/b runs2/c runs2/d; do
  mkres "d['started_at']='2026-12-01T00:00:0${#r}Z'; d['finished_at']='$r'" "$r/results.json"
done
mkres "d['variants'][0]['generate_seconds'][0]=-1" neg.json
mkres "d['schema_version']='1'" sv.json
mkres "d['schema_version']=99" sv99.json
mkres "d['variants'][1]['quality']['kl_mean']=1e308" huge.json
mkres "d['variants'][1]['quality']['kl_mean']=None" null.json
mkres "d['scenario']['name']='x'*240" long.json
mkres "d['scenario']['name']='../../x/y'" pathy.json
mkres "d['variants'][0]['status']='ok'; d['variants'][0]['timing']=None" notiming.json
mkres "[v.__setitem__('policy','linear') for v in d['variants']]" other.json
printf '[1,2]' >array.json
printf '\xef\xbb\xbf' >bom.toml; sc "" tmp.toml; cat tmp.toml >>bom.toml
ln -s loop1 loop2; ln -s loop2 loop1
echo notafolder >afile
truncate -s 300M sparse.json
printf '\x00\x01garbage' >garbage.toml

T=(--model synthetic:tiny)
R=(run --quiet --no-quality)

# --- run: flags
check run-ok "0" - -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out o/ok
check run-new-tokens-0 "2" new_tokens -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --warmup 0 --repeats 1 --new-tokens 0 --out o/1
check run-new-tokens-max "2" context -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --warmup 0 --repeats 1 --new-tokens 18446744073709551615 --out o/2
check run-new-tokens-over "2" context -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --warmup 0 --repeats 1 --new-tokens 100000 --out o/3
check run-new-tokens-neg "2" - -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --warmup 0 --repeats 1 --new-tokens -1 --out o/4
check run-new-tokens-text "2" - -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --warmup 0 --repeats 1 --new-tokens fifty --out o/5
check run-repeats-0 "2" repeats -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 0 --out o/6
check run-repeats-huge "2" repeats -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 99999999999 --out o/7
check run-warmup-huge "2" warmup -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --repeats 1 --warmup 99999999999 --out o/8
check run-min-seconds-nan "2" min_seconds -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --min-seconds NaN --out o/9
check run-min-seconds-neg "2" min_seconds -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --min-seconds=-1 --out o/10
check run-min-seconds-inf "2" min_seconds -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --min-seconds inf --out o/11
check run-precisions-empty "2" - -- "$QB" "${R[@]}" --model synthetic:tiny --new-tokens 2 --warmup 0 --repeats 1 --precisions "" --out o/12
check run-precisions-bad "2" int3 -- "$QB" "${R[@]}" --model synthetic:tiny --new-tokens 2 --warmup 0 --repeats 1 --precisions f32,int3 --out o/13
check run-precisions-twice "2" twice -- "$QB" "${R[@]}" --model synthetic:tiny --new-tokens 2 --warmup 0 --repeats 1 --precisions f32,fp32 --out o/14
check run-policy-bad "2" linear -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --policy some --out o/15
check run-rest-bad "2" f16 -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --rest f8 --out o/16
check run-device-bad "2" cuda:N -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --device tpu --out o/17
check run-device-cuda "2" CUDA -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --device cuda:0 --out o/18
check run-prompt-empty "2" prompt -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --prompt "" --out o/19
check run-prompt-long "2" "longer than the model's context" -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --prompt "$(printf 'word %.0s' {1..400})" --out o/20
check run-model-missing "2" nowhere -- "$QB" "${R[@]}" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --model ./nowhere --out o/21
check run-model-devzero "2" /dev/zero -- "$QB" "${R[@]}" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --model /dev/zero --out o/22
check run-model-hf-dotdot "2" - -- "$QB" "${R[@]}" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --model hf:../../etc --out o/23
check run-model-hf-offline "2" HF_HUB_OFFLINE -- "$QB" "${R[@]}" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --model hf:a/b --out o/24
check run-model-preset "2" gpt9 -- "$QB" "${R[@]}" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --model synthetic:gpt9 --out o/25
check run-model-seed "2" seed -- "$QB" "${R[@]}" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --model synthetic:tiny@x --out o/26
check run-out-devnull "2" /dev/null -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out /dev/null/x
check run-out-file "2" "not a folder" -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out afile
check run-out-under-file "2" "not a folder" -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out afile/x
check run-out-loop "2" loops -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out loop1
check run-out-has-results "2" results.json -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out o/ok
mkdir -p o/stale && echo 4194303 >o/stale/.quantbench.lock
check run-out-stale-lock "0" "took over" -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out o/stale
check run-tokens-one "0" - -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --warmup 0 --repeats 1 --new-tokens 1 --out o/one
# --- run: scenario files
check sc-missing "2" nope.toml -- "$QB" run nope.toml --out o/30
check sc-devzero "2" "not a regular file" -- "$QB" run /dev/zero --out o/31
check sc-folder "2" folder -- "$QB" run runs --out o/32
check sc-garbage "2" garbage.toml -- "$QB" run garbage.toml --out o/33
check sc-bom "0" - -- "$QB" run bom.toml --quiet --out o/34
check sc-loop "2" loops -- "$QB" run loop1 --out o/35
for kv in "stride = 0" "stride = -1" "max_tokens = 0" "max_tokens = 1" "window = 0" "window = 1" "max_kl = -1.0" "max_kl = nan" "max_kl = inf" "min_same_top1 = 1.5" "min_same_top1 = -0.1" "min_same_top1 = nan" "bogus = 1"; do
  printf 'name = "adv"\nmodel = "synthetic:tiny"\n[quality]\n%s\n' "$kv" >q.toml
  check "sc-quality-${kv// /}" "2" "line 4" -- "$QB" run q.toml --out "o/q-${kv// /}"
done
for kv in "memory_budget_mb = 0" "memory_budget_mb = -5.0" "memory_budget_mb = nan" "repeats = 0" "new_tokens = 0" "name = \"a/b\"" "name = \"\"" "seed = -1" "precisions = []" "device = \"tpu\"" "warmup = -1"; do
  printf 'model = "synthetic:tiny"\n%s\n' "$kv" >b.toml
  grep -q '^name' b.toml || sed -i '1i name = "adv"' b.toml
  check "sc-${kv// /}" "2" "b.toml" -- "$QB" run b.toml --out "o/b-${kv// /}"
done
printf 'name = "adv"\nmodel = "synthetic:tiny"\n[quality]\nstride = 100000\n' >s.toml
check sc-stride-over-window "2" "exceeds the window" -- "$QB" run s.toml --out o/40
mkdir -p sub/q && echo "Once upon a time there was a text." >sub/q/eval.txt
sc 'text = "eval.txt"' sub/q/t.toml; sed -i 's/enabled = false/window = 8/' sub/q/t.toml
check sc-relative-text "0" - -- "$QB" run sub/q/t.toml --quiet --out o/41
printf 'name = "adv"\nmodel = "synthetic:tiny"\n[quality]\ntext = "missing.txt"\n' >m.toml
check sc-text-missing "2" missing.txt -- "$QB" run m.toml --out o/42
printf 'name = "adv"\nmodel = "synthetic:tiny"\n[quality]\ntext = "/dev/zero"\n' >z.toml
check sc-text-devzero "2" "not a regular file" -- "$QB" run z.toml --out o/43
# A quality pass that cannot run (no f32 reference for an already quantized file) leaves
# a set gate unevaluated: exit 3. (TMPDIR no longer matters: the reference is kept in
# the run's folder.)
printf 'name = "adv"\nmodel = "%s"\nprecisions = ["native"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n[quality]\nwindow = 16\nmax_tokens = 64\nmax_kl = 0.5\n' "$ROOT/tests/fixtures/gguf/llama-wide-q4_k_m.gguf" >gate.toml
check sc-gate-no-reference "3" "quality pass failed" -- "$QB" run gate.toml --quiet --out o/44
sed 's/enabled = false/window = 16\nmax_tokens = 64/' tmp.toml >q-on.toml
check sc-quality-no-tmp "0" - -- env TMPDIR="$W/none" "$QB" run q-on.toml --quiet --out o/45
# --- generate
check gen-ok "0" "new ids" -- "$QB" generate "${T[@]}" --new-tokens 2
check gen-max "2" context -- "$QB" generate "${T[@]}" --new-tokens 18446744073709551615
check gen-zero "0" - -- "$QB" generate "${T[@]}" --new-tokens 0
check gen-prompt-long "2" "longer than" -- "$QB" generate "${T[@]}" --prompt "$(printf 'word %.0s' {1..400})"
check gen-prompt-empty "2" empty -- "$QB" generate "${T[@]}" --prompt ""
check gen-precision "2" q4_k -- "$QB" generate "${T[@]}" --precision int3
check gen-dir "0" - -- "$QB" generate --model model --new-tokens 2
cp -r model m-array && printf '[1,2]' >m-array/config.json
check gen-config-array "2" "not an array" -- "$QB" generate --model m-array
cp -r model m-bom && py "open('m-bom/config.json','w',encoding='utf-8-sig').write(open('model/config.json').read())"
check gen-config-bom "0" - -- "$QB" generate --model m-bom --new-tokens 1
cp -r model m-loop && rm m-loop/model.safetensors && ln -s model.safetensors m-loop/model.safetensors
check gen-st-loop "2" loops -- "$QB" generate --model m-loop
cp -r model m-zero && rm m-zero/model.safetensors && ln -s /dev/zero m-zero/model.safetensors
check gen-st-devzero "2" "not a regular file" -- "$QB" generate --model m-zero
cp -r model m-trunc && truncate -s 1000 m-trunc/model.safetensors
check gen-st-truncated "2" model.safetensors -- "$QB" generate --model m-trunc
cp -r model m-tok && rm m-tok/tokenizer.json && ln -s /dev/zero m-tok/tokenizer.json
check gen-tokenizer-devzero "2" "not a regular file" -- "$QB" generate --model m-tok
cp -r model m-pickle && rm m-pickle/model.safetensors && touch m-pickle/pytorch_model.bin
check gen-pickle "2" safetensors -- "$QB" generate --model m-pickle
# --- export
check exp-onto-self "2" "onto itself" -- "$QB" export --model model --out model/../model --force
check exp-non-empty "2" "not empty" -- "$QB" export "${T[@]}" --out runs
check exp-under-file "2" "not a folder" -- "$QB" export "${T[@]}" --out afile/x
check exp-loop "2" loops -- "$QB" export "${T[@]}" --out loop1
check exp-new "0" - -- "$QB" export "${T[@]}" --out exp-new
check exp-force "0" - -- "$QB" export "${T[@]}" --out exp-new --force
# --- GGUF in and out
G=$ROOT/tests/fixtures/gguf
check gguf-export "0" wrote -- "$QB" export --model synthetic:tiny --format gguf --precision q4_k --out g/tiny.gguf
check gguf-export-exists "2" exists -- "$QB" export --model synthetic:tiny --format gguf --out g/tiny.gguf
check gguf-export-force "0" wrote -- "$QB" export --model synthetic:tiny --format gguf --precision q4_k --out g/tiny.gguf --force
check gguf-export-ext "2" ".gguf" -- "$QB" export --model synthetic:tiny --format gguf --out g/tiny.bin
check gguf-export-self "2" "onto itself" -- "$QB" export --model g/tiny.gguf --format gguf --precision native --out g/../g/tiny.gguf --force
check gguf-native "0" "new ids" -- "$QB" generate --model g/tiny.gguf --precision native --new-tokens 2
check gguf-requant-refused "2" "--requantize" -- "$QB" generate --model g/tiny.gguf --precision q8_0 --new-tokens 2
check gguf-requant "0" "new ids" -- "$QB" generate --model g/tiny.gguf --precision q8_0 --requantize --new-tokens 2
check gguf-native-synth "2" "not a GGUF file" -- "$QB" generate --model synthetic:tiny --precision native
ln -s /dev/zero zero.gguf
check gguf-devzero "2" "not a regular file" -- "$QB" generate --model zero.gguf
head -c 100000 "$G/gpt2-q8_0.gguf" > cut.gguf
check gguf-cut "2" truncated -- "$QB" generate --model cut.gguf --precision native
printf 'GGUF' > short.gguf
check gguf-short "2" "too short" -- "$QB" generate --model short.gguf --precision native
head -c 4096 /dev/urandom > noise.gguf
check gguf-noise "2" "noise.gguf" -- "$QB" generate --model noise.gguf --precision native
check gguf-missing "2" "nope.gguf" -- "$QB" generate --model nope.gguf --precision native
check gguf-run-q4km "0" - -- "$QB" run --model "$G/llama-wide-q4_k_m.gguf" --precisions native --new-tokens 2 --warmup 0 --repeats 1 --quiet --out o/gguf
check gguf-hub-offline "2" "not in the local Hugging Face cache" -- "$QB" generate --model hf:a/b/c.gguf --precision native
# --- report
check rep-ok "0" wrote -- "$QB" report runs/a/results.json --out rep
check rep-folder "0" wrote -- "$QB" report runs/a --out rep2
check rep-devzero "2" "not a regular file" -- "$QB" report /dev/zero
check rep-sparse "2" "bytes" -- "$QB" report sparse.json
check rep-neg "2" "generate_seconds[0]" -- "$QB" report neg.json --out rep3
check rep-sv-string "2" "whole number" -- "$QB" report sv.json --out rep4
check rep-sv-newer "2" newer -- "$QB" report sv99.json --out rep5
check rep-huge "0" - -- "$QB" report huge.json --out rep6
check rep-null "0" - -- "$QB" report null.json --out rep7
check rep-notiming "0" - -- "$QB" report notiming.json --out rep8
check rep-array "2" array.json -- "$QB" report array.json --out rep9
check rep-out-file "2" "not a folder" -- "$QB" report runs/a/results.json --out afile
check rep-out-loop "2" loops -- "$QB" report runs/a/results.json --out loop1
check rep-missing "2" nope.json -- "$QB" report nope.json
# --- compare
C=(compare runs/a runs/b)
check cmp-ok "0" comparisons -- "$QB" "${C[@]}"
check cmp-md "0" "###" -- "$QB" "${C[@]}" --format md
check cmp-json "0" rows -- "$QB" "${C[@]}" --format json
check cmp-noise-nan "2" - -- "$QB" "${C[@]}" --noise NaN
check cmp-noise-inf "2" - -- "$QB" "${C[@]}" --noise inf
check cmp-noise-neg "2" - -- "$QB" "${C[@]}" --noise=-1
check cmp-thr-nan "2" - -- "$QB" "${C[@]}" --threshold generate_seconds=NaN
check cmp-thr-metric "2" generate_seconds -- "$QB" "${C[@]}" --threshold nosuch=3
check cmp-thr-form "2" PERCENT -- "$QB" "${C[@]}" --threshold 3
check cmp-nothing-gate "1" "nothing was compared" -- "$QB" compare runs/a/results.json other.json --fail-on-regression
check cmp-one-arg "2" - -- "$QB" compare runs/a
check cmp-three-args "2" "--" -- "$QB" compare runs/a runs/b runs/a
check cmp-multi "0" "spread between runs" -- "$QB" compare runs/a runs/b -- runs2/c runs2/d
check cmp-folder-of-runs "0" "2 base" -- "$QB" compare runs -- runs2
check cmp-devzero "2" "not a regular file" -- "$QB" compare /dev/zero runs/a
check cmp-neg "2" "generate_seconds[0]" -- "$QB" compare neg.json runs/a
# --- history
mkdir -p h/1 h/2 h/3 && cp long.json h/1/results.json && cp pathy.json h/2/results.json && cp "$EXAMPLE" h/3/results.json
check hist-ok "0" wrote -- "$QB" history h --out hist
check hist-empty "2" "no readable" -- "$QB" history o/nothing --out hist2
check hist-out-file "2" "not a folder" -- "$QB" history h --out afile
check hist-out-loop "2" loops -- "$QB" history h --out loop1
# --- hardening round 3 (#36): writers, GGUF layout and metadata, compare, workloads
# [1] no writer replaces a results.json, a non-regular file or another run's outputs
check w-res-onto-results "2" "results file" -- "$QB" export-results runs/a --format jsonl --out runs/a/results.json
check w-res-intact "0" - -- cmp -s runs/a/results.json "$EXAMPLE"
cp "$EXAMPLE" renamed.json
check w-res-renamed-force "2" "results file" -- "$QB" export-results runs/a --format csv --out renamed.json --force
mkfifo fifo
check w-res-fifo "2" "not a regular file" -- "$QB" export-results runs/a --format bmf --out fifo --force
check w-res-fifo-kept "0" - -- test -p fifo
ln -s /dev/full devfull
check w-res-device-link "2" "not a regular file" -- "$QB" export-results runs/a --format bmf --out devfull --force
check w-res-device-kept "0" - -- test -c /dev/full
echo mine >mine.csv
check w-res-exists "2" "--force" -- "$QB" export-results runs/a --format csv --out mine.csv
check w-res-force "0" wrote -- "$QB" export-results runs/a --format csv --out mine.csv --force
mkdir -p gab && echo '[]' >gab/bigger-is-better.json
check w-res-gab-exists "2" "--force" -- "$QB" export-results runs/a --format github-action-benchmark --out gab
"$QB" report runs/b >/dev/null 2>&1
cp runs/b/report.md b-report.md
check w-rep-onto-other-run "2" "another run's results.json" -- "$QB" report runs/a --out runs/b --force
check w-rep-other-kept "0" - -- cmp -s runs/b/report.md b-report.md
mkdir -p loose && echo mine >loose/report.md
check w-rep-loose "2" "--force" -- "$QB" report runs/a --out loose
check w-rep-loose-force "0" wrote -- "$QB" report runs/a --out loose --force
mkdir -p o/pre && echo mine >o/pre/report.md
check w-run-out-has-report "2" "report.md" -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out o/pre
# [2] [3] [4] GGUF: alignment, layout, metadata (scripts/gguf_edit.py writes the faults)
GE() { python3 "$ROOT/scripts/gguf_edit.py" "$G/llama-gqa-llama3-f32.gguf" "$1" "${@:2}"; }
GEN=(generate --precision native --new-tokens 2 --model)
while IFS='|' read -r name needle edit; do
  # shellcheck disable=SC2086
  GE "e-$name.gguf" $edit
  check "gguf-$name" "2" "$needle" -- "$QB" "${GEN[@]}" "e-$name.gguf"
done <<'EDITS'
align0|general.alignment is 0|align 0
align48|power of two|align 48
align-u64|holds a u64|set general.alignment u64 64
align-str|holds a string|set general.alignment str 64
count-short|tensor count|count -1
count-long|e-count-long.gguf|count 1
misaligned|not a multiple of the alignment|offset blk.0.attn_k.weight 4
overlap|blk.0.attn_k.weight|offset blk.0.attn_k.weight -32
gap|gap|offset output_norm.weight 64
same-offset|the offset of tensor|offset blk.0.attn_norm.weight -100000000
dup-name|appears twice|rename blk.1.attn_q.weight blk.0.attn_q.weight
wrong-type|f16|type blk.0.attn_norm.weight 1
short-rows|blocks of|type blk.0.attn_q.weight 8 ne blk.0.attn_q.weight 0 48
blocks|declares layer 0 only|set llama.block_count u32 1
extra-layer|belongs to layer 2|rename blk.1.attn_q.weight blk.2.attn_q.weight
dup-key|appears twice|dup-key llama.context_length
eos-past-vocab|outside the vocabulary|set tokenizer.ggml.eos_token_id u32 999999
bos-past-vocab|outside the vocabulary|set tokenizer.ggml.bos_token_id u32 999999
file-type-str|general.file_type holds a string|set general.file_type str Q4_K_M
rope-nan|finite|set llama.rope.freq_base f32 nan
eps-inf|finite|set llama.attention.layer_norm_rms_epsilon f32 inf
add-bos-str|add_bos_token holds a string|set tokenizer.ggml.add_bos_token str yes
EDITS
GE e-align64.gguf align 64
check gguf-align64-runs "0" "new ids" -- "$QB" "${GEN[@]}" e-align64.gguf
GE e-rope-nan.gguf set llama.rope.freq_base f32 nan
check gguf-export-nan "2" finite -- "$QB" export --model e-rope-nan.gguf --format gguf --out g/nan.gguf
python3 "$ROOT/scripts/gguf_edit.py" "$G/spm-tiny-f32.gguf" spm.gguf
check gguf-spm-bos "0" "prompt ids:   [1, " -- "$QB" "${GEN[@]}" spm.gguf
python3 "$ROOT/scripts/gguf_edit.py" "$G/spm-tiny-f32.gguf" spm-nobos.gguf set tokenizer.ggml.add_bos_token bool false
check gguf-spm-no-bos "0" "prompt ids:   [" -- bash -c "'$QB' generate --model spm-nobos.gguf --precision native --new-tokens 2 | grep -v 'prompt ids:   \[1, '"
# [5] the known model by sha256; the fetch script with a folder in the way
mkdir -p fake-models && truncate -s 98362432 fake-models/SmolLM2-135M-Instruct.Q4_1.gguf
check known-sha "2" sha256 -- env QUANTBENCH_MODELS="$W/fake-models" "$QB" generate --model smollm2-135m-instruct --precision native
mkdir -p folder-models/SmolLM2-135M-Instruct.Q4_1.gguf
check fetch-folder "1" "in the way" -- env QUANTBENCH_MODELS="$W/folder-models" PYTHON=/bin/false bash "$ROOT/scripts/fetch-models.sh"
# [6] compare: different models, a run twice, mixed sides
mkres "d['model']['spec']='synthetic:tiny-llama'; d['model']['architecture']='llama'; d['started_at']='x'" llama.json
mkres "d['environment']['cpu_model']='Another CPU'; d['started_at']='y'" othercpu.json
check cmp-models "2" "measured different things" -- "$QB" compare runs/a llama.json
check cmp-models-allowed "0" "differs" -- "$QB" compare runs/a llama.json --allow-different
check cmp-same-file "2" "the same file" -- "$QB" compare runs/a runs/a
cp "$EXAMPLE" copy.json
check cmp-copy "2" "copies of one run" -- "$QB" compare runs/a copy.json
check cmp-side-mixes "2" "base side mixes" -- "$QB" compare runs/a llama.json --allow-different -- runs2/c runs2/d
check cmp-side-twice "2" "the same file" -- "$QB" compare runs/a runs/b -- runs2/c runs2/c
check cmp-mixed-cpus "0" "Another CPU" -- "$QB" compare runs/a runs/b -- runs2/c othercpu.json
# [7] [8] load-time input errors in run: exit 2 before anything runs
GE e-missing.gguf rename blk.1.ffn_up.weight blk.1.ffn_upx.weight
check run-missing-tensor "2" "blk.1.ffn_up.weight" -- "$QB" "${R[@]}" --model e-missing.gguf --precisions native --new-tokens 2 --warmup 0 --repeats 1 --out o/r1
check run-missing-no-results "1" - -- test -e o/r1/results.json
check run-requant-refused "2" "--requantize" -- "$QB" "${R[@]}" --model "$G/llama-wide-q4_k_m.gguf" --precisions q8_0 --new-tokens 2 --warmup 0 --repeats 1 --out o/r2
check run-native-synthetic "2" "not a GGUF file" -- "$QB" "${R[@]}" --model synthetic:tiny --precisions native --out o/r3
check run-native-linear "2" "policy" -- "$QB" "${R[@]}" --model "$G/llama-gqa-llama3-q8_0.gguf" --precisions native --policy linear --out o/r4
check gen-native-linear "2" "policy" -- "$QB" generate --model "$G/llama-gqa-llama3-q8_0.gguf" --precision native --policy linear
# [9] workloads and ranges
while IFS='|' read -r name needle body; do
  sc "$(printf '%b' "$body")" "wl-$name.toml"
  check "sc-$name" "2" "$needle" -- "$QB" run "wl-$name.toml" --out "o/wl-$name"
done <<'BODIES'
workload-dup|comes out of the workload twice|[[workload]]\nprompt_tokens = [8]\nnew_tokens = [0]\n[[workload]]\nprompt_tokens = [8]\nnew_tokens = [0]
workload-empty|asks for no test|[[workload]]\nprompt_tokens = []
workload-product|tests per variant|[workload]\nprompt_tokens = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\nnew_tokens = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\ndepth = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]
BODIES
printf 'name = "adv"\nmodels = []\n' >models-empty.toml
check sc-models-empty "2" "models is empty" -- "$QB" run models-empty.toml --out o/me
printf 'name = "adv"\nmodel = "synthetic:tiny"\nmodels = ["synthetic:tiny-llama"]\n' >models-both.toml
check sc-model-and-models "2" "both given" -- "$QB" run models-both.toml --out o/mb
check run-min-seconds-huge "2" min_seconds -- "$QB" "${R[@]}" --model synthetic:tiny --precisions q8_0 --min-seconds 1e300 --out o/ms
check env-rayon-huge "2" RAYON_NUM_THREADS -- env RAYON_NUM_THREADS=100000 "$QB" list
check env-rayon-text "2" RAYON_NUM_THREADS -- env RAYON_NUM_THREADS=many "$QB" list
printf 'name = "adv"\nmodel = "synthetic:tiny"\ndevice = "cpu"\nprecisions = ["q8_0"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\nmemory_budget_mb = 150\n[quality]\nenabled = false\n[workload]\nprompt_tokens = [0]\nnew_tokens = [2]\ndepth = [0, 200]\nbatch = [1, 256]\n' >kv.toml
check sc-kv-over-budget "0" - -- "$QB" run kv.toml --quiet --out o/kv
check sc-kv-skipped "0" - -- python3 -c "import json,sys; t=[t for t in json.load(open('o/kv/results.json'))['variants'][0]['tests'] if t['name']=='tg2 @ d200 x256'][0]; sys.exit(0 if t['status']=='skipped' and 'KV cache' in t['error'] else 1)"
# [10] the quality pass
printf 'name = "adv"\nmodel = "synthetic:tiny"\n[quality]\nscoring = "second-half"\nwindow = 2\n' >w2.toml
check sc-window-2 "2" "at least 3" -- "$QB" run w2.toml --out o/w2
sc "max_kl = 0.5" nq.toml
check run-no-quality-gate "0" - -- "$QB" run nq.toml --quiet --out o/nq
check run-no-quality-csv "0" - -- grep -q "not evaluated" o/nq/results.csv
# [11] workload and environment figures read back
SWEEP=$ROOT/reports/context-sweep-example/synthetic-gpt2/results.json
mksweep() { py "import json; d=json.load(open('$SWEEP')); t=d['variants'][0]['tests'][0]; $1; json.dump(d, open('$2','w'))"; }
mksweep "t['decode_tokens_per_second']['median']=-3" sw-median.json
mksweep "t['bandwidth_fraction']=-2" sw-fraction.json
mksweep "d['environment']['memory_bandwidth']['read_gbps']=0" sw-read.json
mksweep "t['batch']=0" sw-batch.json
mksweep "t['decode_step_seconds']=[]" sw-steps.json
for f in median fraction read batch steps; do
  check "read-sweep-$f" "2" "sw-$f.json" -- "$QB" report "sw-$f.json" --out "o/sw-$f"
done
# [12] history through a symbolic-link loop
mkdir -p hl/a && cp "$EXAMPLE" hl/a/results.json && ln -s "$W/hl" hl/a/loop && ln -s "$W/hl/a" hl/again
check hist-loop "0" "from 1 files" -- "$QB" history hl --out hist-loop
# [13] exports: folders, modes, leftovers
check exp-hf-refused-no-folder "2" rope -- "$QB" export --model "$G/llama-gqa-llama3-f32.gguf" --out hf-refused
check exp-hf-refused-gone "1" - -- test -e hf-refused
mkdir -p folder.gguf
check gguf-out-folder "2" "is a folder" -- "$QB" export --model synthetic:gpt2 --format gguf --out folder.gguf --force
check gguf-mode "0" - -- bash -c "umask 022 && '$QB' export --model synthetic:tiny --format gguf --out g/mode.gguf >/dev/null && test \$(stat -c %a g/mode.gguf) = 644"
echo half >g/.quantbench-export-2147483632-0.part
check gguf-stale-part "0" - -- bash -c "'$QB' export --model synthetic:tiny --format gguf --out g/next.gguf >/dev/null && test ! -e g/.quantbench-export-2147483632-0.part"
check gguf-write-fails-named "1" "File too large" -- bash -c "ulimit -f 1024; trap '' XFSZ; '$QB' export --model synthetic:tiny --format gguf --out g/big.gguf"
# [14] settings that are not UTF-8
check env-kernels-bytes "2" "UTF-8" -- env QUANTBENCH_KERNELS=$'\xff' "$QB" list
check env-level-bytes "2" "UTF-8" -- env QUANTBENCH_LEVEL=$'avx\xff' "$QB" list

# --- pipes closed early, and help texts
check pipe-list "0" - -- bash -c "'$QB' list | head -1 >/dev/null; exit \${PIPESTATUS[0]}"
check pipe-compare "0" - -- bash -c "'$QB' compare runs/a runs/b | head -1 >/dev/null; exit \${PIPESTATUS[0]}"
check pipe-generate "0" - -- bash -c "'$QB' generate --model synthetic:tiny --new-tokens 2 | head -c 5 >/dev/null; exit \${PIPESTATUS[0]}"
for c in run report generate export compare history list; do
  # Every flag line of --help has a description after it.
  check "help-$c" "0" - -- bash -c "'$QB' $c --help | awk '/^  -/ && NF < 2 { bad=1 } /^  --[a-z-]+( <[A-Z_]+>)?\$/ { bad=1 } END { exit bad }'"
done
# --- nothing left behind
left=$(find "$W/o" "$W/rep"* "$W/exp-new" "$W/g" -name '*.gguf.part' -o -name '.quantbench.lock' -o -name '.tmp-*' -o -name '.quantbench-export-*' -o -name '.quantbench-reference-*' 2>/dev/null | head -5)
if [[ -n "$left" ]]; then fail=$((fail + 1)); echo "FAULT leftovers: $left"; else pass=$((pass + 1)); fi

echo "adversarial: $pass passed, $fail failed"
[[ $fail == 0 ]]

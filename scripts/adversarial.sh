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
mkdir -p runs/a runs/b
cp "$EXAMPLE" runs/a/results.json
cp "$EXAMPLE" runs/b/results.json
py() { python3 -c "$1"; }
mkres() { py "import json,sys; d=json.load(open('$EXAMPLE')); $1; json.dump(d, open('$2','w'))"; }
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
sc "max_kl = 0.5" gate.toml; sed -i 's/enabled = false/window = 16\nmax_tokens = 64/' gate.toml
check sc-gate-no-tmp "3" "quality pass failed" -- env TMPDIR="$W/none" "$QB" run gate.toml --quiet --out o/44
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
check cmp-multi "0" "spread between runs" -- "$QB" compare runs/a runs/b -- runs/a runs/b
check cmp-folder-of-runs "0" "2 base" -- "$QB" compare runs -- runs
check cmp-devzero "2" "not a regular file" -- "$QB" compare /dev/zero runs/a
check cmp-neg "2" "generate_seconds[0]" -- "$QB" compare neg.json runs/a
# --- history
mkdir -p h/1 h/2 h/3 && cp long.json h/1/results.json && cp pathy.json h/2/results.json && cp "$EXAMPLE" h/3/results.json
check hist-ok "0" wrote -- "$QB" history h --out hist
check hist-empty "2" "no readable" -- "$QB" history o/nothing --out hist2
check hist-out-file "2" "not a folder" -- "$QB" history h --out afile
check hist-out-loop "2" loops -- "$QB" history h --out loop1
# --- pipes closed early, and help texts
check pipe-list "0" - -- bash -c "'$QB' list | head -1 >/dev/null; exit \${PIPESTATUS[0]}"
check pipe-compare "0" - -- bash -c "'$QB' compare runs/a runs/b | head -1 >/dev/null; exit \${PIPESTATUS[0]}"
check pipe-generate "0" - -- bash -c "'$QB' generate --model synthetic:tiny --new-tokens 2 | head -c 5 >/dev/null; exit \${PIPESTATUS[0]}"
for c in run report generate export compare history list; do
  # Every flag line of --help has a description after it.
  check "help-$c" "0" - -- bash -c "'$QB' $c --help | awk '/^  -/ && NF < 2 { bad=1 } /^  --[a-z-]+( <[A-Z_]+>)?\$/ { bad=1 } END { exit bad }'"
done
# --- nothing left behind
left=$(find "$W/o" "$W/rep"* "$W/exp-new" "$W/g" -name '*.gguf.part' -o -name '.quantbench.lock' -o -name '.tmp-*' -o -name '.quantbench-export-*' 2>/dev/null | head -5)
if [[ -n "$left" ]]; then fail=$((fail + 1)); echo "FAULT leftovers: $left"; else pass=$((pass + 1)); fi

echo "adversarial: $pass passed, $fail failed"
[[ $fail == 0 ]]

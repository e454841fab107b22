#!/usr/bin/env bash
# How many runs per side does `quantbench compare` need on this machine for a verdict to
# be trusted? Runs one build N times, one process after another (the machine otherwise
# idle), then draws same-build comparisons of k runs against k other runs and counts how
# many come out "same" on every metric. The issue's bar: at least 19 of 20.
#
#   cargo build --release
#   bash scripts/compare-noise.sh [RUNS=40] [OUT=reports/compare-noise]
#
# The draws for k > 1 reuse runs from one pool (seeded random disjoint groups), so they
# are not independent of each other; the k = 1 draws are disjoint consecutive pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
OUT=${2:-reports/compare-noise}
QB=target/release/quantbench
mkdir -p "$OUT"
for i in $(seq -w 1 "$N"); do
  [[ -f "$OUT/run-$i/results.json" ]] && continue
  "$QB" run --model synthetic:gpt2 --precisions f32,q8_0,q4_0 --no-quality --quiet \
    --out "$OUT/run-$i"
done
python3 - "$QB" "$OUT" "$N" <<'EOF'
import json, random, subprocess, sys
qb, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [f"{out}/run-{i:0{len(str(n))}d}/results.json" for i in range(1, n + 1)]
def verdicts(base, new):
    args = [qb, "compare", "--format", "json", *base, "--", *new] if len(base) > 1 else [qb, "compare", "--format", "json", base[0], new[0]]
    c = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return [(r["variant"], r["metric"], r["verdict"], r["change_percent"]) for r in c["rows"]]
rng = random.Random(19)
DRAWS = 60
print(f"{n} runs of one build; same-build comparisons that came out 'same' on every metric"
      f" (k = 1: 20 disjoint pairs; k > 1: {DRAWS} seeded draws of disjoint groups from the pool):")
for k in [1, 2, 3, 4, 5, 6]:
    if 2 * k > n:
        break
    draws = []
    for d in range(20 if k == 1 else DRAWS):
        if k == 1 and 2 * 20 <= n:
            base, new = [runs[2 * d]], [runs[2 * d + 1]]
        else:
            pick = rng.sample(runs, 2 * k)
            base, new = pick[:k], pick[k:]
        draws.append(verdicts(base, new))
    clean = sum(all(v == "same" for _, _, v, _ in rows) for rows in draws)
    wrong = [f"{var} {m} {v} {c:+.1f}%" for rows in draws for var, m, v, c in rows if v != "same"]
    print(f"  k={k} run(s) per side: {clean}/{len(draws)} all same ({clean / len(draws) * 20:.1f} of 20);"
          f" verdicts that were not 'same': {len(wrong)}"
          + (f" (e.g. {'; '.join(wrong[:3])})" if wrong else ""))
# Power: the same draws with every f32 time of the new side made 10% / 20% longer.
import os, tempfile
tmp = tempfile.mkdtemp()
def slowed(path, factor, tag):
    d = json.load(open(path))
    for v in d["variants"]:
        if v["precision"] == "f32":
            v["generate_seconds"] = [x * factor for x in v["generate_seconds"]]
            v["prefill_seconds"] = [x * factor for x in v["prefill_seconds"]]
            v["decode_step_seconds"] = [[x * factor for x in r] for r in v["decode_step_seconds"]]
            v["timing"] = None
    out = os.path.join(tmp, tag + "-" + path.replace("/", "_"))
    json.dump(d, open(out, "w"))
    return out
for factor in [1.1, 1.2]:
    for k in [3, 5]:
        found = 0
        for d in range(20):
            pick = rng.sample(runs, 2 * k)
            base, new = pick[:k], [slowed(p, factor, f"{factor}-{d}") for p in pick[k:]]
            rows = verdicts(base, new)
            found += any(var == "f32" and m == "generate_seconds" and v == "slower" for var, m, v, _ in rows)
        print(f"  f32 made {round((factor - 1) * 100)}% slower, k={k}: found 'slower' in {found}/20")
# The spread between runs, per variant: median decode tok/s of each run.
for var in ["f32", "q8_0", "q4_0"]:
    xs = []
    for r in runs:
        d = json.load(open(r))
        v = next(v for v in d["variants"] if v["precision"] == var)
        xs.append(v["timing"]["generate_seconds"]["median"])
    xs.sort()
    print(f"  {var}: median generate time over runs {xs[len(xs)//2]:.4f} s, min {xs[0]:.4f}, max {xs[-1]:.4f} ({(xs[-1]-xs[0])/xs[len(xs)//2]*100:.1f}% range)")
EOF

"""Join quantbench's llama-bench-shaped rows (`quantbench export-results --format jsonl`)
with llama-bench's on (type, n_prompt, n_gen, n_depth) and print one Markdown table:
tokens/s of each tool, the ratio, and for decode tests the weight-streaming rate each
reaches with its fraction of the bandwidth quantbench measured in the same run.

quantbench's tokens/s: prefill_tokens_per_second_median for a prompt-only test,
decode_tokens_per_second_median for a generation-only
one (medians); llama-bench's avg_ts (mean). The streaming rate of llama.cpp is the same
bytes per decode step (quantbench's record: weights a step reads; KV cache reads are not
counted on either side) times its tokens/s.

With several rounds (speed.sh's ROUNDS: each test's rows appear once per round, in round
order on both sides) a cell is the median of its rounds on each side, the ratio that of
the two medians, and the ratio of each round (its quantbench row against its llama-bench
row, run back to back) is listed beside it, so the machine's phases show.

usage: speed_table.py QUANTBENCH.jsonl LLAMA_BENCH.jsonl "F32 Q4_0 ..."
"""
import json
import statistics
import sys
from collections import Counter


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def main():
    qb, lb, types = rows(sys.argv[1]), rows(sys.argv[2]), sys.argv[3].split()
    # speed.sh runs every test once a round: the rounds are the most rows one test has.
    rounds = max(Counter((r["model_filename"], r["n_prompt"], r["n_gen"], r["n_depth"])
                         for r in lb).values(), default=1)
    by_round = " | ratio by round" if rounds > 1 else ""
    print("| file | test | quantbench tok/s | llama.cpp tok/s | ratio "
          f"| quantbench GB/s (of measured) | llama.cpp GB/s (of measured){by_round} |")
    print("|---|---|---:|---:|---:|---:|---:|" + ("---|" if rounds > 1 else ""))
    below = []
    measured = []
    for t in types:
        tests = sorted(
            {(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in lb
             if r["model_filename"].endswith(f"-{t}.gguf")},
            key=lambda k: (k[1] == 0, k[2]),
        )
        for key in tests:
            theirs = [r for r in lb if r["model_filename"].endswith(f"-{t}.gguf")
                      and (r["n_prompt"], r["n_gen"], r["n_depth"]) == key]
            mine = [q for q in qb if q["precision"] == t and q["n_sequences"] == 1
                    and (q["n_prompt"], q["n_gen"], q["n_depth"]) == key]
            if not theirs or not mine:
                continue
            def speed(q):
                # the names since #37, then the older prefill_ts / decode_ts
                which = "prefill" if key[1] == 0 else "decode"
                return q.get(f"{which}_tokens_per_second_median", q.get(f"{which}_ts"))

            ours = statistics.median(speed(q) for q in mine)
            their = statistics.median(r["avg_ts"] for r in theirs)
            name = f"pp{key[0]}" if key[1] == 0 else f"tg{key[1]}"
            if key[2]:
                name += f" @ d{key[2]}"
            ratio = ours / their
            bw_q = bw_l = "-"
            # Each round's quantbench row with the llama-bench row run right after it.
            pairs = [(q, r) for q, r in zip(mine, theirs)
                     if q.get("decode_bandwidth_gbps") and q.get("bandwidth_fraction")]
            runs = [q for q, _ in pairs]
            if key[1] and runs:
                # Each quantbench run measures the bandwidth at its start: a run's
                # fractions are against that run's figure, for both tools (medians over
                # the rounds).
                yardsticks = [q["decode_bandwidth_gbps"] / q["bandwidth_fraction"] for q in runs]
                measured.extend(yardsticks)
                gbps = statistics.median(q["decode_bandwidth_gbps"] for q in runs)
                frac = statistics.median(q["bandwidth_fraction"] for q in runs)
                bw_q = f"{gbps:.1f} ({100 * frac:.0f}%)"
                per_token = statistics.median(q["decode_bandwidth_gbps"] / speed(q) for q in runs)
                theirs_gbps = per_token * their
                their_frac = statistics.median(
                    per_token * r["avg_ts"] / y for (_, r), y in zip(pairs, yardsticks))
                bw_l = f"{theirs_gbps:.1f} ({100 * their_frac:.0f}%)"
            line = f"| {t} | {name} | {ours:.1f} | {their:.1f} | {ratio:.2f}x | {bw_q} | {bw_l} |"
            if rounds > 1:
                line += " " + ", ".join(
                    f"{speed(q) / r['avg_ts']:.2f}" for q, r in zip(mine, theirs)) + " |"
            print(line)
            if ratio < 1.0:
                below.append(f"{t} {name} {ratio:.2f}x")
    if measured:
        print(f"\nmeasured read bandwidth (quantbench, all threads, at the start of each decode run; "
              f"each row's fractions against its own run's): {min(measured):.1f} to {max(measured):.1f} GB/s")
    print("cells below 1.00x: " + (", ".join(below) if below else "none"))


if __name__ == "__main__":
    main()

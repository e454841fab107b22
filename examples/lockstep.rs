//! quantbench against llama.cpp in one timeline: repetitions of one llama-bench test
//! (`tg50`, `tg50@d512`, `pp512`, ...) on the same GGUF file, quantbench's and
//! llama.cpp's in turn (llama.cpp's in a child process, `scripts/peers/llama-step.cpp`),
//! so that this VM's swings between minutes — which move separate runs by ±30% — reach
//! both engines alike. Each round's ratio compares two repetitions a few hundred
//! milliseconds apart; the median ratio over the rounds is the comparison.
//!
//!     cargo run --release --example lockstep -- MODEL.gguf TEST ROUNDS LLAMA_STEP [THREADS]
//!
//! `scripts/peers/lockstep.sh` builds `llama-step` against the llama.cpp that
//! `cpu-speed.sh` builds and runs this over the speed script's files and tests.
//!
//! Both engines' thread pools spin for a while after their work (llama.cpp's polls,
//! quantbench's barrier pool), and on a 2-core machine a spinning pool takes cycles from
//! the other engine's next repetition (ggml's OpenMP spin cost quantbench's next pass
//! about 15% in `examples/streaming`): each repetition starts 100 ms after the last one
//! ended. quantbench's repetition is the runner's (`workload::run_once` on a fork of
//! the filled context, greedy tokens); llama.cpp's is llama-bench's (the depth's state
//! restored, untimed; random tokens). One warm-up each before the first round.
//!
//! For decode tests it also prints the weight-streaming rate of each (the bytes one
//! quantbench decode step reads, every weight matrix once, times tokens/s — both engines
//! read the same file's bytes) and its fraction of the read bandwidth: a STREAM-style
//! read of 1 GiB on every thread (`bandwidth::ReadProbe`, the best of 2) in every round
//! right before its pair of repetitions, each repetition's rate over its own round's
//! reading, the median of those fractions printed (a single reading before the first
//! round put whole cells above 100% when the VM's phase changed after it).

use std::time::Duration;

#[path = "common/timed_child.rs"]
mod timed_child;

use candle_core::Device;
use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Precision, Quantization};
use quantbench::run::workload::{self, Test};

#[global_allocator]
static ALLOC: quantbench::kernel::pages::WeightPages = quantbench::kernel::pages::WeightPages;

/// The pause before each repetition, so that the other engine's pool has gone idle.
const PAUSE: Duration = Duration::from_millis(100);

fn main() {
    quantbench::probe::process::configure_allocator();
    quantbench::kernel::configure_threads();
    let (args, test, rounds, threads) = arguments();
    let spec: ModelSpec = args[0].parse().unwrap_or_else(|e| {
        eprintln!("{}: {e}", args[0]);
        std::process::exit(2);
    });
    let source = model::resolve(&spec).unwrap_or_else(|e| {
        eprintln!("{}: {e:#}", args[0]);
        std::process::exit(2);
    });
    let loaded = model::load(&source, Quantization::new(Precision::Native), &Device::Cpu)
        .unwrap_or_else(|e| {
            eprintln!("{}: {e:#}", args[0]);
            std::process::exit(1);
        });
    if let Some(why) = test.does_not_fit(loaded.config().context_length()) {
        eprintln!("{}: {} {why}", args[0], test.name());
        std::process::exit(2);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    let base = workload::fill(&loaded, test.depth).expect("filling the context");
    let filled = workload::context_for(&loaded, base.as_ref(), &test).expect("the test's context");
    let ours = || {
        pool.install(|| {
            let r =
                workload::run_once(&loaded, &test, filled.as_ref()).expect("quantbench repetition");
            r.prefill_seconds.unwrap_or(0.0) + r.decode_step_seconds.iter().sum::<f64>()
        })
    };

    // The machine's read bandwidth, on the weights' pages: the yardstick for the
    // weight-streaming rate of decode (the bytes one step reads times tokens/s), read
    // again in every round beside its pair of repetitions (a decode test only).
    let probe = (test.prompt_tokens == 0).then(|| {
        quantbench::run::bandwidth::ReadProbe::new(quantbench::run::bandwidth::BUFFER_BYTES)
    });
    let streamed = loaded.model.streamed_bytes_per_step() as f64;
    // llama-step MODEL PROMPT GEN DEPTH THREADS: one llama-bench repetition per request.
    let peer_args =
        [test.prompt_tokens, test.new_tokens, test.depth, threads].map(|n| n.to_string());
    let mut peer = timed_child::TimedChild::start(
        &args[3],
        &[&[args[0].clone()][..], &peer_args[..]].concat(),
        "scripts/peers/lockstep.sh",
    );
    ours();
    let name = test.name();
    // A test's tokens as llama-bench counts them: the prompt's and the generated ones.
    let tokens = (test.prompt_tokens + test.new_tokens) as f64;
    let (mut q, mut l, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bws, mut q_frac, mut l_frac) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let bw = probe.as_ref().map(|p| p.read_gbps(2));
        // Alternate which engine goes first, so neither always follows the other.
        let (a, b) = if round % 2 == 0 {
            std::thread::sleep(PAUSE);
            let a = ours();
            std::thread::sleep(PAUSE);
            (a, peer.seconds(""))
        } else {
            std::thread::sleep(PAUSE);
            let b = peer.seconds("");
            std::thread::sleep(PAUSE);
            (ours(), b)
        };
        q.push(tokens / a);
        l.push(tokens / b);
        ratios.push(b / a);
        if let Some(bw) = bw {
            bws.push(bw);
            q_frac.push(streamed * tokens / a / 1e9 / bw);
            l_frac.push(streamed * tokens / b / 1e9 / bw);
        }
        println!(
            "round {}: quantbench {:.1} tok/s, llama.cpp {:.1} tok/s, ratio {:.3}",
            round + 1,
            tokens / a,
            tokens / b,
            b / a
        );
    }
    let median = |v: Vec<f64>| quantbench::analysis::stats::median(&v);
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let above = ratios.iter().filter(|&&r| r >= 1.0).count();
    let (q, l, r) = (median(q), median(l), median(ratios));
    // Decode only (a prompt's rate is not the weights' streaming rate): GB/s at the
    // median tokens/s, and the median of the rounds' fractions of their own bandwidth.
    let rate = |tps: f64, fractions: &[f64]| {
        if fractions.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.1} ({:.0}%)",
                streamed * tps / 1e9,
                100.0 * quantbench::analysis::stats::median(fractions)
            )
        }
    };
    let bw = if bws.is_empty() {
        "-".to_string()
    } else {
        format!("{:.1}", quantbench::analysis::stats::median(&bws))
    };
    println!(
        "{} {name}: quantbench {q:.1} tok/s, llama.cpp {l:.1} tok/s (medians), ratio median {r:.3}, range {lo:.3}-{hi:.3}, {above} of {rounds} rounds >= 1.00; GB/s (fraction: median over the rounds of the read bandwidth measured in each, median {bw}): quantbench {}, llama.cpp {}",
        args[0],
        rate(q, &q_frac),
        rate(l, &l_frac),
    );
    // One row for lockstep.sh's table.
    let file = std::path::Path::new(&args[0])
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "row| {file} | {name} | {q:.1} | {l:.1} | {r:.3}x | {lo:.2}-{hi:.2} | {above} of {rounds} | {} | {} |",
        rate(q, &q_frac),
        rate(l, &l_frac)
    );
}

/// MODEL TEST ROUNDS LLAMA_STEP [THREADS], checked; a bad one ends the program with
/// status 2 and says why.
fn arguments() -> (Vec<String>, Test, usize, usize) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: lockstep MODEL.gguf TEST ROUNDS LLAMA_STEP [THREADS]   (TEST: tg50, tg50@d512, pp512)");
        std::process::exit(2);
    }
    let test = parse_test(&args[1]).unwrap_or_else(|| {
        eprintln!(
            "test {:?}: ppN, tgN or ppN+tgM, optionally @dD (tg50@d512)",
            args[1]
        );
        std::process::exit(2);
    });
    let rounds: usize = args[2].parse().ok().filter(|&r| r > 0).unwrap_or_else(|| {
        eprintln!("rounds {:?}: a positive count", args[2]);
        std::process::exit(2);
    });
    let threads = match args.get(4) {
        None => candle_core::utils::get_num_threads(),
        Some(t) => t
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| {
                eprintln!("threads {t:?}: a positive count");
                std::process::exit(2);
            }),
    };
    (args, test, rounds, threads)
}

/// `pp512`, `tg50`, `pp512+tg32`, each optionally `@d512`.
fn parse_test(s: &str) -> Option<Test> {
    let (kind, depth) = match s.split_once("@d") {
        Some((k, d)) => (k, d.parse().ok()?),
        None => (s, 0),
    };
    let (mut prompt, mut gen) = (0, 0);
    for part in kind.split('+') {
        if let Some(n) = part.strip_prefix("pp") {
            prompt = n.parse().ok()?;
        } else if let Some(n) = part.strip_prefix("tg") {
            gen = n.parse().ok()?;
        } else {
            return None;
        }
    }
    (prompt + gen > 0).then_some(Test {
        prompt_tokens: prompt,
        new_tokens: gen,
        depth,
        batch: 1,
        threads: None,
    })
}

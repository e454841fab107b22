//! A small soak, every precision in one process: no growth of process memory after
//! cleanup from the first variant to the last, and the same tokens in every repetition
//! and on every run. (The full soak, all-precisions on synthetic:gpt2 with 20 repeats,
//! is `quantbench run scenarios/all-precisions.toml --repeats 20 --no-quality`.)

mod common;

use quantbench::record::{Moment, RunRecord};

fn run(dir: &std::path::Path, name: &str) -> RunRecord {
    let scenario = dir.join("soak.toml");
    std::fs::write(
        &scenario,
        r#"
name = "soak"
model = "synthetic:tiny"
device = "cpu"
precisions = ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_1", "q5_0", "q5_k", "q4_1", "q4_0", "q4_k", "q3_k", "q2_k"]
new_tokens = 6
warmup = 1
repeats = 4
[quality]
enabled = false
"#,
    )
    .unwrap();
    let out = dir.join(name);
    let (code, _, stderr) = common::quantbench_in(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ],
        dir,
    );
    assert_eq!(code, 0, "{stderr}");
    quantbench::report::read_results(&out.join("results.json")).unwrap()
}

#[test]
fn memory_does_not_grow_and_tokens_never_change() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run(tmp.path(), "a");
    let b = run(tmp.path(), "b");
    let f32_bytes = a.variants[0].weights_bytes.unwrap() as f64;
    let rss = |r: &RunRecord, i: usize| {
        r.variants[i]
            .memory_at(Moment::AfterCleanup, "process_rss_bytes")
            .unwrap() as f64
    };
    let (first, last) = (rss(&a, 0), rss(&a, a.variants.len() - 1));
    assert!(
        last - first <= 0.05 * f32_bytes,
        "after-cleanup RSS grew from {first} to {last} over {} variants",
        a.variants.len()
    );
    for (va, vb) in a.variants.iter().zip(&b.variants) {
        assert_eq!(
            va.tokens_identical_across_repetitions,
            Some(true),
            "{}",
            va.precision
        );
        assert_eq!(
            va.generated_token_ids, vb.generated_token_ids,
            "{} differs between runs",
            va.precision
        );
        assert_eq!(va.weights_bytes, vb.weights_bytes);
    }
}

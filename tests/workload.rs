//! Workload tests: batches give each sequence what it gets alone, a forked context gives
//! what one long pass gives, and a run's test rows hold exactly the tokens, positions and
//! KV-cache bytes the shapes say.

use candle_core::Device;
use quantbench::model::{self, Cache};
use quantbench::probe::Probes;
use quantbench::run::runner::{self, Silent};
use quantbench::run::workload::{self, Test, TestStatus};
use quantbench::{Precision, Quantization, Scenario};

mod common;

fn load(spec: &str, p: Precision) -> quantbench::LoadedModel {
    let source = model::resolve(&spec.parse().unwrap()).unwrap();
    model::load(&source, Quantization::new(p), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of `batch` run together, then of each sequence alone; greedy continuations
/// of 4 tokens both ways.
fn batch_equals_alone(spec: &str, p: Precision) {
    let m = load(spec, p);
    let cfg = m.config();
    let seqs: Vec<Vec<u32>> = (0..3)
        .map(|s| workload::synthetic_tokens(cfg.vocab_size(), s, 0, 7))
        .collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let mut cache = Cache::new(cfg, 16);
    let together = m.model.forward_last_batch(&refs, &mut cache).unwrap();
    let mut next: Vec<u32> = together.argmax(1).unwrap().to_vec1().unwrap();
    let together: Vec<Vec<f32>> = together.to_vec2().unwrap();
    let mut batch_tokens = vec![next.clone()];
    for _ in 0..3 {
        let inputs: Vec<[u32; 1]> = next.iter().map(|&x| [x]).collect();
        let r: Vec<&[u32]> = inputs.iter().map(|x| x.as_slice()).collect();
        let l = m.model.forward_last_batch(&r, &mut cache).unwrap();
        next = l.argmax(1).unwrap().to_vec1().unwrap();
        batch_tokens.push(next.clone());
    }
    for (s, ids) in seqs.iter().enumerate() {
        let mut c = Cache::new(cfg, 16);
        let alone: Vec<f32> = m
            .model
            .forward_last(ids, &mut c)
            .unwrap()
            .to_vec1()
            .unwrap();
        let d = max_abs_diff(&alone, &together[s]);
        assert!(
            d < 1e-4,
            "{spec} {p}: sequence {s} differs by {d} in a batch"
        );
        let g = quantbench::generate(
            &m,
            ids,
            quantbench::GenerateOptions::exactly(4),
            &mut quantbench::run::generate::NoObserver,
        )
        .unwrap();
        let in_batch: Vec<u32> = batch_tokens.iter().map(|step| step[s]).collect();
        assert_eq!(g.new_ids, in_batch, "{spec} {p}: sequence {s}'s tokens");
    }
}

#[test]
fn a_batch_gives_each_sequence_what_it_gets_alone() {
    for spec in ["synthetic:tiny", "synthetic:tiny-llama"] {
        for p in [Precision::F32, Precision::Q8_0, Precision::Q4K] {
            batch_equals_alone(spec, p);
        }
    }
}

#[test]
fn a_copied_and_forked_context_gives_what_one_pass_gives_every_time() {
    for spec in ["synthetic:tiny", "synthetic:tiny-llama"] {
        let m = load(spec, Precision::F32);
        let cfg = m.config();
        let base = workload::fill(&m, 40).unwrap();
        assert_eq!(base.positions(), 40);
        // A deep test, then a shallower one from the same base: each must see exactly
        // its own prefix of the context, whatever ran before.
        for depth in [40, 17, 40] {
            let t = Test {
                prompt_tokens: 5,
                new_tokens: 3,
                depth,
                batch: 2,
                threads: None,
            };
            let filled = workload::context_for(&m, base.as_ref(), &t).unwrap();
            assert_eq!(filled.positions(), depth);
            let a = workload::run_once(&m, &t, filled.as_ref()).unwrap();
            let b = workload::run_once(&m, &t, filled.as_ref()).unwrap();
            assert_eq!(a.tokens, b.tokens, "{spec}: forks disagree");
            assert_eq!(a.decode_step_seconds.len(), 2);
            assert!(a.prefill_seconds.is_some());
            // The same tokens from one uninterrupted pass over the context + prompt.
            for s in 0..2 {
                let mut ids = workload::synthetic_tokens(cfg.vocab_size(), 0, 0, depth);
                ids.extend(workload::synthetic_tokens(cfg.vocab_size(), s, depth, 5));
                let g = quantbench::generate(
                    &m,
                    &ids,
                    quantbench::GenerateOptions::exactly(3),
                    &mut quantbench::run::generate::NoObserver,
                )
                .unwrap();
                assert_eq!(
                    g.new_ids, a.tokens[s],
                    "{spec}: depth {depth}, sequence {s}"
                );
            }
        }
    }
}

#[test]
fn a_run_records_every_test_row_with_exact_kv_bytes() {
    let scenario = Scenario::parse(
        r#"
name = "w"
model = "synthetic:tiny"
device = "cpu"
precisions = ["f32", "q4_0"]
new_tokens = 3
warmup = 1
repeats = 2
[quality]
enabled = false
[workload]
prompt_tokens = [0, 8]
new_tokens = [0, 4]
depth = [0, 250]
batch = [1, 2]
threads = [1]
"#,
        "w.toml",
    )
    .unwrap();
    let prepared = runner::prepare(&scenario, None).unwrap();
    let run = runner::run(&prepared, &Probes::available(), &mut Silent).unwrap();
    let bw = run
        .environment
        .memory_bandwidth
        .as_ref()
        .expect("bandwidth measured");
    assert!(bw.read_gbps > 0.0 && bw.copy_gbps > 0.0);
    let per_token = run.model.kv_cache_bytes_per_token.unwrap();
    // tiny: 2 layers × 4 heads × 64 × (k + v) × f32.
    assert_eq!(per_token, 2 * 2 * 4 * 64 * 4);
    for v in &run.variants {
        assert!(v.is_ok(), "{:?}", v.error);
        assert_eq!(v.tests.len(), 3 * 2 * 2, "{}", v.precision);
        let streamed = v.weights_streamed_bytes_per_step.unwrap();
        // Everything but the position table (the tied token table is the LM head);
        // under the `all` policy the table is stored at the precision too.
        let wpe = match v.precision {
            Precision::F32 => 256 * 256 * 4,
            _ => 256 * 256 / 32 * 18,
        };
        assert_eq!(streamed, v.weights_bytes.unwrap() - wpe, "{}", v.precision);
        for r in &v.tests {
            let t = r.test;
            assert_eq!(r.threads_used, 1);
            // candle's quantized products keep candle's own pool: said where it differs.
            assert_eq!(
                r.threads_note.is_some(),
                workload::candle_pool_threads() != 1,
                "{:?}",
                r.threads_note
            );
            assert_eq!(
                r.kv_cache_bytes,
                (per_token * t.batch * t.positions()) as u64,
                "{}",
                r.name
            );
            if t.depth == 250 && t.positions() > 256 {
                assert_eq!(r.status, TestStatus::Skipped, "{}", r.name);
                assert!(r.error.as_deref().unwrap().contains("256"), "{:?}", r.error);
                continue;
            }
            assert_eq!(r.status, TestStatus::Ok, "{}: {:?}", r.name, r.error);
            assert_eq!(r.decode_step_seconds.len(), 2, "{}", r.name);
            assert!(r
                .decode_step_seconds
                .iter()
                .all(|d| d.len() == t.decode_steps()));
            assert_eq!(r.generated_token_ids.len(), t.new_tokens, "{}", r.name);
            assert_eq!(r.tokens_identical_across_repetitions, Some(true));
            assert!(r.memory_peak.is_some() && r.memory_before.is_some());
            match (t.prompt_tokens, t.new_tokens) {
                (0, _) => {
                    assert!(r.prefill_tokens_per_second.is_none());
                    assert!(r.decode_tokens_per_second.is_some());
                    assert!(r.bandwidth_fraction.is_some());
                }
                (_, 0) => {
                    assert!(r.prefill_tokens_per_second.is_some());
                    assert!(r.time_to_first_token_seconds.is_none());
                    assert!(r.decode_tokens_per_second.is_none());
                }
                _ => {
                    assert!(r.time_to_first_token_seconds.is_some());
                    assert!(r.decode_step_p99_seconds.is_some());
                    // Bytes per step: the streamed weights plus each sequence's keys
                    // and values at the mean decode context.
                    let ctx = t.decode_contexts();
                    let mean = ctx.iter().sum::<usize>() as f64 / ctx.len() as f64;
                    let want = streamed as f64 + mean * (per_token * t.batch) as f64;
                    assert_eq!(r.decode_bytes_per_step, Some(want.round() as u64));
                }
            }
        }
    }
    // Results survive the round trip through results.json.
    let json = serde_json::to_string(&run).unwrap();
    let back = quantbench::RunRecord::from_json(&json, "results.json").unwrap();
    for (a, b) in back.variants[1].tests.iter().zip(&run.variants[1].tests) {
        assert_eq!(
            (&a.name, a.status, a.kv_cache_bytes, &a.generated_token_ids),
            (&b.name, b.status, b.kv_cache_bytes, &b.generated_token_ids)
        );
        let rate = |r: &workload::TestRecord| r.decode_tokens_per_second.map(|s| s.median);
        if let (Some(x), Some(y)) = (rate(a), rate(b)) {
            assert!((x - y).abs() <= 1e-9 * y, "{} {x} {y}", a.name);
        }
    }
    assert_eq!(back.variants[1].tests.len(), run.variants[1].tests.len());
    check_exports(&run);
    // compare judges every test both sides ran, by its name within the variant.
    let c = quantbench::analysis::compare::compare(&run, &back, "a", "b", &Default::default());
    let row = |metric: &str, variant: &str| {
        c.rows
            .iter()
            .find(|r| r.metric == metric && r.variant == variant)
            .unwrap_or_else(|| panic!("no {metric} row for {variant}"))
    };
    let r = row("test_decode_tokens_per_second", "q4_0/all tg4 @ d250 x2 t1");
    assert_eq!(r.verdict, quantbench::analysis::compare::Verdict::Same);
    assert_eq!(r.base_samples, 2);
    row("test_prefill_tokens_per_second", "f32/all pp8 x2 t1");
    assert!(
        !c.rows.iter().any(|r| r.variant.contains("pp8 @ d250")),
        "skipped tests have no samples"
    );
}

/// The export formats hold their documented shapes: BMF's {benchmark: {measure: {value,
/// lower_value, upper_value}}}, benchmark-action's [{name, unit, value, range?, extra?}],
/// llama-bench's row names.
fn check_exports(run: &quantbench::RunRecord) {
    use quantbench::report::export;
    let ok_tests: usize = run
        .variants
        .iter()
        .map(|v| {
            v.tests
                .iter()
                .filter(|t| t.status == TestStatus::Ok)
                .count()
                + 1
        })
        .sum();
    let bmf = export::bmf(run);
    let benches = bmf.as_object().unwrap();
    assert_eq!(benches.len(), ok_tests);
    assert!(benches.contains_key("synthetic:tiny/q4_0/all/cpu/tg4 @ d250 x2 t1"));
    for (name, measures) in benches {
        for (m, v) in measures.as_object().unwrap() {
            assert!(m.len() <= 64, "{m}");
            let value = v["value"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} {m}: {v}"));
            if let (Some(lo), Some(hi)) = (v["lower_value"].as_f64(), v["upper_value"].as_f64()) {
                assert!(lo <= value && value <= hi, "{name} {m}: {v}");
            }
        }
        assert!(measures.get("weights-bytes").is_some(), "{name}");
    }
    let tg = &benches["synthetic:tiny/f32/all/cpu/tg4 t1"];
    assert!(tg.get("decode-tokens-per-second").is_some());
    assert!(tg.get("prefill-tokens-per-second").is_none());
    let (smaller, bigger) = export::github_action_benchmark(run);
    for e in smaller
        .as_array()
        .unwrap()
        .iter()
        .chain(bigger.as_array().unwrap())
    {
        assert!(
            e["name"].is_string() && e["unit"].is_string() && e["value"].is_number(),
            "{e}"
        );
        assert!(e.get("range").is_none_or(|r| r.is_string()), "{e}");
    }
    assert!(bigger
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["unit"] == "tokens/s"));
    let lines = export::jsonl(run);
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), ok_tests);
    for r in &rows {
        for k in export::ROW_FIELDS
            .iter()
            .map(|f| f.name)
            .chain(["samples_ns", "samples_ts"])
        {
            assert!(r.get(k).is_some(), "{k} missing: {r}");
        }
        // llama-bench's avg_ts is the mean of samples_ts.
        let ts: Vec<f64> = r["samples_ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let mean = ts.iter().sum::<f64>() / ts.len() as f64;
        assert!(
            (r["avg_ts"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean,
            "{r}"
        );
    }
    let csv = export::csv(run).unwrap();
    let mut reader = ::csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        export::ROW_FIELDS
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
    );
    assert_eq!(reader.records().count(), ok_tests);
}

#[test]
fn the_bootstrap_interval_holds_the_median_and_narrows_with_agreement() {
    use quantbench::analysis::stats::bootstrap_median_ci;
    let xs = [10.0, 11.0, 9.0, 10.5, 9.5];
    let (lo, hi) = bootstrap_median_ci(&xs, 0.95, 2000).unwrap();
    assert!(
        lo <= 10.0 && 10.0 <= hi && lo >= 9.0 && hi <= 11.0,
        "{lo} {hi}"
    );
    assert_eq!(
        bootstrap_median_ci(&xs, 0.95, 2000),
        Some((lo, hi)),
        "seeded"
    );
    assert_eq!(bootstrap_median_ci(&[5.0; 4], 0.95, 500), Some((5.0, 5.0)));
    assert_eq!(bootstrap_median_ci(&[], 0.95, 500), None);
}

/// A scenario naming several models runs each into its own sub-folder, through the
/// binary, with its workload tests, tests.csv and context charts.
#[test]
fn a_scenario_with_several_models_writes_one_folder_each() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("two.toml");
    std::fs::write(
        &scenario,
        r#"name = "two"
models = ["synthetic:tiny", "synthetic:tiny-llama"]
device = "cpu"
precisions = ["q8_0"]
new_tokens = 2
warmup = 0
repeats = 1
[quality]
enabled = false
[[workload]]
prompt_tokens = [0]
new_tokens = [3]
depth = [0, 8]
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (code, _, err) = common::quantbench(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    for sub in ["synthetic-tiny", "synthetic-tiny-llama"] {
        let dir = out.join(sub);
        let run = quantbench::report::read_results(&dir.join("results.json")).unwrap();
        assert_eq!(run.model.spec, sub.replacen('-', ":", 1));
        assert_eq!(run.variants[0].tests.len(), 2);
        assert_eq!(run.variants[0].workload_context.as_ref().unwrap().depth, 8);
        for f in quantbench::report::TEST_FILES {
            assert!(dir.join(f).is_file(), "{sub}/{f} missing");
        }
    }
}

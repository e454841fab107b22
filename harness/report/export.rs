//! `quantbench export-results`: a run's figures in the shapes that benchmark trackers
//! and llama.cpp's users read, from the record alone.
//!
//! - `bmf`: Bencher Metric Format, `{benchmark: {measure: {value, lower_value,
//!   upper_value}}}`, one benchmark per variant × test, bounds from a seeded percentile
//!   bootstrap of the median over the repetitions (95%), or mean ± 1.96 standard errors
//!   for the quality figures.
//! - `github-action-benchmark`: the two arrays benchmark-action's `customSmallerIsBetter`
//!   and `customBiggerIsBetter` read (`[{name, unit, value, range, extra}]`), written as
//!   two files, since one action step reads one direction.
//! - `jsonl` / `csv`: one row per variant × test with llama-bench's column names where
//!   the meaning is the same (`n_prompt`, `n_gen`, `n_depth`, `n_threads`, `avg_ns`,
//!   `stddev_ns`, `avg_ts`, `stddev_ts`, `samples_ns`, `samples_ts` ...) and quantbench's
//!   own columns beside them (memory, KV cache, bandwidth, quality).
//!
//! The variant's own generation (the scenario's text prompt) is the row named `text`;
//! each workload test is a row under its name (`pp512`, `tg32 @ d512 x4`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::analysis::stats::{bootstrap_median_ci, Summary};
use crate::record::{RunRecord, VariantRecord};
use crate::run::workload::TestStatus;

/// The formats `export-results` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultsFormat {
    /// Bencher Metric Format (JSON object).
    Bmf,
    /// benchmark-action/github-action-benchmark's custom arrays (two files).
    GithubActionBenchmark,
    /// One JSON object per line, llama-bench's names where the meaning is the same.
    Jsonl,
    /// The same rows as CSV.
    Csv,
}

/// Confidence of the bootstrap bounds.
pub const CONFIDENCE: f64 = 0.95;
const RESAMPLES: usize = 2000;

/// One row: a variant × test, with the samples its figures come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `gpt2/q4_0/all/cpu`: model, precision, policy, device (rest when not f32).
    pub variant: String,
    /// `text`, or the workload test's name.
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    pub n_sequences: usize,
    pub n_threads: usize,
    /// Per repetition: the whole test's wall time (prompt pass and every decode step).
    pub samples_ns: Vec<f64>,
    /// Per repetition: tokens processed (n_sequences × (n_prompt + n_gen)) per second,
    /// as llama-bench's `samples_ts`.
    pub samples_ts: Vec<f64>,
    pub prefill_tokens_per_second: Vec<f64>,
    pub decode_tokens_per_second: Vec<f64>,
    pub time_to_first_token_seconds: Vec<f64>,
    pub decode_step_p50_seconds: Option<f64>,
    pub decode_step_p99_seconds: Option<f64>,
    pub weights_bytes: Option<u64>,
    pub kv_cache_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub decode_bandwidth_gbps: Option<f64>,
    pub bandwidth_fraction: Option<f64>,
    /// The variant's quality figures (the same on each of its rows).
    pub kl_mean: Option<(f64, f64)>,
    pub same_top1: Option<(f64, f64)>,
}

fn variant_key(run: &RunRecord, v: &VariantRecord) -> String {
    let model = run.model.spec.replace('/', "_");
    let mut s = format!("{model}/{}/{}", v.precision, v.policy);
    if v.rest != crate::precision::RestDtype::F32 {
        s += &format!("/rest-{}", v.rest);
    }
    s + "/" + &run.environment.device
}

fn rates(ns: &[f64], tokens: f64) -> Vec<f64> {
    ns.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| tokens / (x / 1e9))
        .collect()
}

/// Every row of a run: per successful variant, its text generation, then each test
/// that ran.
pub fn rows(run: &RunRecord) -> Vec<Row> {
    let mut out = Vec::new();
    for v in run.variants.iter().filter(|v| v.is_ok()) {
        let variant = variant_key(run, v);
        let q = v.quality.as_ref();
        let kl_mean = q.and_then(|q| Some((q.kl_mean?, q.kl_stderr.unwrap_or(0.0))));
        let same_top1 = q.and_then(|q| Some((q.same_top1?, q.same_top1_stderr.unwrap_or(0.0))));
        let n_prompt = v.prompt_token_ids.len();
        let samples_ns: Vec<f64> = v.generate_seconds.iter().map(|s| s * 1e9).collect();
        let decode = v.decode_rates();
        let pct = |q: f64| {
            let v: Vec<f64> = v
                .decode_step_seconds
                .iter()
                .filter_map(|d| crate::run::workload::quantile(d, q))
                .collect();
            Summary::of(&v).map(|s| s.median)
        };
        out.push(Row {
            variant: variant.clone(),
            test: "text".into(),
            n_prompt,
            n_gen: v.new_tokens,
            n_depth: 0,
            n_sequences: 1,
            n_threads: run.environment.threads,
            samples_ts: rates(&samples_ns, n_prompt as f64 + v.new_tokens as f64),
            samples_ns,
            prefill_tokens_per_second: v
                .prefill_seconds
                .iter()
                .filter(|&&s| s > 0.0)
                .map(|s| n_prompt as f64 / s)
                .collect(),
            decode_tokens_per_second: decode,
            time_to_first_token_seconds: v.prefill_seconds.clone(),
            decode_step_p50_seconds: pct(0.5),
            decode_step_p99_seconds: pct(0.99),
            weights_bytes: v.weights_bytes,
            kv_cache_bytes: run.model.kv_cache_bytes_per_token.map(|b| {
                crate::run::workload::kv_cache_bytes(
                    b,
                    1,
                    n_prompt.saturating_add(v.new_tokens.saturating_sub(1)),
                )
            }),
            peak_rss_bytes: v
                .memory
                .peak_during_generation
                .as_ref()
                .and_then(|r| r.get(super::RSS)),
            decode_bandwidth_gbps: None,
            bandwidth_fraction: None,
            kl_mean,
            same_top1,
        });
        for t in v.tests.iter().filter(|t| t.status == TestStatus::Ok) {
            let reps = t.decode_step_seconds.len();
            let samples_ns: Vec<f64> = (0..reps)
                .map(|i| {
                    let pre = t.prefill_seconds.get(i).copied().unwrap_or(0.0);
                    (pre + t.decode_step_seconds[i].iter().sum::<f64>()) * 1e9
                })
                .collect();
            // in f64: a record read from a file may hold any count
            let tokens =
                t.test.batch as f64 * (t.test.prompt_tokens as f64 + t.test.new_tokens as f64);
            out.push(Row {
                variant: variant.clone(),
                test: t.name.clone(),
                n_prompt: t.test.prompt_tokens,
                n_gen: t.test.new_tokens,
                n_depth: t.test.depth,
                n_sequences: t.test.batch,
                n_threads: t.threads_used,
                samples_ts: rates(&samples_ns, tokens),
                samples_ns,
                prefill_tokens_per_second: t.prefill_rates(),
                decode_tokens_per_second: t.decode_rates(),
                time_to_first_token_seconds: if t.test.new_tokens > 0 {
                    t.prefill_seconds.clone()
                } else {
                    Vec::new()
                },
                decode_step_p50_seconds: t.decode_step_p50_seconds.map(|s| s.median),
                decode_step_p99_seconds: t.decode_step_p99_seconds.map(|s| s.median),
                weights_bytes: v.weights_bytes,
                kv_cache_bytes: Some(t.kv_cache_bytes),
                peak_rss_bytes: t.memory_peak.as_ref().and_then(|r| r.get(super::RSS)),
                decode_bandwidth_gbps: t.decode_bandwidth_gbps.map(|s| s.median),
                bandwidth_fraction: t.bandwidth_fraction,
                kl_mean,
                same_top1,
            });
        }
    }
    out
}

/// `{value, lower_value, upper_value}` from samples: the median and its bootstrap
/// interval.
fn measure(samples: &[f64], scale: f64) -> Option<Value> {
    let s = Summary::of(samples)?;
    let (lo, hi) = bootstrap_median_ci(samples, CONFIDENCE, RESAMPLES)?;
    Some(json!({
        "value": s.median * scale,
        "lower_value": lo * scale,
        "upper_value": hi * scale,
    }))
}

fn with_error((mean, se): (f64, f64)) -> Value {
    json!({"value": mean, "lower_value": mean - 1.96 * se, "upper_value": mean + 1.96 * se})
}

/// Bencher Metric Format: one benchmark per row, `variant/test`.
pub fn bmf(run: &RunRecord) -> Value {
    let mut top = Map::new();
    for r in rows(run) {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put(
            "decode-tokens-per-second",
            measure(&r.decode_tokens_per_second, 1.0),
        );
        put(
            "prefill-tokens-per-second",
            measure(&r.prefill_tokens_per_second, 1.0),
        );
        put(
            "time-to-first-token-ms",
            measure(&r.time_to_first_token_seconds, 1e3),
        );
        put(
            "decode-step-p50-ms",
            r.decode_step_p50_seconds.map(|x| json!({"value": x * 1e3})),
        );
        put(
            "decode-step-p99-ms",
            r.decode_step_p99_seconds.map(|x| json!({"value": x * 1e3})),
        );
        put(
            "weights-bytes",
            r.weights_bytes.map(|x| json!({"value": x})),
        );
        put(
            "kv-cache-bytes",
            r.kv_cache_bytes.map(|x| json!({"value": x})),
        );
        put(
            "peak-rss-bytes",
            r.peak_rss_bytes.map(|x| json!({"value": x})),
        );
        put(
            "decode-bandwidth-gbps",
            r.decode_bandwidth_gbps.map(|x| json!({"value": x})),
        );
        put("kl-divergence", r.kl_mean.map(with_error));
        put("same-top1", r.same_top1.map(with_error));
        top.insert(format!("{}/{}", r.variant, r.test), Value::Object(m));
    }
    Value::Object(top)
}

/// benchmark-action's `customSmallerIsBetter` and `customBiggerIsBetter` arrays.
pub fn github_action_benchmark(run: &RunRecord) -> (Value, Value) {
    let (mut smaller, mut bigger) = (Vec::new(), Vec::new());
    let entry = |name: String, unit: &str, samples: &[f64], scale: f64, extra: &Row| {
        let s = Summary::of(samples)?;
        let (lo, hi) = bootstrap_median_ci(samples, CONFIDENCE, RESAMPLES)?;
        Some(json!({
            "name": name,
            "unit": unit,
            "value": s.median * scale,
            "range": format!("{:.4} .. {:.4} (95% bootstrap)", lo * scale, hi * scale),
            "extra": format!(
                "repetitions: {}\nprompt {} tokens, {} new, depth {}, {} sequence(s), {} thread(s)",
                s.n, extra.n_prompt, extra.n_gen, extra.n_depth, extra.n_sequences, extra.n_threads
            ),
        }))
    };
    for r in rows(run) {
        let base = format!("{} {}", r.variant, r.test);
        bigger.extend(entry(
            format!("{base} - decode"),
            "tokens/s",
            &r.decode_tokens_per_second,
            1.0,
            &r,
        ));
        bigger.extend(entry(
            format!("{base} - prefill"),
            "tokens/s",
            &r.prefill_tokens_per_second,
            1.0,
            &r,
        ));
        smaller.extend(entry(
            format!("{base} - time to first token"),
            "ms",
            &r.time_to_first_token_seconds,
            1e3,
            &r,
        ));
        if let Some(b) = r.peak_rss_bytes {
            smaller.push(json!({"name": format!("{base} - peak RSS"), "unit": "MB", "value": b as f64 / 1e6}));
        }
        if r.test == "text" {
            if let Some((kl, se)) = r.kl_mean {
                smaller.push(json!({"name": format!("{} - mean KL vs f32", r.variant), "unit": "nats", "value": kl, "range": format!("± {:.3e} (SE)", se)}));
            }
            if let Some((p, se)) = r.same_top1 {
                bigger.push(json!({"name": format!("{} - same top-1 as f32", r.variant), "unit": "fraction", "value": p, "range": format!("± {:.4} (SE)", se)}));
            }
        }
    }
    (Value::Array(smaller), Value::Array(bigger))
}

/// The llama-bench-shaped row columns, in order (llama-bench's names first).
pub const ROW_COLUMNS: [&str; 32] = [
    "build_commit",
    "cpu_info",
    "gpu_info",
    "backends",
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "n_threads",
    "type_k",
    "type_v",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test_time",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    // quantbench's own.
    "variant",
    "test",
    "precision",
    "n_sequences",
    "prefill_ts",
    "decode_ts",
    "decode_step_p99_ms",
    "kv_cache_bytes",
    "peak_rss_bytes",
    "decode_bandwidth_gbps",
    "bandwidth_fraction",
    "kl_mean",
    "same_top1",
];

/// The rows as JSON objects with [`ROW_COLUMNS`] (+ `samples_ns`, `samples_ts`).
pub fn llama_bench_rows(run: &RunRecord) -> Vec<Map<String, Value>> {
    let env = &run.environment;
    let gpu = env
        .gpus
        .iter()
        .map(|g| g.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let backend = if env.device.starts_with("cuda") {
        "CUDA"
    } else {
        "CPU"
    };
    let by_key: BTreeMap<String, &VariantRecord> = run
        .variants
        .iter()
        .map(|v| (variant_key(run, v), v))
        .collect();
    let stats = |xs: &[f64]| Summary::of(xs).map(|s| (s.mean, s.stddev));
    rows(run)
        .into_iter()
        .map(|r| {
            let v = by_key[&r.variant];
            let (avg_ns, sd_ns) = stats(&r.samples_ns).unwrap_or((0.0, 0.0));
            let (avg_ts, sd_ts) = stats(&r.samples_ts).unwrap_or((0.0, 0.0));
            let median = |xs: &[f64]| Summary::of(xs).map(|s| s.median);
            let mut m = Map::new();
            let cells: [(&str, Value); 32] = [
                ("build_commit", json!(env.git_commit)),
                ("cpu_info", json!(env.cpu_model)),
                ("gpu_info", json!(gpu)),
                ("backends", json!(backend)),
                ("model_filename", json!(run.model.spec)),
                (
                    "model_type",
                    json!(format!("{} {}", run.model.architecture, v.precision)),
                ),
                ("model_size", json!(v.weights_bytes)),
                ("model_n_params", json!(run.model.parameters)),
                ("n_threads", json!(r.n_threads)),
                ("type_k", json!("f32")),
                ("type_v", json!("f32")),
                ("n_prompt", json!(r.n_prompt)),
                ("n_gen", json!(r.n_gen)),
                ("n_depth", json!(r.n_depth)),
                ("test_time", json!(run.started_at)),
                ("avg_ns", json!(avg_ns.round() as u64)),
                ("stddev_ns", json!(sd_ns.round() as u64)),
                ("avg_ts", json!(avg_ts)),
                ("stddev_ts", json!(sd_ts)),
                ("variant", json!(r.variant)),
                ("test", json!(r.test)),
                ("precision", json!(v.precision.name())),
                ("n_sequences", json!(r.n_sequences)),
                ("prefill_ts", json!(median(&r.prefill_tokens_per_second))),
                ("decode_ts", json!(median(&r.decode_tokens_per_second))),
                (
                    "decode_step_p99_ms",
                    json!(r.decode_step_p99_seconds.map(|s| s * 1e3)),
                ),
                ("kv_cache_bytes", json!(r.kv_cache_bytes)),
                ("peak_rss_bytes", json!(r.peak_rss_bytes)),
                ("decode_bandwidth_gbps", json!(r.decode_bandwidth_gbps)),
                ("bandwidth_fraction", json!(r.bandwidth_fraction)),
                ("kl_mean", json!(r.kl_mean.map(|k| k.0))),
                ("same_top1", json!(r.same_top1.map(|k| k.0))),
            ];
            for (k, val) in cells {
                m.insert(k.to_string(), val);
            }
            m.insert(
                "samples_ns".into(),
                json!(r
                    .samples_ns
                    .iter()
                    .map(|x| x.round() as u64)
                    .collect::<Vec<_>>()),
            );
            m.insert("samples_ts".into(), json!(r.samples_ts));
            m
        })
        .collect()
}

/// One JSON object per line.
pub fn jsonl(run: &RunRecord) -> String {
    llama_bench_rows(run)
        .into_iter()
        .map(|m| Value::Object(m).to_string() + "\n")
        .collect()
}

/// The same rows as CSV ([`ROW_COLUMNS`]; the sample lists are left to the JSON forms).
pub fn csv(run: &RunRecord) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(ROW_COLUMNS)?;
    for m in llama_bench_rows(run) {
        let cells: Vec<String> = ROW_COLUMNS
            .iter()
            .map(|k| match &m[*k] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(cells)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

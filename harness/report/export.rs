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
use crate::record::figures::Direction;
use crate::record::{RunRecord, VariantRecord};
use crate::run::workload::TestStatus;

/// What `export-results` writes (its `--format`; in code "format" is a weight format
/// only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
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
    pub rss_peak_bytes: Option<u64>,
    pub decode_bandwidth_gbps: Option<f64>,
    pub bandwidth_fraction: Option<f64>,
    /// The variant's quality figures (the same on each of its rows).
    pub kl_mean: Option<(f64, f64)>,
    pub same_top1: Option<(f64, f64)>,
}

/// A benchmark's name in a tracker: the model, the variant's key, the device
/// (`synthetic:gpt2/q4_0/all/cpu`), so that one tracker can hold many models and devices.
fn variant_key(run: &RunRecord, v: &VariantRecord) -> String {
    let model = run.model.spec.replace('/', "_");
    format!("{model}/{}/{}", v.key(), run.environment.device)
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
            rss_peak_bytes: v
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
                rss_peak_bytes: t.memory_peak.as_ref().and_then(|r| r.get(super::RSS)),
                decode_bandwidth_gbps: t.decode_bandwidth_gbps.map(|s| s.median),
                bandwidth_fraction: t.bandwidth_fraction,
                kl_mean,
                same_top1,
            });
        }
    }
    out
}

/// What a measure is read from in a row.
enum Source {
    /// Per-repetition samples, times a scale: the median, bounded by its bootstrap
    /// interval.
    Samples(fn(&Row) -> &[f64], f64),
    /// One value (already in the measure's unit).
    Reading(fn(&Row) -> Option<f64>),
    /// A count of bytes, kept exact (an integer for Bencher, MB on github's charts).
    Bytes(fn(&Row) -> Option<u64>),
    /// A mean and its standard error (the quality figures): bounded by ± 1.96 errors.
    WithError(fn(&Row) -> Option<(f64, f64)>),
}

/// A figure of a row as the trackers get it: one name (snake case; Bencher's measure is
/// the name in kebab case), its unit and direction, and the words github-action-benchmark
/// shows.
struct Measure {
    name: &'static str,
    unit: &'static str,
    direction: Direction,
    source: Source,
    /// The words after the benchmark's name in github-action-benchmark's chart title;
    /// `None`: not sent there.
    words: Option<&'static str>,
    /// Only on the variant's own generation (`text`): the quality figures, the same on
    /// every row of a variant.
    text_only: bool,
}

/// Every measure the trackers get, in order.
const MEASURES: [Measure; 11] = [
    Measure {
        name: "decode_tokens_per_second",
        unit: "tokens/s",
        direction: Direction::HigherIsBetter,
        source: Source::Samples(|r| &r.decode_tokens_per_second, 1.0),
        words: Some("decode"),
        text_only: false,
    },
    Measure {
        name: "prefill_tokens_per_second",
        unit: "tokens/s",
        direction: Direction::HigherIsBetter,
        source: Source::Samples(|r| &r.prefill_tokens_per_second, 1.0),
        words: Some("prefill"),
        text_only: false,
    },
    Measure {
        name: "time_to_first_token_ms",
        unit: "ms",
        direction: Direction::LowerIsBetter,
        source: Source::Samples(|r| &r.time_to_first_token_seconds, 1e3),
        words: Some("time to first token"),
        text_only: false,
    },
    Measure {
        name: "decode_step_p50_ms",
        unit: "ms",
        direction: Direction::LowerIsBetter,
        source: Source::Reading(|r| r.decode_step_p50_seconds.map(|x| x * 1e3)),
        words: None,
        text_only: false,
    },
    Measure {
        name: "decode_step_p99_ms",
        unit: "ms",
        direction: Direction::LowerIsBetter,
        source: Source::Reading(|r| r.decode_step_p99_seconds.map(|x| x * 1e3)),
        words: None,
        text_only: false,
    },
    Measure {
        name: "weights_bytes",
        unit: "B",
        direction: Direction::LowerIsBetter,
        source: Source::Bytes(|r| r.weights_bytes),
        words: None,
        text_only: false,
    },
    Measure {
        name: "kv_cache_bytes",
        unit: "B",
        direction: Direction::LowerIsBetter,
        source: Source::Bytes(|r| r.kv_cache_bytes),
        words: None,
        text_only: false,
    },
    Measure {
        name: "rss_peak_bytes",
        unit: "B",
        direction: Direction::LowerIsBetter,
        source: Source::Bytes(|r| r.rss_peak_bytes),
        words: Some("peak RSS"),
        text_only: false,
    },
    Measure {
        name: "decode_bandwidth_gbps",
        unit: "GB/s",
        direction: Direction::HigherIsBetter,
        source: Source::Reading(|r| r.decode_bandwidth_gbps),
        words: None,
        text_only: false,
    },
    Measure {
        name: "kl_mean",
        unit: "nats",
        direction: Direction::LowerIsBetter,
        source: Source::WithError(|r| r.kl_mean),
        words: Some("mean KL vs f32"),
        text_only: true,
    },
    Measure {
        name: "same_top1",
        unit: "fraction",
        direction: Direction::HigherIsBetter,
        source: Source::WithError(|r| r.same_top1),
        words: Some("same top-1 as f32"),
        text_only: true,
    },
];

impl Measure {
    /// Bencher's measure: the name in kebab case.
    fn bencher_name(&self) -> String {
        self.name.replace('_', "-")
    }

    /// `{value, lower_value, upper_value}`: the median and its bootstrap interval, a
    /// mean ± 1.96 standard errors, or a single value.
    fn bmf(&self, r: &Row) -> Option<Value> {
        match self.source {
            Source::Samples(get, scale) => {
                let samples = get(r);
                let s = Summary::of(samples)?;
                let (lo, hi) = bootstrap_median_ci(samples, CONFIDENCE, RESAMPLES)?;
                Some(json!({
                    "value": s.median * scale,
                    "lower_value": lo * scale,
                    "upper_value": hi * scale,
                }))
            }
            Source::Reading(get) => Some(json!({"value": get(r)?})),
            Source::Bytes(get) => Some(json!({"value": get(r)?})),
            Source::WithError(get) => {
                let (mean, se) = get(r)?;
                Some(
                    json!({"value": mean, "lower_value": mean - 1.96 * se, "upper_value": mean + 1.96 * se}),
                )
            }
        }
    }

    /// One github-action-benchmark entry, for a measure sent there.
    fn github(&self, r: &Row) -> Option<Value> {
        let words = self.words?;
        let base = format!("{} {}", r.variant, r.test);
        match self.source {
            Source::Samples(get, scale) => {
                let samples = get(r);
                let s = Summary::of(samples)?;
                let (lo, hi) = bootstrap_median_ci(samples, CONFIDENCE, RESAMPLES)?;
                Some(json!({
                    "name": format!("{base} - {words}"),
                    "unit": self.unit,
                    "value": s.median * scale,
                    "range": format!("{:.4} .. {:.4} (95% bootstrap)", lo * scale, hi * scale),
                    "extra": format!(
                        "repetitions: {}\nprompt {} tokens, {} new, depth {}, {} sequence(s), {} thread(s)",
                        s.n, r.n_prompt, r.n_gen, r.n_depth, r.n_sequences, r.n_threads
                    ),
                }))
            }
            Source::Reading(get) => Some(
                json!({"name": format!("{base} - {words}"), "unit": self.unit, "value": get(r)?}),
            ),
            // Bytes are shown as MB on the charts.
            Source::Bytes(get) => Some(
                json!({"name": format!("{base} - {words}"), "unit": "MB", "value": get(r)? as f64 / 1e6}),
            ),
            Source::WithError(get) => {
                let (x, se) = get(r)?;
                let range = if self.unit == "nats" {
                    format!("± {se:.3e} (SE)")
                } else {
                    format!("± {se:.4} (SE)")
                };
                Some(
                    json!({"name": format!("{} - {words}", r.variant), "unit": self.unit, "value": x, "range": range}),
                )
            }
        }
    }
}

/// Bencher Metric Format: one benchmark per row, `variant/test`, a measure per
/// [`MEASURES`] entry the row has.
pub fn bmf(run: &RunRecord) -> Value {
    let mut top = Map::new();
    for r in rows(run) {
        let mut m = Map::new();
        for measure in &MEASURES {
            if let Some(v) = measure.bmf(&r) {
                m.insert(measure.bencher_name(), v);
            }
        }
        top.insert(format!("{}/{}", r.variant, r.test), Value::Object(m));
    }
    Value::Object(top)
}

/// benchmark-action's `customSmallerIsBetter` and `customBiggerIsBetter` arrays: the
/// measures with words, each in its direction's array.
pub fn github_action_benchmark(run: &RunRecord) -> (Value, Value) {
    let (mut smaller, mut bigger) = (Vec::new(), Vec::new());
    for r in rows(run) {
        for m in MEASURES.iter().filter(|m| !m.text_only || r.test == "text") {
            if let Some(e) = m.github(&r) {
                if m.direction == Direction::LowerIsBetter {
                    smaller.push(e)
                } else {
                    bigger.push(e)
                }
            }
        }
    }
    (Value::Array(smaller), Value::Array(bigger))
}

/// What a llama-bench-shaped column is read from.
pub struct RowContext<'a> {
    pub run: &'a RunRecord,
    pub v: &'a VariantRecord,
    pub r: &'a Row,
    gpu: &'a str,
    backend: &'a str,
}

/// A llama-bench-shaped column: its name and its cell (JSON; csv prints null as empty).
pub struct RowField {
    pub name: &'static str,
    cell: fn(&RowContext) -> Value,
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    Summary::of(xs)
        .map(|s| (s.mean, s.stddev))
        .unwrap_or((0.0, 0.0))
}

fn median(xs: &[f64]) -> Option<f64> {
    Summary::of(xs).map(|s| s.median)
}

/// The llama-bench-shaped columns, in order: llama-bench's names first, where the meaning
/// is the same, then quantbench's, named as the figures are everywhere else.
pub const ROW_FIELDS: [RowField; 33] = [
    RowField {
        name: "build_commit",
        cell: |c| json!(c.run.environment.git_commit),
    },
    RowField {
        name: "cpu_info",
        cell: |c| json!(c.run.environment.cpu_model),
    },
    RowField {
        name: "gpu_info",
        cell: |c| json!(c.gpu),
    },
    RowField {
        name: "backends",
        cell: |c| json!(c.backend),
    },
    RowField {
        name: "model_filename",
        cell: |c| json!(c.run.model.spec),
    },
    RowField {
        name: "model_type",
        cell: |c| json!(format!("{} {}", c.run.model.architecture, c.v.precision)),
    },
    RowField {
        name: "model_size",
        cell: |c| json!(c.v.weights_bytes),
    },
    RowField {
        name: "model_n_params",
        cell: |c| json!(c.run.model.parameters),
    },
    RowField {
        name: "n_threads",
        cell: |c| json!(c.r.n_threads),
    },
    RowField {
        name: "type_k",
        cell: |c| json!(kv_type(c.v)),
    },
    RowField {
        name: "type_v",
        cell: |c| json!(kv_type(c.v)),
    },
    RowField {
        name: "n_prompt",
        cell: |c| json!(c.r.n_prompt),
    },
    RowField {
        name: "n_gen",
        cell: |c| json!(c.r.n_gen),
    },
    RowField {
        name: "n_depth",
        cell: |c| json!(c.r.n_depth),
    },
    RowField {
        name: "test_time",
        cell: |c| json!(c.run.started_at),
    },
    RowField {
        name: "avg_ns",
        cell: |c| json!(mean_sd(&c.r.samples_ns).0.round() as u64),
    },
    RowField {
        name: "stddev_ns",
        cell: |c| json!(mean_sd(&c.r.samples_ns).1.round() as u64),
    },
    RowField {
        name: "avg_ts",
        cell: |c| json!(mean_sd(&c.r.samples_ts).0),
    },
    RowField {
        name: "stddev_ts",
        cell: |c| json!(mean_sd(&c.r.samples_ts).1),
    },
    // quantbench's own.
    RowField {
        name: "variant",
        cell: |c| json!(c.r.variant),
    },
    RowField {
        name: "engine",
        cell: |c| json!(c.v.engine.name()),
    },
    RowField {
        name: "test",
        cell: |c| json!(c.r.test),
    },
    RowField {
        name: "precision",
        cell: |c| json!(c.v.precision.name()),
    },
    RowField {
        name: "n_sequences",
        cell: |c| json!(c.r.n_sequences),
    },
    RowField {
        name: "prefill_tokens_per_second_median",
        cell: |c| json!(median(&c.r.prefill_tokens_per_second)),
    },
    RowField {
        name: "decode_tokens_per_second_median",
        cell: |c| json!(median(&c.r.decode_tokens_per_second)),
    },
    RowField {
        name: "decode_step_p99_ms",
        cell: |c| json!(c.r.decode_step_p99_seconds.map(|s| s * 1e3)),
    },
    RowField {
        name: "kv_cache_bytes",
        cell: |c| json!(c.r.kv_cache_bytes),
    },
    RowField {
        name: "rss_peak_bytes",
        cell: |c| json!(c.r.rss_peak_bytes),
    },
    RowField {
        name: "decode_bandwidth_gbps",
        cell: |c| json!(c.r.decode_bandwidth_gbps),
    },
    RowField {
        name: "bandwidth_fraction",
        cell: |c| json!(c.r.bandwidth_fraction),
    },
    RowField {
        name: "kl_mean",
        cell: |c| json!(c.r.kl_mean.map(|k| k.0)),
    },
    RowField {
        name: "same_top1",
        cell: |c| json!(c.r.same_top1.map(|k| k.0)),
    },
];

/// The KV cache's type as the engine reports it (quantbench's own keeps f32, and so did
/// every record written before engines reported it).
fn kv_type(v: &VariantRecord) -> String {
    v.engine_report
        .as_ref()
        .and_then(|r| r.settings.iter().find(|(k, _)| k == "kv_type"))
        .map_or_else(|| "f32".to_string(), |(_, t)| t.clone())
}

/// The rows as JSON objects with [`ROW_FIELDS`] (+ `samples_ns`, `samples_ts`).
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
    rows(run)
        .iter()
        .map(|r| {
            let c = RowContext {
                run,
                v: by_key[&r.variant],
                r,
                gpu: &gpu,
                backend,
            };
            let mut m = Map::new();
            for f in &ROW_FIELDS {
                m.insert(f.name.to_string(), (f.cell)(&c));
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

/// The same rows as CSV ([`ROW_FIELDS`]; the sample lists are left to the JSON forms).
pub fn csv(run: &RunRecord) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(ROW_FIELDS.iter().map(|f| f.name))?;
    for m in llama_bench_rows(run) {
        let cells: Vec<String> = ROW_FIELDS
            .iter()
            .map(|f| match &m[f.name] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(cells)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

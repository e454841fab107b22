//! The result record: every measurement of a run lands here, and reports, charts and
//! comparisons read only this. Serialized as results.json (schema in docs/results-schema.md).

use serde::{Deserialize, Serialize};

pub mod figures;

use crate::environment::Environment;
use crate::model::source::weights::GroupBytes;
use crate::precision::{Policy, Precision, Quantization, RestDtype};

use crate::analysis::stats::Summary;
use crate::probe::Reading;
use crate::scenario::Scenario;

/// Bumped when a field changes meaning or goes away; adding fields keeps it.
pub const SCHEMA_VERSION: u32 = 1;

/// One run of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    /// "running" while variants remain, "complete" when all ran.
    pub status: RunStatus,
    pub environment: Environment,
    /// The scenario as run, overrides applied.
    pub scenario: Scenario,
    /// The scenario file it came from, if any.
    #[serde(default)]
    pub scenario_file: Option<String>,
    /// The model as resolved (synthetic models say so).
    pub model: ModelInfo,
    pub variants: Vec<VariantRecord>,
    /// The f32 reference of the quality pass, when it ran.
    #[serde(default)]
    pub quality_reference: Option<crate::run::quality::ReferenceInfo>,
    /// Why the quality pass could not run, if it failed.
    #[serde(default)]
    pub quality_error: Option<String>,
    /// The probes that read memory ("process", "nvml" ...).
    #[serde(default)]
    pub probes: Vec<String>,
    /// What a probe could not measure, or why an expected probe is missing.
    #[serde(default)]
    pub probe_notes: Vec<String>,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Complete,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub spec: String,
    pub name: String,
    pub synthetic: bool,
    pub parameters: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub vocab_size: usize,
    pub n_positions: usize,
    /// config.json's model_type: gpt2, llama, mistral, qwen2, qwen3 (files written
    /// before the Llama architectures: gpt2).
    #[serde(default = "gpt2_architecture")]
    pub architecture: String,
    /// Key/value heads (fewer than n_head under grouped-query attention).
    #[serde(default)]
    pub n_kv_head: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// What quantbench's KV cache holds per token of context (keys and values of every
    /// layer, f32).
    #[serde(default)]
    pub kv_cache_bytes_per_token: Option<usize>,
    /// Per layer, the positions a sliding-window layer's cache keeps (its window; null
    /// for a layer that keeps every position). Absent where no layer slides or the
    /// engine does not say; the KV bytes of tests and contexts count it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv_cache_windows: Vec<Option<usize>>,
    /// The dtype(s) the checkpoint stores, most common first ("bf16", "f32+f16"); absent
    /// for synthetic weights (drawn in f32). The f32 variant is these values widened.
    #[serde(default)]
    pub source_dtype: Option<String>,
    /// The tokenizer used for the prompt and the evaluation text.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// A GGUF source's own type label (general.file_type: MOSTLY_Q4_K_M ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    /// A GGUF source's size on disk, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
}

fn gpt2_architecture() -> String {
    "gpt2".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantStatus {
    Ok,
    Failed,
    Interrupted,
}

/// Memory at the moments a variant's life passes through, each a [`Reading`] of every
/// probe ("process_rss_bytes", and GPU figures where a GPU probe runs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryMoments {
    /// Before the model is loaded.
    pub before_load: Reading,
    /// After loading and converting, before any generation.
    pub after_load: Reading,
    /// The highest value seen by the background sampler while the model loaded (the
    /// stored weights plus the f32 copy of the tensor being converted); absent in files
    /// written before it was recorded.
    #[serde(default)]
    pub peak_during_load: Option<Reading>,
    /// The highest value seen by the background sampler during the timed repetitions.
    pub peak_during_generation: Option<Reading>,
    /// Samples the peak sampler took.
    pub peak_samples: usize,
    /// How often the background sampler read memory for the peak, in milliseconds
    /// (absent in files written before it was recorded).
    #[serde(default)]
    pub peak_sample_interval_ms: Option<f64>,
    /// After the model was dropped and the allocator asked to return freed memory.
    /// On a CUDA device the memory pool may still hold freed memory here
    /// (`cuda_pool_reserved_bytes`, and inside `gpu_used_bytes`).
    pub after_cleanup: Option<Reading>,
    /// After cleanup and after a device memory pool was trimmed to what is in use:
    /// present only where a probe watches such a pool (CUDA builds on a GPU).
    #[serde(default)]
    pub after_pool_trim: Option<Reading>,
}

/// Weight bytes of the loaded model by group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfo {
    pub embeddings: GroupBytes,
    pub linear: GroupBytes,
    pub norms_biases: GroupBytes,
    pub parameters: usize,
    pub bits_per_weight: f64,
    pub fallbacks: Vec<String>,
    /// Bytes by group and stored format (a Q4_K_M file's q4k / q6k / f32 split).
    #[serde(default)]
    pub by_format: Vec<crate::model::source::weights::FormatBytes>,
    /// Bytes by stored part (codes, block scales, second-level scales, row scales, row
    /// sums) for bitsandbytes' and PyTorch's formats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_part: Vec<crate::model::source::weights::PartBytes>,
    /// What transformers' get_memory_footprint() would report for the same model and
    /// precision (absent for ggml formats, which transformers cannot hold as such).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_footprint: Option<crate::model::source::weights::TransformersFootprint>,
    /// Weight bytes on 2 MB pages after loading, read from `/proc/self/smaps` (CPU;
    /// `kernel::pages`: 0 with `QUANTBENCH_HUGE_PAGES=0`, where Linux's transparent huge
    /// pages are off or it found no free 2 MB pages, and off Linux). The float and ggml
    /// matrices are counted; the bitsandbytes and PyTorch formats' are not. Records of
    /// builds before 5ffb59b (`environment.git_commit`) had them only with
    /// `QUANTBENCH_HUGE_PAGES=1`. Absent in files written before that switch existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_page_bytes: Option<u64>,
}

impl WeightsInfo {
    /// Exact bytes of every stored weight (the three groups together).
    pub fn total_bytes(&self) -> u64 {
        (self.embeddings.bytes + self.linear.bytes + self.norms_biases.bytes) as u64
    }
}

/// The one sequence of synthetic tokens a variant's workload tests take their depth
/// from: filled once (untimed) to the deepest depth that fits, held in memory while the
/// tests run (so inside every test's RSS figures), and copied into each test's own
/// cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadContext {
    pub depth: usize,
    /// Its exact KV-cache bytes.
    pub bytes: u64,
    pub fill_seconds: f64,
}

/// Summaries of the timed repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingSummary {
    pub generate_seconds: Summary,
    pub prefill_seconds: Summary,
    /// Mean time of one decode step, per repetition; absent when one new token was
    /// asked for (there is no decode step then).
    #[serde(default)]
    pub decode_step_seconds: Option<Summary>,
    /// new_tokens / generate_seconds, per repetition.
    pub tokens_per_second: Summary,
    /// [`crate::analysis::stats::decode_tokens_per_second`] of each repetition: the steady-state rate; absent when
    /// one new token was asked for.
    #[serde(default)]
    pub decode_tokens_per_second: Option<Summary>,
}

/// Everything measured about one variant. The names precision, status, error,
/// new_tokens, generated_token_ids, generated_text, weights_bytes and generate_seconds
/// are fixed for scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRecord {
    /// The engine that ran it (records written before engines were an axis: quantbench's
    /// own).
    #[serde(default)]
    pub engine: crate::engine::EngineKind,
    pub precision: Precision,
    pub policy: Policy,
    pub rest: RestDtype,
    pub status: VariantStatus,
    pub error: Option<String>,
    pub new_tokens: usize,
    /// New tokens of the first timed repetition.
    pub generated_token_ids: Vec<u32>,
    pub generated_text: String,
    /// Whether every timed and warm-up repetition produced the same tokens.
    pub tokens_identical_across_repetitions: Option<bool>,
    pub prompt_token_ids: Vec<u32>,
    /// Exact bytes the loaded weights hold.
    pub weights_bytes: Option<u64>,
    pub weights: Option<WeightsInfo>,
    /// Wall time of load and conversion (quantization included).
    pub load_seconds: Option<f64>,
    pub warmup_repetitions: usize,
    /// Total wall time of each timed repetition (prefill + all decode steps).
    pub generate_seconds: Vec<f64>,
    /// Time to first token of each timed repetition.
    pub prefill_seconds: Vec<f64>,
    /// Per timed repetition, the time of each decode step (new_tokens - 1 of them).
    pub decode_step_seconds: Vec<Vec<f64>>,
    pub timing: Option<TimingSummary>,
    pub memory: MemoryMoments,
    /// KL divergence, same-top-1 and perplexity against the f32 reference.
    #[serde(default)]
    pub quality: Option<crate::run::quality::QualityRecord>,
    /// Device energy over the timed repetitions per generated token, where a probe has
    /// an energy counter (NVML on NVIDIA GPUs); absent otherwise, never 0.
    #[serde(default)]
    pub energy_joules_per_token: Option<f64>,
    /// The weights were dequantized from an already quantized file and quantized again
    /// (`--requantize`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requantized: bool,
    /// Bytes of the loaded weights one forward step streams (every product's matrix, the
    /// LM head included, norms and biases; a table only looked up is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_streamed_bytes_per_step: Option<u64>,
    /// A mixture of experts over the timed generations: what each layer's router chose
    /// and what a decode step therefore read. Absent for models without experts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts: Option<ExpertsRecord>,
    /// The context the workload tests start from, filled once for the variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_context: Option<WorkloadContext>,
    /// The workload's test rows (scenarios with a `[workload]` table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<crate::run::workload::TestRecord>,
    /// What the engine says it did (threads, kernels, flash attention, KV type, mmap)
    /// and its own memory accounting, read after the variant ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_report: Option<crate::engine::EngineReport>,
    /// Rounds whose timings this record holds (`rounds` in the scenario: every variant
    /// ran once per round, the rounds interleaving the variants); 1 when absent.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub rounds: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl VariantStatus {
    /// "ok", "failed" or "interrupted", as results.json writes it.
    pub fn name(self) -> &'static str {
        match self {
            VariantStatus::Ok => "ok",
            VariantStatus::Failed => "failed",
            VariantStatus::Interrupted => "interrupted",
        }
    }
}

impl VariantRecord {
    pub fn is_ok(&self) -> bool {
        self.status == VariantStatus::Ok
    }

    /// Whether this variant is the f32 reference: precision f32 with the rest in f32 too,
    /// every weight as the checkpoint's floats. The one definition, used for speed-ups,
    /// savings and the quality pass's reference alike.
    pub fn is_f32_reference(&self) -> bool {
        crate::precision::Quantization::new(self.precision)
            .with_policy(self.policy)
            .with_rest(self.rest)
            .is_f32_reference()
    }

    /// Decode tokens per second of each timed repetition
    /// ([`crate::analysis::stats::decode_tokens_per_second`] of its decode steps); empty with one new token.
    pub fn decode_rates(&self) -> Vec<f64> {
        self.decode_step_seconds
            .iter()
            .filter_map(|d| crate::analysis::stats::decode_tokens_per_second(d))
            .collect()
    }

    /// The variant's one name ([`Quantization::key`]): what labels, compare, history,
    /// charts and exports call it.
    pub fn key(&self) -> String {
        crate::engine::variant_key(self.engine, self.quantization())
    }

    /// The precision, policy and rest the variant ran at.
    pub fn quantization(&self) -> Quantization {
        Quantization {
            precision: self.precision,
            policy: self.policy,
            rest: self.rest,
        }
    }

    /// A probe's figure at the moments the memory record holds.
    pub fn memory_at(&self, moment: Moment, key: &str) -> Option<u64> {
        let m = &self.memory;
        match moment {
            Moment::BeforeLoad => m.before_load.get(key),
            Moment::AfterLoad => m.after_load.get(key),
            Moment::Peak => m.peak_during_generation.as_ref()?.get(key),
            Moment::AfterCleanup => m.after_cleanup.as_ref()?.get(key),
        }
    }
}

/// A workload test's own figures: one sequence at least, each summary finite and >= 0
/// (its n at least 1), the fraction of bandwidth >= 0, and a test that ran holding the
/// repetitions its figures come from, each with its decode steps.
fn check_test(t: &crate::run::workload::TestRecord) -> Result<(), String> {
    use crate::run::workload::TestStatus;
    if t.test.batch == 0 {
        return Err("batch = 0: a test decodes at least one sequence".into());
    }
    if t.test.threads == Some(0) {
        return Err("threads = 0: a test runs on at least one thread".into());
    }
    let summaries = [
        ("prefill_tokens_per_second", &t.prefill_tokens_per_second),
        (
            "time_to_first_token_seconds",
            &t.time_to_first_token_seconds,
        ),
        ("decode_tokens_per_second", &t.decode_tokens_per_second),
        ("decode_step_p50_seconds", &t.decode_step_p50_seconds),
        ("decode_step_p90_seconds", &t.decode_step_p90_seconds),
        ("decode_step_p99_seconds", &t.decode_step_p99_seconds),
        ("decode_bandwidth_gbps", &t.decode_bandwidth_gbps),
    ];
    for (name, s) in summaries {
        let Some(s) = s else { continue };
        for (f, x) in [
            ("median", s.median),
            ("mean", s.mean),
            ("min", s.min),
            ("max", s.max),
            ("stddev", s.stddev),
            ("mad", s.mad),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(format!(
                    "{name}.{f} = {x} is impossible (times and rates are finite numbers >= 0)"
                ));
            }
        }
        if s.n == 0 {
            return Err(format!("{name} summarizes 0 repetitions"));
        }
    }
    if let Some(x) = t
        .bandwidth_fraction
        .filter(|x| !(x.is_finite() && *x >= 0.0))
    {
        return Err(format!(
            "bandwidth_fraction = {x} is impossible (a fraction of a bandwidth is a finite number >= 0)"
        ));
    }
    if let Some(x) = t.fill_seconds.filter(|x| !(x.is_finite() && *x >= 0.0)) {
        return Err(format!(
            "fill_seconds = {x} is impossible (a time is a finite number >= 0)"
        ));
    }
    if t.status == TestStatus::Ok {
        let steps = t.test.decode_steps();
        if t.test.prompt_tokens > 0 && t.prefill_seconds.is_empty() {
            return Err("the test ran, but holds no prefill time".into());
        }
        if steps > 0 && t.decode_step_seconds.is_empty() {
            return Err("the test ran, but holds no decode steps".into());
        }
        if let Some(r) = t.decode_step_seconds.iter().position(|d| d.len() != steps) {
            return Err(format!(
                "repetition {r} holds {} decode steps where the test takes {steps}",
                t.decode_step_seconds[r].len()
            ));
        }
    }
    Ok(())
}

/// The moments memory is read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    BeforeLoad,
    AfterLoad,
    Peak,
    AfterCleanup,
}

impl Moment {
    pub const ALL: [Moment; 4] = [
        Moment::BeforeLoad,
        Moment::AfterLoad,
        Moment::Peak,
        Moment::AfterCleanup,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Moment::BeforeLoad => "before load",
            Moment::AfterLoad => "after load",
            Moment::Peak => "peak during generation",
            Moment::AfterCleanup => "after cleanup",
        }
    }
}

impl RunRecord {
    /// The f32 reference variant that ran, if any (see [`VariantRecord::is_f32_reference`]):
    /// the base of speed-ups and savings.
    pub fn f32_reference(&self) -> Option<&VariantRecord> {
        self.variants
            .iter()
            .find(|v| v.is_f32_reference() && v.is_ok())
    }

    /// The base of `engine`'s speed-ups and savings: that engine's own f32 variant when it
    /// ran one (each engine against itself), else the run's [`RunRecord::f32_reference`].
    pub fn f32_reference_for(&self, engine: crate::engine::EngineKind) -> Option<&VariantRecord> {
        self.variants
            .iter()
            .find(|v| v.engine == engine && v.is_f32_reference() && v.is_ok())
            .or_else(|| self.f32_reference())
    }

    pub fn any_failed(&self) -> bool {
        self.variants.iter().any(|v| !v.is_ok())
    }

    /// Whether the scenario sets a quality gate (max_kl or min_same_top1) and the pass is on.
    pub fn has_gate(&self) -> bool {
        self.scenario.quality.enabled && self.gate_configured()
    }

    /// Whether the scenario sets a quality gate, whether or not the pass ran (with
    /// `--no-quality` it is set and not evaluated).
    pub fn gate_configured(&self) -> bool {
        let q = &self.scenario.quality;
        q.max_kl.is_some() || q.min_same_top1.is_some()
    }

    /// Variants that did not pass the scenario's quality gate, each with why: the gate
    /// failed, or it could not be evaluated (the quality pass failed, or a figure it
    /// needs is absent). Empty when the scenario sets no gate. Variants that failed to
    /// run are reported as failures, not here.
    pub fn gate_failures(&self) -> Vec<(&VariantRecord, String)> {
        if !self.has_gate() {
            return Vec::new();
        }
        self.variants
            .iter()
            .filter(|v| v.is_ok())
            .filter_map(|v| match v.quality.as_ref().and_then(|q| q.gate.as_ref()) {
                Some(g) if g.passed => None,
                Some(g) => Some((v, g.reasons.join("; "))),
                None => Some((
                    v,
                    format!(
                        "quality gate not evaluated: {}",
                        self.quality_error
                            .as_deref()
                            .unwrap_or("no quality figures were recorded for this variant")
                    ),
                )),
            })
            .collect()
    }

    /// Read a results.json, checking its schema version, every field's type (an error
    /// names the field's path) and that its figures are possible.
    pub fn from_json(text: &str, origin: &str) -> anyhow::Result<Self> {
        let text = crate::fsutil::strip_bom(text);
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| crate::InputError::new(format!("{origin}: not valid JSON: {e}")))?;
        if !v.is_object() {
            crate::bad_input!(
                "{origin}: not a quantbench results file (the top level is not a JSON object)"
            );
        }
        match v.get("schema_version") {
            None => crate::bad_input!("{origin}: no schema_version: not a quantbench results file"),
            Some(x) => match x.as_u64() {
                None => crate::bad_input!(
                    "{origin}: schema_version must be a whole number such as {SCHEMA_VERSION}, not {x}"
                ),
                Some(n) if n > SCHEMA_VERSION as u64 => crate::bad_input!(
                    "{origin}: schema_version {n} is newer than this quantbench reads ({SCHEMA_VERSION}); upgrade quantbench"
                ),
                Some(_) => {}
            },
        }
        let run: RunRecord = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            crate::InputError::new(format!("{origin}: field `{path}`: {}", e.into_inner()))
        })?;
        if let Err(problem) = run.check_figures() {
            crate::bad_input!("{origin}: {problem}");
        }
        Ok(run)
    }

    /// Refuse figures no measurement can give: negative or non-finite times and rates,
    /// rates outside 0..1, KL below 0, a workload test of no sequence or whose steps are
    /// missing, a bandwidth of 0. The error names the variant (or the environment) and
    /// the field.
    pub fn check_figures(&self) -> Result<(), String> {
        if let Some(b) = &self.environment.memory_bandwidth {
            for (name, x) in [("read_gbps", b.read_gbps), ("copy_gbps", b.copy_gbps)] {
                if !(x.is_finite() && x > 0.0) {
                    return Err(format!(
                        "environment.memory_bandwidth.{name} = {x} is impossible (a measured bandwidth is a finite number > 0); the file was edited or corrupted"
                    ));
                }
            }
            if !(b.seconds.is_finite() && b.seconds >= 0.0) || b.threads == 0 {
                return Err(format!(
                    "environment.memory_bandwidth: {} s on {} threads is impossible; the file was edited or corrupted",
                    b.seconds, b.threads
                ));
            }
        }
        fn time(v: f64) -> bool {
            v.is_finite() && v >= 0.0
        }
        // A whole generation always takes time: 0 would make its rates infinite.
        fn duration(v: f64) -> bool {
            v.is_finite() && v > 0.0
        }
        for (i, v) in self.variants.iter().enumerate() {
            let at = |field: &str| format!("variants[{i}] ({}): {field}", v.precision);
            let bad = |field: String, x: f64, valid: &str| {
                Err(format!(
                    "{field} = {x} is impossible ({valid}); the file was edited or corrupted"
                ))
            };
            for (name, xs) in [
                ("generate_seconds", &v.generate_seconds),
                ("prefill_seconds", &v.prefill_seconds),
            ] {
                for (k, &x) in xs.iter().enumerate() {
                    if !time(x) {
                        return bad(
                            at(&format!("{name}[{k}]")),
                            x,
                            "a time is a finite number >= 0",
                        );
                    }
                }
            }
            for (r, steps) in v.decode_step_seconds.iter().enumerate() {
                for (k, &x) in steps.iter().enumerate() {
                    if !time(x) {
                        return bad(
                            at(&format!("decode_step_seconds[{r}][{k}]")),
                            x,
                            "a time is a finite number >= 0",
                        );
                    }
                }
            }
            for (ti, t) in v.tests.iter().enumerate() {
                let steps = t.decode_step_seconds.iter().flatten();
                if let Some(&x) = t.prefill_seconds.iter().chain(steps).find(|&&x| !time(x)) {
                    return bad(
                        at(&format!("tests[{ti}] ({})", t.name)),
                        x,
                        "a time is a finite number >= 0",
                    );
                }
                check_test(t).map_err(|problem| {
                    format!(
                        "{}: {problem}; the file was edited or corrupted",
                        at(&format!("tests[{ti}] ({})", t.name))
                    )
                })?;
            }
            if let Some(c) = &v.workload_context {
                if !time(c.fill_seconds) {
                    return bad(
                        at("workload_context.fill_seconds"),
                        c.fill_seconds,
                        "a time is a finite number >= 0",
                    );
                }
            }
            if let Some(x) = v.load_seconds.filter(|&x| !time(x)) {
                return bad(at("load_seconds"), x, "a time is a finite number >= 0");
            }
            if let Some(t) = &v.timing {
                // Speed-ups divide by it.
                if !duration(t.generate_seconds.min) {
                    return bad(
                        at("timing.generate_seconds.min"),
                        t.generate_seconds.min,
                        "a generation's time is a finite number > 0",
                    );
                }
                let mut summaries = vec![
                    ("timing.generate_seconds", &t.generate_seconds),
                    ("timing.prefill_seconds", &t.prefill_seconds),
                    ("timing.tokens_per_second", &t.tokens_per_second),
                ];
                if let Some(d) = &t.decode_step_seconds {
                    summaries.push(("timing.decode_step_seconds", d));
                }
                if let Some(d) = &t.decode_tokens_per_second {
                    summaries.push(("timing.decode_tokens_per_second", d));
                }
                for (name, s) in summaries {
                    for (f, x) in [("median", s.median), ("min", s.min), ("max", s.max)] {
                        if !time(x) {
                            return bad(
                                at(&format!("{name}.{f}")),
                                x,
                                "times and rates are finite numbers >= 0",
                            );
                        }
                    }
                }
            }
            if let Some(q) = &v.quality {
                for (name, x) in [
                    ("kl_mean", q.kl_mean),
                    ("kl_p99", q.kl_p99),
                    ("kl_max", q.kl_max),
                ] {
                    if let Some(x) = x.filter(|&x| x.is_nan() || x < 0.0) {
                        return bad(at(&format!("quality.{name}")), x, "a KL divergence is >= 0");
                    }
                }
                if let Some(x) = q.same_top1.filter(|x| !(0.0..=1.0).contains(x)) {
                    return bad(at("quality.same_top1"), x, "a rate is between 0 and 1");
                }
                if let Some(x) = q.perplexity.filter(|&x| x.is_nan() || x < 1.0) {
                    return bad(at("quality.perplexity"), x, "a perplexity is >= 1");
                }
            }
            if let Some(x) = v.energy_joules_per_token.filter(|&x| !time(x)) {
                return bad(
                    at("energy_joules_per_token"),
                    x,
                    "energy is a finite number >= 0",
                );
            }
        }
        Ok(())
    }
}

/// What a mixture of experts' routers chose over a variant's timed generations (the
/// prompt's pass and every decode step of every repetition).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExpertsRecord {
    /// Every expert of every layer: what memory holds.
    pub expert_bytes_held: u64,
    /// Weight bytes a decode step read, on average: everything a step reads whatever its
    /// route, plus per layer the distinct experts the step's sequences were routed to.
    pub streamed_bytes_per_step_mean: f64,
    /// The same with `top_k` experts a layer (the least a step reads).
    pub streamed_bytes_per_step_least: u64,
    pub layers: Vec<LayerExperts>,
}

/// One layer's routing over the timed generations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerExperts {
    pub layer: usize,
    pub experts: usize,
    pub top_k: usize,
    /// Bytes one expert holds.
    pub expert_bytes: u64,
    pub decode_steps: u64,
    /// Distinct experts a decode step touched (the union over its sequences): mean, max.
    pub distinct_per_step_mean: f64,
    pub distinct_per_step_max: usize,
    /// The most distinct experts one prompt's pass touched.
    pub distinct_per_prompt_max: usize,
    /// Distinct experts touched over all the timed generations.
    pub distinct_over_generations: usize,
    /// How often, over the quality pass's positions, this layer's top-k set equals the
    /// reference's at the same position (teacher-forced on the same text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k_agreement: Option<f64>,
}

impl ExpertsRecord {
    /// The record of `usage`, with `least` the bytes a step reads at `top_k` experts a
    /// layer; `None` before any decode step or without experts.
    pub fn from_usage(usage: &crate::model::moe::ExpertUsage, least: usize) -> Option<Self> {
        let mean = usage.mean_step_bytes(least)?;
        let layers = usage
            .layers
            .iter()
            .zip(&usage.expert_bytes)
            .map(|((layer, experts, top_k, u), &bytes)| LayerExperts {
                layer: *layer,
                experts: *experts,
                top_k: *top_k,
                expert_bytes: bytes as u64,
                decode_steps: u.steps,
                distinct_per_step_mean: u.step_distinct_sum as f64 / u.steps.max(1) as f64,
                distinct_per_step_max: u.step_distinct_max,
                distinct_per_prompt_max: u.prompt_distinct_max,
                distinct_over_generations: u.touched.iter().filter(|&&t| t).count(),
                top_k_agreement: None,
            })
            .collect::<Vec<_>>();
        Some(ExpertsRecord {
            expert_bytes_held: layers
                .iter()
                .map(|l| (l.experts as u64) * l.expert_bytes)
                .sum(),
            streamed_bytes_per_step_mean: mean,
            streamed_bytes_per_step_least: least as u64,
            layers,
        })
    }
}

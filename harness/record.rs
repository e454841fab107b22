//! The result record: every measurement of a run lands here, and reports, charts and
//! comparisons read only this. Serialized as results.json (schema in docs/results-schema.md).

use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::model::weights::GroupBytes;
use crate::precision::{Policy, Precision, RestDtype};
use crate::probe::Reading;
use crate::scenario::Scenario;
use crate::stats::Summary;

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
    pub quality_reference: Option<crate::quality::ReferenceInfo>,
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
    /// The highest value seen by the background sampler during the timed repetitions.
    pub peak_during_generation: Option<Reading>,
    /// Samples the peak sampler took.
    pub peak_samples: usize,
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
}

/// Summaries of the timed repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingSummary {
    pub generate_seconds: Summary,
    pub prefill_seconds: Summary,
    /// Mean time of one decode step, per repetition.
    pub decode_step_seconds: Summary,
    /// new_tokens / generate_seconds, per repetition.
    pub tokens_per_second: Summary,
    /// (new_tokens - 1) / decode time, per repetition: the steady-state rate.
    pub decode_tokens_per_second: Summary,
}

/// Everything measured about one variant. The names precision, status, error,
/// new_tokens, generated_token_ids, generated_text, weights_bytes and generate_seconds
/// are fixed for scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRecord {
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
    pub quality: Option<crate::quality::QualityRecord>,
    /// Device energy over the timed repetitions per generated token, where a probe has
    /// an energy counter (NVML on NVIDIA GPUs); absent otherwise, never 0.
    #[serde(default)]
    pub energy_joules_per_token: Option<f64>,
}

impl VariantRecord {
    pub fn is_ok(&self) -> bool {
        self.status == VariantStatus::Ok
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
    /// The f32 variant that ran, if any: the reference for speed-ups and savings.
    pub fn f32_reference(&self) -> Option<&VariantRecord> {
        self.variants
            .iter()
            .find(|v| v.precision == Precision::F32 && v.is_ok())
    }

    pub fn any_failed(&self) -> bool {
        self.variants.iter().any(|v| !v.is_ok())
    }

    /// Variants that failed the scenario's quality gate.
    pub fn gate_failures(&self) -> Vec<&VariantRecord> {
        self.variants
            .iter()
            .filter(|v| {
                v.quality
                    .as_ref()
                    .and_then(|q| q.gate.as_ref())
                    .is_some_and(|g| !g.passed)
            })
            .collect()
    }

    /// Read a results.json, checking its schema version.
    pub fn from_json(text: &str, origin: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| crate::InputError::new(format!("{origin}: not valid JSON: {e}")))?;
        let version = v.get("schema_version").and_then(|x| x.as_u64());
        match version {
            None => crate::bad_input!("{origin}: no schema_version: not a quantbench results file"),
            Some(n) if n > SCHEMA_VERSION as u64 => crate::bad_input!(
                "{origin}: schema_version {n} is newer than this quantbench reads ({SCHEMA_VERSION}); upgrade quantbench"
            ),
            _ => {}
        }
        serde_json::from_value(v)
            .map_err(|e| crate::InputError::new(format!("{origin}: {e}")).into())
    }
}

//! Engines: what executes a model. The runner measures; an engine loads a model at a
//! precision, says what its weights take, runs tokens after a context and returns the
//! next tokens or the logits, says what it did, and drops the model. The runner, the
//! probes, the quality pass, the records and the reports learn no engine's internals:
//! they see [`Engine`] (before loading) and [`Loaded`] (a loaded model) only.
//!
//! - `quantbench.rs`: quantbench's own engine (model source + architecture + format ->
//!   kernels), the default.
//! - `llama_cpp/`: llama.cpp in process (the `llama-cpp` cargo feature): its own loader,
//!   tokenizer, quantizer (llama-quantize's types and mixes), kernels and backends.
//!
//! Adding an engine: one module here, one [`EngineKind`] with its arms (name, `about`,
//! what it honours, whether it is built), and its arm in [`open`]; the checklist is in
//! docs/engines.md.

pub mod quantbench;

#[cfg(feature = "llama-cpp")]
pub mod llama_cpp;

use std::any::Any;
use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::precision::Quantization;
use crate::record::{ModelInfo, WeightsInfo};
use crate::run::clock::Synchronize;

/// Which engine runs a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum EngineKind {
    /// quantbench's own engine (candle, and quantbench's CPU kernels).
    #[default]
    Quantbench,
    /// llama.cpp, linked in process (cargo feature `llama-cpp`).
    LlamaCpp,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Quantbench, EngineKind::LlamaCpp];

    /// The name scenarios, flags and records use.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Quantbench => "quantbench",
            EngineKind::LlamaCpp => "llama.cpp",
        }
    }

    /// Whether this build of quantbench has the engine (llama.cpp is a cargo feature).
    pub fn is_built(self) -> bool {
        match self {
            EngineKind::Quantbench => true,
            EngineKind::LlamaCpp => cfg!(feature = "llama-cpp"),
        }
    }

    /// What it is, for `quantbench list`.
    pub fn about(self) -> &'static str {
        match self {
            EngineKind::Quantbench => {
                "quantbench's own engine (the default): the precisions below"
            }
            EngineKind::LlamaCpp => {
                "llama.cpp in process: any GGUF file it runs; the float and ggml precisions below and llama-quantize's mixes"
            }
        }
    }

    /// Whether it honours the scenario's `[engine]` settings (flash attention, mmap,
    /// importance matrix, threads).
    pub fn takes_engine_settings(self) -> bool {
        matches!(self, EngineKind::LlamaCpp)
    }

    /// Whether the engine honours the engine setting `name` ([`EngineSettings`]): the
    /// llama.cpp engine every one; the own engine the importance matrix (its quantizers
    /// take it as llama-quantize's do).
    pub fn takes_setting(self, name: &str) -> bool {
        self.takes_engine_settings() || (self == EngineKind::Quantbench && name == "imatrix")
    }

    /// Whether the scenario's `policy` and `rest` are its choices (its own loader's);
    /// another engine quantizes as its own quantizer decides.
    pub fn chooses_policy_and_rest(self) -> bool {
        matches!(self, EngineKind::Quantbench)
    }

    /// Every engine's name, for error messages and `--help`.
    pub fn valid_names() -> String {
        EngineKind::ALL.map(|e| e.name()).join(", ")
    }

    /// The engine of a record written before engines were an axis: quantbench's own.
    pub fn is_default(&self) -> bool {
        *self == EngineKind::Quantbench
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        let found = match wanted.as_str() {
            "quantbench" | "own" => Some(EngineKind::Quantbench),
            "llama.cpp" | "llama-cpp" | "llamacpp" | "llama_cpp" => Some(EngineKind::LlamaCpp),
            _ => None,
        };
        found.ok_or_else(|| {
            InputError::new(format!(
                "unknown engine '{s}'; valid engines are: {}",
                EngineKind::valid_names()
            ))
        })
    }
}

impl Serialize for EngineKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for EngineKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A variant's one name: [`Quantization::key`] for quantbench's own engine (`q4_0/all`,
/// as before engines were an axis), the engine and the precision for any other
/// (`llama.cpp/q4_k_m`: policy and rest are own-engine choices, refused elsewhere).
pub fn variant_key(engine: EngineKind, q: Quantization) -> String {
    match engine {
        EngineKind::Quantbench => q.key(),
        other => format!("{other}/{}", q.precision),
    }
}

/// Settings an engine may honour (each recorded; one an engine cannot honour is refused
/// before the run, never dropped silently).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// llama.cpp: flash attention on or off (its default: auto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<bool>,
    /// llama.cpp: map the file (its default) or read it into memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmap: Option<bool>,
    /// Both engines: an importance matrix (llama-imatrix's GGUF or .dat file) for the
    /// quantizers (llama.cpp's, and the own engine's ggml ports), used as llama-quantize
    /// uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<std::path::PathBuf>,
    /// llama.cpp: threads for generation and batches (its default: every core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl EngineSettings {
    /// The settings that are set, by name (for refusals).
    pub fn set_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.flash_attention.is_some() {
            v.push("flash_attention");
        }
        if self.mmap.is_some() {
            v.push("mmap");
        }
        if self.imatrix.is_some() {
            v.push("imatrix");
        }
        if self.threads.is_some() {
            v.push("threads");
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        self.set_names().is_empty()
    }
}

/// What the runner needs to know of a model before loading it, whichever engine runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub vocab_size: usize,
    /// The context the model was trained for (generation and tests must fit in it).
    pub context_length: usize,
    /// Bytes the engine's KV cache holds per token of context (all layers, keys and
    /// values).
    pub kv_cache_bytes_per_token: usize,
    /// The BOS the engine puts first in a text, when the model asks for one.
    pub bos: Option<u32>,
    /// Per layer, the window a sliding-window layer's cache keeps (None: every
    /// position); empty where the engine does not say (every layer counted whole).
    pub kv_cache_windows: Vec<Option<usize>>,
}

impl ModelFacts {
    /// Bytes the KV cache holds for `sequences` of `positions` each: every layer's
    /// share of [`ModelFacts::kv_cache_bytes_per_token`] times the positions it keeps
    /// (a sliding-window layer its window at most).
    pub fn kv_cache_bytes(&self, sequences: usize, positions: usize) -> u64 {
        let layers = self.kv_cache_windows.len();
        if layers == 0 || self.kv_cache_windows.iter().all(Option::is_none) {
            return crate::run::workload::kv_cache_bytes(
                self.kv_cache_bytes_per_token,
                sequences,
                positions,
            );
        }
        let per_layer = (self.kv_cache_bytes_per_token / layers) as u64;
        self.kv_cache_windows
            .iter()
            .map(|w| per_layer * w.map_or(positions, |w| positions.min(w)) as u64)
            .sum::<u64>()
            .saturating_mul(sequences as u64)
    }
}

/// An engine with a model chosen, before any precision is loaded.
pub trait Engine: Synchronize {
    fn kind(&self) -> EngineKind;
    /// The model as this engine reads it, for the run record.
    fn model_info(&self) -> Result<ModelInfo>;
    fn facts(&self) -> &ModelFacts;
    /// `text` as the deployed engine tokenizes it (BOS first where the model asks).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Refuse (exit 2), before any variant runs, a precision this engine cannot make
    /// from this model.
    fn check_precision(&self, q: Quantization) -> Result<()>;
    /// Refuse a variant whose weights cannot fit in the memory this machine has left.
    fn check_memory(&self, q: Quantization) -> Result<()>;
    /// Whether the model is stored quantized (its f32 would be dequantized values).
    fn is_prequantized(&self) -> bool;
    /// Make what loading `q` needs and is not part of loading it (llama.cpp: the file its
    /// quantizer makes, or finds in its cache), before the variant's memory is first read
    /// and its load is timed.
    fn prepare(&self, _q: Quantization) -> Result<()> {
        Ok(())
    }
    /// Load the model at `q`.
    fn load(&self, q: Quantization) -> Result<Box<dyn Loaded>>;
}

/// What [`Loaded::logits_from`] hands its rows to: `(first position, rows)`.
pub type LogitRows<'a> = dyn FnMut(usize, &[Vec<f32>]) -> Result<()> + 'a;

/// An engine's context: the KV cache of one or more sequences.
pub trait Context: Any + Send + Sync {
    /// Positions its first sequence holds.
    fn positions(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// `ctx` as engine `T`'s own context type (an error when another engine's context was
/// given: the runner never mixes them).
pub fn own_context<T: Context>(ctx: &dyn Context) -> Result<&T> {
    ctx.as_any().downcast_ref::<T>().ok_or_else(|| {
        anyhow::anyhow!(
            "a context of another engine given to {}",
            std::any::type_name::<T>()
        )
    })
}

/// [`own_context`], mutably.
pub fn own_context_mut<T: Context>(ctx: &mut dyn Context) -> Result<&mut T> {
    ctx.as_any_mut().downcast_mut::<T>().ok_or_else(|| {
        anyhow::anyhow!(
            "a context of another engine given to {}",
            std::any::type_name::<T>()
        )
    })
}

/// A model loaded by an engine at one precision.
pub trait Loaded: Synchronize + Send + Sync {
    fn engine(&self) -> EngineKind;
    fn vocab_size(&self) -> usize;
    /// The context the model was trained for.
    fn context_length(&self) -> usize;
    fn end_of_text(&self) -> Option<u32>;
    fn detokenize(&self, ids: &[u32]) -> Result<String>;
    /// The weights' bytes, by group, type and part, as the engine holds them.
    fn weights(&self) -> WeightsInfo;
    /// Weight bytes one decode step reads whatever its token (under a mixture of
    /// experts, with `top_k` experts a layer: the least a step reads).
    fn streamed_bytes_per_step(&self) -> usize;
    /// What a mixture of experts' routers asked for since the last reset; `None` for a
    /// model without experts or an engine that cannot say.
    fn expert_usage(&self) -> Option<crate::model::moe::ExpertUsage> {
        None
    }
    /// Start counting expert usage afresh.
    fn reset_expert_usage(&self) {}
    /// Start (afresh) or stop keeping every position's top-k expert set.
    fn trace_routes(&self, _on: bool) {}
    /// The top-k sets kept since tracing started, per layer with experts.
    fn take_routes(&self) -> Option<Vec<(usize, Vec<u16>)>> {
        None
    }
    /// What the engine did (threads, kernels, flash attention, KV type, mmap, its own
    /// memory accounting): read after the variant ran.
    fn report(&self) -> EngineReport;
    /// An empty context for `batch` sequences of up to `capacity` positions each.
    fn new_context(&self, batch: usize, capacity: usize) -> Result<Box<dyn Context>>;
    /// A context for `batch` sequences that each hold `base`'s first `depth` positions of
    /// its sequence 0, with room for `capacity` positions.
    fn context_for(
        &self,
        base: &dyn Context,
        depth: usize,
        batch: usize,
        capacity: usize,
    ) -> Result<Box<dyn Context>>;
    /// A context that starts where `ctx` stands; what it appends never changes `ctx`.
    fn fork(&self, ctx: &dyn Context) -> Result<Box<dyn Context>>;
    /// Feed `batch` (sequences of equal length) after `ctx`; each sequence's greedy next
    /// token (the argmax of its last position's logits).
    fn next_tokens(&self, batch: &[&[u32]], ctx: &mut dyn Context) -> Result<Vec<u32>>;
    /// Feed one sequence's `ids` after `ctx`, no logits wanted (filling a context).
    fn feed(&self, ids: &[u32], ctx: &mut dyn Context) -> Result<()>;
    /// Run `ids` from an empty context and hand `f` the logits of every position from
    /// `first` on, in order, in chunks: `f(position, rows)`, rows[i] for position
    /// `position + i`.
    fn logits_from(&self, ids: &[u32], first: usize, f: &mut LogitRows<'_>) -> Result<()>;
    /// Run `body` with `threads` threads (all the engine's default when `None`); the
    /// number the engine used.
    fn with_threads(
        &self,
        threads: Option<usize>,
        body: &mut (dyn FnMut() -> Result<()> + Send),
    ) -> Result<usize>;
    /// Weight bytes on 2 MB pages now, when the engine can tell.
    fn huge_page_bytes(&self) -> Option<u64> {
        None
    }
}

/// What an engine did, in its own words, for the record: a list of named settings and
/// its own memory accounting (bytes by buffer), beside the runner's probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineReport {
    /// The engine's version (llama.cpp: its build number and commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Settings as the engine applied them ("threads" = "2", "flash_attention" =
    /// "off", "kv_type" = "f16", "mmap" = "on", "kernels" = "AVX2 ...").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<(String, String)>,
    /// The engine's own memory accounting, one row per buffer (llama.cpp: model, KV
    /// cache and compute buffers per backend buffer type), bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buffers: Vec<EngineBuffer>,
}

/// One buffer of an engine's own memory accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineBuffer {
    /// The backend buffer type ("CPU", "CPU_Mapped", "CUDA0", ...).
    pub buffer: String,
    /// What it holds: "model", "context" (the KV cache) or "compute".
    pub holds: String,
    pub bytes: u64,
}

/// The engine `kind` for the model `spec` (resolved; exit 2 on bad input), with the
/// scenario's `settings` checked against what the engine honours.
pub fn open(
    kind: EngineKind,
    scenario: &crate::scenario::Scenario,
    device: &candle_core::Device,
) -> Result<Box<dyn Engine>> {
    match kind {
        EngineKind::Quantbench => Ok(Box::new(quantbench::OwnEngine::open(scenario, device)?)),
        EngineKind::LlamaCpp => open_llama_cpp(scenario, device),
    }
}

#[cfg(feature = "llama-cpp")]
fn open_llama_cpp(
    scenario: &crate::scenario::Scenario,
    device: &candle_core::Device,
) -> Result<Box<dyn Engine>> {
    Ok(Box::new(llama_cpp::LlamaEngine::open(scenario, device)?))
}

#[cfg(not(feature = "llama-cpp"))]
fn open_llama_cpp(
    _scenario: &crate::scenario::Scenario,
    _device: &candle_core::Device,
) -> Result<Box<dyn Engine>> {
    crate::bad_input!(
        "engine llama.cpp is not in this build of quantbench: build it with the llama-cpp feature (cargo build --release --features llama-cpp; it needs cmake and libclang, see docs/engines.md)"
    )
}

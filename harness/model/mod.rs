//! A model spec plus a precision gives a [`LoadedModel`]: it generates, and it tells
//! exactly how many bytes its weights hold.
//!
//! - `arch/`: one file per architecture (config beside forward), behind [`CausalLm`].
//! - `nn.rs`: the layers they share; [`nn::Matrix`] is the only place a format is touched.
//! - `kv.rs` / `step.rs`: the key/value cache, and the CPU decode step's shared pieces
//!   (buffers, norms, rotary embedding, products into buffers).
//! - `source/`: where config, weights and tokenizer come from (a directory in the
//!   Hugging Face layout, the hub, a GGUF file, a seed), streamed tensor by tensor.
//! - `write/`: the model written for other tools (the Hugging Face layout, GGUF).

pub mod arch;
pub mod kv;
pub mod moe;
pub mod nn;
pub mod source;
pub mod step;
pub mod write;

use anyhow::{Context, Result};
use candle_core::Device;

pub use arch::{gpt2, llama, CausalLm, ModelConfig};
pub use gpt2::{Config, Gpt2};
pub use nn::{Cache, Matrix};
pub use source::spec::{resolve, ModelSource, ModelSpec, WeightFiles};
pub use source::tokenizer::Tokenizer;
pub use source::weights::Footprint;
use source::{gguf, synthetic, weights};

use crate::precision::{Precision, Quantization};

/// A model in memory at one precision, with its tokenizer and weight accounting.
pub struct LoadedModel {
    pub name: String,
    pub synthetic: bool,
    pub quantization: Quantization,
    pub config: ModelConfig,
    pub model: Box<dyn CausalLm>,
    pub tokenizer: Tokenizer,
    pub footprint: Footprint,
    device: Device,
}

impl LoadedModel {
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Weight bytes on 2 MB pages now ([`crate::kernel::pages::huge_page_bytes`] over
    /// the float and ggml matrices; 0 off the CPU). Reads `/proc/self/smaps`, so callers
    /// that time the load read it after the clock stops.
    pub fn huge_page_bytes(&self) -> u64 {
        if !self.device.is_cpu() {
            return 0;
        }
        let extents: Vec<(usize, usize)> = self
            .model
            .parts()
            .iter()
            .filter_map(|(_, part)| match part {
                nn::Part::Matrix(m) => m.cpu_extent(),
                nn::Part::Vector(_) => None,
            })
            .collect();
        crate::kernel::pages::huge_page_bytes(&extents)
    }
}

/// Load `source` at quantization `q` onto `device`, tensor by tensor. Callers that time
/// the load call [`check_memory`] first, outside the timed region.
pub fn load(source: &ModelSource, q: Quantization, device: &Device) -> Result<LoadedModel> {
    load_inner(source, q, device)
        .with_context(|| format!("loading {} at {}", source.display_name, q))
}

/// Refuse, before loading, a variant whose weights cannot fit in this machine's available
/// memory (on the CPU): loading it would swap for minutes or be killed. Says how much it
/// needs, how much there is, and what would fit.
pub fn check_memory(source: &ModelSource, q: Quantization, device: &Device) -> Result<()> {
    check_source_precision(source, q)?;
    if !device.is_cpu() {
        return Ok(());
    }
    let (weights, largest) = planned_weight_bytes(source, q);
    let need = weights + largest;
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if need <= available {
        return Ok(());
    }
    let gb = |b: u128| b as f64 / 1e9;
    let fits: Vec<String> = crate::precision::Precision::ALL
        .iter()
        .filter(|p| {
            let (w, l) = planned_weight_bytes(
                source,
                Quantization {
                    precision: **p,
                    ..q
                },
            );
            w + l <= available
        })
        .map(|p| p.to_string())
        .collect();
    crate::bad_input!(
        "at {} the weights need {:.1} GB, plus {:.1} GB while loading (the largest tensor in f32), but this machine has {:.1} GB available: it would swap or be killed, so it is not loaded; {}",
        q.precision,
        gb(weights),
        gb(largest),
        gb(available),
        if fits.is_empty() {
            "no precision fits; use a machine with more memory".to_string()
        } else {
            format!("precisions that fit: {}", fits.join(", "))
        }
    )
}

/// The memory this machine has available now (MemAvailable), when it can be read.
pub fn available_memory() -> Option<u128> {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    Some(sys.available_memory() as u128).filter(|&a| a > 0)
}

/// Why `bytes` of KV cache for `what` cannot be held: more than the scenario's memory
/// budget (`budget_mb`, the whole process's), or on the CPU more than the memory
/// available now (a GPU's own memory is its allocator's to refuse).
pub fn kv_cache_does_not_fit(
    bytes: u64,
    what: &str,
    device: &Device,
    budget_mb: Option<f64>,
) -> Option<String> {
    let gb = |b: f64| b / 1e9;
    if let Some(mb) = budget_mb {
        let budget = mb * 1e6;
        if bytes as f64 > budget {
            return Some(format!(
                "{what} needs {:.3} GB of KV cache, more than the scenario's whole memory_budget_mb of {mb}, so it is not run",
                gb(bytes as f64)
            ));
        }
    }
    if !device.is_cpu() {
        return None;
    }
    let available = available_memory()?;
    (bytes as u128 > available).then(|| {
        format!(
            "{what} needs {:.2} GB of KV cache, more than the {:.2} GB this machine has available: it would swap or be killed, so it is not run",
            gb(bytes as f64),
            gb(available as f64)
        )
    })
}

/// The exact weight bytes at `q` and the largest tensor held while loading: from the
/// config's shapes, or for `native` from the file's own tensor directory.
pub fn planned_weight_bytes(source: &ModelSource, q: Quantization) -> (u128, u128) {
    match (source.gguf(), q.precision) {
        (Some(file), Precision::Native) => {
            let bytes = file.tensors.values().map(|t| t.bytes as u128);
            (bytes.clone().sum(), bytes.max().unwrap_or(0))
        }
        _ => source
            .config
            .planned_weight_bytes_with(q, source.imatrix.is_some()),
    }
}

/// Check, before anything loads, that the source holds every tensor the configuration
/// expects, each with its shape and a type quantbench reads (an input error naming the
/// tensor otherwise): what loading would find out only part-way through.
pub fn check_tensors(source: &ModelSource) -> Result<()> {
    let cfg = &source.config;
    let src: Box<dyn weights::TensorSource> = match &source.weights {
        WeightFiles::Synthetic { .. } => return Ok(()),
        WeightFiles::Safetensors(paths) => Box::new(weights::SafetensorsSource::open(paths, cfg)?),
        WeightFiles::Gguf(file) => Box::new(gguf::GgufSource::new(file.clone(), cfg)?),
    };
    for (name, shape) in cfg.expected_tensors() {
        src.check(&name, &shape)?;
    }
    Ok(())
}

/// `native` needs a file with stored types; any other precision from an already
/// quantized file needs `--requantize`.
pub fn check_source_precision(source: &ModelSource, q: Quantization) -> Result<()> {
    if let Precision::Mix(m) = q.precision {
        if q.policy == crate::precision::Policy::Linear {
            crate::bad_input!(
                "precision {m} is llama-quantize's choice for every tensor, embeddings included; policy linear would change nothing while the record said linear; leave policy at all"
            );
        }
        crate::model::arch::mix_precisions(&*source.config, m, source.imatrix.is_some())?;
    }
    if q.precision == Precision::Native && q.policy == crate::precision::Policy::Linear {
        crate::bad_input!(
            "precision native keeps every tensor as the file stores it, so policy linear would change nothing while the record said linear; leave policy at all for native"
        );
    }
    if q.precision == Precision::Native && source.gguf().is_none() {
        crate::bad_input!(
            "precision native keeps every tensor as a GGUF file stores it, but {} is not a GGUF file; choose one of: {}",
            source.display_name,
            Precision::ALL.map(|p| p.name()).join(", ")
        );
    }
    if q.precision != Precision::Native && source.is_prequantized() && !source.requantize {
        crate::bad_input!(
            "{} holds quantized tensors ({}, {}); making {} from them means dequantizing and quantizing again, which quantbench does only when asked: pass --requantize (the record is then marked requantized), or measure the file as it is with --precisions native",
            source.display_name,
            source.file_type().unwrap_or_else(|| "no general.file_type".into()),
            source.stored_dtypes().ok().flatten().unwrap_or_default().join("+"),
            q.precision
        );
    }
    Ok(())
}

fn load_inner(source: &ModelSource, q: Quantization, device: &Device) -> Result<LoadedModel> {
    check_source_precision(source, q)?;
    let cfg = &source.config;
    // Weights on 2 MB pages where the binary's allocator is kernel::pages::WeightPages.
    let pages = device.is_cpu().then(crate::kernel::pages::loading);
    let src: Box<dyn weights::TensorSource> = match &source.weights {
        WeightFiles::Synthetic { seed } => {
            Box::new(synthetic::SyntheticSource::new(cfg.clone(), *seed))
        }
        WeightFiles::Safetensors(paths) => Box::new(weights::SafetensorsSource::open(paths, cfg)?),
        WeightFiles::Gguf(file) => Box::new(gguf::GgufSource::new(file.clone(), cfg)?),
    };
    // The importance matrix, when the run has one, beside the tensors for the
    // quantizers; the collector, when the model computes one, beside them too.
    let src = weights::WithExtras {
        inner: src.as_ref(),
        imatrix: source.imatrix.as_deref(),
        collector: source.collect.as_ref(),
    };
    let (model, fallbacks) = cfg.load(&src, q, device)?;
    drop(pages);
    let tokenizer = source.tokenizer()?;
    let mut footprint = Footprint::of(&model.parts());
    footprint.fallbacks = fallbacks;
    Ok(LoadedModel {
        name: source.display_name.clone(),
        synthetic: source.is_synthetic(),
        quantization: q,
        config: cfg.clone(),
        model,
        tokenizer,
        footprint,
        device: device.clone(),
    })
}

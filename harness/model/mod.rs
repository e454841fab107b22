//! A model spec plus a precision gives a [`LoadedModel`]: it generates, and it tells
//! exactly how many bytes its weights hold.

pub mod export;
pub mod gpt2;
pub mod spec;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;

use anyhow::{Context, Result};
use candle_core::Device;

use crate::precision::Quantization;
pub use gpt2::{Config, Gpt2};
pub use spec::{resolve, ModelSource, ModelSpec, WeightFiles};
pub use tokenizer::Tokenizer;
pub use weights::Footprint;

/// A model in memory at one precision, with its tokenizer and weight accounting.
pub struct LoadedModel {
    pub name: String,
    pub synthetic: bool,
    pub quantization: Quantization,
    pub model: Gpt2,
    pub tokenizer: Tokenizer,
    pub footprint: Footprint,
}

impl LoadedModel {
    pub fn config(&self) -> &Config {
        self.model.config()
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }
}

/// Load `source` at quantization `q` onto `device`.
pub fn load(source: &ModelSource, q: Quantization, device: &Device) -> Result<LoadedModel> {
    load_inner(source, q, device)
        .with_context(|| format!("loading {} at {}", source.display_name, q))
}

fn load_inner(source: &ModelSource, q: Quantization, device: &Device) -> Result<LoadedModel> {
    let cfg = &source.config;
    let (weights, fallbacks) = match &source.weights {
        WeightFiles::Synthetic { seed } => {
            let src = synthetic::SyntheticSource::new(cfg.clone(), *seed);
            weights::build(cfg, &src, q, device)?
        }
        WeightFiles::Safetensors(paths) => {
            let src = weights::SafetensorsSource::open(paths)?;
            weights::build(cfg, &src, q, device)?
        }
    };
    let tokenizer = match &source.tokenizer_dir {
        None => Tokenizer::gpt2()?,
        Some(dir) => Tokenizer::from_dir(dir)?,
    };
    let mut footprint = Footprint::of(&weights);
    footprint.fallbacks = fallbacks;
    Ok(LoadedModel {
        name: source.display_name.clone(),
        synthetic: source.is_synthetic(),
        quantization: q,
        model: Gpt2::new(cfg.clone(), weights, device.clone()),
        tokenizer,
        footprint,
    })
}

//! quantbench's own engine: a model source (synthetic, safetensors, GGUF) read through
//! one of its architectures, stored in one of its formats, run by its kernels (CPU) or
//! candle's (CUDA). The default engine.

use anyhow::{Context as _, Result};
use candle_core::{DType, Device};

use super::{Context, Engine, EngineKind, EngineReport, Loaded, LogitRows, ModelFacts};
use crate::model::{self, Cache, LoadedModel, ModelSource, Tokenizer};
use crate::precision::Quantization;
use crate::record::{ModelInfo, WeightsInfo};
use crate::run::clock::Synchronize;

/// Rows of logits computed at once by [`Loaded::logits_from`]: bounds the `[rows, vocab]`
/// f32 buffer (64 MB at a 128k vocabulary).
const LOGIT_CHUNK: usize = 128;

/// The own engine with its model resolved (config, weights' place, tokenizer).
pub struct OwnEngine {
    pub source: ModelSource,
    device: Device,
    /// The tokenizer's name; the tokenizer itself is made when a text is encoded and
    /// dropped after (a 128k vocabulary holds tens of MB, which would sit in every
    /// variant's memory readings).
    tokenizer_name: String,
    facts: ModelFacts,
}

impl OwnEngine {
    /// Resolve the scenario's model and check, before any variant runs, what loading
    /// would refuse: a missing tensor or one of the wrong shape.
    pub fn open(scenario: &crate::scenario::Scenario, device: &Device) -> Result<Self> {
        let mut source = model::resolve(&scenario.model_spec())?;
        source.requantize = scenario.requantize;
        if let Some(path) = &scenario.engine.imatrix {
            source.imatrix = Some(std::sync::Arc::new(crate::format::imatrix::Imatrix::read(
                path,
            )?));
        }
        model::check_tensors(&source)?;
        let tokenizer = source.tokenizer()?;
        let cfg = &source.config;
        let facts = ModelFacts {
            vocab_size: cfg.vocab_size(),
            context_length: cfg.context_length(),
            kv_cache_bytes_per_token: cfg.kv_cache_bytes_per_token(),
            bos: tokenizer.bos(),
            kv_cache_windows: cfg.layer_windows(),
        };
        Ok(OwnEngine {
            source,
            device: device.clone(),
            tokenizer_name: tokenizer.name(),
            facts,
        })
    }
}

impl Engine for OwnEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Quantbench
    }

    fn model_info(&self) -> Result<ModelInfo> {
        let cfg = &self.source.config;
        Ok(ModelInfo {
            spec: self.source.spec.to_string(),
            name: self.source.display_name.clone(),
            synthetic: self.source.is_synthetic(),
            parameters: cfg.parameter_count(),
            n_layer: cfg.n_layer(),
            n_embd: cfg.hidden_size(),
            n_head: cfg.n_head(),
            vocab_size: cfg.vocab_size(),
            n_positions: cfg.context_length(),
            architecture: cfg.architecture().to_string(),
            n_kv_head: Some(cfg.n_kv_head()),
            head_dim: Some(cfg.head_dim()),
            kv_cache_bytes_per_token: Some(cfg.kv_cache_bytes_per_token()),
            kv_cache_windows: Some(cfg.layer_windows())
                .filter(|w| w.iter().any(Option::is_some))
                .unwrap_or_default(),
            source_dtype: self.source.stored_dtypes()?.map(|d| d.join("+")),
            tokenizer: Some(self.tokenizer_name.clone()),
            file_type: self.source.file_type(),
            file_bytes: self
                .source
                .gguf()
                .and_then(|f| std::fs::metadata(&f.path).ok())
                .map(|m| m.len()),
        })
    }

    fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let tokenizer: Tokenizer = self.source.tokenizer()?;
        tokenizer.encode_prompt(text)
    }

    fn check_precision(&self, q: Quantization) -> Result<()> {
        model::check_source_precision(&self.source, q)
    }

    fn check_memory(&self, q: Quantization) -> Result<()> {
        model::check_memory(&self.source, q, &self.device)
    }

    fn is_prequantized(&self) -> bool {
        self.source.is_prequantized()
    }

    fn load(&self, q: Quantization) -> Result<Box<dyn Loaded>> {
        Ok(Box::new(model::load(&self.source, q, &self.device)?))
    }
}

impl Synchronize for OwnEngine {
    fn synchronize(&self) -> Result<()> {
        Synchronize::synchronize(&self.device)
    }
}

impl Context for Cache {
    fn positions(&self) -> usize {
        self.position()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

fn cache(ctx: &dyn Context) -> Result<&Cache> {
    super::own_context(ctx)
}

fn cache_mut(ctx: &mut dyn Context) -> Result<&mut Cache> {
    super::own_context_mut(ctx)
}

/// Greedy next tokens of each row of `[B, vocab]` logits.
fn argmax_rows(logits: &candle_core::Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?)
}

impl Synchronize for LoadedModel {
    fn synchronize(&self) -> Result<()> {
        Synchronize::synchronize(self.device())
    }
}

impl Loaded for LoadedModel {
    fn engine(&self) -> EngineKind {
        EngineKind::Quantbench
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size()
    }

    fn context_length(&self) -> usize {
        self.config.context_length()
    }

    fn end_of_text(&self) -> Option<u32> {
        self.config.eos_token_id()
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn weights(&self) -> WeightsInfo {
        let fp = &self.footprint;
        WeightsInfo {
            embeddings: fp.embeddings.clone(),
            linear: fp.linear.clone(),
            norms_biases: fp.norms_biases.clone(),
            parameters: fp.parameters(),
            bits_per_weight: fp.bits_per_weight(),
            fallbacks: fp.fallbacks.clone(),
            by_format: fp.by_format.clone(),
            by_part: fp.by_part.clone(),
            transformers_footprint: fp.transformers(
                self.config
                    .transformers_buffer_bytes(self.quantization.rest.dtype()),
            ),
            huge_page_bytes: None,
        }
    }

    fn streamed_bytes_per_step(&self) -> usize {
        self.model.streamed_bytes_per_step()
    }

    fn expert_usage(&self) -> Option<crate::model::moe::ExpertUsage> {
        self.model.expert_usage()
    }

    fn reset_expert_usage(&self) {
        self.model.reset_expert_usage()
    }

    fn trace_routes(&self, on: bool) {
        self.model.trace_routes(on)
    }

    fn take_routes(&self) -> Option<Vec<(usize, Vec<u16>)>> {
        self.model.take_routes()
    }

    fn report(&self) -> EngineReport {
        let kernels = if self.device().is_cpu() {
            crate::kernel::describe()
        } else {
            "candle (CUDA)".to_string()
        };
        EngineReport {
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            settings: vec![
                ("threads".into(), rayon::current_num_threads().to_string()),
                ("kernels".into(), kernels),
                ("kv_type".into(), "f32".into()),
                ("mmap".into(), "off".into()),
            ],
            buffers: Vec::new(),
        }
    }

    fn new_context(&self, _batch: usize, capacity: usize) -> Result<Box<dyn Context>> {
        Ok(Box::new(Cache::new(&self.config, capacity)))
    }

    fn context_for(
        &self,
        base: &dyn Context,
        depth: usize,
        batch: usize,
        capacity: usize,
    ) -> Result<Box<dyn Context>> {
        let base = cache(base)?;
        if base.can_prefix(depth) {
            return Ok(Box::new(base.prefix_for_batch(
                &self.config,
                depth,
                batch,
                capacity,
            )?));
        }
        // The base's sliding-window layers dropped what a shallower depth needs: fill a
        // context of that depth afresh, with the same tokens the base was filled with.
        let fresh = crate::run::workload::fill(self, depth)?;
        Ok(Box::new(cache(fresh.as_ref())?.prefix_for_batch(
            &self.config,
            depth,
            batch,
            capacity,
        )?))
    }

    fn fork(&self, ctx: &dyn Context) -> Result<Box<dyn Context>> {
        Ok(Box::new(cache(ctx)?.fork()))
    }

    fn next_tokens(&self, batch: &[&[u32]], ctx: &mut dyn Context) -> Result<Vec<u32>> {
        let cache = cache_mut(ctx)?;
        if let [one] = batch {
            let logits = self.model.forward_last(one, cache)?;
            return Ok(vec![logits.argmax(0)?.to_scalar::<u32>()?]);
        }
        argmax_rows(&self.model.forward_last_batch(batch, cache)?)
    }

    fn feed(&self, ids: &[u32], ctx: &mut dyn Context) -> Result<()> {
        self.model.hidden(ids, cache_mut(ctx)?)?;
        Ok(())
    }

    fn logits_from(&self, ids: &[u32], first: usize, f: &mut LogitRows<'_>) -> Result<()> {
        let mut cache = Cache::new(&self.config, ids.len());
        let hidden = self.model.hidden(ids, &mut cache)?; // [1, len, c]
        let mut p = first;
        while p < ids.len() {
            crate::run::interrupt::check()?;
            let rows = (ids.len() - p).min(LOGIT_CHUNK);
            let h = hidden.narrow(1, p, rows)?;
            let logits = self.model.logits(&h)?.squeeze(0)?.to_dtype(DType::F32)?;
            let logits: Vec<Vec<f32>> = logits.to_vec2()?;
            f(p, &logits)?;
            p += rows;
        }
        Ok(())
    }

    fn with_threads(
        &self,
        threads: Option<usize>,
        body: &mut (dyn FnMut() -> Result<()> + Send),
    ) -> Result<usize> {
        let Some(n) = threads else {
            body()?;
            return Ok(rayon::current_num_threads());
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .with_context(|| format!("starting a pool of {n} threads"))?;
        pool.install(|| {
            body()?;
            Ok(rayon::current_num_threads())
        })
    }

    fn huge_page_bytes(&self) -> Option<u64> {
        self.device()
            .is_cpu()
            .then(|| LoadedModel::huge_page_bytes(self))
    }
}

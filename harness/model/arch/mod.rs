//! The architectures quantbench's own engine runs, one file each (config, names, GGUF
//! keys, presets and forward pass together, in the style of candle-transformers' model
//! files), listed once in [`ARCHITECTURES`]. Everything outside this folder asks a
//! [`ModelConfig`] (an architecture's config behind [`ArchConfig`]) or the registry,
//! and never matches on an architecture's name: adding one is a new file and a line
//! here (docs/adding-an-architecture.md). The architecture is read from the source
//! (config.json's `model_type`, GGUF's `general.architecture`), never guessed.

pub mod gemma3;
pub mod gpt2;
pub mod llama;

use std::any::Any;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use crate::error::InputError;
use crate::model::nn::{Cache, Group, Matrix, Part};
use crate::model::source::gguf::GgufFile;
use crate::model::source::synthetic::{Init, Preset};
use crate::model::source::weights::TensorSource;
use crate::model::write::gguf::Meta;
use crate::precision::Quantization;

/// Every architecture, in the order listings show them.
pub static ARCHITECTURES: &[&Architecture] = &[
    &gpt2::ARCHITECTURE,
    &llama::ARCHITECTURE,
    &gemma3::ARCHITECTURE,
];

/// What the registry knows of an architecture before any model is read: the names it
/// answers to, how to read its config from each source, its synthetic presets.
pub struct Architecture {
    /// How listings title it.
    pub title: &'static str,
    /// The config.json `model_type` values it reads.
    pub model_types: &'static [&'static str],
    /// Whether it also reads a config.json without `model_type` (the oldest GPT-2 files
    /// have none).
    pub reads_untyped_config: bool,
    /// The GGUF `general.architecture` values it reads.
    pub gguf_architectures: &'static [&'static str],
    /// Read a config.json (already parsed; `text` as read, `model_type` as found);
    /// `origin` names the file in errors.
    pub from_config_json: fn(
        model_type: Option<&str>,
        value: serde_json::Value,
        text: &str,
        origin: &str,
    ) -> Result<ModelConfig>,
    /// Read the configuration from a GGUF file's metadata (and the shapes it leaves out)
    /// for `general.architecture` = `gguf_architecture`.
    pub from_gguf: fn(file: &GgufFile, gguf_architecture: &str) -> Result<ModelConfig>,
    /// Its synthetic presets (`synthetic:NAME`).
    pub presets: &'static [Preset],
}

/// The config.json `model_type` values quantbench runs, for messages.
pub fn supported_model_types() -> String {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.model_types.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The GGUF `general.architecture` values quantbench runs, for messages.
pub fn supported_gguf_architectures() -> String {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.gguf_architectures.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The architecture that reads GGUF files of `general.architecture` = `name`.
pub fn for_gguf_architecture(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.gguf_architectures.contains(&name))
}

/// A causal language model in memory: feed tokens after what a cache holds, get hidden
/// states, turn them into logits. Implemented by each architecture.
pub trait CausalLm: Send + Sync {
    /// Run `batch` (B sequences of equal length, decoded together through the same
    /// kernels) after what `cache` holds for them; the final hidden states
    /// `[B, len, hidden]` (after the final norm, before the LM head).
    fn hidden_batch(&self, batch: &[&[u32]], cache: &mut Cache) -> Result<Tensor>;

    /// Run `ids` (one sequence) after what `cache` holds; the final hidden states
    /// `[1, len, hidden]`.
    fn hidden(&self, ids: &[u32], cache: &mut Cache) -> Result<Tensor> {
        self.hidden_batch(&[ids], cache)
    }

    /// Logits from final hidden states `[.., hidden]` (the LM head alone).
    fn logits(&self, h: &Tensor) -> Result<Tensor>;

    /// Every stored tensor, by accounting group.
    fn parts(&self) -> Vec<(Group, Part<'_>)>;

    /// The token embedding table.
    fn token_embedding(&self) -> &Matrix;

    /// Logits `[vocab]` at the last position after feeding `ids`.
    fn forward_last(&self, ids: &[u32], cache: &mut Cache) -> Result<Tensor> {
        let h = self.hidden(ids, cache)?;
        let last = h.narrow(1, ids.len() - 1, 1)?;
        Ok(self.logits(&last)?.flatten_all()?)
    }

    /// Logits `[B, vocab]` at each sequence's last position after feeding `batch`.
    fn forward_last_batch(&self, batch: &[&[u32]], cache: &mut Cache) -> Result<Tensor> {
        let h = self.hidden_batch(batch, cache)?;
        let (b, len, _) = h.dims3()?;
        // One row per sequence: strided in `h` when B > 1, so made contiguous.
        let last = h.narrow(1, len - 1, 1)?.contiguous()?;
        Ok(self.logits(&last)?.reshape((b, ()))?)
    }

    /// Bytes of stored weights one forward step streams whatever its token: every
    /// matrix used as a product (the LM head included), norms and biases; an embedding
    /// table only looked up (one row per token) is left out.
    fn streamed_bytes_per_step(&self) -> usize;

    /// What a mixture of experts' routers asked for since the last reset, layer by
    /// layer; `None` for a model without experts.
    fn expert_usage(&self) -> Option<crate::model::moe::ExpertUsage> {
        None
    }

    /// Start counting expert usage afresh.
    fn reset_expert_usage(&self) {}

    /// Start (afresh) or stop keeping every position's top-k expert set, per layer with
    /// experts.
    fn trace_routes(&self, _on: bool) {}

    /// The top-k sets kept since tracing started: per layer with experts, (k, the sorted
    /// ids of every position, k a position). `None` without experts or tracing.
    fn take_routes(&self) -> Option<Vec<(usize, Vec<u16>)>> {
        None
    }

    /// Logits `[len, vocab]` at every position after feeding `ids`.
    fn forward_all(&self, ids: &[u32], cache: &mut Cache) -> Result<Tensor> {
        let h = self.hidden(ids, cache)?;
        Ok(self.logits(&h)?.squeeze(0)?)
    }
}

/// llama.cpp's converter stores some q and k projections with their rows permuted for
/// its interleaved rotation (`permute` in convert_hf_to_gguf.py): within each head of
/// `heads`, the first half of the rows interleaved with the second half. Both
/// directions, side by side; whole rows move, so every block's bytes stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopePermutation {
    pub heads: usize,
}

impl RopePermutation {
    /// Whether `rows` split into `heads` heads of an even size.
    pub fn fits(&self, rows: usize) -> bool {
        self.heads > 0 && rows.is_multiple_of(self.heads) && (rows / self.heads).is_multiple_of(2)
    }

    /// Row `r` of the file (llama.cpp's order) is row `to_file(r)` of transformers'.
    pub fn to_file(&self, r: usize, rows: usize) -> usize {
        let head_rows = rows / self.heads;
        let half = head_rows / 2;
        let (h, within) = (r / head_rows, r % head_rows);
        let (j, s) = (within / 2, within % 2);
        h * head_rows + s * half + j
    }

    /// Row `r` of transformers' order is row `from_file(r)` of the file.
    pub fn from_file(&self, r: usize, rows: usize) -> usize {
        let head_rows = rows / self.heads;
        let half = head_rows / 2;
        let (h, within) = (r / head_rows, r % head_rows);
        let (s, j) = (within / half, within % half);
        h * head_rows + 2 * j + s
    }
}

/// Where a canonical tensor lies inside a stacked one a checkpoint stores: slice
/// `index` of the `count` along the first dimension, of its last dimension every
/// `stride`-th element from `offset` (gate and up interleaved: stride 2), transposed to
/// `[out, in]` where the checkpoint keeps `[in, out]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSlice {
    pub key: String,
    pub index: usize,
    pub count: usize,
    pub offset: usize,
    pub stride: usize,
    pub transpose: bool,
}

/// llama.cpp's tensor names for an architecture's canonical ones, as tables (the shape
/// of llama-arch.cpp's LLM_TENSOR_NAMES): whole-model tensors by name, and each layer's
/// modules under the layer prefix (`h.3.attn.c_attn.weight` -> `blk.3.attn_qkv.weight`).
pub struct GgufNames {
    /// Canonical name -> llama.cpp's, for the tensors outside the layers.
    pub fixed: &'static [(&'static str, &'static str)],
    /// What a layer's canonical names start with, before the layer's number (`h.`).
    pub layers: &'static str,
    /// A layer's module -> llama.cpp's (`attn.c_attn` -> `attn_qkv`); the parameter's
    /// kind (`weight`, `bias`) follows unchanged.
    pub modules: &'static [(&'static str, &'static str)],
}

impl GgufNames {
    /// llama.cpp's name for `canonical`; `None` for a tensor the tables do not hold.
    pub fn name(&self, canonical: &str) -> Option<String> {
        if let Some((_, to)) = self.fixed.iter().find(|(from, _)| *from == canonical) {
            return Some(to.to_string());
        }
        let rest = canonical.strip_prefix(self.layers)?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (module, kind) = rest.rsplit_once('.')?;
        let (_, to) = self.modules.iter().find(|(from, _)| *from == module)?;
        Some(format!("blk.{layer}.{to}.{kind}"))
    }
}

/// One architecture's configuration: its shapes and switches, and everything the
/// sources, writers and loaders need to know of it. Each architecture's `Config`
/// implements it; [`ModelConfig`] holds one.
pub trait ArchConfig: std::fmt::Debug + Send + Sync + 'static {
    /// config.json's `model_type` (what results call `model.architecture`).
    fn model_type(&self) -> &'static str;
    fn vocab_size(&self) -> usize;
    /// How many positions the model attends over.
    fn context_length(&self) -> usize;
    fn n_layer(&self) -> usize;
    /// The width of the residual stream.
    fn hidden_size(&self) -> usize;
    fn n_head(&self) -> usize;
    /// Key/value heads: fewer than the query heads under grouped-query attention.
    fn n_kv_head(&self) -> usize;
    fn head_dim(&self) -> usize;
    fn tie_word_embeddings(&self) -> bool;
    /// The token id text starts with, where the model's config names one.
    fn bos_token_id(&self) -> Option<u32>;
    /// The token id the model's generation config ends text with, where known.
    fn eos_token_id(&self) -> Option<u32>;

    /// The canonical tensor names and shapes a source must hold, as the source stores
    /// them (see [`ArchConfig::stored_in_out`]).
    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)>;
    /// Number of parameters, counting a tied LM head once.
    fn parameter_count(&self) -> usize {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
    /// Whether a canonical tensor is an embedding table or the LM head: stored at the
    /// precision only under the `all` policy, as the loaders do.
    fn is_embedding(&self, name: &str) -> bool;
    /// Whether the source stores this matrix `[in, out]` (GPT-2's Conv1D), to be
    /// transposed to `[out, in]` as it loads.
    fn stored_in_out(&self, _name: &str) -> bool {
        false
    }
    /// The buffers transformers' `get_memory_footprint()` adds to the parameters, for
    /// floating buffers in `rest`: (as transformers 5 registers them, as older 4.x
    /// releases did where they differ).
    fn transformers_buffer_bytes(&self, rest: DType) -> (u64, Option<u64>);
    /// The config.json transformers would write for this model.
    fn to_json(&self) -> serde_json::Value;
    /// Whether GPT-2's BPE (what a synthetic model is tokenized with, offline) is this
    /// architecture's own tokenizer.
    fn tokenizer_is_gpt2s(&self) -> bool {
        false
    }
    /// Why a transformers config.json cannot state this model, when it cannot (an
    /// export in the Hugging Face layout is then refused with it).
    fn config_json_cannot_state(&self) -> Option<String> {
        None
    }
    /// Build the model at `q` from `src`; the model and the fallback notes.
    fn load(
        &self,
        src: &dyn TensorSource,
        q: Quantization,
        device: &Device,
    ) -> Result<(Box<dyn CausalLm>, Vec<String>)>;

    /// Canonical names for the keys a safetensors checkpoint holds: (canonical, key)
    /// for each key that is a weight (layout prefixes removed, buffers left out).
    fn canonical_keys(&self, keys: &[String]) -> Vec<(String, String)> {
        keys.iter().map(|k| (k.clone(), k.clone())).collect()
    }
    /// Canonical tensors a safetensors checkpoint stores inside a stacked one (gpt-oss's
    /// experts), for the stacked keys among `keys`; the canonical names these give are
    /// read through the slice, not looked up by [`ArchConfig::canonical_keys`].
    fn stored_slices(&self, _keys: &[String]) -> Vec<(String, StoredSlice)> {
        Vec::new()
    }
    /// The token embedding's canonical name (a checkpoint without it is refused).
    fn embedding_name(&self) -> &'static str;
    /// How a synthetic model draws this tensor (transformers' initialisation).
    fn init(&self, name: &str) -> Init;

    /// GGUF's `general.architecture` for this model.
    fn gguf_architecture(&self) -> &'static str;
    /// llama.cpp's name for a canonical tensor.
    fn gguf_name(&self, canonical: &str) -> Option<String>;
    /// How the file orders the rows of a tensor (by its llama.cpp name), when not as
    /// transformers does.
    fn gguf_permutation(&self, _gguf_name: &str) -> Option<RopePermutation> {
        None
    }
    /// What llama.cpp's converter adds to every element of a tensor (by its llama.cpp
    /// name) as it writes it (Gemma 3's norms are stored as `1 + w`): the GGUF reader
    /// subtracts it, the writer adds it, so sources agree on transformers' values.
    fn gguf_shift(&self, _gguf_name: &str) -> f32 {
        0.0
    }
    /// Where a canonical tensor is one slice of a stacked GGUF tensor (a mixture of
    /// experts' `blk.N.ffn_gate_exps.weight`, `[experts, out, in]`): that tensor's name,
    /// the slice's index and how many slices it stacks.
    fn gguf_slice(&self, _canonical: &str) -> Option<(String, usize, usize)> {
        None
    }
    /// The row counts a stored matrix is split into at load (Phi-3's fused qkv_proj into
    /// q, k and v), each stored as a matrix of its own; `None` when it is kept whole.
    fn load_splits(&self, _canonical: &str) -> Option<Vec<usize>> {
        None
    }
    /// Per layer, the window a sliding-window layer attends over (its KV cache keeps
    /// only that); `None` for a layer that sees the whole context.
    fn layer_windows(&self) -> Vec<Option<usize>> {
        vec![None; self.n_layer()]
    }
    /// Whether a matrix stays in the rest dtype at every precision (a mixture of
    /// experts' router, as llama-quantize leaves `ffn_gate_inp.weight`).
    fn never_quantized(&self, _canonical: &str) -> bool {
        false
    }
    /// The hyper-parameters a GGUF file states, keyed from [`crate::model::source::gguf::Kv`].
    fn gguf_metadata(&self) -> Vec<(String, Meta)>;
    /// Tensors a GGUF file holds that no source stores (llama3's `rope_freqs.weight`).
    fn gguf_extra_tensors(&self) -> Vec<(String, Vec<f32>)> {
        Vec::new()
    }
    /// What a GGUF file cannot say of this model (each a note of the export).
    fn gguf_notes(&self) -> Vec<String> {
        Vec::new()
    }

    fn clone_box(&self) -> Box<dyn ArchConfig>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn eq_dyn(&self, other: &dyn ArchConfig) -> bool;
}

/// The `clone_box` / `as_any` / `eq_dyn` plumbing of [`ArchConfig`] for a config type.
#[macro_export]
macro_rules! arch_config_plumbing {
    () => {
        fn clone_box(&self) -> Box<dyn $crate::model::arch::ArchConfig> {
            Box::new(self.clone())
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
        fn eq_dyn(&self, other: &dyn $crate::model::arch::ArchConfig) -> bool {
            other.as_any().downcast_ref::<Self>() == Some(self)
        }
    };
}

/// A model's configuration, whichever the architecture: one architecture's config
/// behind [`ArchConfig`] (its methods are this type's, through `Deref`).
#[derive(Debug)]
pub struct ModelConfig(Box<dyn ArchConfig>);

impl Clone for ModelConfig {
    fn clone(&self) -> Self {
        ModelConfig(self.0.clone_box())
    }
}

impl PartialEq for ModelConfig {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_dyn(&*other.0)
    }
}

impl<T: ArchConfig> From<T> for ModelConfig {
    fn from(c: T) -> Self {
        ModelConfig::new(c)
    }
}

impl std::ops::Deref for ModelConfig {
    type Target = dyn ArchConfig;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl ModelConfig {
    pub fn new(config: impl ArchConfig) -> Self {
        ModelConfig(Box::new(config))
    }

    /// The architecture's own config, when it is a `T`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The architecture's own config, when it is a `T`, to change.
    pub fn downcast_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut()
    }

    /// Parse and check a transformers config.json; the architecture is the one of the
    /// registry that reads its `model_type`. `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let stripped = crate::fsutil::strip_bom(text);
        let value: serde_json::Value = serde_json::from_str(stripped)
            .map_err(|e| InputError::new(format!("{origin}: not valid JSON: {e}")))?;
        let model_type = match value.get("model_type") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => crate::bad_input!(
                "{origin}: field `model_type`: expected a string such as \"llama\", found {other}"
            ),
        };
        let arch = ARCHITECTURES.iter().find(|a| match model_type.as_deref() {
            None => a.reads_untyped_config,
            Some(mt) => a.model_types.contains(&mt),
        });
        match arch {
            Some(a) => (a.from_config_json)(model_type.as_deref(), value, text, origin),
            None => crate::bad_input!(
                "{origin}: model_type '{}' is not supported; supported: {}",
                model_type.unwrap_or_default(),
                supported_model_types()
            ),
        }
    }

    /// The architecture as config.json's `model_type` names it.
    pub fn architecture(&self) -> &'static str {
        self.model_type()
    }

    /// Bytes the KV cache holds per token of context: keys and values of every layer,
    /// in f32 (quantbench's cache keeps activations in f32).
    pub fn kv_cache_bytes_per_token(&self) -> usize {
        2 * self.n_layer() * self.n_kv_head() * self.head_dim() * 4
    }

    /// The exact bytes the weights will take at `q`, worked out from the shapes before
    /// anything is loaded (the loaders' choices: policy, rest dtype, block fallbacks),
    /// and the largest single tensor in f32 (what loading holds on top, once).
    pub fn planned_weight_bytes(&self, q: Quantization) -> (u128, u128) {
        self.planned_weight_bytes_with(q, false)
    }

    /// [`ModelConfig::planned_weight_bytes`] for a run with or without an importance
    /// matrix (a mix's plan can differ: llama-quantize's IQ4 mixes keep early ffn_down
    /// matrices at Q5_K only without one).
    pub fn planned_weight_bytes_with(&self, q: Quantization, has_imatrix: bool) -> (u128, u128) {
        use crate::precision::Precision;
        // Each matrix's precision: the mix's plan, or the one precision where the policy
        // and the architecture let it apply; `None` keeps a tensor in the rest dtype.
        let plan = match q.precision {
            Precision::Mix(m) => mix_precisions(&**self, m, has_imatrix).ok(),
            _ => None,
        };
        let quantize_embeddings =
            q.policy == crate::precision::Policy::All && q.precision.holds_embeddings();
        let precision_of = |name: &str| -> Option<Precision> {
            match &plan {
                Some(plan) => plan.get(name).copied(),
                None if self.is_embedding(name) && !quantize_embeddings => None,
                None if self.never_quantized(name) => None,
                None => Some(q.precision),
            }
        };
        let rest = q.rest.dtype().size_in_bytes() as u128;
        let mut total = 0u128;
        let mut largest = 0u128;
        for (name, shape) in self.expected_tensors() {
            let n: usize = shape.iter().product();
            largest = largest.max(n as u128 * 4);
            total += match (shape.as_slice(), precision_of(&name)) {
                ([rows, cols], Some(p)) => {
                    // A matrix stored [in, out] has rows of `in` once transposed.
                    let (out, row_len) = if self.stored_in_out(&name) {
                        (*cols, *rows)
                    } else {
                        (*rows, *cols)
                    };
                    match self.load_splits(&name) {
                        Some(parts) => parts
                            .iter()
                            .map(|&r| p.matrix_bytes(r, row_len) as u128)
                            .sum(),
                        None => p.matrix_bytes(out, row_len) as u128,
                    }
                }
                _ => n as u128 * rest,
            };
        }
        (total, largest)
    }
}

/// The precision of every matrix at llama-quantize's file type `mix`, as
/// `format::mix_plan` chooses it for the tensors this model's GGUF export writes (in
/// that order, a mixture of experts' slices as their one stacked tensor); a canonical
/// name missing from the map stays in the rest dtype. An input error, as llama-quantize
/// refuses, for a mix that puts a tensor in a type it quantizes only with an importance
/// matrix when there is none.
pub fn mix_precisions(
    cfg: &dyn ArchConfig,
    mix: crate::format::mix::Mix,
    has_imatrix: bool,
) -> Result<std::collections::HashMap<String, crate::precision::Precision>> {
    use crate::format::mix_plan::{plan, PlanModel, PlanTensor};
    use crate::precision::Precision;
    if !crate::format::mix_plan::plannable(mix.llama_ftype()) {
        crate::bad_input!(
            "engine quantbench cannot make precision {mix}; use the llama.cpp engine (--engine llama.cpp)"
        );
    }
    // The GGUF tensors in the export's order, with the canonical names behind each.
    let mut tensors: Vec<PlanTensor> = Vec::new();
    let mut behind: Vec<Vec<String>> = Vec::new();
    let mut n_expert = 0;
    for (name, shape) in cfg.expected_tensors() {
        let mut ne: Vec<usize> = shape.iter().rev().copied().collect();
        if cfg.stored_in_out(&name) && ne.len() == 2 {
            ne.reverse();
        }
        let (gname, count) = match cfg.gguf_slice(&name) {
            Some((g, _, count)) => (g, count),
            None => (cfg.gguf_name(&name).unwrap_or_else(|| name.clone()), 1),
        };
        if count > 1 {
            ne.push(count);
            n_expert = n_expert.max(count);
        }
        match tensors.last() {
            Some(last) if count > 1 && last.name == gname => {
                behind.last_mut().expect("one per tensor").push(name)
            }
            _ => {
                tensors.push(PlanTensor { name: gname, ne });
                behind.push(vec![name]);
            }
        }
    }
    let model = PlanModel {
        arch: cfg.gguf_architecture().to_string(),
        n_layer: cfg.n_layer(),
        n_expert,
        n_head: cfg.n_head(),
        n_head_kv: cfg.n_kv_head(),
        has_imatrix,
    };
    let types = plan(mix.llama_ftype(), &model, &tensors)?;
    let mut out = std::collections::HashMap::new();
    for ((names, ty), t) in behind.into_iter().zip(types).zip(&tensors) {
        let Some(ty) = ty else { continue };
        if !has_imatrix && crate::format::mix_plan::requires_imatrix(mix.llama_ftype(), &t.name, ty)
        {
            crate::bad_input!(
                "precision {mix}: llama-quantize refuses to make it without an importance matrix ({} would be {ty}, which it quantizes only with one); give --imatrix FILE (llama-imatrix's, or one `quantbench imatrix` makes), or choose a mix that needs none (q3_k_s and above, iq3_s, iq3_m, iq4_xs, iq4_nl)",
                t.name
            );
        }
        let p = Precision::ALL
            .iter()
            .chain(&Precision::TYPES)
            .copied()
            .find(|p| p.format().and_then(|f| f.ggml_type()) == Some(ty))
            .ok_or_else(|| {
                InputError::new(format!(
                    "engine quantbench cannot make precision {mix} for this model: it puts {} in {ty}, which quantbench does not make yet",
                    names[0]
                ))
            })?;
        for n in names {
            out.insert(n, p);
        }
    }
    Ok(out)
}

/// Which layers attend through a sliding window, from a config.json's `layer_types`
/// (transformers' `sliding_attention` / `full_attention`, one per layer): Gemma 3's and
/// gpt-oss's. `origin` names the file in errors.
pub fn sliding_layers(types: &[String], layers: usize, origin: &str) -> Result<Vec<bool>> {
    if types.len() != layers {
        crate::bad_input!(
            "{origin}: layer_types has {} entries for {layers} layers (num_hidden_layers); give one per layer",
            types.len()
        );
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "sliding_attention" => Ok(true),
            "full_attention" => Ok(false),
            other => Err(InputError::new(format!(
                "{origin}: layer_types holds '{other}'; valid: sliding_attention, full_attention"
            ))
            .into()),
        })
        .collect()
}

/// Check a batch: at least one sequence, all of one length; the sequences laid end to
/// end (row-major `[B, len]`).
pub fn flatten_batch(batch: &[&[u32]]) -> Result<(usize, usize, Vec<u32>)> {
    let Some(first) = batch.first() else {
        crate::bad_input!("no sequences to run");
    };
    let len = first.len();
    if let Some((i, s)) = batch.iter().enumerate().find(|(_, s)| s.len() != len) {
        crate::bad_input!(
            "sequence {i} of the batch has {} tokens, the first has {len}: a batch runs sequences of one length",
            s.len()
        );
    }
    Ok((batch.len(), len, batch.concat()))
}

/// Refuse a forward pass that would run past the context or read outside the vocabulary.
pub fn check_ids(ids: &[u32], start: usize, context: usize, vocab: usize) -> Result<()> {
    if ids.is_empty() {
        crate::bad_input!("no tokens to run");
    }
    if start + ids.len() > context {
        return Err(InputError::new(format!(
            "sequence of {} positions exceeds the model's context of {context}",
            start + ids.len()
        ))
        .into());
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(InputError::new(format!(
            "token id {bad} is outside the model's vocabulary of {vocab} (vocab_size)"
        ))
        .into());
    }
    Ok(())
}

//! The architectures quantbench runs, one file each (config beside the forward pass, in
//! the style of candle-transformers' model files), behind one small interface
//! ([`CausalLm`]) that the runner, generate, the quality pass and the benches call. The
//! architecture is read from the source (config.json's `model_type`), never guessed from
//! a name.

pub mod gpt2;
pub mod llama;

use anyhow::Result;
use candle_core::Tensor;

use crate::error::InputError;
use crate::model::nn::{Cache, Group, Matrix, Part};
use crate::model::weights::TensorSource;

/// The `model_type` values quantbench runs.
pub const SUPPORTED_MODEL_TYPES: [&str; 5] = ["gpt2", "llama", "mistral", "qwen2", "qwen3"];

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

    /// Logits `[len, vocab]` at every position after feeding `ids`.
    fn forward_all(&self, ids: &[u32], cache: &mut Cache) -> Result<Tensor> {
        let h = self.hidden(ids, cache)?;
        Ok(self.logits(&h)?.squeeze(0)?)
    }
}

/// A model's configuration, whichever the architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Gpt2(gpt2::Config),
    Llama(llama::Config),
}

impl From<gpt2::Config> for ModelConfig {
    fn from(c: gpt2::Config) -> Self {
        ModelConfig::Gpt2(c)
    }
}

impl From<llama::Config> for ModelConfig {
    fn from(c: llama::Config) -> Self {
        ModelConfig::Llama(c)
    }
}

impl ModelConfig {
    /// Parse and check a transformers config.json; the architecture comes from its
    /// `model_type` (absent: GPT-2, as the oldest GPT-2 files have none). `origin` names
    /// the file in errors.
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
        match model_type.as_deref() {
            None | Some("gpt2") => Ok(ModelConfig::Gpt2(gpt2::Config::from_json(text, origin)?)),
            Some(mt @ ("llama" | "mistral" | "qwen2" | "qwen3")) => {
                let family = llama::Family::parse(mt).expect("listed above");
                Ok(ModelConfig::Llama(llama::Config::from_value(
                    value, family, origin,
                )?))
            }
            Some(other) => crate::bad_input!(
                "{origin}: model_type '{other}' is not supported; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        }
    }

    /// The config.json transformers would write for this model.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ModelConfig::Gpt2(c) => c.to_json(),
            ModelConfig::Llama(c) => c.to_json(),
        }
    }

    /// The architecture as config.json's `model_type` names it.
    pub fn architecture(&self) -> &'static str {
        match self {
            ModelConfig::Gpt2(_) => "gpt2",
            ModelConfig::Llama(c) => c.family.model_type(),
        }
    }

    /// How many positions the model attends over (n_positions, max_position_embeddings).
    pub fn context_length(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_positions,
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    pub fn n_layer(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_layer,
            ModelConfig::Llama(c) => c.num_hidden_layers,
        }
    }

    /// The width of the residual stream (n_embd, hidden_size).
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_embd,
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }

    pub fn n_head(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_head,
            ModelConfig::Llama(c) => c.num_attention_heads,
        }
    }

    /// Key/value heads: fewer than the query heads under grouped-query attention.
    pub fn n_kv_head(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_head,
            ModelConfig::Llama(c) => c.num_key_value_heads,
        }
    }

    pub fn head_dim(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.head_dim(),
            ModelConfig::Llama(c) => c.head_dim,
        }
    }

    pub fn tie_word_embeddings(&self) -> bool {
        match self {
            ModelConfig::Gpt2(c) => c.tie_word_embeddings,
            ModelConfig::Llama(c) => c.tie_word_embeddings,
        }
    }

    /// Bytes the KV cache holds per token of context: keys and values of every layer,
    /// in f32 (quantbench's cache keeps activations in f32).
    pub fn kv_cache_bytes_per_token(&self) -> usize {
        2 * self.n_layer() * self.n_kv_head() * self.head_dim() * 4
    }

    /// The canonical tensor names and shapes a source must hold.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            ModelConfig::Gpt2(c) => gpt2::expected_tensors(c),
            ModelConfig::Llama(c) => llama::expected_tensors(c),
        }
    }

    /// Number of parameters, counting a tied LM head once.
    pub fn parameter_count(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.parameter_count(),
            ModelConfig::Llama(_) => self
                .expected_tensors()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum(),
        }
    }

    /// The token id the model's generation config ends text with, where known.
    pub fn eos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::Gpt2(_) => Some(crate::model::tokenizer::END_OF_TEXT),
            ModelConfig::Llama(c) => c.eos_token_id,
        }
    }

    /// Whether a canonical tensor name is an embedding table or the LM head: stored at
    /// the precision only under the `all` policy, as the loaders do.
    fn is_embedding(&self, name: &str) -> bool {
        match self {
            ModelConfig::Gpt2(_) => matches!(name, "wte.weight" | "wpe.weight" | "lm_head.weight"),
            ModelConfig::Llama(_) => {
                matches!(name, "model.embed_tokens.weight" | "lm_head.weight")
            }
        }
    }

    /// The buffers transformers' `get_memory_footprint()` adds to the parameters, for
    /// a model whose floating buffers are in `rest`: (as transformers 5 registers them,
    /// as older 4.x releases did where they differ). GPT-2 now registers none; older
    /// releases kept, per attention layer, a boolean causal mask of n_positions² bytes
    /// (`bias`) and a scalar `masked_bias` (-1e4) in the model's dtype. The Llama family
    /// registers the rotary `inv_freq` and `original_inv_freq`, head_dim / 2 f32 each,
    /// whatever the model's dtype.
    pub fn transformers_buffer_bytes(&self, rest: candle_core::DType) -> (u64, Option<u64>) {
        match self {
            ModelConfig::Gpt2(c) => {
                let per_layer = (c.n_positions * c.n_positions + rest.size_in_bytes()) as u64;
                (0, Some(c.n_layer as u64 * per_layer))
            }
            ModelConfig::Llama(c) => ((2 * (c.head_dim / 2) * 4) as u64, None),
        }
    }

    /// The exact bytes the weights will take at `q`, worked out from the shapes before
    /// anything is loaded (the loaders' choices: policy, rest dtype, block fallbacks),
    /// and the largest single tensor in f32 (what loading holds on top, once).
    pub fn planned_weight_bytes(&self, q: crate::precision::Quantization) -> (u128, u128) {
        let rest = q.rest.dtype().size_in_bytes() as u128;
        let mut total = 0u128;
        let mut largest = 0u128;
        for (name, shape) in self.expected_tensors() {
            let n: usize = shape.iter().product();
            largest = largest.max(n as u128 * 4);
            let quantize_embeddings =
                q.policy == crate::precision::Policy::All && q.precision.holds_embeddings();
            total += match shape.as_slice() {
                [_, _] if self.is_embedding(&name) && !quantize_embeddings => n as u128 * rest,
                [rows, cols] => {
                    // GPT-2's Conv1D matrices are stored [in, out]: rows of `in` once
                    // transposed.
                    let (out, row_len) = match self {
                        ModelConfig::Gpt2(_) if !self.is_embedding(&name) => (*cols, *rows),
                        _ => (*rows, *cols),
                    };
                    q.precision.matrix_bytes(out, row_len) as u128
                }
                _ => n as u128 * rest,
            };
        }
        (total, largest)
    }

    /// Build the model at a quantization from a tensor source; returns the model and
    /// the fallback notes.
    pub fn load(
        &self,
        src: &dyn TensorSource,
        q: crate::precision::Quantization,
        device: &candle_core::Device,
    ) -> Result<(Box<dyn CausalLm>, Vec<String>)> {
        Ok(match self {
            ModelConfig::Gpt2(c) => {
                let (m, notes) = gpt2::Gpt2::load(c, src, q, device)?;
                (Box::new(m), notes)
            }
            ModelConfig::Llama(c) => {
                let (m, notes) = llama::Llama::load(c, src, q, device)?;
                (Box::new(m), notes)
            }
        })
    }
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

//! The Llama architectures in candle: Llama 2/3, Mistral, Qwen2/2.5 and Qwen3 (config and
//! forward pass with a KV cache), as transformers' `LlamaForCausalLM`,
//! `MistralForCausalLM`, `Qwen2ForCausalLM` and `Qwen3ForCausalLM` compute them.
//!
//! Pre-RMSNorm blocks; rotary position embeddings (rope_theta; scaling of type default,
//! linear or llama3, read from the older top-level `rope_theta` + `rope_scaling` form or
//! transformers 5's `rope_parameters`); grouped-query attention (fewer key/value heads
//! than query heads: each group of query heads reads its one key/value head in place, no
//! copy of the cache per head); a SwiGLU MLP; the members differ by switches:
//!
//! | model_type | q/k/v bias       | o bias          | per-head q/k RMSNorm | sliding window      |
//! |------------|------------------|-----------------|----------------------|---------------------|
//! | llama      | attention_bias   | attention_bias  | no                   | no                  |
//! | mistral    | no               | no              | no                   | sliding_window      |
//! | qwen2      | yes              | no              | no                   | refused when used   |
//! | qwen3      | attention_bias   | attention_bias  | yes                  | refused when used   |
//!
//! plus an explicit `head_dim` (Qwen3's is not hidden_size / heads) and a tied or untied
//! LM head. Weight matrices are stored `[out, in]` as transformers saves them, in
//! whatever precision the loader chose, see [`Matrix`].

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::InputError;
use crate::model::arch::{
    ArchConfig, Architecture, CausalLm, GgufNames, ModelConfig, RopePermutation, StoredSlice,
};
use crate::model::nn::{
    causal_mask, linear_parts, Cache, Group, KvCache, Linear, MaskKey, Matrix, Part, RmsNorm,
    Vector,
};
use crate::model::source::gguf::{GgufFile, Kv};
use crate::model::source::synthetic::{Init, Preset};
use crate::model::source::weights::{Builder, TensorSource};
use crate::model::write::gguf::Meta;
use crate::precision::Quantization;

/// Which of the architectures this file runs a config.json describes (its `model_type`:
/// llama, mistral, qwen2, qwen3). "Family" in quantbench is a weight format's family
/// (`format::Family`); these are the members of the Llama architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Qwen3's attention with a mixture of experts (Qwen3-30B-A3B).
    Qwen3Moe,
    /// Mistral's attention with a mixture of experts (Mixtral 8x7B).
    Mixtral,
    /// OLMoE: Llama's attention with q/k norms over the whole projection, experts.
    Olmoe,
    /// Phi-3 / Phi-3.5 / Phi-4-mini: q, k and v in one fused projection, gate and up in
    /// another (split at load), LongRoPE, partial rotary, a sliding window.
    Phi3,
    /// gpt-oss: attention sinks, biases everywhere, sliding and full layers in turn,
    /// YaRN, experts routed top-k-then-softmax with a clamped SwiGLU.
    GptOss,
}

impl Member {
    pub fn parse(model_type: &str) -> Option<Member> {
        match model_type {
            "llama" => Some(Member::Llama),
            "mistral" => Some(Member::Mistral),
            "qwen2" => Some(Member::Qwen2),
            "qwen3" => Some(Member::Qwen3),
            "qwen3_moe" => Some(Member::Qwen3Moe),
            "mixtral" => Some(Member::Mixtral),
            "olmoe" => Some(Member::Olmoe),
            "phi3" => Some(Member::Phi3),
            "gpt_oss" => Some(Member::GptOss),
            _ => None,
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Member::Llama => "llama",
            Member::Mistral => "mistral",
            Member::Qwen2 => "qwen2",
            Member::Qwen3 => "qwen3",
            Member::Qwen3Moe => "qwen3_moe",
            Member::Mixtral => "mixtral",
            Member::Olmoe => "olmoe",
            Member::Phi3 => "phi3",
            Member::GptOss => "gpt_oss",
        }
    }

    /// transformers' class name for the model with its LM head.
    pub fn class_name(self) -> &'static str {
        match self {
            Member::Llama => "LlamaForCausalLM",
            Member::Mistral => "MistralForCausalLM",
            Member::Qwen2 => "Qwen2ForCausalLM",
            Member::Qwen3 => "Qwen3ForCausalLM",
            Member::Qwen3Moe => "Qwen3MoeForCausalLM",
            Member::Mixtral => "MixtralForCausalLM",
            Member::Olmoe => "OlmoeForCausalLM",
            Member::Phi3 => "Phi3ForCausalLM",
            Member::GptOss => "GptOssForCausalLM",
        }
    }
}

/// How rotary frequencies are scaled for long contexts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `inv_freq = 1 / theta^(2i / head_dim)`.
    Default,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f64 },
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept, a smooth blend
    /// between the two wavelength bounds.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// LongRoPE (Phi-3): every frequency divided by a per-frequency factor, the short
    /// list while the sequence is within `original_max_position_embeddings`, the long
    /// one beyond (the lists are the config's `long_rope_factors`); cos and sin times
    /// `attention_factor`.
    LongRope {
        original_max_position_embeddings: usize,
        attention_factor: f64,
    },
    /// YaRN (gpt-oss): each frequency blended between itself and itself / `factor` by
    /// a linear ramp over the dimensions whose rotations at
    /// `original_max_position_embeddings` lie between `beta_slow` and `beta_fast`
    /// (the ramp's ends floored and ceiled where `truncate`); cos and sin times
    /// `attention_factor` (transformers' `_compute_yarn_parameters`).
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
}

impl RopeScaling {
    pub fn name(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::LongRope { .. } => "longrope",
            RopeScaling::Yarn { .. } => "yarn",
        }
    }

    /// The rope_scaling object of the older config form (`null` for default).
    fn to_json(self) -> Value {
        match self {
            RopeScaling::Default => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
            // Written with its lists by Config::to_json.
            RopeScaling::LongRope { .. } => Value::Null,
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => serde_json::json!({
                "rope_type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": original_max_position_embeddings,
                "beta_fast": beta_fast,
                "beta_slow": beta_slow,
                "attention_factor": attention_factor,
                "truncate": truncate,
            }),
        }
    }
}

/// The fields of a transformers config.json that the Llama architectures use.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub member: Member,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the output projection.
    pub o_bias: bool,
    /// Biases on the MLP's three projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm of queries and keys before the rotation (Qwen3).
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
    /// Keys older than this many positions are not attended to (Mistral).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The q and k norms take the whole projection (OLMoE: `[heads · head_dim]`), not
    /// each head (Qwen3).
    pub qk_norm_full: bool,
    /// The mixture of experts, where the layers have one.
    pub moe: Option<MoeConfig>,
    /// The share of each head's leading dimensions the rotation turns (Phi-4-mini 0.75;
    /// 1 elsewhere); the rest pass unrotated ([`Config::rotary_dim`]).
    pub partial_rotary_factor: f64,
    /// LongRoPE's (short, long) factor lists, `rotary_dim / 2` each.
    pub long_rope_factors: Option<LongRopeFactors>,
    /// Per-frequency divisors as a GGUF file stores them (`rope_freqs.weight`, how
    /// llama.cpp's converter writes llama3 scaling): each `inv_freq[i]` is divided by
    /// `factors[i]` after `rope_scaling` is applied. `None` for config.json sources.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// A learned logit per query head that joins every softmax of the attention and is
    /// dropped (gpt-oss's `self_attn.sinks`).
    pub attention_sinks: bool,
    /// Per layer: whether it attends through `sliding_window` (gpt-oss's `layer_types`);
    /// `None`: every layer alike.
    pub layer_sliding: Option<Vec<bool>>,
}

/// A mixture of experts' shape and routing ([`crate::model::moe`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Each expert's SwiGLU width.
    pub intermediate_size: usize,
    /// How the router picks and weighs a token's experts.
    pub routing: crate::model::moe::Routing,
    /// How each expert gates.
    pub activation: crate::model::moe::Activation,
    /// Biases on the router and on every expert's three projections (gpt-oss).
    pub biases: bool,
    /// Per layer: whether it has the experts (Qwen3-MoE's `decoder_sparse_step` and
    /// `mlp_only_layers` make some layers dense, at `intermediate_size`).
    pub sparse: Vec<bool>,
}

impl MoeConfig {
    /// A softmax-then-top-k router's experts with plain SwiGLU experts, no biases
    /// (Qwen3-MoE, Mixtral, OLMoE).
    pub fn softmax_top_k(
        num_experts: usize,
        top_k: usize,
        intermediate_size: usize,
        norm_topk_prob: bool,
        sparse: Vec<bool>,
    ) -> Self {
        MoeConfig {
            num_experts,
            top_k,
            intermediate_size,
            routing: crate::model::moe::Routing::SoftmaxThenTopK { norm_topk_prob },
            activation: crate::model::moe::Activation::Silu,
            biases: false,
            sparse,
        }
    }

    /// Whether the top k weights are renormalised to sum to 1 (after a softmax over every
    /// expert); false for gpt-oss's softmax over the k alone, which sums to 1 by itself.
    pub fn norm_topk_prob(&self) -> bool {
        matches!(
            self.routing,
            crate::model::moe::Routing::SoftmaxThenTopK {
                norm_topk_prob: true
            }
        )
    }
}

/// config.json as found in the wild: every field optional here; the required ones are
/// checked with a message that names them.
#[derive(Debug, Deserialize)]
struct RawConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    partial_rotary_factor: Option<f64>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    use_sliding_window: Option<bool>,
    layer_types: Option<Vec<String>>,
    hidden_act: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    num_experts: Option<usize>,
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    norm_topk_prob: Option<bool>,
    decoder_sparse_step: Option<usize>,
    mlp_only_layers: Option<Vec<usize>>,
    clip_qkv: Option<f64>,
    shared_expert_intermediate_size: Option<usize>,
    original_max_position_embeddings: Option<usize>,
    swiglu_alpha: Option<f64>,
    swiglu_limit: Option<f64>,
    quantization_config: Option<Value>,
}

/// The first id of a token-id field that may be a number or a list of numbers.
pub fn first_id(v: &Option<Value>) -> Option<u32> {
    match v.as_ref()? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::Array(a) => a
            .first()
            .and_then(|n| n.as_u64())
            .and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

impl Config {
    /// Parse a config.json already read as a JSON value; `origin` names the file.
    pub fn from_value(value: Value, member: Member, origin: &str) -> Result<Self> {
        let mt = member.model_type();
        if !value.is_object() {
            crate::bad_input!("{origin}: a config.json is a JSON object");
        }
        // Mistral's sliding_window: absent means transformers' default (4096), null none.
        let window_field = value.get("sliding_window").cloned();
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            InputError::new(format!("{origin}: field `{path}`: {}", e.into_inner()))
        })?;
        let required = |name: &str, v: Option<usize>| -> Result<usize> {
            v.ok_or_else(|| {
                InputError::new(format!(
                    "{origin}: field `{name}` is missing; a {mt} config.json must give vocab_size, hidden_size, intermediate_size, num_hidden_layers and num_attention_heads"
                ))
                .into()
            })
        };
        let vocab_size = required("vocab_size", raw.vocab_size)?;
        let hidden_size = required("hidden_size", raw.hidden_size)?;
        let intermediate_size = required("intermediate_size", raw.intermediate_size)?;
        let num_hidden_layers = required("num_hidden_layers", raw.num_hidden_layers)?;
        let num_attention_heads = required("num_attention_heads", raw.num_attention_heads)?;
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                crate::bad_input!(
                    "{origin}: hidden_act '{act}' is not supported for {mt}; valid: silu"
                );
            }
        }
        let partial = raw
            .partial_rotary_factor
            .or_else(|| {
                raw.rope_parameters
                    .as_ref()
                    .and_then(|p| p.get("partial_rotary_factor"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(1.0);
        if partial != 1.0 && member != Member::Phi3 {
            crate::bad_input!(
                "{origin}: partial_rotary_factor {partial} is not supported for {mt}; valid: 1.0 (rotate the whole head)"
            );
        }
        if !(partial > 0.0 && partial <= 1.0) {
            crate::bad_input!(
                "{origin}: partial_rotary_factor {partial} must be above 0 and at most 1"
            );
        }
        let (rope_theta, rope_scaling, long_rope_factors) = parse_rope(&raw, origin)?;
        if raw.use_sliding_window == Some(true) {
            crate::bad_input!(
                "{origin}: use_sliding_window = true is not supported for {mt}; valid: false"
            );
        }
        let layer_sliding = layer_sliding(&raw, member, num_hidden_layers, origin)?;
        if let Some(q) = &raw.quantization_config {
            let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("?");
            crate::bad_input!(
                "{origin}: quantization_config (quant_method '{method}') describes weights stored quantized, which quantbench does not read from safetensors; valid: a checkpoint of floats (f32, f16, bf16), or its GGUF conversion (llama.cpp's converter keeps gpt-oss's MXFP4 experts as they are)"
            );
        }
        if let Some(c) = raw.clip_qkv {
            crate::bad_input!(
                "{origin}: clip_qkv {c} is not supported for {mt}; valid: null (no clipping)"
            );
        }
        if raw.shared_expert_intermediate_size.is_some_and(|s| s > 0) {
            crate::bad_input!(
                "{origin}: shared_expert_intermediate_size gives {mt} a shared expert, which quantbench does not run; valid: absent or 0"
            );
        }
        let sliding_window = match member {
            Member::Mistral | Member::Mixtral | Member::Phi3 | Member::GptOss => match window_field {
                None if member == Member::GptOss => Some(128),
                None if member != Member::Mistral => None,
                None => Some(4096),
                Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(w) if w >= 1 => Some(w as usize),
                    _ => crate::bad_input!(
                        "{origin}: sliding_window {v} is not valid; valid: a whole number of positions >= 1, or null"
                    ),
                },
            },
            _ => None,
        };
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match member {
            Member::Llama | Member::Qwen3 | Member::Qwen3Moe | Member::Olmoe => {
                (attention_bias, attention_bias)
            }
            Member::GptOss => {
                let b = raw.attention_bias.unwrap_or(true);
                (b, b)
            }
            Member::Mistral | Member::Mixtral | Member::Phi3 => (false, false),
            Member::Qwen2 => (true, false),
        };
        let moe = moe_config(&raw, member, num_hidden_layers, origin)?;
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        let head_dim = match raw.head_dim {
            Some(h) => h,
            None if num_attention_heads > 0 => hidden_size / num_attention_heads,
            None => 0,
        };
        let cfg = Config {
            member,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(match member {
                Member::Llama => 2048,
                Member::Mistral | Member::Mixtral => 4096 * 32,
                Member::Qwen2 | Member::Qwen3 | Member::Qwen3Moe => 32768,
                Member::Olmoe | Member::Phi3 => 4096,
                Member::GptOss => 131072,
            }),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(match member {
                Member::Olmoe | Member::Mixtral | Member::Phi3 | Member::GptOss => 1e-5,
                _ => 1e-6,
            }),
            rope_theta,
            rope_scaling,
            qkv_bias,
            o_bias,
            mlp_bias: member == Member::Llama && raw.mlp_bias.unwrap_or(false),
            qk_norm: matches!(member, Member::Qwen3 | Member::Qwen3Moe | Member::Olmoe),
            qk_norm_full: member == Member::Olmoe,
            moe,
            partial_rotary_factor: partial,
            long_rope_factors,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            sliding_window,
            bos_token_id: first_id(&raw.bos_token_id),
            eos_token_id: first_id(&raw.eos_token_id),
            rope_freq_factors: None,
            attention_sinks: member == Member::GptOss,
            layer_sliding,
        };
        cfg.validate()
            .map_err(|e| InputError::new(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        // Generous limits (Llama 3.1 405B: 128256 / 16384 / 53248 / 126 / 128 heads): a
        // lying config cannot make the loader's arithmetic overflow.
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("num_key_value_heads", self.num_key_value_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 12),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
            if v > max {
                return Err(format!(
                    "{name} = {v} is beyond what quantbench accepts ({max})"
                ));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({}): each key/value head serves a whole group of query heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even: rotary embeddings rotate pairs",
                self.head_dim
            ));
        }
        let rotary = self.rotary_dim();
        if rotary == 0 || !rotary.is_multiple_of(2) || rotary > self.head_dim {
            return Err(format!(
                "the rotated part of each head (head_dim {} x partial_rotary_factor = {rotary}) must be an even number of dimensions, 2 to head_dim",
                self.head_dim
            ));
        }
        if let Some((short, long)) = &self.long_rope_factors {
            let want = rotary / 2;
            if short.len() != want || long.len() != want {
                return Err(format!(
                    "LongRoPE's short_factor and long_factor hold {} and {} numbers; the rotation has {want} frequencies (head_dim x partial_rotary_factor / 2)",
                    short.len(),
                    long.len()
                ));
            }
            if short
                .iter()
                .chain(long)
                .any(|f| !(f.is_finite() && *f > 0.0))
            {
                return Err("LongRoPE's factors must be finite numbers above 0".into());
            }
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return Err(format!(
                "rms_norm_eps ({}) must be between 0 and 1",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(format!(
                "rope_theta ({}) must be a finite number above 1",
                self.rope_theta
            ));
        }
        Ok(())
    }

    /// The leading dimensions of each head the rotation turns: transformers'
    /// `int(head_dim * partial_rotary_factor)`.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// The q and k norms' lengths: a head's (Qwen3), or the whole projection's (OLMoE).
    pub fn qk_norm_lengths(&self) -> (usize, usize) {
        if self.qk_norm_full {
            (
                self.num_attention_heads * self.head_dim,
                self.num_key_value_heads * self.head_dim,
            )
        } else {
            (self.head_dim, self.head_dim)
        }
    }

    /// How the member's checkpoints name the router and the experts.
    pub fn expert_names(&self) -> ExpertNames {
        if self.member == Member::Mixtral {
            ExpertNames {
                router: "block_sparse_moe.gate",
                experts: "block_sparse_moe.experts",
                projections: ["w1", "w3", "w2"],
            }
        } else if self.member == Member::GptOss {
            // transformers stacks these (mlp.experts.gate_up_proj ...); the safetensors
            // source cuts them apart ([`ArchConfig::stored_slices`]).
            ExpertNames {
                router: "mlp.router",
                experts: "mlp.experts",
                projections: ["gate_proj", "up_proj", "down_proj"],
            }
        } else {
            ExpertNames {
                router: "mlp.gate",
                experts: "mlp.experts",
                projections: ["gate_proj", "up_proj", "down_proj"],
            }
        }
    }

    /// Layer `i`'s attention: the window on every layer (Mistral) or on the sliding
    /// layers (gpt-oss), one rotation.
    pub fn layer_attention(&self, i: usize) -> LayerAttention {
        let sliding = self.layer_sliding.as_ref().is_none_or(|v| v[i]);
        LayerAttention {
            sliding_window: self.sliding_window.filter(|_| sliding),
            rope: 0,
        }
    }

    /// The rotations the layers take, indexed by [`LayerAttention::rope`].
    pub fn ropes(&self) -> Vec<Rope> {
        let rope = Rope::new(self.rotary_dim(), self.rope_theta, self.rope_scaling)
            .with_factors(self.rope_freq_factors.as_deref());
        vec![match (&self.long_rope_factors, self.rope_scaling) {
            (
                Some((short, long)),
                RopeScaling::LongRope {
                    original_max_position_embeddings,
                    attention_factor,
                },
            ) => rope.with_long_rope(
                short,
                long,
                original_max_position_embeddings,
                attention_factor,
            ),
            _ => rope,
        }]
    }

    /// The config.json transformers writes for this model, in the older form (top-level
    /// rope_theta and rope_scaling) that both transformers 4 and 5 and llama.cpp's
    /// converter read.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "architectures": [self.member.class_name()],
            "model_type": self.member.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.to_json(),
            "hidden_act": "silu",
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": 0.02,
            "attention_dropout": 0.0,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().expect("an object");
        match self.member {
            Member::Llama => {
                o.insert("attention_bias".into(), self.qkv_bias.into());
                o.insert("mlp_bias".into(), self.mlp_bias.into());
            }
            Member::Mistral => {
                o.insert(
                    "sliding_window".into(),
                    self.sliding_window.map(Value::from).unwrap_or(Value::Null),
                );
            }
            Member::Qwen2 => {
                o.insert("use_sliding_window".into(), false.into());
            }
            Member::Qwen3 | Member::Qwen3Moe => {
                o.insert("attention_bias".into(), self.qkv_bias.into());
                o.insert("use_sliding_window".into(), false.into());
            }
            Member::Phi3 => {
                o.insert(
                    "sliding_window".into(),
                    self.sliding_window.map(Value::from).unwrap_or(Value::Null),
                );
                o.insert(
                    "partial_rotary_factor".into(),
                    self.partial_rotary_factor.into(),
                );
                if let (
                    Some((short, long)),
                    RopeScaling::LongRope {
                        original_max_position_embeddings,
                        attention_factor,
                    },
                ) = (&self.long_rope_factors, self.rope_scaling)
                {
                    o.insert(
                        "original_max_position_embeddings".into(),
                        original_max_position_embeddings.into(),
                    );
                    o.insert(
                        "rope_scaling".into(),
                        serde_json::json!({
                            "type": "longrope",
                            "rope_type": "longrope",
                            "short_factor": short,
                            "long_factor": long,
                            "attention_factor": attention_factor,
                        }),
                    );
                }
            }
            Member::Mixtral => {
                o.insert(
                    "sliding_window".into(),
                    self.sliding_window.map(Value::from).unwrap_or(Value::Null),
                );
            }
            Member::Olmoe => {
                o.insert("attention_bias".into(), self.qkv_bias.into());
                o.insert("clip_qkv".into(), Value::Null);
            }
            Member::GptOss => {
                o.insert("attention_bias".into(), self.qkv_bias.into());
                o.insert(
                    "sliding_window".into(),
                    self.sliding_window.map(Value::from).unwrap_or(Value::Null),
                );
                let types: Vec<&str> = (0..self.num_hidden_layers)
                    .map(|i| {
                        if self.layer_sliding.as_ref().is_none_or(|v| v[i]) {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        }
                    })
                    .collect();
                o.insert("layer_types".into(), types.into());
                // transformers 5's form, rope_theta inside (GptOssConfig defaults
                // rope_parameters to its own YaRN when the object is absent).
                let mut rope = match self.rope_scaling.to_json() {
                    Value::Null => serde_json::json!({"rope_type": "default"}),
                    v => v,
                };
                rope["rope_theta"] = self.rope_theta.into();
                o.remove("rope_scaling");
                o.remove("rope_theta");
                o.insert("rope_parameters".into(), rope);
                if let Some(crate::model::moe::Activation::ClampedSwiglu { alpha, limit }) =
                    self.moe.as_ref().map(|m| m.activation)
                {
                    o.insert("swiglu_alpha".into(), (alpha as f64).into());
                    o.insert("swiglu_limit".into(), (limit as f64).into());
                }
            }
        }
        if let Some(m) = &self.moe {
            let count = if matches!(self.member, Member::Mixtral | Member::GptOss) {
                "num_local_experts"
            } else {
                "num_experts"
            };
            o.insert(count.into(), m.num_experts.into());
            o.insert("num_experts_per_tok".into(), m.top_k.into());
            if self.member != Member::GptOss {
                o.insert("norm_topk_prob".into(), m.norm_topk_prob().into());
            }
            if self.member == Member::Qwen3Moe {
                o.insert("moe_intermediate_size".into(), m.intermediate_size.into());
                o.insert("decoder_sparse_step".into(), 1.into());
                let dense: Vec<usize> = (0..m.sparse.len()).filter(|&i| !m.sparse[i]).collect();
                o.insert("mlp_only_layers".into(), dense.into());
            }
        }
        if let Some(id) = self.bos_token_id {
            o.insert("bos_token_id".into(), id.into());
        }
        if let Some(id) = self.eos_token_id {
            o.insert("eos_token_id".into(), id.into());
        }
        v
    }
}

/// The experts a config.json states, checked: `num_experts` (Qwen3-MoE, OLMoE) or
/// `num_local_experts` (Mixtral), `num_experts_per_tok`, each expert's width
/// (`moe_intermediate_size` for Qwen3-MoE, `intermediate_size` otherwise), and which
/// layers are sparse. `None` for the dense members.
fn moe_config(
    raw: &RawConfig,
    member: Member,
    layers: usize,
    origin: &str,
) -> Result<Option<MoeConfig>> {
    let mt = member.model_type();
    // The hub's configs name the count num_experts (Qwen3-MoE, OLMoE) or
    // num_local_experts (Mixtral); transformers 5 writes num_local_experts for all three.
    let (count_field, count) = match member {
        Member::Qwen3Moe | Member::Olmoe | Member::Mixtral | Member::GptOss => {
            match (raw.num_experts, raw.num_local_experts) {
                (Some(n), _) => ("num_experts", Some(n)),
                (None, n) => ("num_local_experts", n),
            }
        }
        _ => return Ok(None),
    };
    let need = |name: &str, v: Option<usize>| -> Result<usize> {
        match v {
            Some(n) if n >= 1 => Ok(n),
            Some(_) => Err(InputError::new(format!("{origin}: {name} must be at least 1")).into()),
            None => Err(InputError::new(format!(
                "{origin}: field `{name}` is missing; a {mt} config.json must give {count_field} and num_experts_per_tok"
            ))
            .into()),
        }
    };
    let num_experts = need(count_field, count)?;
    let top_k = need("num_experts_per_tok", raw.num_experts_per_tok)?;
    if top_k > num_experts {
        crate::bad_input!(
            "{origin}: num_experts_per_tok ({top_k}) exceeds {count_field} ({num_experts}): a token cannot go to more experts than there are"
        );
    }
    if num_experts > 1 << 12 {
        crate::bad_input!(
            "{origin}: {count_field} = {num_experts} is beyond what quantbench accepts (4096)"
        );
    }
    let (width_field, intermediate_size) = match member {
        Member::Qwen3Moe => (
            "moe_intermediate_size",
            need("moe_intermediate_size", raw.moe_intermediate_size)?,
        ),
        _ => (
            "intermediate_size",
            need("intermediate_size", raw.intermediate_size)?,
        ),
    };
    // The bound of validate's intermediate_size: a lying config cannot overflow the plan.
    if intermediate_size > 1 << 20 {
        crate::bad_input!(
            "{origin}: {width_field} = {intermediate_size} is beyond what quantbench accepts ({})",
            1 << 20
        );
    }
    let step = raw.decoder_sparse_step.unwrap_or(1);
    if member == Member::Qwen3Moe && step == 0 {
        crate::bad_input!("{origin}: decoder_sparse_step must be at least 1");
    }
    let dense: Vec<usize> = raw.mlp_only_layers.clone().unwrap_or_default();
    if let Some(&l) = dense.iter().find(|&&l| l >= layers) {
        crate::bad_input!(
            "{origin}: mlp_only_layers names layer {l}, but the model has {layers} (num_hidden_layers)"
        );
    }
    let sparse = (0..layers)
        .map(|i| member != Member::Qwen3Moe || (!dense.contains(&i) && (i + 1) % step == 0))
        .collect();
    use crate::model::moe::{Activation, Routing};
    let (routing, activation) = match member {
        Member::GptOss => {
            let number = |name: &str, v: Option<f64>, default: f64| -> Result<f32> {
                match v.unwrap_or(default) {
                    x if x.is_finite() && x > 0.0 => Ok(x as f32),
                    x => Err(InputError::new(format!(
                        "{origin}: {name} ({x}) must be a finite number above 0"
                    ))
                    .into()),
                }
            };
            (
                Routing::TopKThenSoftmax,
                Activation::ClampedSwiglu {
                    alpha: number("swiglu_alpha", raw.swiglu_alpha, 1.702)?,
                    limit: number("swiglu_limit", raw.swiglu_limit, 7.0)?,
                },
            )
        }
        _ => (
            Routing::SoftmaxThenTopK {
                norm_topk_prob: member == Member::Mixtral || raw.norm_topk_prob.unwrap_or(false),
            },
            Activation::Silu,
        ),
    };
    Ok(Some(MoeConfig {
        num_experts,
        top_k,
        intermediate_size,
        routing,
        activation,
        biases: member == Member::GptOss,
        sparse,
    }))
}

/// Which layers attend through the window, from `layer_types` (gpt-oss: given, or
/// transformers' default of sliding, full, sliding, ...); `None` for the members whose
/// layers attend alike (their `layer_types`, when given, must say full_attention).
fn layer_sliding(
    raw: &RawConfig,
    member: Member,
    layers: usize,
    origin: &str,
) -> Result<Option<Vec<bool>>> {
    let mt = member.model_type();
    if member != Member::GptOss {
        if let Some(kind) = raw
            .layer_types
            .iter()
            .flatten()
            .find(|t| t.as_str() != "full_attention")
        {
            crate::bad_input!(
                "{origin}: layer_types holds '{kind}', which quantbench does not run for {mt}; valid: full_attention"
            );
        }
        return Ok(None);
    }
    let Some(types) = &raw.layer_types else {
        return Ok(Some((0..layers).map(|i| i % 2 == 0).collect()));
    };
    Ok(Some(crate::model::arch::sliding_layers(
        types, layers, origin,
    )?))
}

/// Rope settings from either config form: transformers 5's `rope_parameters` object
/// (with rope_theta inside) or the older top-level `rope_theta` + `rope_scaling`.
/// LongRoPE's (short, long) factor lists.
pub type LongRopeFactors = (Vec<f32>, Vec<f32>);

/// LongRoPE's factor lists come back beside the scaling.
fn parse_rope(
    raw: &RawConfig,
    origin: &str,
) -> Result<(f64, RopeScaling, Option<LongRopeFactors>)> {
    let (field, params) = match (&raw.rope_parameters, &raw.rope_scaling) {
        (Some(p), _) if !p.is_null() => ("rope_parameters", Some(p)),
        (_, Some(s)) if !s.is_null() => ("rope_scaling", Some(s)),
        _ => ("rope_scaling", None),
    };
    let Some(params) = params else {
        return Ok((
            raw.rope_theta.unwrap_or(10000.0),
            RopeScaling::Default,
            None,
        ));
    };
    let Some(obj) = params.as_object() else {
        crate::bad_input!(
            "{origin}: field `{field}` must be an object such as {{\"rope_type\": \"llama3\", \"factor\": 8.0, ...}}, not {params}"
        );
    };
    let theta = obj
        .get("rope_theta")
        .and_then(Value::as_f64)
        .or(raw.rope_theta)
        .unwrap_or(10000.0);
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if matches!(kind, "longrope" | "su") {
        let (scaling, factors) = long_rope_from(obj, raw, field, origin)?;
        return Ok((theta, scaling, Some(factors)));
    }
    Ok((theta, rope_scaling_from(obj, field, origin)?, None))
}

/// LongRoPE as transformers' `_compute_longrope_parameters` reads it: the two factor
/// lists, `original_max_position_embeddings` (in the object or at the top level), the
/// attention factor given or `sqrt(1 + ln(factor) / ln(original))` for
/// `factor = max_position_embeddings / original` (1 when that is at most 1).
fn long_rope_from(
    obj: &serde_json::Map<String, Value>,
    raw: &RawConfig,
    field: &str,
    origin: &str,
) -> Result<(RopeScaling, LongRopeFactors)> {
    let list = |name: &str| -> Result<Vec<f32>> {
        let Some(Value::Array(items)) = obj.get(name) else {
            crate::bad_input!(
                "{origin}: {field}.{name} is missing; LongRoPE needs a list of numbers"
            );
        };
        items
            .iter()
            .map(|v| {
                v.as_f64().map(|f| f as f32).ok_or_else(|| {
                    InputError::new(format!("{origin}: {field}.{name} holds {v}, not a number"))
                        .into()
                })
            })
            .collect()
    };
    let original = obj
        .get("original_max_position_embeddings")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .or(raw.original_max_position_embeddings)
        .filter(|&n| n > 1);
    let Some(original) = original else {
        crate::bad_input!(
            "{origin}: original_max_position_embeddings is missing (or below 2); LongRoPE needs it"
        );
    };
    let factor = obj
        .get("factor")
        .and_then(Value::as_f64)
        .unwrap_or_else(|| {
            raw.max_position_embeddings.unwrap_or(original) as f64 / original as f64
        });
    let attention_factor = match obj.get("attention_factor").and_then(Value::as_f64) {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
    };
    if !(attention_factor.is_finite() && attention_factor > 0.0) {
        crate::bad_input!(
            "{origin}: {field}.attention_factor ({attention_factor}) must be a finite number above 0: cos and sin are multiplied by it"
        );
    }
    Ok((
        RopeScaling::LongRope {
            original_max_position_embeddings: original,
            attention_factor,
        },
        (list("short_factor")?, list("long_factor")?),
    ))
}

/// The scaling a rope parameters object states (`rope_type` or the legacy `type`, with
/// its numbers), read as transformers reads it; `field` names the object in errors.
pub fn rope_scaling_from(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    origin: &str,
) -> Result<RopeScaling> {
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |name: &str| -> Result<f64> {
        match obj.get(name).and_then(Value::as_f64) {
            Some(v) if v.is_finite() && v > 0.0 => Ok(v),
            Some(v) => Err(InputError::new(format!(
                "{origin}: {field}.{name} ({v}) must be a finite number above 0"
            ))
            .into()),
            None => Err(InputError::new(format!(
                "{origin}: {field}.{name} is missing; rope type '{kind}' needs it"
            ))
            .into()),
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: number("factor")?,
        },
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?
                    as usize,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            } = s
            {
                if high_freq_factor <= low_freq_factor {
                    crate::bad_input!(
                        "{origin}: {field}.high_freq_factor ({high_freq_factor}) must exceed low_freq_factor ({low_freq_factor})"
                    );
                }
            }
            s
        }
        "yarn" => {
            let factor = number("factor")?;
            let optional = |name: &str, default: f64| -> Result<f64> {
                match obj.get(name) {
                    None | Some(Value::Null) => Ok(default),
                    Some(_) => number(name),
                }
            };
            // transformers: attention_factor given, else from mscale / mscale_all_dim,
            // else 0.1 ln(factor) + 1 (1 for a factor at most 1).
            let mscale = |m: f64| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
            let attention_factor = match (
                obj.get("attention_factor").and_then(Value::as_f64),
                obj.get("mscale").and_then(Value::as_f64),
                obj.get("mscale_all_dim").and_then(Value::as_f64),
            ) {
                (Some(_), _, _) => number("attention_factor")?,
                (None, Some(m), Some(a)) if m != 0.0 && a != 0.0 => mscale(m) / mscale(a),
                _ => mscale(1.0),
            };
            let truncate = match obj.get("truncate") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(v) => crate::bad_input!(
                    "{origin}: {field}.truncate ({v}) must be true or false"
                ),
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: number("original_max_position_embeddings")?
                    as usize,
                beta_fast: optional("beta_fast", 32.0)?,
                beta_slow: optional("beta_slow", 1.0)?,
                attention_factor,
                truncate,
            }
        }
        other => crate::bad_input!(
            "{origin}: {field} has rope type '{other}', which quantbench does not support; valid: default, linear, llama3, yarn (and longrope for phi3)"
        ),
    };
    Ok(scaling)
}

/// Rotary frequencies, computed in f32 exactly as transformers computes them
/// (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
/// `_compute_llama3_parameters`); cos/sin tables are made for the positions each
/// forward pass needs.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// LongRoPE: the frequencies past `original` positions, and where that begins.
    long: Option<(Vec<f32>, usize)>,
    /// cos and sin are multiplied by it (LongRoPE's attention factor; 1 otherwise).
    scale: f32,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, scaling: RopeScaling) -> Self {
        let base = theta as f32;
        let mut inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        match scaling {
            // LongRoPE's factors are applied by Rope::with_long_rope.
            RopeScaling::Default | RopeScaling::LongRope { .. } => {}
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                inv_freq = yarn_inv_freq(
                    head_dim,
                    theta,
                    factor,
                    original_max_position_embeddings,
                    (beta_fast, beta_slow),
                    truncate,
                );
                return Rope {
                    inv_freq,
                    long: None,
                    scale: attention_factor as f32,
                };
            }
            RopeScaling::Linear { factor } => {
                for f in &mut inv_freq {
                    *f /= factor as f32;
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old = original_max_position_embeddings as f32;
                let low_freq_wavelen = old / low;
                let high_freq_wavelen = old / high;
                for f in &mut inv_freq {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_freq_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    // transformers: ~(wavelen < high) & ~(wavelen > low); wavelengths are finite.
                    let medium = (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen);
                    *f = if medium {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        Rope {
            inv_freq,
            long: None,
            scale: 1.0,
        }
    }

    /// LongRoPE: each frequency divided by its short factor, or by its long one once a
    /// sequence runs past `original` positions (transformers decides per forward pass,
    /// by the sequence's length then); cos and sin scaled by `attention_factor`.
    pub fn with_long_rope(
        mut self,
        short: &[f32],
        long: &[f32],
        original: usize,
        attention_factor: f64,
    ) -> Self {
        let base = self.inv_freq.clone();
        for (f, d) in self.inv_freq.iter_mut().zip(short) {
            *f /= d;
        }
        let long_freq = base.iter().zip(long).map(|(f, d)| f / d).collect();
        self.long = Some((long_freq, original));
        self.scale = attention_factor as f32;
        self
    }

    /// The frequencies for a forward pass whose sequence is `len` positions long.
    fn freqs_for(&self, len: usize) -> &[f32] {
        match &self.long {
            Some((long, original)) if len > *original => long,
            _ => &self.inv_freq,
        }
    }

    /// The rotated dimensions of a head.
    pub fn rotary_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// Divide each frequency by its factor (GGUF's `rope_freqs`), as llama.cpp does.
    pub fn with_factors(mut self, factors: Option<&[f32]>) -> Self {
        if let Some(factors) = factors {
            for (f, d) in self.inv_freq.iter_mut().zip(factors) {
                *f /= d;
            }
        }
        self
    }

    /// The frequencies, one per pair of a head's dimensions.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos and sin of position `p`'s angles into `cos` / `sin` (`head_dim / 2` each): a
    /// row of [`Rope::cos_sin`], for the decode step.
    pub fn cos_sin_into(&self, p: usize, cos: &mut [f32], sin: &mut [f32]) {
        for ((&f, c), s) in self
            .freqs_for(p + 1)
            .iter()
            .zip(cos.iter_mut())
            .zip(sin.iter_mut())
        {
            let a = p as f32 * f;
            *c = a.cos() * self.scale;
            *s = a.sin() * self.scale;
        }
    }

    /// cos and sin `[len, head_dim / 2]` for positions `start .. start + len`.
    pub fn cos_sin(
        &self,
        start: usize,
        len: usize,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        let freqs = self.freqs_for(start + len);
        for p in start..start + len {
            for &f in freqs {
                let a = p as f32 * f;
                cos.push(a.cos() * self.scale);
                sin.push(a.sin() * self.scale);
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, half), device)?,
            Tensor::from_vec(sin, (len, half), device)?,
        ))
    }
}

/// YaRN's frequencies as transformers' `_compute_yarn_parameters` computes them: the
/// correction range in f64 (python floats), the powers, blends and ramp in f32 (torch).
fn yarn_inv_freq(
    dim: usize,
    theta: f64,
    factor: f64,
    original: usize,
    (beta_fast, beta_slow): (f64, f64),
    truncate: bool,
) -> Vec<f32> {
    let correction_dim = |rotations: f64| {
        dim as f64 * (original as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
    if low == high {
        high += 0.001;
    }
    let (base, factor) = (theta as f32, factor as f32);
    (0..dim / 2)
        .map(|i| {
            let pos_freq = base.powf((2 * i) as f32 / dim as f32);
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (factor * pos_freq);
            let ramp = ((i as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect()
}

/// What varies from layer to layer, a field of each layer (as candle's gemma3.rs gives
/// each layer its own window): which rotation its queries and keys take (an index into
/// the model's ropes) and how far back it attends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerAttention {
    /// Keys older than this many positions are not attended to.
    pub sliding_window: Option<usize>,
    /// Which of the model's rotations ([`Config::ropes`]).
    pub rope: usize,
}

/// The names of a layer's router and experts under its prefix (`model.layers.N.`).
pub struct ExpertNames {
    pub router: &'static str,
    pub experts: &'static str,
    /// The gate, up and down projections' names.
    pub projections: [&'static str; 3],
}

impl ExpertNames {
    /// Expert `e`'s projection `j` (0 gate, 1 up, 2 down), with `.weight`.
    pub fn expert(&self, e: usize, j: usize) -> String {
        format!("{}.{e}.{}.weight", self.experts, self.projections[j])
    }

    /// Expert `e`'s projection `j`'s bias.
    pub fn expert_bias(&self, e: usize, j: usize) -> String {
        format!("{}.{e}.{}.bias", self.experts, self.projections[j])
    }

    /// (expert, projection, `weight` or `bias`) of a name under the layer prefix, when
    /// it is an expert's.
    pub fn parse(&self, rest: &str) -> Option<(usize, usize, &'static str)> {
        let r = rest.strip_prefix(self.experts)?.strip_prefix('.')?;
        let (e, r) = r.split_once('.')?;
        let (proj, kind) = r.rsplit_once('.')?;
        let kind = ["weight", "bias"].into_iter().find(|k| *k == kind)?;
        let j = self.projections.iter().position(|p| *p == proj)?;
        Some((e.parse().ok()?, j, kind))
    }
}

/// A layer's MLP: one SwiGLU, or a mixture of experts.
#[derive(Debug, Clone)]
pub enum Mlp {
    Dense {
        gate_proj: Linear,
        up_proj: Linear,
        down_proj: Linear,
    },
    Moe(crate::model::moe::Moe),
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attention: LayerAttention,
    pub input_layernorm: RmsNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// Attention sinks, one logit per query head (gpt-oss): stored, and as f32 values.
    pub sinks: Option<(Vector, Vec<f32>)>,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Layer {
    /// Whether every product has a CPU kernel (the decode step's condition; checked at
    /// every step without allocating).
    pub fn has_slice_products(&self) -> bool {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
            .iter()
            .all(|p| p.slice_product().is_some())
            && match &self.mlp {
                Mlp::Dense {
                    gate_proj,
                    up_proj,
                    down_proj,
                } => [gate_proj, up_proj, down_proj]
                    .iter()
                    .all(|p| p.slice_product().is_some()),
                Mlp::Moe(m) => m.has_slice_products(),
            }
    }

    /// The layer's products: attention's four, then the MLP's (a router and every
    /// expert's three under a mixture of experts).
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v = vec![&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj];
        match &self.mlp {
            Mlp::Dense {
                gate_proj,
                up_proj,
                down_proj,
            } => v.extend([gate_proj, up_proj, down_proj]),
            Mlp::Moe(m) => {
                v.push(&m.router);
                for e in &m.experts {
                    v.extend(e.linears());
                }
            }
        }
        v
    }
}

/// A model of the Llama architectures, with its LM head.
pub struct Llama {
    config: Config,
    embed_tokens: Matrix,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `None` when the LM head is tied to the token embedding.
    lm_head: Option<Matrix>,
    /// The rotations the layers take (one for every member today).
    ropes: Vec<Rope>,
    device: Device,
}

/// The canonical (transformers) tensor names of a config and their shapes `[out, in]`.
pub fn expected_tensors(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let (q_out, kv_out) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let inter = cfg.intermediate_size;
    let mut v = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        v.push((p("input_layernorm.weight"), vec![h]));
        if cfg.member == Member::Phi3 {
            // Stored fused, split at load.
            v.push((p("self_attn.qkv_proj.weight"), vec![q_out + 2 * kv_out, h]));
            v.push((p("self_attn.o_proj.weight"), vec![h, q_out]));
            v.push((p("post_attention_layernorm.weight"), vec![h]));
            v.push((p("mlp.gate_up_proj.weight"), vec![2 * inter, h]));
            v.push((p("mlp.down_proj.weight"), vec![h, inter]));
            continue;
        }
        for (n, out, inp, bias) in [
            ("self_attn.q_proj", q_out, h, cfg.qkv_bias),
            ("self_attn.k_proj", kv_out, h, cfg.qkv_bias),
            ("self_attn.v_proj", kv_out, h, cfg.qkv_bias),
            ("self_attn.o_proj", h, q_out, cfg.o_bias),
        ] {
            v.push((p(&format!("{n}.weight")), vec![out, inp]));
            if bias {
                v.push((p(&format!("{n}.bias")), vec![out]));
            }
        }
        if cfg.qk_norm {
            let (qn, kn) = cfg.qk_norm_lengths();
            v.push((p("self_attn.q_norm.weight"), vec![qn]));
            v.push((p("self_attn.k_norm.weight"), vec![kn]));
        }
        if cfg.attention_sinks {
            v.push((p("self_attn.sinks"), vec![cfg.num_attention_heads]));
        }
        v.push((p("post_attention_layernorm.weight"), vec![h]));
        match cfg.moe.as_ref().filter(|m| m.sparse[i]) {
            Some(m) => {
                let names = cfg.expert_names();
                v.push((
                    p(&format!("{}.weight", names.router)),
                    vec![m.num_experts, h],
                ));
                if m.biases {
                    v.push((p(&format!("{}.bias", names.router)), vec![m.num_experts]));
                }
                // Projection by projection, experts in order: the layout of GGUF's
                // stacked tensors (ffn_gate_exps ...).
                for (j, out, inp) in [
                    (0, m.intermediate_size, h),
                    (1, m.intermediate_size, h),
                    (2, h, m.intermediate_size),
                ] {
                    for e in 0..m.num_experts {
                        v.push((p(&names.expert(e, j)), vec![out, inp]));
                    }
                    if m.biases {
                        for e in 0..m.num_experts {
                            v.push((p(&names.expert_bias(e, j)), vec![out]));
                        }
                    }
                }
            }
            None => {
                for (n, out, inp) in [
                    ("mlp.gate_proj", inter, h),
                    ("mlp.up_proj", inter, h),
                    ("mlp.down_proj", h, inter),
                ] {
                    v.push((p(&format!("{n}.weight")), vec![out, inp]));
                    if cfg.mlp_bias {
                        v.push((p(&format!("{n}.bias")), vec![out]));
                    }
                }
            }
        }
    }
    v.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    v
}

impl Llama {
    /// Read every tensor from `src` and store each at `q` on `device`, one at a time;
    /// the fallback notes say which matrices were stored in another format, and why.
    pub fn load(
        cfg: &Config,
        src: &dyn TensorSource,
        q: Quantization,
        device: &Device,
    ) -> Result<(Self, Vec<String>)> {
        let mut w = Builder::new(src, q, device, cfg)?;
        let h = cfg.hidden_size;
        let eps = cfg.rms_norm_eps;
        let embed_q = w.quantize_embeddings();
        let embed_tokens = w.matrix(
            "model.embed_tokens.weight",
            [cfg.vocab_size, h],
            false,
            embed_q,
        )?;
        let (q_out, kv_out) = (
            cfg.num_attention_heads * cfg.head_dim,
            cfg.num_key_value_heads * cfg.head_dim,
        );
        let inter = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.{n}");
            let norm = |w: &mut Builder, n: &str, len: usize| -> Result<RmsNorm> {
                Ok(RmsNorm::new(w.vector(&p(n), len)?, eps)?)
            };
            let lin =
                |w: &mut Builder, n: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                    let weight = w.matrix(&p(&format!("{n}.weight")), [out, inp], false, true)?;
                    let bias: Option<Vector> = if bias {
                        Some(w.vector(&p(&format!("{n}.bias")), out)?)
                    } else {
                        None
                    };
                    Ok(Linear::new(weight, bias)?)
                };
            let input_layernorm = norm(&mut w, "input_layernorm.weight", h)?;
            if cfg.member == Member::Phi3 {
                layers.push(phi3_layer(cfg, &mut w, i, input_layernorm)?);
                continue;
            }
            let q_proj = lin(&mut w, "self_attn.q_proj", q_out, h, cfg.qkv_bias)?;
            let k_proj = lin(&mut w, "self_attn.k_proj", kv_out, h, cfg.qkv_bias)?;
            let v_proj = lin(&mut w, "self_attn.v_proj", kv_out, h, cfg.qkv_bias)?;
            let o_proj = lin(&mut w, "self_attn.o_proj", h, q_out, cfg.o_bias)?;
            let (q_norm, k_norm) = if cfg.qk_norm {
                let (qn, kn) = cfg.qk_norm_lengths();
                (
                    Some(norm(&mut w, "self_attn.q_norm.weight", qn)?),
                    Some(norm(&mut w, "self_attn.k_norm.weight", kn)?),
                )
            } else {
                (None, None)
            };
            let sinks = if cfg.attention_sinks {
                let v = w.vector(&p("self_attn.sinks"), cfg.num_attention_heads)?;
                let f = v.f32()?.to_vec1::<f32>()?;
                Some((v, f))
            } else {
                None
            };
            let post_attention_layernorm = norm(&mut w, "post_attention_layernorm.weight", h)?;
            let mlp = match cfg.moe.as_ref().filter(|m| m.sparse[i]) {
                Some(m) => {
                    let names = cfg.expert_names();
                    // The router stays in the rest dtype at every precision, as
                    // llama-quantize leaves ffn_gate_inp.weight unquantized.
                    let router = w.matrix(
                        &p(&format!("{}.weight", names.router)),
                        [m.num_experts, h],
                        false,
                        false,
                    )?;
                    let router_bias = if m.biases {
                        Some(w.vector(&p(&format!("{}.bias", names.router)), m.num_experts)?)
                    } else {
                        None
                    };
                    let mut ex = |e: usize, j: usize, out: usize, inp: usize| -> Result<Linear> {
                        let weight = w.matrix(&p(&names.expert(e, j)), [out, inp], false, true)?;
                        let bias = if m.biases {
                            Some(w.vector(&p(&names.expert_bias(e, j)), out)?)
                        } else {
                            None
                        };
                        Ok(Linear::new(weight, bias)?)
                    };
                    let mut experts = Vec::with_capacity(m.num_experts);
                    for e in 0..m.num_experts {
                        experts.push(crate::model::moe::Expert {
                            gate: ex(e, 0, m.intermediate_size, h)?,
                            up: ex(e, 1, m.intermediate_size, h)?,
                            down: ex(e, 2, h, m.intermediate_size)?,
                        });
                    }
                    Mlp::Moe(crate::model::moe::Moe {
                        router: Linear::new(router, router_bias)?,
                        experts,
                        top_k: m.top_k,
                        routing: m.routing,
                        activation: m.activation,
                        usage: Default::default(),
                    })
                }
                None => Mlp::Dense {
                    gate_proj: lin(&mut w, "mlp.gate_proj", inter, h, cfg.mlp_bias)?,
                    up_proj: lin(&mut w, "mlp.up_proj", inter, h, cfg.mlp_bias)?,
                    down_proj: lin(&mut w, "mlp.down_proj", h, inter, cfg.mlp_bias)?,
                },
            };
            layers.push(Layer {
                attention: cfg.layer_attention(i),
                input_layernorm,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_norm,
                k_norm,
                sinks,
                post_attention_layernorm,
                mlp,
            });
        }
        let norm = RmsNorm::new(w.vector("model.norm.weight", h)?, eps)?;
        // The head is multiplied every step: stored for products (a tied table is the head).
        let (embed_tokens, lm_head) = if cfg.tie_word_embeddings {
            (embed_tokens.for_products(), None)
        } else {
            let head = w.matrix("lm_head.weight", [cfg.vocab_size, h], false, embed_q)?;
            (embed_tokens, Some(head.for_products()))
        };
        let model = Llama {
            config: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            ropes: cfg.ropes(),
            device: device.clone(),
        };
        Ok((model, w.notes()))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn layer_forward(
        &self,
        l: &Layer,
        xs: &Tensor,
        kv: &mut KvCache,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, len, _) = xs.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);

        let h = l.input_layernorm.forward(xs)?;
        // [b, len, n * hd] -> [b, n, len, hd], normed first where asked: each head
        // (Qwen3) or the whole projection (OLMoE).
        let full = c.qk_norm_full;
        let heads = |t: Tensor, n: usize, norm: Option<&RmsNorm>| -> candle_core::Result<Tensor> {
            let t = match norm {
                Some(nm) if full => nm.forward(&t)?,
                _ => t,
            };
            let t = t.reshape((b, len, n, hd))?;
            let t = match norm {
                Some(nm) if !full => nm.forward(&t)?,
                _ => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let q = heads(l.q_proj.forward(&h)?, nh, l.q_norm.as_ref())?;
        let k = heads(l.k_proj.forward(&h)?, nkv, l.k_norm.as_ref())?;
        let v = heads(l.v_proj.forward(&h)?, nkv, None)?;
        let q = rope_heads(&q, cos, sin)?;
        let k = rope_heads(&k, cos, sin)?;
        let (k, v) = kv.append(&k, &v)?; // [b, nkv, total, hd]
        let total = k.dim(2)?;

        // Grouped-query attention without copying the cache per query head: the `rep`
        // query heads of a group (heads g*rep .. (g+1)*rep, as transformers' repeat_kv
        // pairs them) are stacked as rows against their group's one key/value head.
        let rep = nh / nkv;
        let q = q.reshape((b, nkv, rep * len, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        // The mask, when there is one, is the causal one over this pass's positions.
        let causal = mask.map(|_| crate::kernel::attention::Causal {
            len,
            window: l.attention.sliding_window,
        });
        let sinks = l.sinks.as_ref().map(|(_, f)| f.as_slice());
        let y = match crate::kernel::attention::step_with_sinks(&q, &k, &v, scale, causal, sinks)? {
            Some(y) => y,
            None => {
                let att = (q.matmul(&k.t()?)? * scale)?;
                let att = match mask {
                    Some(m) => att
                        .reshape((b, nkv, rep, len, total))?
                        .broadcast_add(m)?
                        .reshape((b, nkv, rep * len, total))?,
                    None => att,
                };
                let p = match &l.sinks {
                    Some((s, _)) => {
                        crate::kernel::attention::softmax_with_sinks_candle(&att, &s.f32()?, rep)?
                    }
                    None => candle_nn::ops::softmax_last_dim(&att)?,
                };
                p.matmul(&v)?
            }
        };
        let y = y
            .reshape((b, nh, len, hd))?
            .transpose(1, 2)?
            .reshape((b, len, nh * hd))?;
        let xs = (xs + l.o_proj.forward(&y)?)?;

        let h = l.post_attention_layernorm.forward(&xs)?;
        match &l.mlp {
            Mlp::Dense {
                gate_proj,
                up_proj,
                down_proj,
            } => {
                let gate = gate_proj.forward(&h)?;
                let up = up_proj.forward(&h)?;
                xs + down_proj.forward(&crate::kernel::silu::SiluMul::forward(&gate, &up)?)?
            }
            Mlp::Moe(m) => xs + m.forward(&h)?,
        }
    }
}

/// A Phi-3 layer: the fused projections split by rows as transformers slices them (q,
/// k, v of qkv_proj; gate then up of gate_up_proj).
fn phi3_layer(cfg: &Config, w: &mut Builder, i: usize, input_layernorm: RmsNorm) -> Result<Layer> {
    let p = |n: &str| format!("model.layers.{i}.{n}");
    let h = cfg.hidden_size;
    let (q_out, kv_out) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let inter = cfg.intermediate_size;
    let part = |w: &mut Builder, name: &str, shape, start, len| -> Result<Linear> {
        Ok(Linear::new(
            w.matrix_rows(name, shape, start, len, true)?,
            None,
        )?)
    };
    let whole = |w: &mut Builder, name: &str, out: usize, inp: usize| -> Result<Linear> {
        Ok(Linear::new(
            w.matrix(&p(name), [out, inp], false, true)?,
            None,
        )?)
    };
    let qkv = p("self_attn.qkv_proj.weight");
    let fused = [q_out + 2 * kv_out, h];
    let gu = p("mlp.gate_up_proj.weight");
    Ok(Layer {
        attention: cfg.layer_attention(i),
        input_layernorm,
        q_proj: part(w, &qkv, fused, 0, q_out)?,
        k_proj: part(w, &qkv, fused, q_out, kv_out)?,
        v_proj: part(w, &qkv, fused, q_out + kv_out, kv_out)?,
        o_proj: whole(w, "self_attn.o_proj.weight", h, q_out)?,
        q_norm: None,
        k_norm: None,
        sinks: None,
        post_attention_layernorm: RmsNorm::new(
            w.vector(&p("post_attention_layernorm.weight"), h)?,
            cfg.rms_norm_eps,
        )?,
        mlp: Mlp::Dense {
            gate_proj: part(w, &gu, [2 * inter, h], 0, inter)?,
            up_proj: part(w, &gu, [2 * inter, h], inter, inter)?,
            down_proj: whole(w, "mlp.down_proj.weight", h, inter)?,
        },
    })
}

/// candle's rotation of `x` `[b, heads, len, hd]`, over the leading `2 · cos.dim(1)`
/// dimensions of each head when that is less than the head (partial rotary: the rest
/// pass as they are, transformers' `torch.cat([rotated, pass], -1)`).
fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let hd = x.dim(3)?;
    let rd = 2 * cos.dim(1)?;
    if rd == hd {
        return candle_nn::rotary_emb::rope(x, cos, sin);
    }
    let rot = candle_nn::rotary_emb::rope(&x.narrow(3, 0, rd)?.contiguous()?, cos, sin)?;
    Tensor::cat(&[&rot, &x.narrow(3, rd, hd - rd)?], 3)?.contiguous()
}

/// The Llama architectures' decode-step buffers for `b` sequences ([`crate::model::step`]).
struct StepBuffers {
    b: usize,
    /// The residual stream and the normed stream, `b × hidden`.
    x: Vec<f32>,
    h: Vec<f32>,
    /// Queries `b × heads·hd`, keys and values `b × kv_heads·hd`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The attention's output, `b × heads·hd`.
    att: Vec<f32>,
    /// A projection's output before it joins the stream, `b × hidden`.
    out: Vec<f32>,
    /// The MLP's gate and up projections, `b × intermediate`.
    gate: Vec<f32>,
    up: Vec<f32>,
    /// The rotary angles' cosines and sines at the step's position, `hd / 2` for each of
    /// the model's rotations.
    cos: Vec<f32>,
    sin: Vec<f32>,
    products: crate::kernel::Scratch,
    /// A mixture of experts' routing and expert rows.
    moe: crate::model::moe::RowBuffers,
}

impl Llama {
    /// One new token per sequence (`ids`, one each) through the CPU decode step
    /// ([`crate::model::step`]); `None` where it does not apply (another device,
    /// quantbench's kernels off, a product without a CPU kernel), and then the candle
    /// path runs.
    fn decode_step(&self, ids: &[u32], cache: &mut Cache) -> Result<Option<Tensor>> {
        use crate::kernel::attention::{attend_cached_with_sinks, Heads};
        use crate::model::kv::Rows;
        use crate::model::step;
        let c = &self.config;
        if !step::available(&self.device) || !self.layers.iter().all(Layer::has_slice_products) {
            return Ok(None);
        }
        let (b, hs, nh, nkv, hd) = (
            ids.len(),
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        );
        let inter = c.intermediate_size;
        let pos = cache.position;
        let mut s = step::take_buffers(
            cache,
            |s: &StepBuffers| s.b == b,
            || StepBuffers {
                b,
                x: vec![0.0; b * hs],
                h: vec![0.0; b * hs],
                q: vec![0.0; b * nh * hd],
                k: vec![0.0; b * nkv * hd],
                v: vec![0.0; b * nkv * hd],
                att: vec![0.0; b * nh * hd],
                out: vec![0.0; b * hs],
                gate: vec![0.0; b * inter],
                up: vec![0.0; b * inter],
                cos: vec![0.0; self.ropes[0].rotary_dim() / 2 * self.ropes.len()],
                sin: vec![0.0; self.ropes[0].rotary_dim() / 2 * self.ropes.len()],
                products: Default::default(),
                moe: Default::default(),
            },
        );
        let StepBuffers {
            x,
            h,
            q,
            k,
            v,
            att,
            out,
            gate,
            up,
            cos,
            sin,
            products,
            moe,
            ..
        } = &mut *s;
        for (row, &id) in x.chunks_exact_mut(hs).zip(ids) {
            self.embed_tokens.row_into(id as usize, row)?;
        }
        let half = self.ropes[0].rotary_dim() / 2;
        for (r, rope) in self.ropes.iter().enumerate() {
            rope.cos_sin_into(
                pos,
                &mut cos[r * half..(r + 1) * half],
                &mut sin[r * half..(r + 1) * half],
            );
        }
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        for (i, (l, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            if i == 0 {
                l.input_layernorm.forward_rows(x, h);
            } else {
                step::add_then(x, out, |x| l.input_layernorm.forward_rows(x, h));
            }
            step::product(&l.q_proj)?.apply(h, b, q, products)?;
            step::product(&l.k_proj)?.apply(h, b, k, products)?;
            step::product(&l.v_proj)?.apply(h, b, v, products)?;
            if let Some(nm) = &l.q_norm {
                nm.forward_rows_in_place(q);
            }
            if let Some(nm) = &l.k_norm {
                nm.forward_rows_in_place(k);
            }
            let r = l.attention.rope;
            let (cos, sin) = (
                &cos[r * half..(r + 1) * half],
                &sin[r * half..(r + 1) * half],
            );
            step::rope_in_place_partial(q, hd, cos, sin);
            step::rope_in_place_partial(k, hd, cos, sin);
            let rows = |data| Rows {
                data,
                offset: 0,
                seq_stride: nkv * hd,
            };
            kv.push_rows((b, nkv, hd), rows(k), rows(v))?;
            let total = kv.len();
            // A sliding window hides the positions more than `window` back, as the
            // candle path's mask does.
            let first = match l.attention.sliding_window {
                Some(w) if total > w => total - w,
                _ => 0,
            };
            let (keys, values) = kv.buffers().expect("just written");
            let heads = Heads {
                b,
                g: nkv,
                rep: nh / nkv,
                hd,
            };
            let sinks = l.sinks.as_ref().map(|(_, f)| f.as_slice());
            attend_cached_with_sinks(
                q,
                nh * hd,
                keys,
                values,
                heads,
                first..total,
                scale,
                att,
                sinks,
            )?;
            step::product(&l.o_proj)?.apply(att, b, out, products)?;
            step::add_then(x, out, |x| l.post_attention_layernorm.forward_rows(x, h));
            match &l.mlp {
                Mlp::Dense {
                    gate_proj,
                    up_proj,
                    down_proj,
                } => {
                    step::product(gate_proj)?.apply(h, b, gate, products)?;
                    step::product(up_proj)?.apply(h, b, up, products)?;
                    crate::kernel::silu::silu_mul(gate, up);
                    step::product(down_proj)?.apply(gate, b, out, products)?;
                }
                Mlp::Moe(m) => m.forward_rows(h, b, out, moe)?,
            }
        }
        step::add_then(x, out, |x| self.norm.forward_rows(x, h));
        let hidden = Tensor::from_slice(&h[..], (b, 1, hs), &self.device)?;
        cache.position += 1;
        step::put_back(cache, s);
        step::count();
        Ok(Some(hidden))
    }
}

impl CausalLm for Llama {
    fn hidden_batch(&self, batch: &[&[u32]], cache: &mut Cache) -> Result<Tensor> {
        let c = &self.config;
        let (b, len, ids) = crate::model::arch::flatten_batch(batch)?;
        let start = cache.position;
        crate::model::arch::check_ids(&ids[..len], start, c.max_position_embeddings, c.vocab_size)?;
        crate::model::arch::check_ids(&ids, 0, ids.len(), c.vocab_size)?;
        if len == 1 {
            if let Some(h) = self.decode_step(&ids, cache)? {
                return Ok(h);
            }
        }
        let ids_t = Tensor::from_vec(ids, (b, len), &self.device)?;
        let mut xs = self.embed_tokens.rows(&ids_t)?;
        let angles = self
            .ropes
            .iter()
            .map(|r| r.cos_sin(start, len, &self.device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // One mask per window the layers use (made once, shared by its layers).
        // One mask per (window, positions held before this pass) the layers need, made
        // once and shared: a sliding layer that dropped old positions first (evict_for)
        // sees its held positions only, so its mask starts where they do.
        let mut masks: Vec<(MaskKey, Option<Tensor>)> = Vec::new();
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let window = layer.attention.sliding_window;
            kv.evict_for(len)?;
            let held = kv.len();
            let key = (window, held);
            if !masks.iter().any(|(k, _)| *k == key) {
                let window_cuts = window.is_some_and(|w| held + len > w);
                let mask = if len > 1 || window_cuts {
                    Some(causal_mask(len, held, window, &self.device)?)
                } else {
                    None
                };
                masks.push((key, mask));
            }
            let mask = masks
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, m)| m.as_ref());
            let (cos, sin) = &angles[layer.attention.rope];
            xs = self
                .layer_forward(layer, &xs, kv, cos, sin, mask)
                .with_context(|| format!("forward pass of layer {i}"))?;
        }
        cache.position += len;
        Ok(self.norm.forward(&xs)?)
    }

    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self
            .lm_head
            .as_ref()
            .unwrap_or(&self.embed_tokens)
            .forward(h)?)
    }

    /// Every weight but a looked-up token table; under a mixture of experts, the
    /// experts a step routes to are what it reads of them: `top_k` per layer for one
    /// sequence (the least a step reads; [`CausalLm::expert_usage`] says what steps did).
    fn streamed_bytes_per_step(&self) -> usize {
        // The token table is only looked up when the head is untied.
        let looked_up = self
            .lm_head
            .as_ref()
            .map_or(0, |_| self.embed_tokens.bytes());
        let unrouted: usize = self
            .layers
            .iter()
            .map(|l| match &l.mlp {
                Mlp::Moe(m) => (m.experts.len() - m.top_k) * m.expert_bytes(),
                Mlp::Dense { .. } => 0,
            })
            .sum();
        self.parts().iter().map(|(_, p)| p.bytes()).sum::<usize>() - looked_up - unrouted
    }

    fn parts(&self) -> Vec<(Group, Part<'_>)> {
        let mut parts: Vec<(Group, Part<'_>)> = std::iter::once(&self.embed_tokens)
            .chain(self.lm_head.as_ref())
            .map(|m| (Group::Embeddings, Part::Matrix(m)))
            .collect();
        parts.push((Group::NormsBiases, Part::Vector(&self.norm.weight)));
        for l in &self.layers {
            for n in [&l.input_layernorm, &l.post_attention_layernorm]
                .into_iter()
                .chain(l.q_norm.as_ref())
                .chain(l.k_norm.as_ref())
            {
                parts.push((Group::NormsBiases, Part::Vector(&n.weight)));
            }
            if let Some((s, _)) = &l.sinks {
                parts.push((Group::NormsBiases, Part::Vector(s)));
            }
            for lin in l.linears() {
                parts.extend(linear_parts(lin));
            }
        }
        parts
    }

    fn expert_usage(&self) -> Option<crate::model::moe::ExpertUsage> {
        let mut u = crate::model::moe::ExpertUsage::default();
        for (i, l) in self.layers.iter().enumerate() {
            if let Mlp::Moe(m) = &l.mlp {
                u.layers
                    .push((i, m.experts.len(), m.top_k, m.usage.snapshot()));
                u.expert_bytes.push(m.expert_bytes());
            }
        }
        (!u.layers.is_empty()).then_some(u)
    }

    fn reset_expert_usage(&self) {
        for l in &self.layers {
            if let Mlp::Moe(m) = &l.mlp {
                m.usage.reset();
            }
        }
    }

    fn trace_routes(&self, on: bool) {
        for l in &self.layers {
            if let Mlp::Moe(m) = &l.mlp {
                m.usage.trace(on);
            }
        }
    }

    fn take_routes(&self) -> Option<Vec<(usize, Vec<u16>)>> {
        self.layers
            .iter()
            .filter_map(|l| match &l.mlp {
                Mlp::Moe(m) => Some(m.usage.take_trace().map(|t| (m.top_k, t))),
                Mlp::Dense { .. } => None,
            })
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
    }

    fn token_embedding(&self) -> &Matrix {
        &self.embed_tokens
    }
}

/// The Llama architectures in the registry.
pub static ARCHITECTURE: Architecture = Architecture {
    title: "the Llama architectures (llama, mistral, qwen2, qwen3, phi3; with experts qwen3_moe, mixtral, olmoe, gpt_oss)",
    model_types: &[
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "qwen3_moe",
        "mixtral",
        "olmoe",
        "phi3",
        "gpt_oss",
    ],
    reads_untyped_config: false,
    gguf_architectures: &["llama", "qwen2", "qwen3", "qwen3moe", "olmoe", "phi3", "gpt-oss"],
    from_config_json: |model_type, value, _, origin| {
        let member = model_type
            .and_then(Member::parse)
            .expect("the registry reads only the listed model types here");
        Ok(ModelConfig::new(Config::from_value(value, member, origin)?))
    },
    from_gguf,
    presets: &PRESETS,
};

/// A shape of the Llama architectures with the fields every preset sets; the rest as in Llama.
#[allow(clippy::too_many_arguments)]
fn shape(
    member: Member,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    max_position_embeddings: usize,
    rope_theta: f64,
    tie_word_embeddings: bool,
) -> Config {
    Config {
        member,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim: hidden_size / num_attention_heads,
        max_position_embeddings,
        rms_norm_eps: 1e-5,
        rope_theta,
        rope_scaling: RopeScaling::Default,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
        tie_word_embeddings,
        sliding_window: None,
        bos_token_id: None,
        eos_token_id: None,
        qk_norm_full: false,
        moe: None,
        partial_rotary_factor: 1.0,
        long_rope_factors: None,
        rope_freq_factors: None,
        attention_sinks: false,
        layer_sliding: None,
    }
}

/// The Llama architectures' synthetic presets, shaped from the published config.json files:
/// HuggingFaceTB/SmolLM2-135M, Qwen/Qwen2.5-0.5B, Qwen/Qwen3-0.6B,
/// meta-llama/Llama-3.2-1B, TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T
/// (v1.0), mistralai/Mistral-7B-v0.1; with experts allenai/OLMoE-1B-7B-0924,
/// Qwen/Qwen3-30B-A3B, mistralai/Mixtral-8x7B-v0.1, openai/gpt-oss-20b;
/// microsoft/Phi-3-mini-4k-instruct, microsoft/Phi-3.5-mini-instruct.
#[rustfmt::skip]
pub const PRESETS: [Preset; 13] = [
    Preset {
        name: "tiny-llama",
        about: "a Llama of 2 layers, width 256, 4 heads over 2 kv heads, llama3 rope, GPT-2's vocabulary, for tests",
        build: || {
            let mut c = shape(Member::Llama, 50257, 256, 512, 2, 4, 2, 256, 500000.0, false);
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64,
            };
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "smollm2-135m",
        about: "SmolLM2-135M (Llama: 30 layers, width 576, 9 heads, 3 kv heads, tied head)",
        build: || {
            let mut c = shape(Member::Llama, 49152, 576, 1536, 30, 9, 3, 8192, 100000.0, true);
            c.bos_token_id = Some(0);
            c.eos_token_id = Some(0);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "qwen2.5-0.5b",
        about: "Qwen2.5-0.5B (qwen2: 24 layers, width 896, 14 heads, 2 kv heads, q/k/v biases, tied head)",
        build: || {
            let mut c = shape(Member::Qwen2, 151936, 896, 4864, 24, 14, 2, 32768, 1000000.0, true);
            c.rms_norm_eps = 1e-6;
            c.qkv_bias = true;
            c.bos_token_id = Some(151643);
            c.eos_token_id = Some(151643);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "qwen3-0.6b",
        about: "Qwen3-0.6B (qwen3: 28 layers, width 1024, 16 heads of 128, 8 kv heads, q/k norms, tied head)",
        build: || {
            let mut c = shape(Member::Qwen3, 151936, 1024, 3072, 28, 16, 8, 40960, 1000000.0, true);
            c.head_dim = 128;
            c.rms_norm_eps = 1e-6;
            c.qk_norm = true;
            c.bos_token_id = Some(151643);
            c.eos_token_id = Some(151645);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "llama-3.2-1b",
        about: "Llama 3.2 1B (16 layers, width 2048, 32 heads, 8 kv heads, llama3 rope, tied head)",
        build: || {
            let mut c = shape(Member::Llama, 128256, 2048, 8192, 16, 32, 8, 131072, 500000.0, true);
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            };
            c.bos_token_id = Some(128000);
            c.eos_token_id = Some(128001);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "tinyllama-1.1b",
        about: "TinyLlama 1.1B (22 layers, width 2048, 32 heads, 4 kv heads, untied head)",
        build: || {
            let mut c = shape(Member::Llama, 32000, 2048, 5632, 22, 32, 4, 2048, 10000.0, false);
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(2);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "mistral-7b",
        about: "Mistral 7B v0.1 (32 layers, width 4096, 32 heads, 8 kv heads, sliding window 4096, untied head; f32 does not fit in 24 GiB)",
        build: || {
            let mut c = shape(Member::Mistral, 32000, 4096, 14336, 32, 32, 8, 32768, 10000.0, false);
            c.sliding_window = Some(4096);
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(2);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "phi-3-mini-4k",
        about: "Phi-3-mini-4k (phi3: 32 layers, width 3072, 32 heads, fused qkv and gate_up projections, sliding window 2047, untied; 3.8B parameters)",
        build: || {
            let mut c = shape(Member::Phi3, 32064, 3072, 8192, 32, 32, 32, 4096, 10000.0, false);
            c.sliding_window = Some(2047);
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(32000);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "phi-3.5-mini",
        about: "Phi-3.5-mini-instruct (phi3: 32 layers, width 3072, 32 heads, LongRoPE from 4096 to 131072 positions, untied; 3.8B parameters)",
        build: || {
            let mut c = shape(Member::Phi3, 32064, 3072, 8192, 32, 32, 32, 131072, 10000.0, false);
            c.sliding_window = Some(262144);
            c.long_rope_factors = Some((PHI_3_5_SHORT.to_vec(), PHI_3_5_LONG.to_vec()));
            // transformers: sqrt(1 + ln(131072 / 4096) / ln(4096)).
            c.rope_scaling = RopeScaling::LongRope {
                original_max_position_embeddings: 4096,
                attention_factor: (1.0 + 32f64.ln() / 4096f64.ln()).sqrt(),
            };
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(32000);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "gpt-oss-20b",
        about: "gpt-oss-20b (gpt_oss: 24 layers, width 2880, 64 heads of 64, 8 kv heads, sinks, window 128 on every other layer, YaRN, 32 experts of 2880, 4 a token; 20.9B parameters, 3.6B active; f32 (78 GiB) and bf16 do not fit in 24 GiB, q8_0 takes 20.7 GiB, mxfp4 10.4 GiB)",
        build: || {
            use crate::model::moe::{Activation, Routing};
            let mut c = shape(Member::GptOss, 201088, 2880, 2880, 24, 64, 8, 131072, 150000.0, false);
            c.head_dim = 64;
            c.qkv_bias = true;
            c.o_bias = true;
            c.attention_sinks = true;
            c.sliding_window = Some(128);
            c.layer_sliding = Some((0..24).map(|i| i % 2 == 0).collect());
            c.rope_scaling = RopeScaling::Yarn {
                factor: 32.0,
                original_max_position_embeddings: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: 0.1 * 32f64.ln() + 1.0,
                truncate: false,
            };
            c.moe = Some(MoeConfig {
                num_experts: 32,
                top_k: 4,
                intermediate_size: 2880,
                routing: Routing::TopKThenSoftmax,
                activation: Activation::ClampedSwiglu { alpha: 1.702, limit: 7.0 },
                biases: true,
                sparse: vec![true; 24],
            });
            c.eos_token_id = Some(200002);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "olmoe-1b-7b",
        about: "OLMoE-1B-7B (olmoe: 16 layers, width 2048, 16 heads, 64 experts of 1024, 8 a token, untied; 6.9B parameters, 1.3B active)",
        build: || {
            let mut c = shape(Member::Olmoe, 50304, 2048, 1024, 16, 16, 16, 4096, 10000.0, false);
            c.qk_norm = true;
            c.qk_norm_full = true;
            c.moe = Some(MoeConfig::softmax_top_k(64, 8, 1024, false, vec![true; 16]));
            c.eos_token_id = Some(50279);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "qwen3-30b-a3b",
        about: "Qwen3-30B-A3B (qwen3_moe: 48 layers, width 2048, 32 heads of 128, 4 kv heads, 128 experts of 768, 8 a token; 30.5B parameters, 3.3B active; f32 and f16 do not fit in 24 GiB)",
        build: || {
            let mut c = shape(Member::Qwen3Moe, 151936, 2048, 6144, 48, 32, 4, 40960, 1000000.0, false);
            c.head_dim = 128;
            c.rms_norm_eps = 1e-6;
            c.qk_norm = true;
            c.moe = Some(MoeConfig::softmax_top_k(128, 8, 768, true, vec![true; 48]));
            c.bos_token_id = Some(151643);
            c.eos_token_id = Some(151645);
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "mixtral-8x7b",
        about: "Mixtral 8x7B v0.1 (mixtral: 32 layers, width 4096, 32 heads, 8 kv heads, 8 experts of 14336, 2 a token; 46.7B parameters; only 2- to 4-bit precisions fit in 24 GiB)",
        build: || {
            let mut c = shape(Member::Mixtral, 32000, 4096, 14336, 32, 32, 8, 32768, 1000000.0, false);
            c.moe = Some(MoeConfig::softmax_top_k(8, 2, 14336, true, vec![true; 32]));
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(2);
            ModelConfig::new(c)
        },
    },
];

/// Phi-3.5-mini-instruct's LongRoPE factors (its config.json's rope_scaling, digits as
/// published).
#[rustfmt::skip]
#[allow(clippy::excessive_precision)]
const PHI_3_5_SHORT: [f32; 48] = [
    1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705, 1.0499999523162842,
    1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0499999523162842,
    1.0699999332427979, 1.0999999046325684, 1.1099998950958252, 1.1599998474121094,
    1.1599998474121094, 1.1699998378753662, 1.2899998426437378, 1.339999794960022,
    1.679999828338623, 1.7899998426437378, 1.8199998140335083, 1.8499997854232788,
    1.8799997568130493, 1.9099997282028198, 1.9399996995925903, 1.9899996519088745,
    2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
    2.0199997425079346, 2.0199997425079346, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0799996852874756,
    2.0899996757507324, 2.189999580383301, 2.2199995517730713, 2.5899994373321533,
    2.729999542236328, 2.749999523162842, 2.8399994373321533,
];
#[rustfmt::skip]
#[allow(clippy::excessive_precision)]
const PHI_3_5_LONG: [f32; 48] = [
    1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601,
    1.5899999141693115, 1.600000023841858, 1.6200000047683716, 2.620000123977661,
    3.2300000190734863, 3.2300000190734863, 4.789999961853027, 7.400000095367432,
    7.700000286102295, 9.09000015258789, 12.199999809265137, 17.670000076293945,
    24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
    32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992,
    50.340003967285156, 50.45000457763672, 57.55000305175781, 57.93000411987305,
    58.21000289916992, 60.1400032043457, 62.61000442504883, 62.62000274658203,
    62.71000289916992, 63.1400032043457, 63.1400032043457, 63.77000427246094,
    63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
    64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938,
    64.4800033569336, 64.51000213623047, 64.52999877929688, 64.83999633789062,
];

/// The configuration a GGUF file of the Llama architectures describes (`general.architecture` llama,
/// qwen2 or qwen3; llama.cpp writes Mistral's files as llama).
fn from_gguf(file: &GgufFile, arch: &str) -> Result<ModelConfig> {
    let path = file.path.display();
    let c = file.common(arch)?;
    let head_dim = match file.kv_opt_usize(arch, Kv::KeyLength)? {
        Some(k) => k,
        None => c.width / c.heads.max(1),
    };
    if let Some(v) = file.kv_opt_usize(arch, Kv::ValueLength)? {
        if v != head_dim {
            crate::bad_input!(
                "{path}: {} = {v} differs from the key length {head_dim}; quantbench runs models whose keys and values have one head size",
                Kv::ValueLength.key(arch)
            );
        }
    }
    let mut partial = 1.0;
    if let Some(r) = file.kv_opt_usize(arch, Kv::RopeDimensionCount)? {
        if r != head_dim && arch != "phi3" {
            crate::bad_input!(
                "{path}: {} = {r} rotates part of each head of {head_dim}; quantbench runs fully rotated heads only",
                Kv::RopeDimensionCount.key(arch)
            );
        }
        if r == 0 || r > head_dim {
            crate::bad_input!(
                "{path}: {} = {r} must be between 1 and the head size {head_dim}",
                Kv::RopeDimensionCount.key(arch)
            );
        }
        partial = r as f64 / head_dim as f64;
    }
    let scaling = match file.kv_opt_str(arch, Kv::RopeScalingType)? {
        None | Some("none") => Value::Null,
        Some("linear") => serde_json::json!({
            "type": "linear",
            "factor": file.kv_f64(arch, Kv::RopeScalingFactor)?,
        }),
        // As llama.cpp runs it: beta_fast 32 and beta_slow 1 (its defaults; the gpt-oss
        // loader reads no beta keys), the correction range floored and ceiled (ggml's
        // rope_yarn_corr_dims), cos and sin times 0.1 ln(factor) + 1, times
        // rope.scaling.attn_factor where given.
        Some("yarn") => {
            let factor = file.kv_f64(arch, Kv::RopeScalingFactor)?;
            let mscale = if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 };
            let extra = file.kv_opt_f64(arch, Kv::RopeScalingAttnFactor)?.unwrap_or(1.0);
            serde_json::json!({
                "rope_type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": file.kv_usize(arch, Kv::RopeScalingOrigCtxLen)?,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "attention_factor": mscale * extra,
                "truncate": true,
            })
        }
        Some(other) => crate::bad_input!(
            "{path}: {} = '{other}' is not supported; supported: none, linear, yarn (and llama3 factors in rope_freqs.weight)",
            Kv::RopeScalingType.key(arch)
        ),
    };
    let bos = file.special_id_within("bos", c.bos, c.vocab)?;
    let eos = file.special_id_within("eos", c.eos, c.vocab)?;
    let mut v = serde_json::json!({
        "model_type": arch,
        "vocab_size": c.vocab,
        "hidden_size": c.width,
        "intermediate_size": file.kv_usize(arch, Kv::FeedForwardLength)?,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": file.kv_opt_usize(arch, Kv::HeadCountKv)?.unwrap_or(c.heads),
        "head_dim": head_dim,
        "max_position_embeddings": c.context,
        "rms_norm_eps": file.kv_f64(arch, Kv::LayerNormRmsEpsilon)?,
        "rope_theta": file.kv_opt_f64(arch, Kv::RopeFreqBase)?.unwrap_or(10000.0),
        "rope_scaling": scaling,
        "hidden_act": "silu",
        "tie_word_embeddings": c.tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    let o = v.as_object_mut().expect("an object");
    if arch != "qwen2" {
        o.insert(
            "attention_bias".into(),
            file.tensors.contains_key("blk.0.attn_q.bias").into(),
        );
    }
    if arch == "phi3" {
        phi3_from_gguf(file, arch, head_dim, partial, o)?;
    }
    let experts = file.kv_opt_usize(arch, Kv::ExpertCount)?.filter(|&n| n > 0);
    if arch == "llama" && experts.is_none() {
        o.insert(
            "mlp_bias".into(),
            file.tensors.contains_key("blk.0.ffn_up.bias").into(),
        );
    }
    // llama.cpp writes Mixtral as `llama` with experts; its graphs renormalise the top-k
    // weights for qwen3moe and llama, never for olmoe.
    let member = match (arch, experts) {
        ("llama", Some(_)) => Member::Mixtral,
        ("qwen3moe", _) => Member::Qwen3Moe,
        ("gpt-oss", _) => Member::GptOss,
        (a, _) => Member::parse(a).expect("the registry reads only the listed architectures"),
    };
    if member == Member::GptOss {
        gpt_oss_from_gguf(file, arch, c.layers, o)?;
    }
    if matches!(
        member,
        Member::Qwen3Moe | Member::Olmoe | Member::Mixtral | Member::GptOss
    ) {
        experts_from_gguf(file, arch, member, experts, c.layers, o)?;
    }
    let origin = format!("{path} (GGUF metadata)");
    let mut cfg = Config::from_value(v, member, &origin)?;
    if file.tensors.contains_key("rope_freqs.weight") {
        let t = file.qtensor("rope_freqs.weight", &[cfg.head_dim / 2])?;
        cfg.rope_freq_factors = Some(t.dequantize(&Device::Cpu)?.to_vec1::<f32>()?);
    }
    Ok(ModelConfig::new(cfg))
}

/// A mixture of experts' keys into the config being built: the count, the top k, the
/// expert width, which layers have experts (Qwen3-MoE), and the renormalisation
/// llama.cpp's graph hard-codes for the architecture.
fn experts_from_gguf(
    file: &GgufFile,
    arch: &str,
    member: Member,
    experts: Option<usize>,
    layers: usize,
    o: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let path = file.path.display();
    let Some(n) = experts else {
        crate::bad_input!(
            "{path}: {} is missing or 0; a {arch} file holds experts",
            Kv::ExpertCount.key(arch)
        );
    };
    let count = if matches!(member, Member::Mixtral | Member::GptOss) {
        "num_local_experts"
    } else {
        "num_experts"
    };
    o.insert(count.into(), n.into());
    o.insert(
        "num_experts_per_tok".into(),
        file.kv_usize(arch, Kv::ExpertUsedCount)?.into(),
    );
    if member != Member::GptOss {
        o.insert("norm_topk_prob".into(), (member != Member::Olmoe).into());
    }
    if member == Member::Qwen3Moe {
        o.insert(
            "moe_intermediate_size".into(),
            file.kv_usize(arch, Kv::ExpertFeedForwardLength)?.into(),
        );
        // Layers without a router are dense (what quantbench's export writes for
        // mlp_only_layers).
        let dense: Vec<usize> = (0..layers)
            .filter(|i| {
                !file
                    .tensors
                    .contains_key(&format!("blk.{i}.ffn_gate_inp.weight"))
            })
            .collect();
        o.insert("mlp_only_layers".into(), dense.into());
    } else {
        // Mixtral's and OLMoE's experts are intermediate_size wide.
        let width = file.kv_opt_usize(arch, Kv::ExpertFeedForwardLength)?;
        if let Some(w) = width {
            o.insert("intermediate_size".into(), w.into());
        }
    }
    o.insert("model_type".into(), member.model_type().into());
    if member != Member::GptOss {
        o.insert("sliding_window".into(), Value::Null);
    }
    Ok(())
}

/// gpt-oss's own keys into the config being built: the window and which layers take it
/// (llama.cpp's pattern: every other layer from the first, unless the file says), YaRN
/// as rope_parameters, the clamped SwiGLU's constants as llama.cpp hard-codes them.
fn gpt_oss_from_gguf(
    file: &GgufFile,
    arch: &str,
    layers: usize,
    o: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let window = file.kv_usize(arch, Kv::SlidingWindow)?;
    let sliding = crate::model::arch::gemma3::gguf_pattern(file, arch, layers, 2)?;
    o.insert(
        "sliding_window".into(),
        if window > 0 {
            Value::from(window)
        } else {
            Value::Null
        },
    );
    let types: Vec<&str> = sliding
        .iter()
        .map(|&s| {
            if s {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    o.insert("layer_types".into(), types.into());
    let mut rope = match o.remove("rope_scaling") {
        Some(Value::Null) | None => serde_json::json!({"rope_type": "default"}),
        Some(v) => v,
    };
    rope["rope_theta"] = o.remove("rope_theta").unwrap_or(Value::Null);
    o.insert("rope_parameters".into(), rope);
    o.insert("swiglu_alpha".into(), 1.702.into());
    o.insert("swiglu_limit".into(), 7.0.into());
    Ok(())
}

/// Phi-3's own keys and tensors into the config being built: partial rotary, window,
/// LongRoPE's factor tensors and attention factor.
fn phi3_from_gguf(
    file: &GgufFile,
    arch: &str,
    head_dim: usize,
    partial: f64,
    o: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    o.insert("partial_rotary_factor".into(), partial.into());
    let window = file
        .kv_opt_usize(arch, Kv::SlidingWindow)?
        .filter(|&w| w > 0);
    o.insert(
        "sliding_window".into(),
        window.map(Value::from).unwrap_or(Value::Null),
    );
    if file.tensors.contains_key("rope_factors_long.weight") {
        let half = (head_dim as f64 * partial) as usize / 2;
        let read = |name: &str| -> Result<Vec<f32>> {
            Ok(file
                .qtensor(name, &[half])?
                .dequantize(&Device::Cpu)?
                .to_vec1::<f32>()?)
        };
        let original = file.kv_usize(arch, Kv::RopeScalingOrigCtxLen)?;
        let mut rope = serde_json::json!({
            "type": "longrope",
            "short_factor": read("rope_factors_short.weight")?,
            "long_factor": read("rope_factors_long.weight")?,
            "original_max_position_embeddings": original,
        });
        if let Some(a) = file.kv_opt_f64(arch, Kv::RopeScalingAttnFactor)? {
            rope["attention_factor"] = a.into();
        }
        o.insert("rope_scaling".into(), rope);
        o.insert("original_max_position_embeddings".into(), original.into());
    }
    Ok(())
}

/// llama.cpp's names for the Llama architectures' canonical tensors.
pub const GGUF_NAMES: GgufNames = GgufNames {
    fixed: &[
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("rope_freqs.weight", "rope_freqs.weight"),
    ],
    layers: "model.layers.",
    modules: &[
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        // Phi-3's fused projections.
        ("self_attn.qkv_proj", "attn_qkv"),
        ("mlp.gate_up_proj", "ffn_up"),
    ],
};

/// llama.cpp's llama3 rope factors (its converter's `generate_extra_tensors`).
pub fn llama3_rope_factors(head_dim: usize, theta: f64, s: RopeScaling) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = s
    else {
        return None;
    };
    let old = original_max_position_embeddings as f64;
    let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
    Some(
        (0..head_dim / 2)
            .map(|i| {
                // torch: 1.0 / base ** (arange(0, dim, 2, float32) / dim), in float32.
                let freq = 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
                let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
                let f = if wavelen < high_wl {
                    1.0
                } else if wavelen > low_wl {
                    factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f32
            })
            .collect(),
    )
}

impl ArchConfig for Config {
    fn model_type(&self) -> &'static str {
        self.member.model_type()
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn context_length(&self) -> usize {
        self.max_position_embeddings
    }
    fn n_layer(&self) -> usize {
        self.num_hidden_layers
    }
    fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    fn n_head(&self) -> usize {
        self.num_attention_heads
    }
    fn n_kv_head(&self) -> usize {
        self.num_key_value_heads
    }
    fn head_dim(&self) -> usize {
        self.head_dim
    }
    fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }
    fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }
    fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }
    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        expected_tensors(self)
    }
    fn is_embedding(&self, name: &str) -> bool {
        matches!(name, "model.embed_tokens.weight" | "lm_head.weight")
    }
    /// The rotary `inv_freq` and `original_inv_freq`, one per rotated pair (head_dim / 2,
    /// less under Phi-3's partial rotation) f32 each, whatever the model's dtype
    /// (transformers 5.25's get_memory_footprint on the families' fixtures).
    fn transformers_buffer_bytes(&self, _rest: candle_core::DType) -> (u64, Option<u64>) {
        ((2 * (self.rotary_dim() / 2) * 4) as u64, None)
    }
    fn to_json(&self) -> Value {
        Config::to_json(self)
    }
    fn config_json_cannot_state(&self) -> Option<String> {
        if self.member == Member::GptOss {
            return Some("transformers keeps gpt-oss's experts stacked (mlp.experts.gate_up_proj, gate and up interleaved), a layout quantbench's safetensors export does not write; export it with --format gguf instead".to_string());
        }
        self.rope_freq_factors.as_ref().map(|_| {
            "its rotary frequencies are scaled by factors (rope_freqs.weight), which a transformers config.json cannot state; export it with --format gguf instead".to_string()
        })
    }
    fn load(
        &self,
        src: &dyn TensorSource,
        q: Quantization,
        device: &Device,
    ) -> Result<(Box<dyn CausalLm>, Vec<String>)> {
        let (m, notes) = Llama::load(self, src, q, device)?;
        Ok((Box::new(m), notes))
    }
    /// transformers' one layout; older checkpoints also store the rotary table
    /// (`rotary_emb.inv_freq`), which is recomputed and left out.
    fn canonical_keys(&self, keys: &[String]) -> Vec<(String, String)> {
        keys.iter()
            .filter(|k| !k.ends_with(".rotary_emb.inv_freq"))
            .map(|k| (k.clone(), k.clone()))
            .collect()
    }
    fn embedding_name(&self) -> &'static str {
        "model.embed_tokens.weight"
    }
    /// transformers' init: norms 1, biases 0, every matrix N(0, 0.02).
    fn init(&self, name: &str) -> Init {
        if name.ends_with(".bias") {
            Init::Const(0.0)
        } else if name.ends_with("norm.weight") {
            Init::Const(1.0)
        } else {
            Init::Normal(0.02)
        }
    }
    fn gguf_architecture(&self) -> &'static str {
        match self.member {
            Member::Llama | Member::Mistral | Member::Mixtral => "llama",
            Member::Qwen2 => "qwen2",
            Member::Qwen3 => "qwen3",
            Member::Qwen3Moe => "qwen3moe",
            Member::Olmoe => "olmoe",
            Member::Phi3 => "phi3",
            Member::GptOss => "gpt-oss",
        }
    }
    fn gguf_name(&self, canonical: &str) -> Option<String> {
        if let Some((name, _, _)) = self.gguf_slice(canonical) {
            return Some(name);
        }
        let rest = canonical.strip_prefix("model.layers.");
        if let (Member::GptOss, Some(rest)) = (self.member, rest) {
            // gpt-oss's own: sinks, and the norm before the experts as post_attention_norm.
            let (layer, rest) = rest.split_once('.')?;
            match rest {
                "self_attn.sinks" => return Some(format!("blk.{layer}.attn_sinks.weight")),
                "post_attention_layernorm.weight" => {
                    return Some(format!("blk.{layer}.post_attention_norm.weight"))
                }
                _ => {}
            }
        }
        GGUF_NAMES.name(canonical).or_else(|| {
            // The router (and its bias), under the member's own name.
            let (layer, rest) = rest?.split_once('.')?;
            let kind = rest
                .strip_prefix(self.expert_names().router)?
                .strip_prefix('.')?;
            matches!(kind, "weight" | "bias").then(|| format!("blk.{layer}.ffn_gate_inp.{kind}"))
        })
    }
    /// An expert's matrix is one slice of llama.cpp's stacked tensor of the layer's
    /// experts (`blk.N.ffn_gate_exps.weight`, `[experts, out, in]`).
    fn gguf_slice(&self, canonical: &str) -> Option<(String, usize, usize)> {
        let m = self.moe.as_ref()?;
        let rest = canonical.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let (e, j, kind) = self.expert_names().parse(rest)?;
        let stacked = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"][j];
        Some((format!("blk.{layer}.{stacked}.{kind}"), e, m.num_experts))
    }
    fn layer_windows(&self) -> Vec<Option<usize>> {
        (0..self.num_hidden_layers)
            .map(|i| self.layer_attention(i).sliding_window)
            .collect()
    }
    /// Phi-3's fused projections: q, k, v rows of qkv_proj; gate, up rows of gate_up_proj.
    fn load_splits(&self, canonical: &str) -> Option<Vec<usize>> {
        if self.member != Member::Phi3 {
            return None;
        }
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        if canonical.ends_with("self_attn.qkv_proj.weight") {
            Some(vec![q, kv, kv])
        } else if canonical.ends_with("mlp.gate_up_proj.weight") {
            Some(vec![self.intermediate_size; 2])
        } else {
            None
        }
    }
    /// gpt-oss's experts as transformers stores them: per layer `gate_up_proj`
    /// `[experts, hidden, 2·width]` (gate and up interleaved along the last dimension)
    /// with `gate_up_proj_bias` `[experts, 2·width]`, and `down_proj` `[experts, width,
    /// hidden]` with `down_proj_bias`; each expert's projections are cut out of them.
    fn stored_slices(&self, keys: &[String]) -> Vec<(String, StoredSlice)> {
        let Some(m) = self.moe.as_ref().filter(|_| self.member == Member::GptOss) else {
            return Vec::new();
        };
        let names = self.expert_names();
        let mut v = Vec::new();
        for i in 0..self.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.mlp.experts.{n}");
            let stacked = [
                (0, "gate_up_proj", 0, 2, true),
                (1, "gate_up_proj", 1, 2, true),
                (2, "down_proj", 0, 1, true),
            ];
            for (j, key, offset, stride, transpose) in stacked {
                for (kind, key, transpose) in [
                    ("weight", p(key), transpose),
                    ("bias", p(&format!("{key}_bias")), false),
                ] {
                    if !keys.contains(&key) {
                        continue;
                    }
                    for e in 0..m.num_experts {
                        let canonical = format!(
                            "model.layers.{i}.{}",
                            if kind == "weight" {
                                names.expert(e, j)
                            } else {
                                names.expert_bias(e, j)
                            }
                        );
                        v.push((
                            canonical,
                            StoredSlice {
                                key: key.clone(),
                                index: e,
                                count: m.num_experts,
                                offset,
                                stride,
                                transpose,
                            },
                        ));
                    }
                }
            }
        }
        v
    }
    fn never_quantized(&self, canonical: &str) -> bool {
        canonical.ends_with(&format!("{}.weight", self.expert_names().router)) && self.moe.is_some()
    }
    /// llama.cpp's `llama` architecture stores q and k with their rows permuted for its
    /// interleaved rotation; Qwen's files keep transformers' order.
    fn gguf_permutation(&self, gguf_name: &str) -> Option<RopePermutation> {
        if self.gguf_architecture() != "llama" {
            return None;
        }
        if gguf_name.contains(".attn_q.") {
            Some(RopePermutation {
                heads: self.num_attention_heads,
            })
        } else if gguf_name.contains(".attn_k.") {
            Some(RopePermutation {
                heads: self.num_key_value_heads,
            })
        } else {
            None
        }
    }
    fn gguf_metadata(&self) -> Vec<(String, Meta)> {
        let arch = self.gguf_architecture();
        let k = |kv: Kv| kv.key(arch);
        let u = |n: usize| Meta::U32(n as u32);
        let mut m = vec![
            (k(Kv::ContextLength), u(self.max_position_embeddings)),
            (k(Kv::EmbeddingLength), u(self.hidden_size)),
            (k(Kv::FeedForwardLength), u(self.intermediate_size)),
            (k(Kv::BlockCount), u(self.num_hidden_layers)),
            (k(Kv::HeadCount), u(self.num_attention_heads)),
            (k(Kv::HeadCountKv), u(self.num_key_value_heads)),
            (
                k(Kv::LayerNormRmsEpsilon),
                Meta::F32(self.rms_norm_eps as f32),
            ),
            (k(Kv::RopeFreqBase), Meta::F32(self.rope_theta as f32)),
            (k(Kv::RopeDimensionCount), u(self.rotary_dim())),
            (k(Kv::KeyLength), u(self.head_dim)),
            (k(Kv::ValueLength), u(self.head_dim)),
            (k(Kv::VocabSize), u(self.vocab_size)),
        ];
        if self.member == Member::Phi3 {
            // llama.cpp reads 0 as no window.
            m.push((k(Kv::SlidingWindow), u(self.sliding_window.unwrap_or(0))));
            if let RopeScaling::LongRope {
                original_max_position_embeddings,
                attention_factor,
            } = self.rope_scaling
            {
                m.push((
                    k(Kv::RopeScalingOrigCtxLen),
                    u(original_max_position_embeddings),
                ));
                m.push((
                    k(Kv::RopeScalingAttnFactor),
                    Meta::F32(attention_factor as f32),
                ));
            }
        }
        if self.member == Member::GptOss {
            m.push((k(Kv::SlidingWindow), u(self.sliding_window.unwrap_or(0))));
            let default: Vec<bool> = (0..self.num_hidden_layers).map(|i| i % 2 == 0).collect();
            let sliding: Vec<bool> = (0..self.num_hidden_layers)
                .map(|i| self.layer_sliding.as_ref().is_none_or(|v| v[i]))
                .collect();
            if sliding != default {
                // The writer has no bool array: the period, when one states the layers.
                if let Some(p) = (1..=self.num_hidden_layers).find(|&p| {
                    crate::model::arch::gemma3::pattern_layers(self.num_hidden_layers, p) == sliding
                }) {
                    m.push((k(Kv::SlidingWindowPattern), u(p)));
                }
            }
        }
        if let RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            ..
        } = self.rope_scaling
        {
            m.push((k(Kv::RopeScalingType), Meta::Str("yarn".into())));
            m.push((k(Kv::RopeScalingFactor), Meta::F32(factor as f32)));
            m.push((
                k(Kv::RopeScalingOrigCtxLen),
                u(original_max_position_embeddings),
            ));
            m.push((k(Kv::RopeScalingYarnBetaFast), Meta::F32(beta_fast as f32)));
            m.push((k(Kv::RopeScalingYarnBetaSlow), Meta::F32(beta_slow as f32)));
        }
        if let Some(moe) = &self.moe {
            m.push((k(Kv::ExpertCount), u(moe.num_experts)));
            m.push((k(Kv::ExpertUsedCount), u(moe.top_k)));
            if matches!(self.member, Member::Qwen3Moe | Member::GptOss) {
                m.push((k(Kv::ExpertFeedForwardLength), u(moe.intermediate_size)));
            }
        }
        if let RopeScaling::Linear { factor } = self.rope_scaling {
            m.push((k(Kv::RopeScalingType), Meta::Str("linear".into())));
            m.push((k(Kv::RopeScalingFactor), Meta::F32(factor as f32)));
        }
        m
    }
    fn gguf_extra_tensors(&self) -> Vec<(String, Vec<f32>)> {
        if let Some((short, long)) = &self.long_rope_factors {
            return vec![
                ("rope_factors_long.weight".to_string(), long.clone()),
                ("rope_factors_short.weight".to_string(), short.clone()),
            ];
        }
        self.rope_freq_factors
            .clone()
            .or_else(|| llama3_rope_factors(self.head_dim, self.rope_theta, self.rope_scaling))
            .map(|f| ("rope_freqs.weight".to_string(), f))
            .into_iter()
            .collect()
    }
    fn gguf_notes(&self) -> Vec<String> {
        let mut notes = match (self.member, self.sliding_window) {
            (Member::Mistral | Member::Mixtral, Some(w)) => vec![format!(
                "the sliding window ({w} positions) is not written: GGUF's llama architecture has no key for it (llama.cpp's converter drops it too), so llama.cpp attends over the whole context"
            )],
            _ => Vec::new(),
        };
        if let RopeScaling::Yarn {
            truncate,
            beta_fast,
            beta_slow,
            attention_factor,
            factor,
            ..
        } = self.rope_scaling
        {
            let default_factor = if factor <= 1.0 {
                1.0
            } else {
                0.1 * factor.ln() + 1.0
            };
            if !truncate
                || (beta_fast, beta_slow) != (32.0, 1.0)
                || attention_factor != default_factor
            {
                notes.push(format!(
                    "YaRN is written as its type, factor and original context (and betas {beta_fast} and {beta_slow}); llama.cpp floors and ceils the ramp's ends whatever `truncate` says ({truncate} here), {} and scales cos and sin by 0.1 ln(factor) + 1 ({default_factor:.6}; this model: {attention_factor:.6}), so it rotates a little otherwise than transformers",
                    if self.member == Member::GptOss { "takes betas 32 and 1 for gpt-oss" } else { "reads the betas for some architectures only" }
                ));
            }
        }
        if let Some(crate::model::moe::Activation::ClampedSwiglu { alpha, limit }) =
            self.moe.as_ref().map(|m| m.activation)
        {
            if (alpha, limit) != (1.702, 7.0) {
                notes.push(format!(
                    "swiglu_alpha {alpha} and swiglu_limit {limit} are not written: GGUF has no key for them, and llama.cpp's gpt-oss graph hard-codes 1.702 and 7"
                ));
            }
        }
        if let Some(m) = &self.moe {
            // llama.cpp's graphs hard-code the renormalisation per architecture.
            let llama_cpp_norms = self.member != Member::Olmoe;
            if self.member != Member::GptOss && m.norm_topk_prob() != llama_cpp_norms {
                notes.push(format!(
                    "norm_topk_prob = {} is not written: GGUF has no key for it, and llama.cpp's {} graph {} the top-k weights",
                    m.norm_topk_prob(),
                    self.gguf_architecture(),
                    if llama_cpp_norms { "always renormalises" } else { "never renormalises" }
                ));
            }
            if m.sparse.iter().any(|&s| !s) {
                notes.push("dense layers among the sparse ones (mlp_only_layers, decoder_sparse_step) are written as they are; llama.cpp's qwen3moe graph expects experts in every layer".to_string());
            }
        }
        notes
    }
    crate::arch_config_plumbing!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(json).unwrap();
        let mt = v["model_type"].as_str().unwrap_or("llama").to_string();
        Config::from_value(v, Member::parse(&mt).unwrap(), "config.json")
    }

    const BASE: &str = r#""vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4"#;

    #[test]
    fn defaults_follow_transformers() {
        let c = parse(&format!(r#"{{"model_type": "llama", {BASE}}}"#)).unwrap();
        assert_eq!(c.num_key_value_heads, 4);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rope_scaling, RopeScaling::Default);
        assert!(!c.qkv_bias && !c.tie_word_embeddings && c.sliding_window.is_none());
        let q2 = parse(&format!(r#"{{"model_type": "qwen2", {BASE}}}"#)).unwrap();
        assert!(q2.qkv_bias && !q2.o_bias && !q2.qk_norm);
        let q3 = parse(&format!(
            r#"{{"model_type": "qwen3", {BASE}, "head_dim": 32}}"#
        ))
        .unwrap();
        assert!(q3.qk_norm && !q3.qkv_bias && q3.head_dim == 32);
        let m = parse(&format!(r#"{{"model_type": "mistral", {BASE}}}"#)).unwrap();
        assert_eq!(m.sliding_window, Some(4096));
        let m = parse(&format!(
            r#"{{"model_type": "mistral", {BASE}, "sliding_window": null}}"#
        ))
        .unwrap();
        assert_eq!(m.sliding_window, None);
    }

    #[test]
    fn both_rope_forms_give_the_same_settings() {
        let old = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": 500000.0,
            "rope_scaling": {{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        let new = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_parameters": {{"rope_type": "llama3",
            "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(old, new);
        assert_eq!(old.rope_theta, 500000.0);
        assert!(matches!(old.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        let lin = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"type": "linear", "factor": 2.0}}}}"#
        ))
        .unwrap();
        assert_eq!(lin.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        // What to_json writes reads back the same.
        let back = parse(&old.to_json().to_string()).unwrap();
        assert_eq!(back, old);
    }

    #[test]
    fn bad_configs_name_the_field_and_what_is_valid() {
        let err = |json: String| parse(&json).unwrap_err().to_string();
        let e = err(r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 64}"#.into());
        assert!(
            e.contains("intermediate_size") && e.contains("missing"),
            "{e}"
        );
        let e = err(format!(
            r#"{{"model_type": "llama", {BASE}, "num_key_value_heads": 3}}"#
        ));
        assert!(
            e.contains("num_key_value_heads (3)") && e.contains("multiple"),
            "{e}"
        );
        let e = err(format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
        ));
        assert!(
            e.contains("original_max_position_embeddings") && e.contains("yarn"),
            "{e}"
        );
        let e = err(format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"rope_type": "llama3", "factor": 8.0}}}}"#
        ));
        assert!(e.contains("low_freq_factor"), "{e}");
        let e = err(format!(
            r#"{{"model_type": "llama", {BASE}, "hidden_act": "gelu"}}"#
        ));
        assert!(e.contains("gelu") && e.contains("silu"), "{e}");
        let e = err(format!(
            r#"{{"model_type": "qwen2", {BASE}, "use_sliding_window": true}}"#
        ));
        assert!(e.contains("use_sliding_window"), "{e}");
        let e = err(format!(
            r#"{{"model_type": "llama", {BASE}, "hidden_size": "wide"}}"#
        ));
        assert!(e.contains("hidden_size"), "{e}");
    }

    /// The shape of `_compute_llama3_parameters` on Llama 3.2 1B's settings (head_dim 64,
    /// theta 500000, factor 32, low 1, high 4, original 8192): the high frequencies are
    /// kept, the low ones divided by 32, those between blended. The exact values are
    /// proven end to end by tests/reference_llama.rs (a model with llama3 scaling against
    /// transformers' logits).
    /// gpt-oss-20b's YaRN (head_dim 64, theta 150000, factor 32, original 4096, betas
    /// 32 and 1), every 4th frequency and the attention factor as transformers 5.25's
    /// `_compute_yarn_parameters` gives them (`ROPE_INIT_FUNCTIONS["yarn"](GptOssConfig(
    /// rope_parameters=...))`), untruncated (gpt-oss's config) and truncated (llama.cpp's
    /// always): the two differ where the ramp's ends are rounded.
    #[test]
    fn yarn_frequencies_match_transformers_truncated_or_not() {
        let untruncated = [
            1.0,
            0.225_418,
            0.050_813_27,
            0.006_794_959,
            4.564_839e-4,
            1.818_834e-5,
            4.099_978e-6,
            9.242_09e-7,
        ];
        let truncated = [
            1.0,
            0.225_418,
            0.050_813_27,
            0.007_015_714,
            5.809_475e-4,
            1.818_834e-5,
            4.099_978e-6,
            9.242_09e-7,
        ];
        for (truncate, want) in [(false, untruncated), (true, truncated)] {
            let s = RopeScaling::Yarn {
                factor: 32.0,
                original_max_position_embeddings: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: 0.1 * 32f64.ln() + 1.0,
                truncate,
            };
            let rope = Rope::new(64, 150000.0, s);
            let got: Vec<f32> = rope.inv_freq().iter().step_by(4).copied().collect();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 2e-6 * w, "truncate {truncate}: {got:?}");
            }
            let (cos, _) = rope.cos_sin(0, 1, &Device::Cpu).unwrap();
            let c0 = cos.to_vec2::<f32>().unwrap()[0][0];
            assert!((c0 - 1.346_573_6).abs() < 1e-6, "{c0}");
        }
    }

    #[test]
    fn llama3_frequencies_match_transformers() {
        let r = Rope::new(
            64,
            500000.0,
            RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
        );
        let plain = Rope::new(64, 500000.0, RopeScaling::Default);
        let f = r.inv_freq();
        assert_eq!(f[0], 1.0);
        assert_eq!(f[..10], plain.inv_freq()[..10]);
        assert!((f[31] - plain.inv_freq()[31] / 32.0).abs() < 1e-12);
        // The medium band is a blend strictly between the two.
        let mid: Vec<usize> = (0..32)
            .filter(|&i| f[i] != plain.inv_freq()[i] && f[i] != plain.inv_freq()[i] / 32.0)
            .collect();
        assert!(!mid.is_empty());
        for i in mid {
            assert!(f[i] < plain.inv_freq()[i] && f[i] > plain.inv_freq()[i] / 32.0);
        }
    }
}

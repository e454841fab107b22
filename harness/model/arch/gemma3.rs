//! Gemma 3's text model (config.json `model_type` gemma3_text; GGUF `gemma3`), as
//! transformers' `Gemma3ForCausalLM` (modeling_gemma3.py) and llama.cpp's gemma3 graph
//! (src/models/gemma3.cpp) compute it:
//!
//! - token embeddings multiplied by `sqrt(hidden_size)` (the factor in the weights'
//!   dtype, as transformers' `Gemma3TextScaledWordEmbedding`);
//! - RMSNorm as `x / rms(x) · (1 + w)` (`Gemma3RMSNorm`; GGUF files store `1 + w`, which
//!   the reader and writer undo and redo through [`ArchConfig::gguf_shift`]), four norms
//!   a layer: input, post-attention, pre- and post-feed-forward, the post-norms applied
//!   to the branch before each residual add;
//! - per-head q/k RMSNorm before the rotation, grouped-query attention scaled by
//!   `query_pre_attn_scalar^-1/2` (not `head_dim^-1/2`);
//! - sliding-window and global layers from `layer_types` (or `sliding_window_pattern`,
//!   every 6th layer global by default), each kind with its own rotation: global layers
//!   at `rope_theta` with the config's scaling, sliding ones at `rope_local_base_freq`
//!   (10,000) unscaled; a sliding layer's query sees the last `sliding_window` positions,
//!   itself included (transformers' `kv_idx > q_idx - sliding_window`, llama.cpp's
//!   `p1 - p0 < n_swa`);
//! - a GeGLU MLP with GELU's tanh approximation (`gelu_pytorch_tanh`);
//! - an optional final logit soft-cap (`cap · tanh(logits / cap)`), a tied or untied head.
//!
//! candle-transformers' quantized_gemma3.rs is not a reference: it uses SiLU,
//! `1/sqrt(head_dim)` and a window one position wider.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::InputError;
use crate::model::arch::llama::{first_id, rope_scaling_from, Rope, RopeScaling};
use crate::model::arch::{ArchConfig, Architecture, CausalLm, GgufNames, ModelConfig};
use crate::model::nn::{
    causal_mask, linear_parts, Cache, Group, KvCache, Linear, MaskKey, Matrix, Part, RmsNorm,
    Vector,
};
use crate::model::source::gguf::{GgufFile, Kv};
use crate::model::source::synthetic::{Init, Preset};
use crate::model::source::weights::{Builder, TensorSource};
use crate::model::write::gguf::Meta;
use crate::precision::Quantization;

/// The layers' pattern when a config states neither `layer_types` nor a pattern
/// (transformers' `sliding_window_pattern` default, llama.cpp's `load_swa_pattern(ml, 6)`):
/// five sliding layers, then a global one.
pub const DEFAULT_PATTERN: usize = 6;

/// The fields of a Gemma 3 text config.json the model uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// The global layers' rotation.
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// The sliding layers' rotation base (`rope_local_base_freq`; never scaled).
    pub rope_local_base_freq: f64,
    /// How many positions a sliding layer's query sees, itself included.
    pub sliding_window: usize,
    /// Per layer: whether it is a sliding-window layer.
    pub sliding: Vec<bool>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2`.
    pub query_pre_attn_scalar: f64,
    pub final_logit_softcapping: Option<f64>,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

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
    rope_local_base_freq: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    sliding_window: Option<Value>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    sliding_window_pattern_private: Option<usize>,
    layer_types: Option<Vec<String>>,
    query_pre_attn_scalar: Option<f64>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    attention_bias: Option<bool>,
    use_bidirectional_attention: Option<bool>,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

/// The sliding layers of a model of `layers` layers whose every `pattern`-th layer is
/// global (transformers' `bool((i + 1) % pattern)`; a pattern of 1 or 0: all global).
pub fn pattern_layers(layers: usize, pattern: usize) -> Vec<bool> {
    (0..layers)
        .map(|i| pattern > 1 && !(i + 1).is_multiple_of(pattern))
        .collect()
}

impl Config {
    /// Parse a config.json already read as a JSON value; `origin` names the file.
    pub fn from_value(value: Value, origin: &str) -> Result<Self> {
        if !value.is_object() {
            crate::bad_input!("{origin}: a config.json is a JSON object");
        }
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            InputError::new(format!("{origin}: field `{path}`: {}", e.into_inner()))
        })?;
        let required = |name: &str, v: Option<usize>| -> Result<usize> {
            v.ok_or_else(|| {
                InputError::new(format!(
                    "{origin}: field `{name}` is missing; a gemma3_text config.json must give vocab_size, hidden_size, intermediate_size, num_hidden_layers and num_attention_heads"
                ))
                .into()
            })
        };
        let vocab_size = required("vocab_size", raw.vocab_size)?;
        let hidden_size = required("hidden_size", raw.hidden_size)?;
        let intermediate_size = required("intermediate_size", raw.intermediate_size)?;
        let num_hidden_layers = required("num_hidden_layers", raw.num_hidden_layers)?;
        let num_attention_heads = required("num_attention_heads", raw.num_attention_heads)?;
        for (field, act) in [
            ("hidden_activation", &raw.hidden_activation),
            ("hidden_act", &raw.hidden_act),
        ] {
            if let Some(a) = act.as_deref() {
                if a != "gelu_pytorch_tanh" {
                    crate::bad_input!(
                        "{origin}: {field} '{a}' is not supported for gemma3_text; valid: gelu_pytorch_tanh"
                    );
                }
            }
        }
        if let Some(c) = raw.attn_logit_softcapping {
            crate::bad_input!(
                "{origin}: attn_logit_softcapping {c} is not supported (Gemma 3 has none; llama.cpp's converter refuses it too); valid: null"
            );
        }
        if raw.use_bidirectional_attention == Some(true) {
            crate::bad_input!(
                "{origin}: use_bidirectional_attention = true makes an embedding model, not a causal one; valid: false"
            );
        }
        let sliding_window = match &raw.sliding_window {
            None => 4096,
            Some(v) => match v.as_u64() {
                Some(w) if w >= 1 => w as usize,
                _ => crate::bad_input!(
                    "{origin}: sliding_window {v} is not valid; valid: a whole number of positions >= 1"
                ),
            },
        };
        let sliding = match &raw.layer_types {
            Some(types) => crate::model::arch::sliding_layers(types, num_hidden_layers, origin)?,
            None => pattern_layers(
                num_hidden_layers,
                raw.sliding_window_pattern
                    .or(raw.sliding_window_pattern_private)
                    .unwrap_or(DEFAULT_PATTERN),
            ),
        };
        let (rope_theta, rope_scaling, rope_local_base_freq) = parse_rope(&raw, origin)?;
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        let cfg = Config {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: raw.head_dim.unwrap_or(256),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(131_072),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rope_local_base_freq,
            sliding_window,
            sliding,
            query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
            final_logit_softcapping: raw.final_logit_softcapping,
            attention_bias: raw.attention_bias.unwrap_or(false),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
            bos_token_id: first_id(&raw.bos_token_id),
            eos_token_id: first_id(&raw.eos_token_id),
        };
        cfg.validate()
            .map_err(|e| InputError::new(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
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
            ("sliding_window", self.sliding_window, 1 << 24),
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
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return Err(format!(
                "rms_norm_eps ({}) must be between 0 and 1",
                self.rms_norm_eps
            ));
        }
        for (name, theta) in [
            ("rope_theta", self.rope_theta),
            ("rope_local_base_freq", self.rope_local_base_freq),
        ] {
            if !(theta.is_finite() && theta > 1.0) {
                return Err(format!("{name} ({theta}) must be a finite number above 1"));
            }
        }
        if !(self.query_pre_attn_scalar.is_finite() && self.query_pre_attn_scalar > 0.0) {
            return Err(format!(
                "query_pre_attn_scalar ({}) must be a finite number above 0",
                self.query_pre_attn_scalar
            ));
        }
        if let Some(c) = self.final_logit_softcapping {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!(
                    "final_logit_softcapping ({c}) must be a finite number above 0, or null"
                ));
            }
        }
        Ok(())
    }

    /// The two rotations: 0 for global layers, 1 for sliding ones.
    pub fn ropes(&self) -> Vec<Rope> {
        vec![
            Rope::new(self.head_dim, self.rope_theta, self.rope_scaling),
            Rope::new(
                self.head_dim,
                self.rope_local_base_freq,
                RopeScaling::Default,
            ),
        ]
    }

    /// Layer `i`'s window (`None` for a global layer) and rotation.
    pub fn layer_attention(&self, i: usize) -> (Option<usize>, usize) {
        if self.sliding[i] {
            (Some(self.sliding_window), 1)
        } else {
            (None, 0)
        }
    }

    /// The config.json transformers writes, in the form both transformers 4.5x and 5
    /// and llama.cpp's converter read (top-level rope_theta, rope_local_base_freq,
    /// rope_scaling; layer_types).
    pub fn to_json(&self) -> Value {
        let scaling = match self.rope_scaling {
            RopeScaling::Default => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 { .. }
            | RopeScaling::LongRope { .. }
            | RopeScaling::Yarn { .. } => Value::Null,
        };
        let types: Vec<&str> = self
            .sliding
            .iter()
            .map(|&s| {
                if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        let mut v = serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
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
            "rope_local_base_freq": self.rope_local_base_freq,
            "rope_scaling": scaling,
            "sliding_window": self.sliding_window,
            "layer_types": types,
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "final_logit_softcapping": self.final_logit_softcapping,
            "attn_logit_softcapping": null,
            "attention_bias": self.attention_bias,
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": 0.02,
            "attention_dropout": 0.0,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(id) = self.bos_token_id {
            o.insert("bos_token_id".into(), id.into());
        }
        if let Some(id) = self.eos_token_id {
            o.insert("eos_token_id".into(), id.into());
        }
        v
    }
}

/// (global theta, global scaling, local theta) from either config form: transformers
/// 5's `rope_parameters` keyed by layer type, or the older top-level `rope_theta`,
/// `rope_local_base_freq` and `rope_scaling` (the global layers' scaling).
fn parse_rope(raw: &RawConfig, origin: &str) -> Result<(f64, RopeScaling, f64)> {
    let mut global = (raw.rope_theta.unwrap_or(1_000_000.0), RopeScaling::Default);
    let mut local = raw.rope_local_base_freq.unwrap_or(10_000.0);
    if let Some(s) = raw.rope_scaling.as_ref().filter(|s| !s.is_null()) {
        let Some(obj) = s.as_object() else {
            crate::bad_input!(
                "{origin}: field `rope_scaling` must be an object such as {{\"rope_type\": \"linear\", \"factor\": 8.0}}, not {s}"
            );
        };
        global.1 = rope_scaling_from(obj, "rope_scaling", origin)?;
    }
    if let Some(p) = raw.rope_parameters.as_ref().filter(|p| !p.is_null()) {
        let Some(obj) = p.as_object() else {
            crate::bad_input!(
                "{origin}: field `rope_parameters` must be an object keyed by layer type (full_attention, sliding_attention), not {p}"
            );
        };
        for (kind, params) in obj {
            let field = format!("rope_parameters.{kind}");
            let Some(params) = params.as_object() else {
                crate::bad_input!("{origin}: field `{field}` must be an object, not {params}");
            };
            let theta = params.get("rope_theta").and_then(Value::as_f64);
            let scaling = rope_scaling_from(params, &field, origin)?;
            match kind.as_str() {
                "full_attention" => global = (theta.unwrap_or(global.0), scaling),
                "sliding_attention" => {
                    if scaling != RopeScaling::Default {
                        crate::bad_input!(
                            "{origin}: {field} scales the sliding layers' rotation ({}), which neither quantbench nor llama.cpp runs; valid: rope_type default",
                            scaling.name()
                        );
                    }
                    local = theta.unwrap_or(local);
                }
                other => crate::bad_input!(
                    "{origin}: rope_parameters has the key '{other}'; valid: full_attention, sliding_attention"
                ),
            }
        }
    }
    if matches!(
        global.1,
        RopeScaling::Llama3 { .. } | RopeScaling::LongRope { .. } | RopeScaling::Yarn { .. }
    ) {
        crate::bad_input!(
            "{origin}: rope type {} is not one Gemma 3 uses; valid: default, linear",
            global.1.name()
        );
    }
    Ok((global.0, global.1, local))
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct Layer {
    /// How far back the layer attends (`None`: the whole context).
    pub sliding_window: Option<usize>,
    /// Which of the model's rotations ([`Config::ropes`]).
    pub rope: usize,
    pub input_layernorm: RmsNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    pub pre_feedforward_layernorm: RmsNorm,
    pub post_feedforward_layernorm: RmsNorm,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Layer {
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    fn norms(&self) -> [&RmsNorm; 6] {
        [
            &self.input_layernorm,
            &self.q_norm,
            &self.k_norm,
            &self.post_attention_layernorm,
            &self.pre_feedforward_layernorm,
            &self.post_feedforward_layernorm,
        ]
    }
}

/// Gemma 3's text model with its LM head.
pub struct Gemma3 {
    config: Config,
    embed_tokens: Matrix,
    /// `sqrt(hidden_size)`, rounded to the weights' dtype.
    embed_scale: f32,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Option<Matrix>,
    ropes: Vec<Rope>,
    device: Device,
}

const NORMS: [&str; 4] = [
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
];

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
        for n in NORMS {
            v.push((p(&format!("{n}.weight")), vec![h]));
        }
        for (n, out, inp) in [
            ("self_attn.q_proj", q_out, h),
            ("self_attn.k_proj", kv_out, h),
            ("self_attn.v_proj", kv_out, h),
            ("self_attn.o_proj", h, q_out),
        ] {
            v.push((p(&format!("{n}.weight")), vec![out, inp]));
            if cfg.attention_bias {
                v.push((p(&format!("{n}.bias")), vec![out]));
            }
        }
        v.push((p("self_attn.q_norm.weight"), vec![cfg.head_dim]));
        v.push((p("self_attn.k_norm.weight"), vec![cfg.head_dim]));
        for (n, out, inp) in [
            ("mlp.gate_proj", inter, h),
            ("mlp.up_proj", inter, h),
            ("mlp.down_proj", h, inter),
        ] {
            v.push((p(&format!("{n}.weight")), vec![out, inp]));
        }
    }
    v.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    v
}

impl Gemma3 {
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
                Ok(RmsNorm::with_offset(w.vector(&p(n), len)?, eps, 1.0)?)
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
            let b = cfg.attention_bias;
            let (sliding_window, rope) = cfg.layer_attention(i);
            layers.push(Layer {
                sliding_window,
                rope,
                input_layernorm: norm(&mut w, "input_layernorm.weight", h)?,
                q_proj: lin(&mut w, "self_attn.q_proj", q_out, h, b)?,
                k_proj: lin(&mut w, "self_attn.k_proj", kv_out, h, b)?,
                v_proj: lin(&mut w, "self_attn.v_proj", kv_out, h, b)?,
                o_proj: lin(&mut w, "self_attn.o_proj", h, q_out, b)?,
                q_norm: norm(&mut w, "self_attn.q_norm.weight", cfg.head_dim)?,
                k_norm: norm(&mut w, "self_attn.k_norm.weight", cfg.head_dim)?,
                post_attention_layernorm: norm(&mut w, "post_attention_layernorm.weight", h)?,
                pre_feedforward_layernorm: norm(&mut w, "pre_feedforward_layernorm.weight", h)?,
                post_feedforward_layernorm: norm(&mut w, "post_feedforward_layernorm.weight", h)?,
                gate_proj: lin(&mut w, "mlp.gate_proj", inter, h, false)?,
                up_proj: lin(&mut w, "mlp.up_proj", inter, h, false)?,
                down_proj: lin(&mut w, "mlp.down_proj", h, inter, false)?,
            });
        }
        let norm = RmsNorm::with_offset(w.vector("model.norm.weight", h)?, eps, 1.0)?;
        let (embed_tokens, lm_head) = if cfg.tie_word_embeddings {
            (embed_tokens.for_products(), None)
        } else {
            let head = w.matrix("lm_head.weight", [cfg.vocab_size, h], false, embed_q)?;
            (embed_tokens, Some(head.for_products()))
        };
        // transformers: `embed_scale.to(self.weight.dtype)`; a quantized table is
        // dequantized to f32, where the factor stays f32.
        let scale = (cfg.hidden_size as f64).sqrt() as f32;
        let embed_scale = match &embed_tokens {
            Matrix::Dense(t) if t.dtype() != DType::F32 => Tensor::new(scale, &Device::Cpu)?
                .to_dtype(t.dtype())?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?,
            _ => scale,
        };
        let model = Gemma3 {
            config: cfg.clone(),
            embed_tokens,
            embed_scale,
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
        let heads = |t: Tensor, n: usize, norm: Option<&RmsNorm>| -> candle_core::Result<Tensor> {
            let t = t.reshape((b, len, n, hd))?;
            let t = match norm {
                Some(nm) => nm.forward(&t)?,
                None => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let q = heads(l.q_proj.forward(&h)?, nh, Some(&l.q_norm))?;
        let k = heads(l.k_proj.forward(&h)?, nkv, Some(&l.k_norm))?;
        let v = heads(l.v_proj.forward(&h)?, nkv, None)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = kv.append(&k, &v)?;
        let total = k.dim(2)?;
        let rep = nh / nkv;
        let q = q.reshape((b, nkv, rep * len, hd))?;
        let scale = 1.0 / c.query_pre_attn_scalar.sqrt();
        let causal = mask.map(|_| crate::kernel::attention::Causal {
            len,
            window: l.sliding_window,
        });
        let y = match crate::kernel::attention::step(&q, &k, &v, scale, causal)? {
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
                candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?
            }
        };
        let y = y
            .reshape((b, nh, len, hd))?
            .transpose(1, 2)?
            .reshape((b, len, nh * hd))?;
        let attn = l.post_attention_layernorm.forward(&l.o_proj.forward(&y)?)?;
        let xs = (xs + attn)?;
        let h = l.pre_feedforward_layernorm.forward(&xs)?;
        let gate = crate::kernel::gelu::GeluNew::forward(&l.gate_proj.forward(&h)?)?;
        let up = l.up_proj.forward(&h)?;
        let mlp = l.down_proj.forward(&(gate * up)?)?;
        xs + l.post_feedforward_layernorm.forward(&mlp)?
    }
}

/// Gemma 3's decode-step buffers for `b` sequences ([`crate::model::step`]).
struct StepBuffers {
    b: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    products: crate::kernel::Scratch,
}

impl Gemma3 {
    /// One new token per sequence through the CPU decode step; `None` where it does not
    /// apply (the candle path runs then).
    fn decode_step(&self, ids: &[u32], cache: &mut Cache) -> Result<Option<Tensor>> {
        use crate::kernel::attention::{attend_cached, Heads};
        use crate::model::kv::Rows;
        use crate::model::step;
        let c = &self.config;
        if !step::available(&self.device)
            || !self
                .layers
                .iter()
                .all(|l| l.linears().iter().all(|p| p.slice_product().is_some()))
        {
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
                cos: vec![0.0; hd / 2 * self.ropes.len()],
                sin: vec![0.0; hd / 2 * self.ropes.len()],
                products: Default::default(),
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
            ..
        } = &mut *s;
        for (row, &id) in x.chunks_exact_mut(hs).zip(ids) {
            self.embed_tokens.row_into(id as usize, row)?;
            row.iter_mut().for_each(|v| *v *= self.embed_scale);
        }
        let half = hd / 2;
        for (r, rope) in self.ropes.iter().enumerate() {
            rope.cos_sin_into(
                pos,
                &mut cos[r * half..(r + 1) * half],
                &mut sin[r * half..(r + 1) * half],
            );
        }
        let scale = (1.0 / c.query_pre_attn_scalar.sqrt()) as f32;
        for (l, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            l.input_layernorm.forward_rows(x, h);
            step::product(&l.q_proj)?.apply(h, b, q, products)?;
            step::product(&l.k_proj)?.apply(h, b, k, products)?;
            step::product(&l.v_proj)?.apply(h, b, v, products)?;
            l.q_norm.forward_rows_in_place(q);
            l.k_norm.forward_rows_in_place(k);
            let r = l.rope;
            let (cos, sin) = (
                &cos[r * half..(r + 1) * half],
                &sin[r * half..(r + 1) * half],
            );
            step::rope_in_place(q, hd, cos, sin);
            step::rope_in_place(k, hd, cos, sin);
            let rows = |data| Rows {
                data,
                offset: 0,
                seq_stride: nkv * hd,
            };
            kv.push_rows((b, nkv, hd), rows(k), rows(v))?;
            let total = kv.len();
            let first = match l.sliding_window {
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
            attend_cached(q, nh * hd, keys, values, heads, first..total, scale, att)?;
            step::product(&l.o_proj)?.apply(att, b, out, products)?;
            l.post_attention_layernorm.forward_rows_in_place(out);
            step::add_then(x, out, |x| l.pre_feedforward_layernorm.forward_rows(x, h));
            step::product(&l.gate_proj)?.apply(h, b, gate, products)?;
            step::product(&l.up_proj)?.apply(h, b, up, products)?;
            crate::kernel::gelu::apply(gate);
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g *= u;
            }
            step::product(&l.down_proj)?.apply(gate, b, out, products)?;
            l.post_feedforward_layernorm.forward_rows_in_place(out);
            for (a, o) in x.iter_mut().zip(out.iter()) {
                *a += o;
            }
        }
        self.norm.forward_rows(x, h);
        let hidden = Tensor::from_slice(&h[..], (b, 1, hs), &self.device)?;
        cache.position += 1;
        step::put_back(cache, s);
        step::count();
        Ok(Some(hidden))
    }
}

impl CausalLm for Gemma3 {
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
        let mut xs = (self.embed_tokens.rows(&ids_t)? * self.embed_scale as f64)?;
        let angles = self
            .ropes
            .iter()
            .map(|r| r.cos_sin(start, len, &self.device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // One mask per (window, positions held before this pass) the layers need, made
        // once and shared: a sliding layer that dropped old positions first (evict_for)
        // sees its held positions only, so its mask starts where they do.
        let mut masks: Vec<(MaskKey, Option<Tensor>)> = Vec::new();
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let window = layer.sliding_window;
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
            let (cos, sin) = &angles[layer.rope];
            xs = self
                .layer_forward(layer, &xs, kv, cos, sin, mask)
                .with_context(|| format!("forward pass of layer {i}"))?;
        }
        cache.position += len;
        Ok(self.norm.forward(&xs)?)
    }

    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let logits = self
            .lm_head
            .as_ref()
            .unwrap_or(&self.embed_tokens)
            .forward(h)?;
        Ok(match self.config.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    fn streamed_bytes_per_step(&self) -> usize {
        let looked_up = self
            .lm_head
            .as_ref()
            .map_or(0, |_| self.embed_tokens.bytes());
        self.parts().iter().map(|(_, p)| p.bytes()).sum::<usize>() - looked_up
    }

    fn parts(&self) -> Vec<(Group, Part<'_>)> {
        let mut parts: Vec<(Group, Part<'_>)> = std::iter::once(&self.embed_tokens)
            .chain(self.lm_head.as_ref())
            .map(|m| (Group::Embeddings, Part::Matrix(m)))
            .collect();
        parts.push((Group::NormsBiases, Part::Vector(&self.norm.weight)));
        for l in &self.layers {
            for n in l.norms() {
                parts.push((Group::NormsBiases, Part::Vector(&n.weight)));
            }
            for lin in l.linears() {
                parts.extend(linear_parts(lin));
            }
        }
        parts
    }

    fn token_embedding(&self) -> &Matrix {
        &self.embed_tokens
    }
}

/// Gemma 3 in the registry.
pub static ARCHITECTURE: Architecture = Architecture {
    title: "Gemma 3 (gemma3_text)",
    model_types: &["gemma3_text"],
    reads_untyped_config: false,
    gguf_architectures: &["gemma3"],
    from_config_json: |_, value, _, origin| {
        Ok(ModelConfig::new(Config::from_value(value, origin)?))
    },
    from_gguf,
    presets: &PRESETS,
};

/// A Gemma 3 shape with the settings every published text model shares.
#[allow(clippy::too_many_arguments)]
fn shape(
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    max_position_embeddings: usize,
    sliding_window: usize,
) -> Config {
    Config {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        max_position_embeddings,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::Default,
        rope_local_base_freq: 10_000.0,
        sliding_window,
        sliding: pattern_layers(num_hidden_layers, DEFAULT_PATTERN),
        query_pre_attn_scalar: head_dim as f64,
        final_logit_softcapping: None,
        attention_bias: false,
        tie_word_embeddings: true,
        bos_token_id: Some(2),
        eos_token_id: Some(1),
    }
}

/// Gemma 3's synthetic presets, shaped from google/gemma-3-270m's and
/// google/gemma-3-1b-pt's config.json.
#[rustfmt::skip]
pub const PRESETS: [Preset; 3] = [
    Preset {
        name: "tiny-gemma3",
        about: "a Gemma 3 of 6 layers (5 sliding, window 8, then 1 global), width 128, 2 heads of 64 over 1 kv head, GPT-2's vocabulary, for tests",
        build: || {
            let mut c = shape(50257, 128, 256, 6, 2, 1, 64, 256, 8);
            c.final_logit_softcapping = Some(30.0);
            c.bos_token_id = None;
            c.eos_token_id = None;
            ModelConfig::new(c)
        },
    },
    Preset {
        name: "gemma-3-270m",
        about: "Gemma 3 270M (18 layers, width 640, 4 heads of 256, 1 kv head, window 512 on 5 of 6 layers, tied head)",
        build: || ModelConfig::new(shape(262144, 640, 2048, 18, 4, 1, 256, 32768, 512)),
    },
    Preset {
        name: "gemma-3-1b",
        about: "Gemma 3 1B (26 layers, width 1152, 4 heads of 256, 1 kv head, window 512 on 5 of 6 layers, tied head)",
        build: || ModelConfig::new(shape(262144, 1152, 6912, 26, 4, 1, 256, 32768, 512)),
    },
];

/// The layer pattern a GGUF file states: `attention.sliding_window_pattern` as one bool
/// per layer (true: sliding) or as a period; llama.cpp's default period (6) when absent.
pub fn gguf_pattern(
    file: &GgufFile,
    arch: &str,
    layers: usize,
    default: usize,
) -> Result<Vec<bool>> {
    use candle_core::quantized::gguf_file::Value as V;
    let key = Kv::SlidingWindowPattern.key(arch);
    match file.metadata.get(&key) {
        None => Ok(pattern_layers(layers, default)),
        Some(V::Array(items)) => {
            let flags: Option<Vec<bool>> = items
                .iter()
                .map(|v| match v {
                    V::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect();
            match flags {
                Some(f) if f.len() == layers => Ok(f),
                _ => crate::bad_input!(
                    "{}: {key} must hold one bool per layer ({layers}); it holds {} values",
                    file.path.display(),
                    items.len()
                ),
            }
        }
        Some(_) => match file.opt_usize(&key)? {
            Some(p) => Ok(pattern_layers(layers, p)),
            None => unreachable!("the key is present"),
        },
    }
}

/// The configuration a `gemma3` GGUF file describes. The file has no
/// `query_pre_attn_scalar`: llama.cpp scales by `1/sqrt(key_length)`, except for the
/// 62-layer model (27B), where it takes `hidden / heads` (gemma3.cpp's
/// `f_attention_scale`); so does quantbench.
fn from_gguf(file: &GgufFile, arch: &str) -> Result<ModelConfig> {
    let path = file.path.display();
    let c = file.common(arch)?;
    let head_dim = file.kv_usize(arch, Kv::KeyLength)?;
    if let Some(v) = file.kv_opt_usize(arch, Kv::ValueLength)? {
        if v != head_dim {
            crate::bad_input!(
                "{path}: {} = {v} differs from the key length {head_dim}; quantbench runs models whose keys and values have one head size",
                Kv::ValueLength.key(arch)
            );
        }
    }
    let window = file.kv_opt_usize(arch, Kv::SlidingWindow)?;
    let sliding = match window {
        Some(w) if w > 0 => gguf_pattern(file, arch, c.layers, DEFAULT_PATTERN)?,
        _ => vec![false; c.layers],
    };
    let scaling = match file.kv_opt_str(arch, Kv::RopeScalingType)? {
        None | Some("none") => Value::Null,
        Some("linear") => serde_json::json!({
            "rope_type": "linear",
            "factor": file.kv_f64(arch, Kv::RopeScalingFactor)?,
        }),
        Some(other) => crate::bad_input!(
            "{path}: {} = '{other}' is not supported for gemma3; supported: none, linear",
            Kv::RopeScalingType.key(arch)
        ),
    };
    let scalar = if c.layers == 62 {
        (c.width / c.heads.max(1)) as f64
    } else {
        head_dim as f64
    };
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
    let bos = file.special_id_within("bos", c.bos, c.vocab)?;
    let eos = file.special_id_within("eos", c.eos, c.vocab)?;
    let v = serde_json::json!({
        "vocab_size": c.vocab,
        "hidden_size": c.width,
        "intermediate_size": file.kv_usize(arch, Kv::FeedForwardLength)?,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": file.kv_opt_usize(arch, Kv::HeadCountKv)?.unwrap_or(c.heads),
        "head_dim": head_dim,
        "max_position_embeddings": c.context,
        "rms_norm_eps": file.kv_f64(arch, Kv::LayerNormRmsEpsilon)?,
        "rope_theta": file.kv_opt_f64(arch, Kv::RopeFreqBase)?.unwrap_or(1_000_000.0),
        "rope_local_base_freq": file.kv_opt_f64(arch, Kv::RopeFreqBaseSwa)?.unwrap_or(10_000.0),
        "rope_scaling": scaling,
        "sliding_window": window.filter(|&w| w > 0).unwrap_or(c.context.max(1)),
        "layer_types": types,
        "query_pre_attn_scalar": scalar,
        "final_logit_softcapping": file.kv_opt_f64(arch, Kv::FinalLogitSoftcapping)?,
        "tie_word_embeddings": c.tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    let origin = format!("{path} (GGUF metadata)");
    Ok(ModelConfig::new(Config::from_value(v, &origin)?))
}

/// llama.cpp's names for Gemma 3's canonical tensors (llama-arch.cpp's LLM_ARCH_GEMMA3).
pub const GGUF_NAMES: GgufNames = GgufNames {
    fixed: &[
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.norm.weight", "output_norm.weight"),
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
        ("post_attention_layernorm", "post_attention_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"),
        ("post_feedforward_layernorm", "post_ffw_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ],
};

impl ArchConfig for Config {
    fn model_type(&self) -> &'static str {
        "gemma3_text"
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
    /// The rotary `inv_freq` and `original_inv_freq` of both layer kinds (head_dim / 2
    /// f32 each), and `embed_scale` (a 0-d tensor in the model's dtype).
    fn transformers_buffer_bytes(&self, rest: DType) -> (u64, Option<u64>) {
        let rope = (4 * (self.head_dim / 2) * 4) as u64;
        (rope + rest.size_in_bytes() as u64, None)
    }
    fn to_json(&self) -> Value {
        Config::to_json(self)
    }
    fn load(
        &self,
        src: &dyn TensorSource,
        q: Quantization,
        device: &Device,
    ) -> Result<(Box<dyn CausalLm>, Vec<String>)> {
        let (m, notes) = Gemma3::load(self, src, q, device)?;
        Ok((Box::new(m), notes))
    }
    fn canonical_keys(&self, keys: &[String]) -> Vec<(String, String)> {
        keys.iter().map(|k| (k.clone(), k.clone())).collect()
    }
    fn embedding_name(&self) -> &'static str {
        "model.embed_tokens.weight"
    }
    /// transformers' init: norms 0 (they scale by `1 + w`), biases 0, matrices N(0, 0.02).
    fn init(&self, name: &str) -> Init {
        if name.ends_with(".bias") || name.ends_with("norm.weight") {
            Init::Const(0.0)
        } else {
            Init::Normal(0.02)
        }
    }
    fn gguf_architecture(&self) -> &'static str {
        "gemma3"
    }
    fn gguf_name(&self, canonical: &str) -> Option<String> {
        GGUF_NAMES.name(canonical)
    }
    fn layer_windows(&self) -> Vec<Option<usize>> {
        (0..self.num_hidden_layers)
            .map(|i| self.layer_attention(i).0)
            .collect()
    }
    /// llama.cpp's converter stores every norm as `1 + w` (`norm_shift`).
    fn gguf_shift(&self, gguf_name: &str) -> f32 {
        if gguf_name.ends_with("norm.weight") {
            1.0
        } else {
            0.0
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
            (k(Kv::KeyLength), u(self.head_dim)),
            (k(Kv::ValueLength), u(self.head_dim)),
            (k(Kv::RopeFreqBase), Meta::F32(self.rope_theta as f32)),
            (
                k(Kv::RopeFreqBaseSwa),
                Meta::F32(self.rope_local_base_freq as f32),
            ),
        ];
        if self.sliding.iter().any(|&s| s) {
            m.push((k(Kv::SlidingWindow), u(self.sliding_window)));
            if self.sliding != pattern_layers(self.num_hidden_layers, DEFAULT_PATTERN) {
                // llama.cpp reads an array of per-layer flags; the writer has no bool
                // array, so the flags go as the period when one states them.
                if let Some(p) = (1..=self.num_hidden_layers)
                    .find(|&p| pattern_layers(self.num_hidden_layers, p) == self.sliding)
                {
                    m.push((k(Kv::SlidingWindowPattern), u(p)));
                }
            }
        }
        if let Some(cap) = self.final_logit_softcapping {
            m.push((k(Kv::FinalLogitSoftcapping), Meta::F32(cap as f32)));
        }
        if let RopeScaling::Linear { factor } = self.rope_scaling {
            m.push((k(Kv::RopeScalingType), Meta::Str("linear".into())));
            m.push((k(Kv::RopeScalingFactor), Meta::F32(factor as f32)));
        }
        m
    }
    fn gguf_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let llama_cpp_scalar = if self.num_hidden_layers == 62 {
            (self.hidden_size / self.num_attention_heads) as f64
        } else {
            self.head_dim as f64
        };
        if self.query_pre_attn_scalar != llama_cpp_scalar {
            notes.push(format!(
                "query_pre_attn_scalar {} is not written: GGUF has no key for it, and llama.cpp scales attention by 1/sqrt({llama_cpp_scalar}) for this shape",
                self.query_pre_attn_scalar
            ));
        }
        let has_sliding = self.sliding.iter().any(|&s| s);
        if has_sliding
            && self.sliding != pattern_layers(self.num_hidden_layers, DEFAULT_PATTERN)
            && !(1..=self.num_hidden_layers)
                .any(|p| pattern_layers(self.num_hidden_layers, p) == self.sliding)
        {
            notes.push(
                "the layers' sliding/global pattern is not periodic and is not written (GGUF's per-layer flags need a bool array): llama.cpp will take every 6th layer as global".to_string(),
            );
        }
        notes
    }
    fn config_json_cannot_state(&self) -> Option<String> {
        matches!(
            self.rope_scaling,
            RopeScaling::Llama3 { .. } | RopeScaling::LongRope { .. } | RopeScaling::Yarn { .. }
        )
        .then(|| "Gemma 3 has no llama3, longrope or yarn scaling".to_string())
    }
    crate::arch_config_plumbing!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        Config::from_value(serde_json::from_str(json).unwrap(), "config.json")
    }

    const BASE: &str = r#""model_type": "gemma3_text", "vocab_size": 1000, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 7, "num_attention_heads": 4"#;

    #[test]
    fn defaults_follow_transformers() {
        let c = parse(&format!("{{{BASE}}}")).unwrap();
        assert_eq!(c.head_dim, 256);
        assert_eq!(c.query_pre_attn_scalar, 256.0);
        assert_eq!(c.sliding_window, 4096);
        assert_eq!(
            c.sliding,
            vec![true, true, true, true, true, false, true],
            "every 6th layer global"
        );
        assert_eq!((c.rope_theta, c.rope_local_base_freq), (1e6, 1e4));
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn both_rope_forms_and_layer_types_read_the_same() {
        let old = parse(&format!(
            r#"{{{BASE}, "rope_theta": 50000.0, "rope_local_base_freq": 5000.0,
            "rope_scaling": {{"rope_type": "linear", "factor": 8.0}}, "sliding_window_pattern": 2}}"#
        ))
        .unwrap();
        let new = parse(&format!(
            r#"{{{BASE}, "rope_parameters": {{"full_attention": {{"rope_type": "linear", "factor": 8.0, "rope_theta": 50000.0}},
            "sliding_attention": {{"rope_type": "default", "rope_theta": 5000.0}}}},
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention",
                            "sliding_attention", "full_attention", "sliding_attention"]}}"#
        ))
        .unwrap();
        assert_eq!(old, new);
        assert_eq!(old.rope_scaling, RopeScaling::Linear { factor: 8.0 });
        let back = parse(&old.to_json().to_string()).unwrap();
        assert_eq!(back, old);
    }

    #[test]
    fn bad_configs_name_the_field_and_what_is_valid() {
        let err = |json: String| parse(&json).unwrap_err().to_string();
        let e = err(format!(r#"{{{BASE}, "hidden_activation": "silu"}}"#));
        assert!(e.contains("silu") && e.contains("gelu_pytorch_tanh"), "{e}");
        let e = err(format!(r#"{{{BASE}, "attn_logit_softcapping": 50.0}}"#));
        assert!(e.contains("attn_logit_softcapping"), "{e}");
        let e = err(format!(r#"{{{BASE}, "layer_types": ["full_attention"]}}"#));
        assert!(e.contains("layer_types has 1 entries for 7"), "{e}");
        let e = err(format!(
            r#"{{{BASE}, "layer_types": ["chunked_attention", "a", "b", "c", "d", "e", "f"]}}"#
        ));
        assert!(
            e.contains("chunked_attention") && e.contains("sliding_attention"),
            "{e}"
        );
        let e = err(format!(r#"{{{BASE}, "query_pre_attn_scalar": -1}}"#));
        assert!(e.contains("query_pre_attn_scalar"), "{e}");
        let e = err(format!(r#"{{{BASE}, "sliding_window": 0}}"#));
        assert!(e.contains("sliding_window"), "{e}");
        let e = err(format!(
            r#"{{{BASE}, "rope_parameters": {{"sliding_attention": {{"rope_type": "linear", "factor": 2.0}}}}}}"#
        ));
        assert!(e.contains("sliding layers"), "{e}");
    }

    #[test]
    fn the_pattern_is_transformers() {
        assert_eq!(
            pattern_layers(12, 6),
            [true, true, true, true, true, false].repeat(2)
        );
        assert_eq!(pattern_layers(3, 1), vec![false; 3]);
    }
}

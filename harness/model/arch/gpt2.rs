//! GPT-2 in candle: config and forward pass with a KV cache.
//!
//! Learned position embeddings, pre-LayerNorm blocks, a fused qkv projection,
//! gelu_new (the tanh approximation), and an LM head tied to the token embedding, as in
//! Hugging Face transformers' `GPT2LMHeadModel`. Weight matrices are stored `[out, in]`
//! (Hugging Face's Conv1D stores `[in, out]`; the loader transposes) in whatever
//! precision the loader chose, see [`Matrix`].

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::model::arch::{ArchConfig, Architecture, CausalLm, GgufNames, ModelConfig};
use crate::model::nn::{causal_mask, linear_parts, Group, KvCache, Part};
pub use crate::model::nn::{Cache, LayerNorm, Linear, Matrix, Vector};
use crate::model::source::gguf::{GgufFile, Kv};
use crate::model::source::synthetic::{Init, Preset};
use crate::model::source::weights::{Builder, TensorSource};
use crate::model::write::gguf::Meta;
use crate::precision::Quantization;

/// The activation of the MLP, by its transformers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The tanh approximation of GELU, GPT-2's own.
    GeluNew,
    /// The same tanh approximation under PyTorch's name.
    GeluPytorchTanh,
    /// The exact (erf) GELU.
    Gelu,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self, InputError> {
        match name {
            "gelu_new" => Ok(Activation::GeluNew),
            "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluPytorchTanh),
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(InputError::new(format!(
                "activation_function '{other}' is not supported; valid: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu"
            ))),
        }
    }

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluNew | Activation::GeluPytorchTanh => {
                if crate::kernel::active() == crate::kernel::Kernels::Quantbench
                    && xs.device().is_cpu()
                    && xs.dtype() == DType::F32
                {
                    crate::kernel::gelu::GeluNew::forward(xs)
                } else {
                    xs.gelu()
                }
            }
            Activation::Gelu => xs.gelu_erf(),
            Activation::Relu => xs.relu(),
        }
    }
}

/// The fields of a transformers `config.json` that GPT-2 uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Width of the MLP; `None` means 4 * n_embd.
    pub n_inner: Option<usize>,
    pub layer_norm_epsilon: f64,
    pub activation_function: Activation,
    pub tie_word_embeddings: bool,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
}

/// config.json as found in the wild: every field optional, GPT-2's defaults otherwise.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    n_ctx: Option<usize>,
    n_embd: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    n_inner: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    tie_word_embeddings: Option<bool>,
    scale_attn_weights: Option<bool>,
    scale_attn_by_inverse_layer_idx: Option<bool>,
    reorder_and_upcast_attn: Option<bool>,
}

impl Config {
    /// GPT-2 small, the transformers defaults.
    pub fn gpt2_small() -> Self {
        Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: Activation::GeluNew,
            tie_word_embeddings: true,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
        }
    }

    /// Parse and check a transformers config.json; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let text = crate::fsutil::strip_bom(text);
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| InputError::new(format!("{origin}: not valid JSON: {e}")))?;
        if !value.is_object() {
            let kind = match &value {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            crate::bad_input!(
                "{origin}: a config.json is a JSON object ({{\"model_type\": \"gpt2\", ...}}), not {kind}"
            );
        }
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            InputError::new(format!("{origin}: field `{path}`: {}", e.into_inner()))
        })?;
        if let Some(mt) = &raw.model_type {
            if mt != "gpt2" {
                crate::bad_input!(
                    "{origin}: model_type is '{mt}', but quantbench runs GPT-2 models (model_type \"gpt2\")"
                );
            }
        }
        if raw.reorder_and_upcast_attn == Some(true) {
            crate::bad_input!("{origin}: reorder_and_upcast_attn = true is not supported");
        }
        let d = Config::gpt2_small();
        let activation = match raw.activation_function.as_deref() {
            None => d.activation_function,
            Some(name) => {
                Activation::parse(name).map_err(|e| InputError::new(format!("{origin}: {e}")))?
            }
        };
        let cfg = Config {
            vocab_size: raw.vocab_size.unwrap_or(d.vocab_size),
            n_positions: raw.n_positions.or(raw.n_ctx).unwrap_or(d.n_positions),
            n_embd: raw.n_embd.unwrap_or(d.n_embd),
            n_layer: raw.n_layer.unwrap_or(d.n_layer),
            n_head: raw.n_head.unwrap_or(d.n_head),
            n_inner: raw.n_inner,
            layer_norm_epsilon: raw.layer_norm_epsilon.unwrap_or(d.layer_norm_epsilon),
            activation_function: activation,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
            scale_attn_weights: raw.scale_attn_weights.unwrap_or(true),
            scale_attn_by_inverse_layer_idx: raw.scale_attn_by_inverse_layer_idx.unwrap_or(false),
        };
        cfg.validate()
            .map_err(|e| InputError::new(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    /// The config.json transformers would write for this model.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation_function": match self.activation_function {
                Activation::GeluNew => "gelu_new",
                Activation::GeluPytorchTanh => "gelu_pytorch_tanh",
                Activation::Gelu => "gelu",
                Activation::Relu => "relu",
            },
            "tie_word_embeddings": self.tie_word_embeddings,
            "scale_attn_weights": self.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": self.scale_attn_by_inverse_layer_idx,
            "initializer_range": 0.02,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
            "resid_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "attn_pdrop": 0.1,
            "torch_dtype": "float32",
        })
    }

    fn validate(&self) -> std::result::Result<(), String> {
        // Generous limits (GPT-2 XL is 50257 / 1024 / 1600 / 48 / 25): a lying config
        // cannot make the loader's arithmetic overflow or ask for absurd memory.
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("n_positions", self.n_positions, 1 << 20),
            ("n_embd", self.n_embd, 1 << 16),
            ("n_layer", self.n_layer, 1 << 10),
            ("n_head", self.n_head, 1 << 10),
            ("n_inner", self.n_inner.unwrap_or(1), 1 << 20),
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
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.n_inner == Some(0) {
            return Err("n_inner must be at least 1 (or null for 4 * n_embd)".into());
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon < 1.0) {
            return Err(format!(
                "layer_norm_epsilon ({}) must be between 0 and 1",
                self.layer_norm_epsilon
            ));
        }
        Ok(())
    }

    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of parameters, counting the tied LM head once.
    pub fn parameter_count(&self) -> usize {
        let c = self.n_embd;
        let block = 2 * 2 * c // ln_1, ln_2
            + c * 3 * c + 3 * c // c_attn
            + c * c + c // attn.c_proj
            + c * self.inner() + self.inner() // c_fc
            + self.inner() * c + c; // mlp.c_proj
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * c
        };
        self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c + head
    }
}

/// One transformer block's weights.
#[derive(Debug, Clone)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub c_attn: Linear,
    pub attn_proj: Linear,
    pub ln_2: LayerNorm,
    pub c_fc: Linear,
    pub mlp_proj: Linear,
}

impl Block {
    /// The block's four products.
    pub fn linears(&self) -> [&Linear; 4] {
        [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
    }
}

/// All weights of a GPT-2 model, in whatever precision they were loaded.
#[derive(Debug, Clone)]
pub struct Weights {
    pub wte: Matrix,
    pub wpe: Matrix,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
    /// `None` when the LM head is tied to `wte`.
    pub lm_head: Option<Matrix>,
}

/// GPT-2 with its LM head.
pub struct Gpt2 {
    config: Config,
    weights: Weights,
    device: Device,
}

impl Gpt2 {
    pub fn new(config: Config, weights: Weights, device: Device) -> Self {
        Gpt2 {
            config,
            weights,
            device,
        }
    }

    /// Read every tensor from `src` and store each at `q` on `device`; the fallback
    /// notes say which matrices were stored in another format than asked, and why.
    pub fn load(
        config: &Config,
        src: &dyn TensorSource,
        q: Quantization,
        device: &Device,
    ) -> Result<(Self, Vec<String>)> {
        let (weights, notes) = build(config, src, q, device)?;
        Ok((Gpt2::new(config.clone(), weights, device.clone()), notes))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    fn lm_head(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        self.weights
            .lm_head
            .as_ref()
            .unwrap_or(&self.weights.wte)
            .forward(h)
    }

    fn block_forward(
        &self,
        layer: usize,
        b: &Block,
        xs: &Tensor,
        kv: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (bsz, len, c) = xs.dims3()?;
        let heads = self.config.n_head;
        let hd = c / heads;

        let h = b.ln_1.forward(xs)?;
        let qkv = b.c_attn.forward(&h)?;
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, i * c, c)?
                .reshape((bsz, len, heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = kv.append(&k, &v)?;
        let scale = self.attention_scale(layer);
        // The mask, when there is one, is the causal one over this pass's positions.
        let causal = mask.map(|_| crate::kernel::attention::Causal { len, window: None });
        let y = match crate::kernel::attention::step(&q, &k, &v, scale, causal)? {
            Some(y) => y,
            None => {
                let mut att = (q.matmul(&k.t()?)? * scale)?;
                if let Some(m) = mask {
                    att = att.broadcast_add(m)?;
                }
                candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?
            }
        };
        let y = y.transpose(1, 2)?.reshape((bsz, len, c))?;
        let xs = (xs + b.attn_proj.forward(&y)?)?;

        let h = b.ln_2.forward(&xs)?;
        let h = self
            .config
            .activation_function
            .apply(&b.c_fc.forward(&h)?)?;
        xs + b.mlp_proj.forward(&h)?
    }
}

/// GPT-2's decode-step buffers for `b` sequences ([`crate::model::step`]).
struct StepBuffers {
    b: usize,
    /// The residual stream, `b × n_embd`.
    x: Vec<f32>,
    /// The normed stream, `b × n_embd`.
    h: Vec<f32>,
    /// Queries, keys and values, `b × 3·n_embd`.
    qkv: Vec<f32>,
    /// The attention's output, `b × n_embd`.
    att: Vec<f32>,
    /// A projection's output before it joins the stream, `b × n_embd`.
    out: Vec<f32>,
    /// The MLP's inner activations, `b × inner`.
    ff: Vec<f32>,
    products: crate::kernel::Scratch,
}

impl Gpt2 {
    /// One new token per sequence (`ids`, one each) through the CPU decode step
    /// ([`crate::model::step`]); `None` where it does not apply (another device,
    /// quantbench's kernels off, a product without a CPU kernel, the erf GELU), and then
    /// the candle path runs.
    fn decode_step(&self, ids: &[u32], cache: &mut Cache) -> Result<Option<Tensor>> {
        use crate::kernel::attention::{attend_cached, Heads};
        use crate::model::kv::Rows;
        use crate::model::step;
        let c = &self.config;
        let w = &self.weights;
        if !step::available(&self.device)
            || c.activation_function == Activation::Gelu
            || !w
                .blocks
                .iter()
                .all(|b| b.linears().iter().all(|l| l.slice_product().is_some()))
        {
            return Ok(None);
        }
        let (b, cd, heads, inner) = (ids.len(), c.n_embd, c.n_head, c.inner());
        let hd = cd / heads;
        let pos = cache.position;
        let mut s = step::take_buffers(
            cache,
            |s: &StepBuffers| s.b == b,
            || StepBuffers {
                b,
                x: vec![0.0; b * cd],
                h: vec![0.0; b * cd],
                qkv: vec![0.0; b * 3 * cd],
                att: vec![0.0; b * cd],
                out: vec![0.0; b * cd],
                ff: vec![0.0; b * inner],
                products: Default::default(),
            },
        );
        let StepBuffers {
            x,
            h,
            qkv,
            att,
            out,
            ff,
            products,
            ..
        } = &mut *s;
        // Token plus position embedding, as the candle path adds them.
        for (row, &id) in x.chunks_exact_mut(cd).zip(ids) {
            w.wte.row_into(id as usize, row)?;
            w.wpe.row_into(pos, &mut h[..cd])?;
            row.iter_mut().zip(&h[..cd]).for_each(|(a, p)| *a += p);
        }
        for (i, (blk, kv)) in w.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            if i == 0 {
                blk.ln_1.forward_rows(x, h);
            } else {
                step::add_then(x, out, |x| blk.ln_1.forward_rows(x, h));
            }
            step::product(&blk.c_attn)?.apply(h, b, qkv, products)?;
            let rows = |offset| Rows {
                data: qkv,
                offset,
                seq_stride: 3 * cd,
            };
            kv.push_rows((b, heads, hd), rows(cd), rows(2 * cd))?;
            let (keys, values) = kv.buffers().expect("just written");
            let heads = Heads {
                b,
                g: heads,
                rep: 1,
                hd,
            };
            attend_cached(
                qkv,
                3 * cd,
                keys,
                values,
                heads,
                0..kv.len(),
                self.attention_scale(i) as f32,
                att,
            )?;
            step::product(&blk.attn_proj)?.apply(att, b, out, products)?;
            step::add_then(x, out, |x| blk.ln_2.forward_rows(x, h));
            step::product(&blk.c_fc)?.apply(h, b, ff, products)?;
            match c.activation_function {
                Activation::GeluNew | Activation::GeluPytorchTanh => crate::kernel::gelu::apply(ff),
                Activation::Relu => ff.iter_mut().for_each(|v| *v = v.max(0.0)),
                Activation::Gelu => unreachable!("declined above"),
            }
            step::product(&blk.mlp_proj)?.apply(ff, b, out, products)?;
        }
        step::add_then(x, out, |x| w.ln_f.forward_rows(x, h));
        let hidden = Tensor::from_slice(&h[..], (b, 1, cd), &self.device)?;
        cache.position += 1;
        step::put_back(cache, s);
        step::count();
        Ok(Some(hidden))
    }

    /// The factor on layer `layer`'s attention scores.
    fn attention_scale(&self, layer: usize) -> f64 {
        let mut scale = 1.0;
        if self.config.scale_attn_weights {
            scale /= (self.config.head_dim() as f64).sqrt();
        }
        if self.config.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        scale
    }
}

impl CausalLm for Gpt2 {
    /// Run `batch` (B sequences of one length) through the model after what `cache`
    /// holds, and return the final hidden states `[B, len, n_embd]`.
    fn hidden_batch(&self, batch: &[&[u32]], cache: &mut Cache) -> Result<Tensor> {
        let (b, len, ids) = crate::model::arch::flatten_batch(batch)?;
        let start = cache.position;
        let c = &self.config;
        // Positions are the same for every sequence; every id must be in the vocabulary.
        crate::model::arch::check_ids(&ids[..len], start, c.n_positions, c.vocab_size)?;
        crate::model::arch::check_ids(&ids, 0, ids.len(), c.vocab_size)?;
        if len == 1 {
            if let Some(h) = self.decode_step(&ids, cache)? {
                return Ok(h);
            }
        }
        let ids_t = Tensor::from_vec(ids, (b, len), &self.device)?;
        let pos: Vec<u32> = (start as u32..(start + len) as u32).collect();
        let pos_t = Tensor::new(pos.as_slice(), &self.device)?.unsqueeze(0)?;
        let tok = self.weights.wte.rows(&ids_t)?;
        let posv = self.weights.wpe.rows(&pos_t)?;
        let mut xs = tok.broadcast_add(&posv)?;
        let mask = if len > 1 {
            Some(causal_mask(len, start, None, &self.device)?)
        } else {
            None
        };
        for (i, (block, kv)) in self
            .weights
            .blocks
            .iter()
            .zip(cache.layers.iter_mut())
            .enumerate()
        {
            xs = self
                .block_forward(i, block, &xs, kv, mask.as_ref())
                .with_context(|| format!("forward pass of block {i}"))?;
        }
        cache.position += len;
        Ok(self.weights.ln_f.forward(&xs)?)
    }

    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head(h)?)
    }

    fn streamed_bytes_per_step(&self) -> usize {
        let w = &self.weights;
        // Position embeddings are looked up; the token table too when the head is untied.
        let looked_up = w.wpe.bytes() + w.lm_head.as_ref().map_or(0, |_| w.wte.bytes());
        self.parts().iter().map(|(_, p)| p.bytes()).sum::<usize>() - looked_up
    }

    fn parts(&self) -> Vec<(Group, Part<'_>)> {
        let w = &self.weights;
        let mut parts: Vec<(Group, Part<'_>)> = [&w.wte, &w.wpe]
            .into_iter()
            .chain(w.lm_head.as_ref())
            .map(|m| (Group::Embeddings, Part::Matrix(m)))
            .collect();
        fn norm(ln: &LayerNorm) -> [(Group, Part<'_>); 2] {
            [
                (Group::NormsBiases, Part::Vector(&ln.weight)),
                (Group::NormsBiases, Part::Vector(&ln.bias)),
            ]
        }
        let mut rest: Vec<(Group, Part<'_>)> = norm(&w.ln_f).into_iter().collect();
        for b in &w.blocks {
            rest.extend(norm(&b.ln_1));
            rest.extend(norm(&b.ln_2));
            for l in b.linears() {
                rest.extend(linear_parts(l));
            }
        }
        parts.extend(rest);
        parts
    }

    fn token_embedding(&self) -> &Matrix {
        &self.weights.wte
    }
}

/// The canonical tensor names of a config and their shapes, in the hub's GPT-2 layout
/// (Conv1D weights `[in, out]`).
pub fn expected_tensors(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let inner = cfg.inner();
    let mut v = vec![
        ("wte.weight".to_string(), vec![cfg.vocab_size, c]),
        ("wpe.weight".to_string(), vec![cfg.n_positions, c]),
    ];
    for i in 0..cfg.n_layer {
        let p = format!("h.{i}.");
        for (n, s) in [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, inner]),
            ("mlp.c_fc.bias", vec![inner]),
            ("mlp.c_proj.weight", vec![inner, c]),
            ("mlp.c_proj.bias", vec![c]),
        ] {
            v.push((format!("{p}{n}"), s));
        }
    }
    v.push(("ln_f.weight".to_string(), vec![c]));
    v.push(("ln_f.bias".to_string(), vec![c]));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, c]));
    }
    v
}

/// Reads every tensor from `src`, stores each in the precision `q` gives it, on `device`.
fn build(
    cfg: &Config,
    src: &dyn TensorSource,
    q: Quantization,
    device: &Device,
) -> Result<(Weights, Vec<String>)> {
    let mut w = Builder::new(src, q, device, cfg)?;
    let c = cfg.n_embd;
    let inner = cfg.inner();
    let embed_q = w.quantize_embeddings();
    let wte = w.matrix("wte.weight", [cfg.vocab_size, c], false, embed_q)?;
    let wpe = w.matrix("wpe.weight", [cfg.n_positions, c], false, embed_q)?;
    // The head is multiplied every step: stored for products (a tied table is the head).
    let (wte, lm_head) = if cfg.tie_word_embeddings {
        (wte.for_products(), None)
    } else {
        let head = w.matrix("lm_head.weight", [cfg.vocab_size, c], false, embed_q)?;
        (wte, Some(head.for_products()))
    };
    let eps = cfg.layer_norm_epsilon;
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = |n: &str| format!("h.{i}.{n}");
        let ln = |w: &mut Builder, n: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(
                w.vector(&p(&format!("{n}.weight")), c)?,
                w.vector(&p(&format!("{n}.bias")), c)?,
                eps,
            )?)
        };
        // Conv1D weights are stored [in, out]: transposed to [out, in] as they load.
        let lin = |w: &mut Builder, n: &str, inp: usize, out: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.matrix(&p(&format!("{n}.weight")), [inp, out], true, true)?,
                Some(w.vector(&p(&format!("{n}.bias")), out)?),
            )?)
        };
        let ln_1 = ln(&mut w, "ln_1")?;
        let c_attn = lin(&mut w, "attn.c_attn", c, 3 * c)?;
        let attn_proj = lin(&mut w, "attn.c_proj", c, c)?;
        let ln_2 = ln(&mut w, "ln_2")?;
        let c_fc = lin(&mut w, "mlp.c_fc", c, inner)?;
        let mlp_proj = lin(&mut w, "mlp.c_proj", inner, c)?;
        blocks.push(Block {
            ln_1,
            c_attn,
            attn_proj,
            ln_2,
            c_fc,
            mlp_proj,
        });
    }
    let ln_f = LayerNorm::new(w.vector("ln_f.weight", c)?, w.vector("ln_f.bias", c)?, eps)?;
    Ok((
        Weights {
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        },
        w.notes(),
    ))
}

/// GPT-2 in the registry.
pub static ARCHITECTURE: Architecture = Architecture {
    title: "GPT-2",
    model_types: &["gpt2"],
    reads_untyped_config: true,
    gguf_architectures: &["gpt2"],
    from_config_json: |_, _, text, origin| Ok(ModelConfig::new(Config::from_json(text, origin)?)),
    from_gguf,
    presets: &PRESETS,
};

fn shape(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize) -> ModelConfig {
    ModelConfig::new(Config {
        n_layer,
        n_head,
        n_embd,
        n_positions,
        ..Config::gpt2_small()
    })
}

/// GPT-2's synthetic presets: the published shapes.
pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "gpt2",
        about: "GPT-2 small, 124M parameters",
        build: || shape(12, 12, 768, 1024),
    },
    Preset {
        name: "distilgpt2",
        about: "DistilGPT-2, 82M parameters",
        build: || shape(6, 12, 768, 1024),
    },
    Preset {
        name: "gpt2-medium",
        about: "GPT-2 medium, 355M parameters",
        build: || shape(24, 16, 1024, 1024),
    },
    Preset {
        name: "gpt2-large",
        about: "GPT-2 large, 774M parameters",
        build: || shape(36, 20, 1280, 1024),
    },
    Preset {
        name: "gpt2-xl",
        about: "GPT-2 XL, 1.56B parameters",
        build: || shape(48, 25, 1600, 1024),
    },
    Preset {
        name: "tiny",
        about: "2 layers of width 256 with GPT-2's vocabulary, for tests",
        build: || shape(2, 4, 256, 256),
    },
];

/// The configuration a GGUF file of `general.architecture` = gpt2 describes.
fn from_gguf(file: &GgufFile, arch: &str) -> Result<ModelConfig> {
    let c = file.common(arch)?;
    // llama.cpp's converter writes feed_forward_length = 4 * width whatever n_inner
    // is; the MLP's own shape is the truth. Its bos / eos ids are GPT-2's own
    // <|endoftext|> (written as 50256 even where a vocabulary is cut shorter), not read.
    let up = file.entry("blk.0.ffn_up.weight")?;
    let value = serde_json::json!({
        "model_type": "gpt2",
        "vocab_size": c.vocab,
        "n_positions": c.context,
        "n_embd": c.width,
        "n_layer": c.layers,
        "n_head": c.heads,
        "n_inner": up.shape[0],
        "layer_norm_epsilon": file.kv_f64(arch, Kv::LayerNormEpsilon)?,
        "activation_function": "gelu_new",
        "tie_word_embeddings": c.tied,
    });
    let origin = format!("{} (GGUF metadata)", file.path.display());
    Ok(ModelConfig::new(Config::from_json(
        &value.to_string(),
        &origin,
    )?))
}

/// Hugging Face's Conv1D weights, stored `[in, out]`.
fn is_conv1d(canonical: &str) -> bool {
    canonical.ends_with(".weight")
        && (canonical.contains(".attn.c_attn.")
            || canonical.contains(".attn.c_proj.")
            || canonical.contains(".mlp.c_fc.")
            || canonical.contains(".mlp.c_proj."))
}

/// llama.cpp's names for GPT-2's canonical tensors.
pub const GGUF_NAMES: GgufNames = GgufNames {
    fixed: &[
        ("wte.weight", "token_embd.weight"),
        ("wpe.weight", "position_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("ln_f.weight", "output_norm.weight"),
        ("ln_f.bias", "output_norm.bias"),
    ],
    layers: "h.",
    modules: &[
        ("ln_1", "attn_norm"),
        ("attn.c_attn", "attn_qkv"),
        ("attn.c_proj", "attn_output"),
        ("ln_2", "ffn_norm"),
        ("mlp.c_fc", "ffn_up"),
        ("mlp.c_proj", "ffn_down"),
    ],
};

impl ArchConfig for Config {
    fn model_type(&self) -> &'static str {
        "gpt2"
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn context_length(&self) -> usize {
        self.n_positions
    }
    fn n_layer(&self) -> usize {
        self.n_layer
    }
    fn hidden_size(&self) -> usize {
        self.n_embd
    }
    fn n_head(&self) -> usize {
        self.n_head
    }
    fn n_kv_head(&self) -> usize {
        self.n_head
    }
    fn head_dim(&self) -> usize {
        Config::head_dim(self)
    }
    fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }
    fn bos_token_id(&self) -> Option<u32> {
        Some(crate::model::source::tokenizer::END_OF_TEXT)
    }
    fn tokenizer_is_gpt2s(&self) -> bool {
        true
    }
    fn eos_token_id(&self) -> Option<u32> {
        Some(crate::model::source::tokenizer::END_OF_TEXT)
    }
    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        expected_tensors(self)
    }
    fn parameter_count(&self) -> usize {
        Config::parameter_count(self)
    }
    fn is_embedding(&self, name: &str) -> bool {
        matches!(name, "wte.weight" | "wpe.weight" | "lm_head.weight")
    }
    fn stored_in_out(&self, name: &str) -> bool {
        is_conv1d(name)
    }
    /// GPT-2 now registers no buffer; older transformers releases kept, per attention
    /// layer, a boolean causal mask of n_positions² bytes (`bias`) and a scalar
    /// `masked_bias` (-1e4) in the model's dtype.
    fn transformers_buffer_bytes(&self, rest: DType) -> (u64, Option<u64>) {
        let per_layer = (self.n_positions * self.n_positions + rest.size_in_bytes()) as u64;
        (0, Some(self.n_layer as u64 * per_layer))
    }
    fn to_json(&self) -> serde_json::Value {
        Config::to_json(self)
    }
    fn load(
        &self,
        src: &dyn TensorSource,
        q: Quantization,
        device: &Device,
    ) -> Result<(Box<dyn CausalLm>, Vec<String>)> {
        let (m, notes) = Gpt2::load(self, src, q, device)?;
        Ok((Box::new(m), notes))
    }
    /// Two layouts: the hub's (no prefix, `h.N.attn.bias` / `masked_bias` causal-mask
    /// buffers, left out) and `save_pretrained`'s (`transformer.` prefix, sometimes
    /// `lm_head.weight`).
    fn canonical_keys(&self, keys: &[String]) -> Vec<(String, String)> {
        let prefixed = keys.iter().any(|k| k.starts_with("transformer."));
        keys.iter()
            .filter_map(|k| {
                let canonical = if k == "lm_head.weight" || !prefixed {
                    k.clone()
                } else {
                    k.strip_prefix("transformer.")?.to_string()
                };
                (!canonical.ends_with(".attn.bias") && !canonical.ends_with(".attn.masked_bias"))
                    .then(|| (canonical, k.clone()))
            })
            .collect()
    }
    fn embedding_name(&self) -> &'static str {
        "wte.weight"
    }
    /// transformers' GPT-2 init: every matrix and embedding N(0, 0.02), the residual
    /// projections (`c_proj`) N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm 1.
    fn init(&self, name: &str) -> Init {
        if name.ends_with(".bias") {
            Init::Const(0.0)
        } else if name.contains("ln_") {
            Init::Const(1.0)
        } else if name.ends_with("c_proj.weight") {
            Init::Normal(0.02 / (2.0 * self.n_layer as f64).sqrt())
        } else {
            Init::Normal(0.02)
        }
    }
    fn gguf_architecture(&self) -> &'static str {
        "gpt2"
    }
    fn gguf_name(&self, canonical: &str) -> Option<String> {
        GGUF_NAMES.name(canonical)
    }
    fn gguf_metadata(&self) -> Vec<(String, Meta)> {
        let k = |kv: Kv| kv.key("gpt2");
        let u = |n: usize| Meta::U32(n as u32);
        vec![
            (k(Kv::ContextLength), u(self.n_positions)),
            (k(Kv::EmbeddingLength), u(self.n_embd)),
            (k(Kv::FeedForwardLength), u(self.inner())),
            (k(Kv::BlockCount), u(self.n_layer)),
            (k(Kv::HeadCount), u(self.n_head)),
            (
                k(Kv::LayerNormEpsilon),
                Meta::F32(self.layer_norm_epsilon as f32),
            ),
        ]
    }
    crate::arch_config_plumbing!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_parameters() {
        assert_eq!(Config::gpt2_small().parameter_count(), 124_439_808);
    }

    #[test]
    fn config_reads_defaults_and_rejects_bad_shapes() {
        let c =
            Config::from_json(r#"{"n_layer": 2, "n_embd": 64, "n_head": 4}"#, "x.json").unwrap();
        assert_eq!(c.n_layer, 2);
        assert_eq!(c.vocab_size, 50257);
        assert_eq!(c.inner(), 256);
        let err = Config::from_json(r#"{"n_embd": 65, "n_head": 4}"#, "cfg/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cfg/config.json") && err.contains("n_head"),
            "{err}"
        );
        let err = Config::from_json(r#"{"activation_function": "swish"}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("swish") && err.contains("gelu_new"), "{err}");
        let err = Config::from_json(r#"{"model_type": "llama"}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("llama"), "{err}");
    }
}

//! Synthetic models: the real architectures and shapes, weights drawn from a seed.
//!
//! The weights follow transformers' initialisation (`_init_weights`). GPT-2: every
//! matrix and embedding ~ N(0, 0.02), the residual projections (`c_proj`) ~
//! N(0, 0.02 / sqrt(2 * n_layer)), biases 0, LayerNorm weights 1. The Llama family:
//! every matrix and embedding ~ N(0, 0.02) (initializer_range), biases 0, RMSNorm
//! weights 1. Their generated text is noise; their memory and speed are those of the
//! real shapes, taken from the models' published config.json files.
//!
//! Bit-identical everywhere: each tensor has its own xoshiro256++ streams (one per chunk
//! of 65,536 elements, so chunks are drawn in parallel), seeded from the model seed and
//! the tensor's name by splitmix64, and normals come from Box-Muller with `libm`'s
//! software `log`/`sincos`, not the platform's. Tensors are drawn one at a time as the
//! loader asks for them, so a 7B-class model never exists in f32 as a whole.

use std::collections::HashSet;

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::error::InputError;
use crate::model::arch::llama::{self, Family, RopeScaling};
use crate::model::arch::{gpt2, ModelConfig};
use crate::model::weights::TensorSource;

/// The default seed of synthetic models.
pub const DEFAULT_SEED: u64 = 0x9e2_2024;

/// GPT-2's initializer_range.
const INIT_STD: f64 = 0.02;
const CHUNK: usize = 1 << 16;

/// A named synthetic architecture.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    /// The family it belongs to, for listings: "gpt2" or "llama".
    pub family: &'static str,
    pub about: &'static str,
    build: fn() -> ModelConfig,
}

impl PartialEq for Preset {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

fn gpt2_shape(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize) -> ModelConfig {
    ModelConfig::Gpt2(gpt2::Config {
        n_layer,
        n_head,
        n_embd,
        n_positions,
        ..gpt2::Config::gpt2_small()
    })
}

/// A Llama-family shape with the fields every preset sets; the rest as in Llama.
#[allow(clippy::too_many_arguments)]
fn llama_shape(
    family: Family,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    max_position_embeddings: usize,
    rope_theta: f64,
    tie_word_embeddings: bool,
) -> llama::Config {
    llama::Config {
        family,
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
        rope_freq_factors: None,
    }
}

/// Every synthetic preset. Llama-family shapes from the published config.json files:
/// HuggingFaceTB/SmolLM2-135M, Qwen/Qwen2.5-0.5B, meta-llama/Llama-3.2-1B,
/// Qwen/Qwen3-0.6B, TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T (v1.0),
/// mistralai/Mistral-7B-v0.1.
pub const PRESETS: [Preset; 13] = [
    Preset {
        name: "gpt2",
        family: "gpt2",
        about: "GPT-2 small, 124M parameters",
        build: || gpt2_shape(12, 12, 768, 1024),
    },
    Preset {
        name: "distilgpt2",
        family: "gpt2",
        about: "DistilGPT-2, 82M parameters",
        build: || gpt2_shape(6, 12, 768, 1024),
    },
    Preset {
        name: "gpt2-medium",
        family: "gpt2",
        about: "GPT-2 medium, 355M parameters",
        build: || gpt2_shape(24, 16, 1024, 1024),
    },
    Preset {
        name: "gpt2-large",
        family: "gpt2",
        about: "GPT-2 large, 774M parameters",
        build: || gpt2_shape(36, 20, 1280, 1024),
    },
    Preset {
        name: "gpt2-xl",
        family: "gpt2",
        about: "GPT-2 XL, 1.56B parameters",
        build: || gpt2_shape(48, 25, 1600, 1024),
    },
    Preset {
        name: "tiny",
        family: "gpt2",
        about: "2 layers of width 256 with GPT-2's vocabulary, for tests",
        build: || gpt2_shape(2, 4, 256, 256),
    },
    Preset {
        name: "tiny-llama",
        family: "llama",
        about: "a Llama of 2 layers, width 256, 4 heads over 2 kv heads, llama3 rope, GPT-2's vocabulary, for tests",
        build: || {
            let mut c = llama_shape(Family::Llama, 50257, 256, 512, 2, 4, 2, 256, 500000.0, false);
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64,
            };
            ModelConfig::Llama(c)
        },
    },
    Preset {
        name: "smollm2-135m",
        family: "llama",
        about: "SmolLM2-135M (Llama: 30 layers, width 576, 9 heads, 3 kv heads, tied head)",
        build: || {
            let mut c = llama_shape(Family::Llama, 49152, 576, 1536, 30, 9, 3, 8192, 100000.0, true);
            c.bos_token_id = Some(0);
            c.eos_token_id = Some(0);
            ModelConfig::Llama(c)
        },
    },
    Preset {
        name: "qwen2.5-0.5b",
        family: "llama",
        about: "Qwen2.5-0.5B (qwen2: 24 layers, width 896, 14 heads, 2 kv heads, q/k/v biases, tied head)",
        build: || {
            let mut c = llama_shape(Family::Qwen2, 151936, 896, 4864, 24, 14, 2, 32768, 1000000.0, true);
            c.rms_norm_eps = 1e-6;
            c.qkv_bias = true;
            c.bos_token_id = Some(151643);
            c.eos_token_id = Some(151643);
            ModelConfig::Llama(c)
        },
    },
    Preset {
        name: "qwen3-0.6b",
        family: "llama",
        about: "Qwen3-0.6B (qwen3: 28 layers, width 1024, 16 heads of 128, 8 kv heads, q/k norms, tied head)",
        build: || {
            let mut c = llama_shape(Family::Qwen3, 151936, 1024, 3072, 28, 16, 8, 40960, 1000000.0, true);
            c.head_dim = 128;
            c.rms_norm_eps = 1e-6;
            c.qk_norm = true;
            c.bos_token_id = Some(151643);
            c.eos_token_id = Some(151645);
            ModelConfig::Llama(c)
        },
    },
    Preset {
        name: "llama-3.2-1b",
        family: "llama",
        about: "Llama 3.2 1B (16 layers, width 2048, 32 heads, 8 kv heads, llama3 rope, tied head)",
        build: || {
            let mut c = llama_shape(Family::Llama, 128256, 2048, 8192, 16, 32, 8, 131072, 500000.0, true);
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            };
            c.bos_token_id = Some(128000);
            c.eos_token_id = Some(128001);
            ModelConfig::Llama(c)
        },
    },
    Preset {
        name: "tinyllama-1.1b",
        family: "llama",
        about: "TinyLlama 1.1B (22 layers, width 2048, 32 heads, 4 kv heads, untied head)",
        build: || {
            let mut c = llama_shape(Family::Llama, 32000, 2048, 5632, 22, 32, 4, 2048, 10000.0, false);
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(2);
            ModelConfig::Llama(c)
        },
    },
    Preset {
        name: "mistral-7b",
        family: "llama",
        about: "Mistral 7B v0.1 (32 layers, width 4096, 32 heads, 8 kv heads, sliding window 4096, untied head; f32 does not fit in 24 GiB)",
        build: || {
            let mut c = llama_shape(Family::Mistral, 32000, 4096, 14336, 32, 32, 8, 32768, 10000.0, false);
            c.sliding_window = Some(4096);
            c.bos_token_id = Some(1);
            c.eos_token_id = Some(2);
            ModelConfig::Llama(c)
        },
    },
];

impl Preset {
    pub fn find(name: &str) -> Result<Preset, InputError> {
        PRESETS
            .iter()
            .copied()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                InputError::new(format!(
                    "unknown synthetic model '{name}'; valid: {}",
                    PRESETS
                        .iter()
                        .map(|p| format!("synthetic:{}", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    pub fn config(&self) -> ModelConfig {
        (self.build)()
    }
}

/// Weights drawn from a seed, tensor by tensor, on demand.
pub struct SyntheticSource {
    pub config: ModelConfig,
    pub seed: u64,
    names: HashSet<String>,
}

impl SyntheticSource {
    pub fn new(config: ModelConfig, seed: u64) -> Self {
        let names = config
            .expected_tensors()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        SyntheticSource {
            config,
            seed,
            names,
        }
    }

    /// The f32 values of one tensor.
    pub fn values(&self, name: &str, len: usize) -> Vec<f32> {
        let init = match &self.config {
            ModelConfig::Gpt2(c) => init_for(name, c.n_layer),
            ModelConfig::Llama(_) => llama_init_for(name),
        };
        match init {
            Init::Const(v) => vec![v; len],
            Init::Normal(std) => {
                let tensor_seed = splitmix64(self.seed ^ fnv1a(name.as_bytes()));
                let mut out = vec![0f32; len];
                out.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(i, chunk)| {
                        fill_normal(chunk, splitmix64(tensor_seed.wrapping_add(i as u64)), std);
                    });
                out
            }
        }
    }
}

impl TensorSource for SyntheticSource {
    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let len = shape.iter().product();
        Ok(Tensor::from_vec(
            self.values(name, len),
            shape,
            &Device::Cpu,
        )?)
    }
}

enum Init {
    Const(f32),
    Normal(f64),
}

fn init_for(name: &str, n_layer: usize) -> Init {
    if name.ends_with(".bias") {
        Init::Const(0.0)
    } else if name.contains("ln_") {
        Init::Const(1.0)
    } else if name.ends_with("c_proj.weight") {
        Init::Normal(INIT_STD / (2.0 * n_layer as f64).sqrt())
    } else {
        Init::Normal(INIT_STD)
    }
}

/// transformers' Llama-family init: norms 1, biases 0, every matrix N(0, 0.02).
fn llama_init_for(name: &str) -> Init {
    if name.ends_with(".bias") {
        Init::Const(0.0)
    } else if name.ends_with("norm.weight") {
        Init::Const(1.0)
    } else {
        Init::Normal(INIT_STD)
    }
}

fn fill_normal(out: &mut [f32], seed: u64, std: f64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let uniform = |rng: &mut Xoshiro256PlusPlus| {
        // 53 random bits in (0, 1]: never 0, so the log is finite.
        ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let (a, b) = box_muller(uniform(&mut rng), uniform(&mut rng));
        pair[0] = (a * std) as f32;
        pair[1] = (b * std) as f32;
    }
    if let [last] = pairs.into_remainder() {
        *last = (box_muller(uniform(&mut rng), uniform(&mut rng)).0 * std) as f32;
    }
}

fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = libm::sqrt(-2.0 * libm::log(u1));
    let (s, c) = libm::sincos(2.0 * std::f64::consts::PI * u2);
    (r * c, r * s)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_published_parameter_counts() {
        let count = |n| Preset::find(n).unwrap().config().parameter_count();
        assert_eq!(count("gpt2"), 124_439_808);
        assert_eq!(count("distilgpt2"), 81_912_576);
        assert_eq!(count("gpt2-medium"), 354_823_168);
        assert_eq!(count("gpt2-large"), 774_030_080);
        assert_eq!(count("gpt2-xl"), 1_557_611_200);
        // The Llama family's, as the model cards and transformers' num_parameters() give
        // them (tied heads counted once).
        assert_eq!(count("smollm2-135m"), 134_515_008);
        assert_eq!(count("qwen2.5-0.5b"), 494_032_768);
        assert_eq!(count("qwen3-0.6b"), 596_049_920);
        assert_eq!(count("llama-3.2-1b"), 1_235_814_400);
        assert_eq!(count("tinyllama-1.1b"), 1_100_048_384);
        assert_eq!(count("mistral-7b"), 7_241_732_096);
    }

    #[test]
    fn normals_have_the_init_statistics() {
        let src = SyntheticSource::new(Preset::find("tiny").unwrap().config(), DEFAULT_SEED);
        let v = src.values("h.0.mlp.c_fc.weight", 200_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 2e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 2e-4, "std {}", var.sqrt());
        let proj = src.values("h.1.mlp.c_proj.weight", 200_000);
        let sd = (proj.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 200_000.0).sqrt();
        assert!((sd - 0.01).abs() < 1e-4, "c_proj std {sd}");
        assert!(src.values("ln_f.weight", 4).iter().all(|&x| x == 1.0));
        assert!(src
            .values("h.0.attn.c_attn.bias", 4)
            .iter()
            .all(|&x| x == 0.0));
    }

    #[test]
    fn same_seed_same_bits_other_seed_other_bits() {
        let cfg = Preset::find("tiny").unwrap().config();
        let a = SyntheticSource::new(cfg.clone(), 1).values("wte.weight", 100_000);
        let b = SyntheticSource::new(cfg.clone(), 1).values("wte.weight", 100_000);
        let c = SyntheticSource::new(cfg, 2).values("wte.weight", 100_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// The exact bits of the default synthetic GPT-2, pinned: if this changes, every
    /// synthetic model on every machine changes with it.
    #[test]
    fn default_weights_are_pinned_bit_for_bit() {
        let src = SyntheticSource::new(Preset::find("gpt2").unwrap().config(), DEFAULT_SEED);
        let digest = |name: &str, len: usize| {
            src.values(name, len)
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
                    (h ^ x.to_bits() as u64).wrapping_mul(0x0100_0000_01b3)
                })
        };
        let got = [
            digest("wte.weight", 50257 * 768),
            digest("h.11.mlp.c_proj.weight", 3072 * 768),
        ];
        assert_eq!(got, PINNED_DIGESTS, "synthetic weights changed: {got:x?}");
    }

    const PINNED_DIGESTS: [u64; 2] = [0xdab5_dc06_338d_2444, 0xe29a_2e3d_6313_c693];
}

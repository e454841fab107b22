//! Synthetic GPT-2s: the real architectures and shapes, weights drawn from a seed.
//!
//! The weights follow GPT-2's initialisation (transformers' `_init_weights`): every
//! matrix and embedding ~ N(0, 0.02), the residual projections (`c_proj`) ~
//! N(0, 0.02 / sqrt(2 * n_layer)), biases 0, LayerNorm weights 1. Their generated text
//! is noise; their memory and speed are those of the real shapes.
//!
//! Bit-identical everywhere: each tensor has its own xoshiro256++ streams (one per chunk
//! of 65,536 elements, so chunks are drawn in parallel), seeded from the model seed and
//! the tensor's name by splitmix64, and normals come from Box-Muller with `libm`'s
//! software `log`/`sincos`, not the platform's.

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::error::InputError;
use crate::model::gpt2::Config;
use crate::model::weights::TensorSource;

/// The default seed of synthetic models.
pub const DEFAULT_SEED: u64 = 0x9e2_2024;

/// GPT-2's initializer_range.
const INIT_STD: f64 = 0.02;
const CHUNK: usize = 1 << 16;

/// A named synthetic architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub about: &'static str,
}

pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "gpt2",
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        n_positions: 1024,
        about: "GPT-2 small, 124M parameters",
    },
    Preset {
        name: "distilgpt2",
        n_layer: 6,
        n_head: 12,
        n_embd: 768,
        n_positions: 1024,
        about: "DistilGPT-2, 82M parameters",
    },
    Preset {
        name: "gpt2-medium",
        n_layer: 24,
        n_head: 16,
        n_embd: 1024,
        n_positions: 1024,
        about: "GPT-2 medium, 355M parameters",
    },
    Preset {
        name: "gpt2-large",
        n_layer: 36,
        n_head: 20,
        n_embd: 1280,
        n_positions: 1024,
        about: "GPT-2 large, 774M parameters",
    },
    Preset {
        name: "gpt2-xl",
        n_layer: 48,
        n_head: 25,
        n_embd: 1600,
        n_positions: 1024,
        about: "GPT-2 XL, 1.56B parameters",
    },
    Preset {
        name: "tiny",
        n_layer: 2,
        n_head: 4,
        n_embd: 256,
        n_positions: 256,
        about: "2 layers of width 256 with GPT-2's vocabulary, for tests",
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

    pub fn config(&self) -> Config {
        Config {
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            n_positions: self.n_positions,
            ..Config::gpt2_small()
        }
    }
}

/// Weights drawn from a seed, tensor by tensor, on demand.
pub struct SyntheticSource {
    pub config: Config,
    pub seed: u64,
}

impl SyntheticSource {
    pub fn new(config: Config, seed: u64) -> Self {
        SyntheticSource { config, seed }
    }

    /// The f32 values of one tensor.
    pub fn values(&self, name: &str, len: usize) -> Vec<f32> {
        let init = init_for(name, self.config.n_layer);
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
        name != "lm_head.weight" || !self.config.tie_word_embeddings
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

//! Synthetic models: the real architectures and shapes, weights drawn from a seed.
//!
//! The weights follow transformers' initialisation (`_init_weights`). GPT-2: every
//! matrix and embedding ~ N(0, 0.02), the residual projections (`c_proj`) ~
//! N(0, 0.02 / sqrt(2 * n_layer)), biases 0, LayerNorm weights 1. The Llama architectures:
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
use crate::model::arch::ModelConfig;
use crate::model::source::weights::TensorSource;

/// The default seed of synthetic models.
pub const DEFAULT_SEED: u64 = 0x9e2_2024;

const CHUNK: usize = 1 << 16;

/// A named synthetic model (`synthetic:NAME`): an architecture's published shapes.
/// Each architecture lists its own (`Architecture::presets`).
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub build: fn() -> ModelConfig,
}

impl PartialEq for Preset {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Every synthetic preset, architecture by architecture.
pub fn presets() -> impl Iterator<Item = &'static Preset> {
    crate::model::arch::ARCHITECTURES
        .iter()
        .flat_map(|a| a.presets.iter())
}

impl Preset {
    pub fn find(name: &str) -> Result<Preset, InputError> {
        presets().copied().find(|p| p.name == name).ok_or_else(|| {
            InputError::new(format!(
                "unknown synthetic model '{name}'; valid: {}",
                presets()
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

/// How a synthetic tensor is drawn (each architecture says, as transformers initialises
/// it: `ArchConfig::init`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Const(f32),
    /// N(0, std).
    Normal(f64),
}

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
        match self.config.init(name) {
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
        // The Llama architectures', as the model cards and transformers' num_parameters() give
        // them (tied heads counted once).
        assert_eq!(count("smollm2-135m"), 134_515_008);
        assert_eq!(count("qwen2.5-0.5b"), 494_032_768);
        assert_eq!(count("qwen3-0.6b"), 596_049_920);
        assert_eq!(count("llama-3.2-1b"), 1_235_814_400);
        assert_eq!(count("tinyllama-1.1b"), 1_100_048_384);
        assert_eq!(count("mistral-7b"), 7_241_732_096);
        // Gemma 3 and the mixtures of experts, as transformers' models count them.
        assert_eq!(count("gemma-3-270m"), 268_098_176);
        assert_eq!(count("gemma-3-1b"), 999_885_952);
        assert_eq!(count("olmoe-1b-7b"), 6_919_161_856);
        assert_eq!(count("qwen3-30b-a3b"), 30_532_122_624);
        assert_eq!(count("mixtral-8x7b"), 46_702_792_704);
        assert_eq!(count("phi-3-mini-4k"), 3_821_079_552);
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

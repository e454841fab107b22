//! quantbench's GPT-2 computes what Hugging Face transformers computes.
//!
//! The fixtures come from scripts/make_reference.py (transformers, f32, eager attention):
//! two small random models saved in the two layouts found in the wild, and quantbench's
//! own synthetic:tiny exported and run through transformers. For each of a few prompts:
//! the prompt's token ids, 20 greedy tokens and the last prompt position's logits.

mod common;

use candle_core::Device;
use common::reference::{fixtures, Reference};
use quantbench::model::{self, ModelSource, ModelSpec};
use quantbench::precision::{Precision, Quantization};

/// The fixture models carry no tokenizer files: they use the built-in GPT-2 BPE.
fn source(name: &str) -> ModelSource {
    if name.starts_with("synthetic:") {
        return model::resolve(&name.parse().unwrap()).unwrap();
    }
    let mut s = model::resolve(&ModelSpec::Local(fixtures().join(name))).unwrap();
    s.tokenizer_dir = None;
    s
}

fn check_f32_matches_transformers(name: &str) {
    let m = model::load(
        &source(name),
        Quantization::new(Precision::F32),
        &Device::Cpu,
    )
    .unwrap();
    Reference::load("reference").check_f32_matches(name, &m);
}

#[test]
fn hub_layout_matches_transformers_at_f32() {
    check_f32_matches_transformers("gpt2-hub-layout");
}

#[test]
fn save_pretrained_layout_matches_transformers_at_f32() {
    check_f32_matches_transformers("gpt2-pretrained-layout");
}

#[test]
fn synthetic_tiny_matches_transformers_at_f32() {
    check_f32_matches_transformers("synthetic:tiny");
}

/// q8_0 stores each block of 32 weights as int8 times one f16 scale, and candle's q8_0
/// kernel rounds the activations to q8_0 blocks too: each operand of every product
/// carries a relative rounding error of about 0.5% (half a step of absmax/127 over a
/// block of roughly Gaussian values). Those errors are independent, so a dot product's
/// error grows like sqrt(n) while its value does too: about 0.7% per layer, compounded
/// through the blocks. The fixture model is deliberately "hot" (weights of std 0.15,
/// so logits spread widely), which amplifies perturbations layer to layer. We require the
/// error's L2 norm to stay under 5% of the logits' deviation from their mean (measured:
/// 1.9% to 2.9%), no logit to move by more than 5% of the logits' range, and the top
/// token to stay the same wherever transformers' top-2 margin exceeds the largest move.
#[test]
fn q8_0_logits_stay_close_to_f32() {
    let r = Reference::load("reference");
    for name in ["gpt2-hub-layout", "synthetic:tiny"] {
        let q8 = model::load(
            &source(name),
            Quantization::new(Precision::Q8_0),
            &Device::Cpu,
        )
        .unwrap();
        r.check_q8_0_close(name, &q8);
    }
}

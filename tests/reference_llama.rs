//! quantbench's Llama family computes what Hugging Face transformers computes.
//!
//! The fixtures come from `scripts/make_reference.py --only llama` (transformers, f32,
//! eager attention): five tiny random models saved by save_pretrained, each with its own
//! byte-level BPE tokenizer.json, covering grouped-query attention, llama3 and linear rope
//! scaling, both config forms, a bf16 checkpoint, Llama's attention and MLP biases,
//! Qwen2's q/k/v biases, Mistral's sliding window, Qwen3's q/k norms and explicit
//! head_dim, tied and untied heads. For each of a few prompts: the prompt's token ids, 20
//! greedy tokens and the last prompt position's logits.

mod common;

use candle_core::Device;
use common::reference::{fixtures, Reference};
use quantbench::model::{self, ModelSource, ModelSpec};
use quantbench::precision::{Precision, Quantization};

fn source(name: &str) -> ModelSource {
    if name.starts_with("synthetic:") {
        return model::resolve(&name.parse().unwrap()).unwrap();
    }
    model::resolve(&ModelSpec::Local(
        fixtures().join("llama-family").join(name),
    ))
    .unwrap()
}

fn check_f32_matches_transformers(name: &str, architecture: &str) {
    let src = source(name);
    assert_eq!(src.config.architecture(), architecture, "{name}");
    let m = model::load(&src, Quantization::new(Precision::F32), &Device::Cpu).unwrap();
    Reference::load("reference-llama").check_f32_matches(name, &m);
}

#[test]
fn llama_with_gqa_and_llama3_rope_matches_transformers_at_f32() {
    check_f32_matches_transformers("llama-gqa-llama3", "llama");
}

#[test]
fn bf16_llama_with_biases_linear_rope_and_the_older_config_form_matches_at_f32() {
    let src = source("llama-bf16-linear");
    assert_eq!(
        src.stored_dtypes().unwrap(),
        Some(vec!["bf16".to_string()]),
        "the checkpoint is stored in bf16"
    );
    check_f32_matches_transformers("llama-bf16-linear", "llama");
}

#[test]
fn qwen2_with_biases_and_a_tied_head_matches_transformers_at_f32() {
    check_f32_matches_transformers("qwen2-bias-tied", "qwen2");
}

#[test]
fn mistral_past_its_sliding_window_matches_transformers_at_f32() {
    check_f32_matches_transformers("mistral-window", "mistral");
}

#[test]
fn qwen3_with_qk_norms_and_its_own_head_dim_matches_transformers_at_f32() {
    check_f32_matches_transformers("qwen3-qknorm", "qwen3");
}

/// The synthetic presets' path: quantbench's synthetic:tiny-llama (weights from its seed,
/// GPT-2's tokenizer) exported and run through transformers.
#[test]
fn synthetic_tiny_llama_matches_transformers_at_f32() {
    check_f32_matches_transformers("synthetic:tiny-llama", "llama");
}

/// The same bound as GPT-2's q8_0 test (tests/reference.rs explains it): the error's L2
/// norm under 5% of the logits' deviation from their mean, no logit moved by more than 5%
/// of their range, and a clear top-1 kept.
#[test]
fn q8_0_logits_stay_close_to_f32() {
    let r = Reference::load("reference-llama");
    for name in [
        "llama-gqa-llama3",
        "llama-bf16-linear",
        "qwen2-bias-tied",
        "mistral-window",
        "qwen3-qknorm",
        "synthetic:tiny-llama",
    ] {
        let q8 = model::load(
            &source(name),
            Quantization::new(Precision::Q8_0),
            &Device::Cpu,
        )
        .unwrap();
        r.check_q8_0_close(name, &q8);
    }
}

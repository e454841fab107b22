//! quantbench's Llama family computes what Hugging Face transformers computes.
//!
//! The fixtures come from `scripts/make_reference.py --only llama` (transformers, f32,
//! eager attention): five tiny random models saved by save_pretrained, each with its own
//! byte-level BPE tokenizer.json, covering grouped-query attention, llama3 and linear rope
//! scaling, both config forms, a bf16 checkpoint, Llama's attention and MLP biases,
//! Qwen2's q/k/v biases, Mistral's sliding window, Qwen3's q/k norms and explicit
//! head_dim, tied and untied heads. For each of a few prompts: the prompt's token ids, 20
//! greedy tokens and the last prompt position's logits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use quantbench::generate::{generate, GenerateOptions, NoObserver};
use quantbench::model::{self, Cache, LoadedModel, ModelSource, ModelSpec};
use quantbench::precision::{Precision, Quantization};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    new_tokens: usize,
    models: HashMap<String, Vec<PromptRef>>,
}

#[derive(Deserialize)]
struct PromptRef {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_new_ids: Vec<u32>,
    min_top2_margin: f64,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference-llama.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference_logits(model: &str, i: usize) -> Vec<f32> {
    let all = candle_core::safetensors::load(
        fixtures().join("reference-llama-logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    all[&format!("{model}/{i}")].to_vec1::<f32>().unwrap()
}

fn source(name: &str) -> ModelSource {
    if name.starts_with("synthetic:") {
        return model::resolve(&name.parse().unwrap()).unwrap();
    }
    model::resolve(&ModelSpec::Local(
        fixtures().join("llama-family").join(name),
    ))
    .unwrap()
}

fn last_logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let mut cache = Cache::new(m.config(), ids.len());
    m.model
        .forward_last(ids, &mut cache)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_f32_matches_transformers(name: &str, architecture: &str) {
    let r = reference();
    let src = source(name);
    assert_eq!(src.config.architecture(), architecture, "{name}");
    let m = model::load(&src, Quantization::new(Precision::F32), &Device::Cpu).unwrap();
    for (i, p) in r.models[name].iter().enumerate() {
        let ids = m.tokenizer.encode(&p.prompt).unwrap();
        assert_eq!(ids, p.prompt_ids, "{name}: tokenization of {:?}", p.prompt);
        let diff = max_abs_diff(&last_logits(&m, &ids), &reference_logits(name, i));
        eprintln!("{name} prompt {i}: max |logit difference| {diff:.2e}");
        assert!(
            diff <= 1e-4,
            "{name} prompt {i}: max |logit difference| {diff} > 1e-4"
        );
        let g = generate(
            &m,
            &ids,
            GenerateOptions::exactly(r.new_tokens),
            &mut NoObserver,
        )
        .unwrap();
        assert_eq!(
            g.new_ids, p.greedy_new_ids,
            "{name} prompt {i}: greedy tokens differ from transformers' (smallest top-2 margin {})",
            p.min_top2_margin
        );
    }
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
    let r = reference();
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
        for (i, p) in r.models[name].iter().enumerate() {
            let want = reference_logits(name, i);
            let got = last_logits(&q8, &p.prompt_ids);
            let mean = want.iter().sum::<f32>() / want.len() as f32;
            let spread = want.iter().map(|x| (x - mean).powi(2)).sum::<f32>().sqrt();
            let err = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt();
            let range = want.iter().cloned().fold(f32::MIN, f32::max)
                - want.iter().cloned().fold(f32::MAX, f32::min);
            let max = max_abs_diff(&want, &got);
            eprintln!(
                "{name} prompt {i}: q8_0 relative L2 error {:.4}, max |diff| {max:.5} of range {range:.3}",
                err / spread
            );
            assert!(err / spread < 0.05, "{name} prompt {i}: {}", err / spread);
            assert!(max < 0.05 * range, "{name} prompt {i}: {max} vs {range}");
            let top = |v: &[f32]| {
                let mut idx: Vec<usize> = (0..v.len()).collect();
                idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
                (idx[0], v[idx[0]] - v[idx[1]])
            };
            let (want_top, margin) = top(&want);
            if margin > 2.0 * max {
                assert_eq!(top(&got).0, want_top, "{name} prompt {i}: top-1 changed");
            }
        }
    }
}

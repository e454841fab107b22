//! quantbench's GPT-2 computes what Hugging Face transformers computes.
//!
//! The fixtures come from scripts/make_reference.py (transformers, f32, eager attention):
//! two small random models saved in the two layouts found in the wild, and quantbench's
//! own synthetic:tiny exported and run through transformers. For each of a few prompts:
//! the prompt's token ids, 20 greedy tokens and the last prompt position's logits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use quantbench::generate::{generate, GenerateOptions, NoObserver};
use quantbench::model::gpt2::Cache;
use quantbench::model::{self, LoadedModel, ModelSource, ModelSpec};
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
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference_logits(model: &str, i: usize) -> Vec<f32> {
    let all = candle_core::safetensors::load(
        fixtures().join("reference-logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    all[&format!("{model}/{i}")].to_vec1::<f32>().unwrap()
}

/// The fixture models carry no tokenizer files: they use the built-in GPT-2 BPE.
fn source(name: &str) -> ModelSource {
    if name.starts_with("synthetic:") {
        return model::resolve(&name.parse().unwrap()).unwrap();
    }
    let mut s = model::resolve(&ModelSpec::Local(fixtures().join(name))).unwrap();
    s.tokenizer_dir = None;
    s
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

fn check_f32_matches_transformers(name: &str) {
    let r = reference();
    let m = model::load(
        &source(name),
        Quantization::new(Precision::F32),
        &Device::Cpu,
    )
    .unwrap();
    for (i, p) in r.models[name].iter().enumerate() {
        let ids = m.tokenizer.encode(&p.prompt).unwrap();
        assert_eq!(ids, p.prompt_ids, "{name}: tokenization of {:?}", p.prompt);
        let diff = max_abs_diff(&last_logits(&m, &ids), &reference_logits(name, i));
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
    let r = reference();
    for name in ["gpt2-hub-layout", "synthetic:tiny"] {
        let src = source(name);
        let q8 = model::load(&src, Quantization::new(Precision::Q8_0), &Device::Cpu).unwrap();
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
            eprintln!("{name} prompt {i}: q8_0 relative L2 error {:.4}, max |diff| {max:.5} of range {range:.3}", err / spread);
            assert!(
                err / spread < 0.05,
                "{name} prompt {i}: q8_0 relative L2 error {}",
                err / spread
            );
            assert!(
                max < 0.05 * range,
                "{name} prompt {i}: max |diff| {max} vs range {range}"
            );
            let top = |v: &[f32]| {
                let mut idx: Vec<usize> = (0..v.len()).collect();
                idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
                (idx[0], v[idx[0]] - v[idx[1]])
            };
            let (want_top, margin) = top(&want);
            if margin > 2.0 * max {
                assert_eq!(
                    top(&got).0,
                    want_top,
                    "{name} prompt {i}: q8_0 changed a clear top-1"
                );
            }
        }
    }
}

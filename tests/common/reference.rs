//! What the transformers-equivalence tests share: reading the fixtures that
//! scripts/make_reference.py writes (prompts, greedy tokens, last-position logits) and
//! the two checks every architecture must pass against them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use quantbench::model::{Cache, LoadedModel};
use quantbench::run::generate::{generate, GenerateOptions, NoObserver};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Reference {
    pub new_tokens: usize,
    pub models: HashMap<String, Vec<PromptRef>>,
    /// The safetensors file beside the JSON that holds the logits ("MODEL/PROMPT_INDEX").
    #[serde(skip)]
    logits_file: PathBuf,
}

#[derive(Deserialize)]
pub struct PromptRef {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_new_ids: Vec<u32>,
    pub min_top2_margin: f64,
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

impl Reference {
    /// `name`.json and `name`-logits.safetensors under tests/fixtures.
    pub fn load(name: &str) -> Reference {
        let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap();
        let mut r: Reference = serde_json::from_str(&text).unwrap();
        r.logits_file = fixtures().join(format!("{name}-logits.safetensors"));
        r
    }

    /// transformers' logits at the last prompt position of `model`'s prompt `i`.
    pub fn logits(&self, model: &str, i: usize) -> Vec<f32> {
        let all = candle_core::safetensors::load(&self.logits_file, &Device::Cpu).unwrap();
        all[&format!("{model}/{i}")].to_vec1::<f32>().unwrap()
    }

    /// At f32: each prompt tokenizes to transformers' ids, the last position's logits
    /// agree within 1e-4, and the greedy tokens are transformers'.
    pub fn check_f32_matches(&self, name: &str, m: &LoadedModel) {
        for (i, p) in self.models[name].iter().enumerate() {
            let ids = m.tokenizer.encode(&p.prompt).unwrap();
            assert_eq!(ids, p.prompt_ids, "{name}: tokenization of {:?}", p.prompt);
            let diff = max_abs_diff(&last_logits(m, &ids), &self.logits(name, i));
            eprintln!("{name} prompt {i}: max |logit difference| {diff:.2e}");
            assert!(
                diff <= 1e-4,
                "{name} prompt {i}: max |logit difference| {diff} > 1e-4"
            );
            let g = generate(
                m,
                &ids,
                GenerateOptions::exactly(self.new_tokens),
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

    /// A q8_0 model's logits against transformers' f32 ones, for every prompt of `name`:
    /// the error's L2 norm under 5% of the logits' deviation from their mean, no logit
    /// moved by more than 5% of their range, and a clear top-1 kept (tests/reference.rs
    /// explains the bound).
    pub fn check_q8_0_close(&self, name: &str, q8: &LoadedModel) {
        for (i, p) in self.models[name].iter().enumerate() {
            let want = self.logits(name, i);
            let got = last_logits(q8, &p.prompt_ids);
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

/// Logits `[vocab]` at the last position of `ids`, from a fresh cache.
pub fn last_logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let mut cache = Cache::new(m.config(), ids.len());
    m.model
        .forward_last(ids, &mut cache)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

//! The real models' llama.cpp fixtures (tests/fixtures/real/*-llama-cpp.json, from
//! scripts/make_real_reference.py) and the checks both real-model tests make with them.

use quantbench::model::{Cache, LoadedModel};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct LlamaCpp {
    pub model_sha256: String,
    pub paragraphs: Vec<Text>,
    pub prompts: Vec<Prompt>,
}

#[derive(Deserialize)]
pub struct Text {
    pub text: String,
    pub ids: Vec<u32>,
}

#[derive(Deserialize)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    pub greedy_f32_kv: Vec<u32>,
    pub greedy_f16_kv: Vec<u32>,
}

/// The fixture `tests/fixtures/real/NAME`.
pub fn llama_cpp(name: &str) -> LlamaCpp {
    let path = super::reference::fixtures().join("real").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Whether the real-model tests are skipped (QUANTBENCH_SKIP_REAL_MODEL=1, said on
/// stderr); otherwise the files are fetched (a failure to fetch panics, saying why).
pub fn skipped() -> bool {
    if std::env::var("QUANTBENCH_SKIP_REAL_MODEL").is_ok_and(|v| v == "1") {
        eprintln!("skipped: QUANTBENCH_SKIP_REAL_MODEL=1");
        return true;
    }
    if let Err(e) = super::fetch_real_models() {
        panic!("{e}");
    }
    false
}

/// Teacher-forced on llama.cpp's own greedy continuations (its f32 and f16 caches): at
/// each position quantbench's top token is llama.cpp's, or llama.cpp's is within
/// `near_tie` logits of it (asserted). Returns (exact, total).
pub fn teacher_forced(m: &LoadedModel, r: &LlamaCpp, near_tie: f32) -> (usize, usize) {
    let (mut exact, mut total) = (0, 0);
    for p in &r.prompts {
        for (kv, seq) in [("f32", &p.greedy_f32_kv), ("f16", &p.greedy_f16_kv)] {
            let ids: Vec<u32> = p.ids.iter().chain(seq.iter()).copied().collect();
            let mut cache = Cache::new(m.config(), ids.len());
            let logits: Vec<Vec<f32>> = m
                .model
                .forward_all(&ids, &mut cache)
                .unwrap()
                .to_vec2()
                .unwrap();
            for (i, &want) in seq.iter().enumerate() {
                let row = &logits[p.ids.len() - 1 + i];
                let (top, top_logit) =
                    row.iter()
                        .enumerate()
                        .fold((0, f32::MIN), |b, (j, &v)| if v > b.1 { (j, v) } else { b });
                total += 1;
                if top as u32 == want {
                    exact += 1;
                    continue;
                }
                let gap = top_logit - row[want as usize];
                eprintln!(
                    "{:?} ({kv} KV) position {i}: llama.cpp {want}, quantbench {top}, {gap:.3} logits apart",
                    p.text
                );
                assert!(
                    gap < near_tie,
                    "{:?} ({kv} KV) position {i}: llama.cpp chose {want}, {gap} logits below quantbench's {top}",
                    p.text
                );
            }
        }
    }
    eprintln!("{exact} of {total} greedy choices exactly llama.cpp's");
    (exact, total)
}

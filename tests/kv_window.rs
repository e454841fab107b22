//! Sliding-window layers keep only their window: the cache of a Mistral or a Gemma 3
//! layer that slides drops the positions no query will see again, and every logit is
//! what a cache that keeps every position gives, prompt chunks and decode steps alike,
//! far past the window; the bytes held stay bounded by the window while a cache of the
//! global layers grows; a workload test shallower than the shared filled context still
//! gets its context (filled afresh where the window dropped it).

mod common;

use candle_core::Device;
use common::reference::fixtures;
use quantbench::model::{self, Cache, LoadedModel, ModelSpec};
use quantbench::precision::{Precision, Quantization};

fn load(spec: &str, p: Precision) -> LoadedModel {
    let src = if spec.starts_with("synthetic:") {
        model::resolve(&spec.parse().unwrap()).unwrap()
    } else {
        model::resolve(&ModelSpec::Local(fixtures().join(spec))).unwrap()
    };
    model::load(&src, Quantization::new(p), &Device::Cpu).unwrap()
}

/// `steps` logits rows: a prompt in chunks of `chunk`, then one token at a time.
fn logits(m: &LoadedModel, mut cache: Cache, ids: &[u32], chunk: usize) -> (Vec<Vec<f32>>, usize) {
    let mut out = Vec::new();
    let prompt = ids.len() / 2;
    for c in ids[..prompt].chunks(chunk) {
        out.push(
            m.model
                .forward_last(c, &mut cache)
                .unwrap()
                .to_vec1()
                .unwrap(),
        );
    }
    for &t in &ids[prompt..] {
        out.push(
            m.model
                .forward_last(&[t], &mut cache)
                .unwrap()
                .to_vec1()
                .unwrap(),
        );
    }
    (out, cache.allocated_bytes())
}

#[test]
fn an_evicting_cache_gives_the_logits_of_one_that_keeps_everything() {
    for (spec, p) in [
        ("families/gemma3-window", Precision::F32),
        ("llama-family/mistral-window", Precision::Q8_0),
        ("synthetic:tiny-gemma3", Precision::F32),
    ] {
        let m = load(spec, p);
        let n = 200.min(m.config().context_length());
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % 500).collect();
        let (evicting, held) = logits(&m, Cache::new(m.config(), n), &ids, 37);
        let (whole, all) = logits(&m, Cache::unbounded(m.config(), n), &ids, 37);
        for (i, (a, b)) in evicting.iter().zip(&whole).enumerate() {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{spec}: row {i} differs by {diff}");
        }
        assert!(
            held < all,
            "{spec}: the evicting cache holds {held} bytes, the whole one {all}"
        );
        eprintln!("{spec}: {n} positions, evicting cache {held} bytes, keeping everything {all}");
    }
}

/// A workload whose tests are shallower than the shared context still runs each test
/// from its own depth (a context filled afresh where the window dropped it), and the
/// test's KV bytes count the sliding layers up to their window.
#[test]
fn workload_tests_below_a_deep_context_run_on_a_sliding_model() {
    use quantbench::probe::Probes;
    use quantbench::run::runner::{self, Silent};
    let toml = "name = \"w\"\nmodel = \"synthetic:tiny-gemma3\"\nprecisions = [\"q8_0\"]\nnew_tokens = 4\nwarmup = 0\nrepeats = 1\n[[workload]]\nprompt_tokens = [0]\nnew_tokens = [8]\ndepth = [0, 100, 200]\n[quality]\nenabled = false\n";
    let scenario = quantbench::Scenario::parse(toml, "t.toml").unwrap();
    let prepared = runner::prepare(&scenario, None).unwrap();
    let run = runner::run(&prepared, &Probes::available(), &mut Silent).unwrap();
    let v = &run.variants[0];
    assert_eq!(v.tests.len(), 3);
    let full_per_token = run.model.kv_cache_bytes_per_token.unwrap() as u64;
    for t in &v.tests {
        assert_eq!(t.error, None, "{}", t.name);
        assert_eq!(t.generated_token_ids.len(), 8, "{}", t.name);
        // 5 of 6 layers slide (window 8): the bytes are far below every layer whole.
        assert!(t.kv_cache_bytes <= full_per_token * t.positions as u64);
    }
    let deep = &v.tests[2];
    assert!(deep.kv_cache_bytes < full_per_token * deep.positions as u64 / 2);
    assert_eq!(run.model.kv_cache_windows.iter().flatten().count(), 5);
}

//! A GPT-2 quantized by quantbench at bitsandbytes' formats generates what transformers +
//! bitsandbytes generate on the CPU, and weighs what transformers says it weighs.
//!
//! The fixture (scripts/make_bnb_reference.py): a tiny random GPT-2 (width 128, rows of
//! 128 and 256, so the 4-bit blocks and the kernels' paths are the ones GPT-2 small
//! takes) loaded by transformers 5.23 with bitsandbytes 0.50.2 at nf4, fp4, nf4 with
//! double quantization (compute dtype f32) and LLM.int8, everything else in f32
//! (`dtype=torch.float32`), eval mode: 12 greedy tokens and the last prompt position's
//! logits for two prompts of ids, and `get_memory_footprint()`.
//!
//! quantbench runs the same formats with policy `linear` (bitsandbytes replaces the
//! Conv1D layers only) and rest f32.

mod common;

use candle_core::Device;
use common::reference::{fixtures, last_logits};
use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Policy, Precision, Quantization, RestDtype};
use quantbench::run::generate::{generate, GenerateOptions, NoObserver};
use serde_json::Value;

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("bnb/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn logits(precision: &str, prompt: usize) -> Vec<f32> {
    tensor(&format!("model.{precision}.{prompt}.logits"))
}

fn tensor(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join("bnb/formats.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The bound on the last-position logits, per format, and why:
/// - f32 and the 4-bit formats: the weights are bitsandbytes' dequantized values to the
///   bit (tests/formats.rs), so only the order of f32 sums differs: measured at most
///   7e-7 of the logits' scale; the bound is 1e-5.
/// - LLM.int8: the same, except that the activations are quantized to int8 per token
///   from values that differ in their last bits, so an activation on a rounding tie can
///   take the neighbouring code (one step, 1/127 of its token's scale) and move a logit
///   by up to about a thousandth of the scale; measured 3e-7 here (no tie hit), bound
///   1e-3.
fn bound(precision: &str, scale: f32) -> f32 {
    match precision {
        "llm_int8" => 1e-3 * scale,
        _ => 1e-5 * scale,
    }
}

/// Every precision of `entries` (reference.json's per-precision records for one model)
/// against quantbench on `dir`; `logits_of(precision, prompt)` names the fixture tensor.
fn check_model(
    dir: &std::path::Path,
    entries: &Value,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    logits_of: impl Fn(&str, usize) -> String,
) {
    let mut source = model::resolve(&ModelSpec::Local(dir.to_path_buf())).unwrap();
    if !dir.join("tokenizer.json").exists() {
        source.tokenizer_dir = None;
    }
    for (name, entry) in entries.as_object().unwrap() {
        let p: Precision = name.parse().unwrap();
        let q = Quantization::new(p)
            .with_policy(Policy::Linear)
            .with_rest(RestDtype::F32);
        let m = model::load(&source, q, &Device::Cpu).unwrap();
        let what = format!("{} {name}", dir.display());

        // the footprint as transformers reports it
        let tf = m
            .footprint
            .transformers(m.config().transformers_buffer_bytes(q.rest.dtype()))
            .unwrap();
        assert_eq!(
            tf.current_bytes,
            entry["footprint"].as_u64().unwrap(),
            "{what}: transformers' get_memory_footprint()"
        );

        for (i, ids) in prompts.iter().enumerate() {
            let want = tensor(&logits_of(name, i));
            let got = last_logits(&m, ids);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("{what} prompt {i}: max |Δlogit| {worst:e} (logits up to {scale:.3})");
            assert!(
                worst <= bound(name, scale),
                "{what} prompt {i}: logits differ by {worst} > {}",
                bound(name, scale)
            );
            let g = generate(
                &m,
                ids,
                GenerateOptions::exactly(new_tokens),
                &mut NoObserver,
            )
            .unwrap();
            let greedy: Vec<u32> = serde_json::from_value(entry["greedy"][i].clone()).unwrap();
            assert_eq!(g.new_ids, greedy, "{what} prompt {i}: greedy tokens");
        }
    }
}

#[test]
fn bitsandbytes_formats_generate_what_transformers_and_bitsandbytes_generate() {
    let r = reference();
    let prompts: Vec<Vec<u32>> = serde_json::from_value(r["prompts"].clone()).unwrap();
    let new_tokens = r["new_tokens"].as_u64().unwrap() as usize;
    check_model(
        &fixtures().join("bnb/gpt2-bnb"),
        &r["precisions"],
        &prompts,
        new_tokens,
        |p, i| format!("model.{p}.{i}.logits"),
    );
}

/// The same on two Llama-family models (tests/fixtures/llama-family): GQA with llama3
/// rope and an untied head (never quantized, as bitsandbytes leaves the output
/// embedding), and Qwen2 with q/k/v biases and a tied head.
#[test]
fn bitsandbytes_formats_on_the_llama_family() {
    let r = reference();
    let prompts: Vec<Vec<u32>> = serde_json::from_value(r["prompts"].clone()).unwrap();
    let new_tokens = r["new_tokens"].as_u64().unwrap() as usize;
    for name in ["llama-gqa-llama3", "qwen2-bias-tied"] {
        check_model(
            &fixtures().join("llama-family").join(name),
            &r["llama"][name],
            &prompts,
            new_tokens,
            |p, i| format!("llama.{name}.{p}.{i}.logits"),
        );
    }
}

/// The formats change what the model computes (the test above would pass trivially if
/// they did not): nf4 and fp4 pick different tokens from f32 on this model.
#[test]
fn the_reference_tells_the_formats_apart() {
    let r = reference();
    let g = |p: &str| r["precisions"][p]["greedy"].clone();
    assert_ne!(g("f32"), g("fp4"));
    assert_ne!(g("f32"), g("nf4"));
    assert_ne!(logits("f32", 0), logits("llm_int8", 0));
}

/// distilgpt2's shapes at f32, f16 and LLM.int8 (rest f16): the footprint quantbench
/// records as transformers counts it equals what transformers' get_memory_footprint()
/// reported for a model of those shapes — 5.23 (scripts/make_bnb_reference.py, in
/// reference.json) and 4.46.3, whose GPT-2 still registered a 1024² boolean mask and a
/// scalar per layer (run with the same script's model under
/// `pip install --target DIR transformers==4.46.3 tokenizers==0.20.3
/// huggingface-hub==0.26.5`: f32 333,941,784 B, f16 170,116,620 B; 4.46.3 cannot load
/// bitsandbytes 0.50.2, so its LLM.int8 figure is the f16 one's buffers on the int8
/// parameters: 127,649,292 B, which is what the companion notebook printed for
/// DistilGPT-2 at INT8, as its FP32 and FP16 figures are the two above). And
/// quantbench's own bytes, which count what transformers leaves out.
#[test]
fn distilgpt2_footprint_as_transformers_counts_it() {
    let r = reference();
    let fp = &r["distilgpt2_footprint"];
    let source = model::resolve(&"synthetic:distilgpt2".parse().unwrap()).unwrap();
    for (p, rest, current, legacy, ours) in [
        (
            Precision::F32,
            RestDtype::F32,
            fp["f32"].as_u64().unwrap(),
            333_941_784u64,
            327_650_304usize,
        ),
        (
            Precision::F16,
            RestDtype::F16,
            fp["f16"].as_u64().unwrap(),
            170_116_620,
            163_825_152,
        ),
        (
            Precision::LlmInt8,
            RestDtype::F16,
            fp["llm_int8 (rest f16)"].as_u64().unwrap(),
            121_357_824 + 6 * (1024 * 1024 + 2),
            // + one f32 row scale per output row: 6 layers x (2304 + 768 + 3072 + 768)
            121_357_824 + 4 * 6 * (2304 + 768 + 3072 + 768),
        ),
    ] {
        let q = Quantization::new(p)
            .with_policy(Policy::Linear)
            .with_rest(rest);
        let m = model::load(&source, q, &Device::Cpu).unwrap();
        let tf = m
            .footprint
            .transformers(m.config().transformers_buffer_bytes(q.rest.dtype()))
            .unwrap();
        assert_eq!(
            tf.current_bytes, current,
            "{p}: as transformers 5.23 counts"
        );
        assert_eq!(
            tf.legacy_bytes,
            Some(legacy),
            "{p}: as transformers 4.46 counts"
        );
        assert_eq!(
            m.footprint.total_bytes(),
            ours,
            "{p}: quantbench's exact bytes"
        );
    }
}

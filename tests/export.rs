//! A synthetic model written in the Hugging Face layout loads back as the same model.

use candle_core::Device;
use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Precision, Quantization};
use quantbench::run::generate::{generate, GenerateOptions, NoObserver};

/// `quantbench export --model MODEL --out DIR`, which must succeed.
fn export(model: &str, dir: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args(["export", "--model", model, "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exported_synthetic_model_loads_back_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    export("synthetic:tiny", &dir);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["n_ctx"], 256, "llama.cpp's converter reads n_ctx");

    let q = Quantization::new(Precision::F32);
    let synth = model::load(
        &model::resolve(&"synthetic:tiny".parse().unwrap()).unwrap(),
        q,
        &Device::Cpu,
    )
    .unwrap();
    let disk = model::load(
        &model::resolve(&ModelSpec::Local(dir.clone())).unwrap(),
        q,
        &Device::Cpu,
    )
    .unwrap();
    assert!(!disk.synthetic && synth.synthetic);
    assert!(synth.name.contains("synthetic"), "{}", synth.name);
    assert_eq!(disk.footprint, synth.footprint);
    let ids = disk.tokenizer.encode("Once upon a time").unwrap();
    assert_eq!(ids, synth.tokenizer.encode("Once upon a time").unwrap());
    let a = generate(&synth, &ids, GenerateOptions::exactly(8), &mut NoObserver).unwrap();
    let b = generate(&disk, &ids, GenerateOptions::exactly(8), &mut NoObserver).unwrap();
    assert_eq!(a.new_ids, b.new_ids);
    assert_eq!(a.text, b.text);
}

/// A synthetic Llama-family model written in the Hugging Face layout (transformers'
/// `LlamaForCausalLM` keys and config, llama3 rope scaling in the older config form)
/// loads back as the same model: same bytes, same logits, same tokens.
#[test]
fn exported_synthetic_llama_loads_back_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-llama");
    export("synthetic:tiny-llama", &dir);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["num_key_value_heads"], 2);
    assert_eq!(cfg["rope_scaling"]["rope_type"], "llama3");
    assert!(std::fs::read_to_string(dir.join("README.md"))
        .unwrap()
        .contains("GPT-2's"));

    let q = Quantization::new(Precision::F32);
    let source = model::resolve(&"synthetic:tiny-llama".parse().unwrap()).unwrap();
    let synth = model::load(&source, q, &Device::Cpu).unwrap();
    let back = model::resolve(&ModelSpec::Local(dir.clone())).unwrap();
    assert_eq!(
        back.config, source.config,
        "config.json reads back the same"
    );
    let disk = model::load(&back, q, &Device::Cpu).unwrap();
    assert_eq!(disk.footprint, synth.footprint);
    let ids = disk.tokenizer.encode("Once upon a time").unwrap();
    assert_eq!(ids, synth.tokenizer.encode("Once upon a time").unwrap());
    let logits = |m: &model::LoadedModel| {
        let mut cache = model::Cache::new(m.config(), ids.len());
        m.model
            .forward_last(&ids, &mut cache)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&synth), logits(&disk), "bit-identical logits");
    let a = generate(&synth, &ids, GenerateOptions::exactly(8), &mut NoObserver).unwrap();
    let b = generate(&disk, &ids, GenerateOptions::exactly(8), &mut NoObserver).unwrap();
    assert_eq!(a.new_ids, b.new_ids);
}

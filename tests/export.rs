//! A synthetic model written in the Hugging Face layout loads back as the same model.

use candle_core::Device;
use quantbench::generate::{generate, GenerateOptions, NoObserver};
use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Precision, Quantization};

#[test]
fn exported_synthetic_model_loads_back_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args([
            "export",
            "--model",
            "synthetic:tiny",
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

//! quantbench's port of llama-quantize's tensor-type choice (`format::mix_plan`) gives,
//! tensor for tensor, the types of files llama-quantize made: the families' Q8_0,
//! MXFP4_MOE and IQ4_NL files (tests/fixtures/families, from F32 files), the tiny
//! Qwen3-MoE at MXFP4_MOE (tests/fixtures/llama-engine), a wider Llama at Q4_K_M
//! (tests/fixtures/gguf, rows of 256 so the k-quants stay k-quants), the GGUF fixtures at
//! Q8_0; and the real Gemma 3 270M Q4_K_M and SmolLM2 Q4_1 as they ship (fetched as the
//! real-model tests fetch them).

mod common;

use std::path::Path;

use quantbench::format::mix_plan::{plan, PlanModel, PlanTensor};
use quantbench::model::source::gguf::{GgufFile, Kv};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The file's own types against the plan for its general.file_type; the number of
/// quantized tensors compared.
fn check(path: &Path) -> usize {
    let f = GgufFile::open(path).unwrap();
    let arch = f.architecture().unwrap();
    let ftype = match f.metadata.get("general.file_type") {
        Some(candle_core::quantized::gguf_file::Value::U32(v)) => *v,
        other => panic!("{}: general.file_type {other:?}", path.display()),
    };
    let usize_of = |kv: Kv| f.kv_opt_usize(&arch, kv).unwrap();
    let model = PlanModel {
        has_imatrix: false,
        arch: arch.clone(),
        n_layer: usize_of(Kv::BlockCount).unwrap(),
        n_expert: usize_of(Kv::ExpertCount).unwrap_or(0),
        n_head: usize_of(Kv::HeadCount).unwrap(),
        n_head_kv: usize_of(Kv::HeadCountKv).unwrap_or_else(|| usize_of(Kv::HeadCount).unwrap()),
    };
    let tensors: Vec<PlanTensor> = f
        .order
        .iter()
        .map(|n| PlanTensor {
            name: n.clone(),
            ne: f.tensors[n].shape.iter().rev().copied().collect(),
        })
        .collect();
    let planned = plan(ftype, &model, &tensors).unwrap();
    let mut quantized = 0;
    for (t, want) in tensors.iter().zip(planned) {
        let stored = f.tensors[&t.name].dtype;
        match want {
            Some(ty) => {
                assert_eq!(stored, ty, "{}: {}", path.display(), t.name);
                quantized += 1;
            }
            None => assert!(
                stored.is_float(),
                "{}: {} kept as it is, but stored {stored}",
                path.display(),
                t.name
            ),
        }
    }
    quantized
}

#[test]
fn the_plan_is_llama_quantizes_on_the_fixtures() {
    let fam = fixtures().join("families");
    let mut files = vec![
        fixtures().join("gguf/llama-wide-q4_k_m.gguf"),
        fixtures().join("gguf/gpt2-q8_0.gguf"),
        fixtures().join("gguf/llama-gqa-llama3-q8_0.gguf"),
        fixtures().join("llama-engine/qwen3moe-tiny-MXFP4_MOE.gguf"),
        fam.join("gpt-oss-experts/model-mxfp4.gguf"),
        fam.join("gpt-oss-experts/model-iq4_nl.gguf"),
    ];
    for name in [
        "gemma3-window",
        "qwen3moe-experts",
        "mixtral-experts",
        "olmoe-experts",
        "phi3-longrope-short",
        "gpt-oss-experts",
    ] {
        files.push(fam.join(name).join("model-q8_0.gguf"));
    }
    for path in files {
        let n = check(&path);
        assert!(n >= 3, "{}: {n} quantized tensors", path.display());
    }
}

#[test]
fn the_plan_is_llama_quantizes_on_the_real_files() {
    if common::real::skipped() {
        return;
    }
    for name in ["gemma-3-270m", "smollm2-135m-instruct"] {
        let src = quantbench::model::resolve(&name.parse().unwrap()).unwrap();
        let path = &src.gguf().expect("a GGUF file").path;
        let n = check(path);
        eprintln!("{name}: {n} quantized tensors as planned");
        assert!(n > 20, "{name}: {n}");
    }
}

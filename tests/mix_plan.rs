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

/// The plan against llama-quantize's `--dry-run` (tests/fixtures/gguf/mix-plans.json,
/// `make_reference.py --only plans`): every file type llama-quantize makes from F32, with
/// and without an importance matrix, on fourteen models — the small F32 fixtures (rows
/// of 64: the fallbacks), and written ones with rows of 256 and the shapes the rules key
/// on (16 layers with 4 query heads a key/value head, Llama 2/3 70B's 80 layers, 8
/// experts, fused qkv) — tensor for tensor; and the file types it refuses (no fallback
/// for the rows) refused.
#[test]
fn the_plan_is_llama_quantizes_dry_run_for_every_file_type() {
    let text = std::fs::read_to_string(fixtures().join("gguf/mix-plans.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ftypes = want["ftypes"].as_object().unwrap();
    let (mut compared, mut failures) = (0, Vec::new());
    for (name, m) in want["models"].as_object().unwrap() {
        let u = |k: &str| m[k].as_u64().unwrap() as usize;
        let tensors: Vec<PlanTensor> = m["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| PlanTensor {
                name: t[0].as_str().unwrap().to_string(),
                ne: t[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect(),
            })
            .collect();
        for (kind, list) in m["plans"].as_object().unwrap() {
            let has_imatrix = kind.ends_with("+imatrix");
            let ftype = ftypes[&kind.trim_end_matches("+imatrix").to_uppercase()]
                .as_u64()
                .unwrap() as u32;
            let model = PlanModel {
                arch: m["arch"].as_str().unwrap().to_string(),
                n_layer: u("n_layer"),
                n_expert: u("n_expert"),
                n_head: u("n_head"),
                n_head_kv: u("n_head_kv"),
                has_imatrix,
            };
            let got = plan(ftype, &model, &tensors);
            compared += 1;
            let Some(i) = list.as_u64() else {
                if got.is_ok() {
                    failures.push(format!(
                        "{name} {kind}: llama-quantize refuses, the plan does not"
                    ));
                }
                continue;
            };
            let types: Vec<&str> = m["lists"][i as usize]
                .as_str()
                .unwrap()
                .split(',')
                .collect();
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    failures.push(format!("{name} {kind}: {e:#}"));
                    continue;
                }
            };
            for ((t, g), w) in tensors.iter().zip(&got).zip(&types) {
                let g = g.map_or("F32".to_string(), |g| g.name().to_uppercase());
                if g != *w {
                    failures.push(format!("{name} {kind}: {} is {w}, planned {g}", t.name));
                }
            }
        }
    }
    assert!(compared >= 14 * 2 * 30, "{compared} plans compared");
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}

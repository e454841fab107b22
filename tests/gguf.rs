//! GGUF files in and out, proven against llama.cpp's own converter and quantizer.
//!
//! The fixtures under tests/fixtures/gguf/ come from `scripts/make_reference.py --only
//! gguf`: the GPT-2 and Llama-family fixture models converted by llama.cpp's
//! convert_hf_to_gguf.py and quantized by llama-quantize, with what llama.cpp's reader
//! (gguf-py) counts per type, and sentencepiece's own ids for a SentencePiece tokenizer.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use common::reference::{fixtures, last_logits, max_abs_diff, Reference};
use quantbench::model::nn::Part;
use quantbench::model::source::gguf::{format_name, GgufFile};
use quantbench::model::write::gguf::{export_gguf, matrix_bytes};
use quantbench::model::{self, LoadedModel, ModelSource, ModelSpec};
use quantbench::precision::{Precision, Quantization};
use quantbench::run::generate::{generate, GenerateOptions, NoObserver};
use serde::Deserialize;

fn gguf_path(name: &str) -> PathBuf {
    fixtures().join("gguf").join(name)
}

fn source(path: &Path) -> ModelSource {
    model::resolve(&ModelSpec::Local(path.to_path_buf())).unwrap()
}

fn native(path: &Path) -> LoadedModel {
    model::load(
        &source(path),
        Quantization::new(Precision::Native),
        &Device::Cpu,
    )
    .unwrap()
}

#[derive(Deserialize)]
struct GgufReference {
    files: BTreeMap<String, FileRef>,
}

#[derive(Deserialize)]
struct FileRef {
    source: String,
    bytes_by_type: BTreeMap<String, TypeBytes>,
    #[serde(default)]
    tensor_types: BTreeMap<String, String>,
    #[serde(default)]
    sentencepiece_ids: BTreeMap<String, Vec<u32>>,
}

#[derive(Deserialize)]
struct TypeBytes {
    bytes: usize,
    tensors: usize,
}

fn reference() -> GgufReference {
    serde_json::from_str(&std::fs::read_to_string(gguf_path("reference-gguf.json")).unwrap())
        .unwrap()
}

/// quantbench's name for a type as gguf-py names it (Q4_K -> q4_k).
fn qb_format(gguf_py: &str) -> String {
    gguf_py.to_lowercase()
}

/// Every stored matrix's bytes, in the model's part order.
fn matrices(m: &LoadedModel) -> Vec<(String, Vec<u8>)> {
    m.model
        .parts()
        .into_iter()
        .filter_map(|(_, p)| match p {
            Part::Matrix(mx) => Some((mx.format(), matrix_bytes(mx).unwrap().0)),
            Part::Vector(_) => None,
        })
        .collect()
}

/// The F32 files llama.cpp's converter made compute what transformers computes: prompts
/// tokenize to transformers' ids with the tokenizer built from the GGUF metadata alone,
/// last-position logits within 1e-4, the same 20 greedy tokens.
#[test]
fn converted_f32_files_match_transformers() {
    let gpt2 = Reference::load("reference");
    let llama = Reference::load("reference-llama");
    for (file, r) in [
        ("gpt2-f32.gguf", &gpt2),
        ("llama-gqa-llama3-f32.gguf", &llama),
        ("llama-bf16-linear-f32.gguf", &llama),
        ("qwen2-bias-tied-f32.gguf", &llama),
        ("qwen3-qknorm-f32.gguf", &llama),
    ] {
        let want = &reference().files[file].source;
        let m = native(&gguf_path(file));
        assert!(
            m.tokenizer.name().starts_with("gguf gpt2 bpe"),
            "{}",
            m.tokenizer.name()
        );
        eprintln!("{file} ({want}):");
        r.check_f32_matches(want, &m);
        // `native` of an F32 file and `f32` from it are the same thing.
        let f32 = model::load(
            &source(&gguf_path(file)),
            Quantization::new(Precision::F32),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(matrices(&m), matrices(&f32), "{file}");
    }
}

/// The Q8_0 files' blocks are byte for byte quantbench's own q8_0 quantization of the same
/// F32 weights (candle's quantizer, which runs ggml's reference rounding), and the file
/// runs with transformers' greedy tokens.
#[test]
fn q8_0_blocks_are_byte_identical_to_llama_quantize() {
    for (q8, f32, model_ref, name) in [
        (
            "gpt2-q8_0.gguf",
            "gpt2-f32.gguf",
            "reference",
            "gpt2-pretrained-layout",
        ),
        (
            "llama-gqa-llama3-q8_0.gguf",
            "llama-gqa-llama3-f32.gguf",
            "reference-llama",
            "llama-gqa-llama3",
        ),
    ] {
        let q = GgufFile::open(&gguf_path(q8)).unwrap();
        let f = GgufFile::open(&gguf_path(f32)).unwrap();
        let mut compared = 0;
        for (tname, e) in &q.tensors {
            if e.dtype != quantbench::format::GgmlType::Q8_0 {
                continue;
            }
            let weights = f
                .qtensor(tname, &e.shape)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            let ours = quantbench::model::source::weights::quantize_rows(&weights, GgmlDType::Q8_0)
                .unwrap();
            assert_eq!(
                ours.data().unwrap().as_ref(),
                q.read_bytes(tname).unwrap().as_slice(),
                "{q8}: {tname} differs from quantbench's q8_0 of the same weights"
            );
            compared += 1;
        }
        assert!(compared >= 8, "{q8}: only {compared} q8_0 tensors");
        eprintln!("{q8}: {compared} q8_0 tensors byte-identical");
        // It runs, and keeps transformers' greedy tokens on these fixtures.
        let m = native(&gguf_path(q8));
        let r = Reference::load(model_ref);
        r.check_q8_0_close(name, &m);
    }
}

/// A Q4_K_M file (llama-quantize's q4_k / q6_k mix) runs as it is stored: every tensor
/// keeps its type, and the weight bytes by type are what llama.cpp's reader counts.
#[test]
fn a_q4_k_m_file_runs_with_llama_cpp_bytes_by_type() {
    let file = "llama-wide-q4_k_m.gguf";
    let r = &reference().files[file];
    let src = source(&gguf_path(file));
    assert_eq!(src.file_type().as_deref(), Some("MOSTLY_Q4_K_M"));
    let m = native(&gguf_path(file));
    let mut ours: BTreeMap<String, usize> = BTreeMap::new();
    for b in &m.footprint.by_format {
        *ours.entry(b.format.clone()).or_default() += b.bytes;
    }
    let theirs: BTreeMap<String, usize> = r
        .bytes_by_type
        .iter()
        .map(|(t, b)| (qb_format(t), b.bytes))
        .collect();
    assert_eq!(ours, theirs, "bytes by type");
    assert_eq!(
        m.footprint.total_bytes(),
        r.bytes_by_type.values().map(|b| b.bytes).sum::<usize>()
    );
    // Every matrix in the file's own type.
    let types: BTreeMap<String, usize> =
        r.tensor_types.values().fold(BTreeMap::new(), |mut acc, t| {
            if t != "F32" {
                *acc.entry(qb_format(t)).or_default() += 1;
            }
            acc
        });
    let mut ours_count: BTreeMap<String, usize> = BTreeMap::new();
    for (format, _) in matrices(&m) {
        *ours_count.entry(format).or_default() += 1;
    }
    assert_eq!(ours_count, types);
    assert!(r.bytes_by_type["Q6_K"].tensors >= 2 && r.bytes_by_type["Q4_K"].tensors >= 10);
    // It generates exactly the asked tokens, the same each time.
    let ids = m.tokenizer.encode("Once upon a time").unwrap();
    let a = generate(&m, &ids, GenerateOptions::exactly(16), &mut NoObserver).unwrap();
    let b = generate(&m, &ids, GenerateOptions::exactly(16), &mut NoObserver).unwrap();
    assert_eq!(a.new_ids.len(), 16);
    assert_eq!(a.new_ids, b.new_ids);
}

/// A SentencePiece tokenizer (tokenizer.ggml.model = llama) built from the metadata gives
/// sentencepiece's own ids, and decodes them back to the text.
#[test]
fn a_sentencepiece_tokenizer_from_gguf_matches_sentencepiece() {
    let file = "spm-tiny-f32.gguf";
    let r = &reference().files[file];
    let t = GgufFile::open(&gguf_path(file))
        .unwrap()
        .tokenizer()
        .unwrap();
    assert!(t.name().contains("sentencepiece"), "{}", t.name());
    assert!(r.sentencepiece_ids.len() >= 4);
    for (text, want) in &r.sentencepiece_ids {
        assert_eq!(&t.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(&t.decode(want).unwrap(), text, "decoding {text:?}");
    }
}

/// Export at a precision, load the file back as stored: the same blocks byte for byte as
/// loading the source at that precision, and the same greedy tokens; for GPT-2 and the
/// Llama family (llama3 rope written as llama.cpp's rope_freqs, GQA q/k rows permuted).
#[test]
fn gguf_export_round_trips_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(ModelSource, Vec<Precision>)> = vec![
        (
            model::resolve(&"synthetic:tiny".parse().unwrap()).unwrap(),
            vec![Precision::F32, Precision::Q8_0, Precision::Q4K],
        ),
        (
            model::resolve(&"synthetic:tiny-llama".parse().unwrap()).unwrap(),
            vec![Precision::F16, Precision::Q4_0, Precision::Q6K],
        ),
        (
            model::resolve(&ModelSpec::Local(
                fixtures().join("llama-family/llama-gqa-llama3"),
            ))
            .unwrap(),
            vec![Precision::Q8_0],
        ),
        (
            model::resolve(&ModelSpec::Local(
                fixtures().join("llama-family/qwen2-bias-tied"),
            ))
            .unwrap(),
            vec![Precision::Q5_0],
        ),
        (
            model::resolve(&"synthetic:tiny-gemma3".parse().unwrap()).unwrap(),
            vec![Precision::Q8_0],
        ),
        // Gemma's norms go out as llama.cpp's `1 + w` and come back as `w`.
        (
            model::resolve(&ModelSpec::Local(fixtures().join("families/gemma3-window"))).unwrap(),
            vec![Precision::F32, Precision::Q4_0],
        ),
        // Experts stacked and sliced again.
        (
            model::resolve(&ModelSpec::Local(
                fixtures().join("families/mixtral-experts"),
            ))
            .unwrap(),
            vec![Precision::Q8_0],
        ),
        (
            model::resolve(&ModelSpec::Local(
                fixtures().join("families/qwen3moe-experts"),
            ))
            .unwrap(),
            vec![Precision::Q4_0],
        ),
    ];
    for (src, precisions) in cases {
        for p in precisions {
            let out = tmp
                .path()
                .join(format!("{}-{p}.gguf", src.config.architecture()));
            let q = Quantization::new(p);
            export_gguf(&src, q, &out, true).unwrap();
            let direct = model::load(&src, q, &Device::Cpu).unwrap();
            let back = native(&out);
            assert_eq!(
                matrices(&back),
                matrices(&direct),
                "{} at {p}: weights differ after the round trip",
                src.display_name
            );
            assert_eq!(back.footprint.total_bytes(), direct.footprint.total_bytes());
            let ids: Vec<u32> = (1..9).collect();
            let a = generate(&direct, &ids, GenerateOptions::exactly(12), &mut NoObserver).unwrap();
            let b = generate(&back, &ids, GenerateOptions::exactly(12), &mut NoObserver).unwrap();
            assert_eq!(a.new_ids, b.new_ids, "{} at {p}", src.display_name);
            let diff = max_abs_diff(&last_logits(&direct, &ids), &last_logits(&back, &ids));
            assert!(
                diff < 1e-4,
                "{} at {p}: logits differ by {diff}",
                src.display_name
            );
        }
    }
}

/// A GGUF exported as stored (native) from a llama.cpp file holds the very same tensors,
/// byte for byte, and the file's own type label.
#[test]
fn a_native_export_of_a_llama_cpp_file_keeps_every_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let path = gguf_path("llama-wide-q4_k_m.gguf");
    let out = tmp.path().join("copy.gguf");
    export_gguf(
        &source(&path),
        Quantization::new(Precision::Native),
        &out,
        false,
    )
    .unwrap();
    let (a, b) = (
        GgufFile::open(&path).unwrap(),
        GgufFile::open(&out).unwrap(),
    );
    assert_eq!(a.file_type(), b.file_type());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, e) in &a.tensors {
        let f = &b.tensors[name];
        assert_eq!((e.dtype, &e.shape), (f.dtype, &f.shape), "{name}");
        assert_eq!(
            a.read_bytes(name).unwrap(),
            b.read_bytes(name).unwrap(),
            "{name}"
        );
    }
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.pre",
    ] {
        assert_eq!(
            format!("{:?}", a.metadata[key]),
            format!("{:?}", b.metadata[key]),
            "{key}"
        );
    }
}

/// From an already quantized file, another precision is made only when asked, and the
/// record says so; the quality pass has no f32 reference to measure against.
#[test]
fn requantizing_a_quantized_file_needs_asking() {
    let path = gguf_path("llama-wide-q4_k_m.gguf");
    let mut src = source(&path);
    assert!(src.is_prequantized());
    let e = model::load(&src, Quantization::new(Precision::Q8_0), &Device::Cpu)
        .err()
        .expect("refused");
    assert!(quantbench::is_input_error(&e));
    let msg = format!("{e:#}");
    assert!(
        msg.contains("--requantize") && msg.contains("MOSTLY_Q4_K_M"),
        "{msg}"
    );
    src.requantize = true;
    let m = model::load(&src, Quantization::new(Precision::Q8_0), &Device::Cpu).unwrap();
    assert!(m
        .footprint
        .by_format
        .iter()
        .all(|b| b.format == "q8_0" || b.format == "f32"));
    // A float file needs no asking.
    let f = source(&gguf_path("qwen3-qknorm-f32.gguf"));
    assert!(!f.is_prequantized());
    model::load(&f, Quantization::new(Precision::Q4_0), &Device::Cpu).unwrap();
    // `native` needs a file with stored types.
    let synth = model::resolve(&"synthetic:tiny".parse().unwrap()).unwrap();
    let e = model::load(&synth, Quantization::new(Precision::Native), &Device::Cpu)
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("not a GGUF file"), "{e:#}");
}

/// `quantbench run` on a GGUF file, 2 tokens, one repetition, into `out`; its results.json.
fn run_file(path: &Path, flags: &[&str], out: &Path) -> serde_json::Value {
    let mut args = vec!["run", "--model", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend([
        "--new-tokens",
        "2",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--quiet",
        "--out",
    ]);
    args.push(out.to_str().unwrap());
    let (code, _, err) = common::quantbench(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// A run of a Q4_K_M file at native records the file's type label, its size and the bytes
/// by type; --requantize variants are marked, and its quality reference says it is the
/// file dequantized; without --requantize the run says why there is no quality pass.
#[test]
fn a_run_records_what_the_file_is() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let path = gguf_path("llama-wide-q4_k_m.gguf");
    let rec = run_file(
        &path,
        &["--precisions", "native,q8_0", "--requantize"],
        &out,
    );
    assert_eq!(rec["model"]["file_type"], "MOSTLY_Q4_K_M");
    assert_eq!(
        rec["model"]["file_bytes"],
        std::fs::metadata(&path).unwrap().len()
    );
    // With --requantize the f32 reference is the file's values dequantized, and says so.
    assert!(rec["quality_error"].is_null(), "{}", rec["quality_error"]);
    assert!(rec["quality_reference"]["basis"]
        .as_str()
        .unwrap()
        .contains("MOSTLY_Q4_K_M weights dequantized"));
    let v = &rec["variants"];
    assert!(v[0]["quality"]["kl_mean"].as_f64().unwrap() >= 0.0);
    assert_eq!(v[0]["precision"], "native");
    assert_eq!(v[0]["status"], "ok");
    assert!(v[0].get("requantized").is_none());
    let formats: Vec<&str> = v[0]["weights"]["by_format"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["format"].as_str().unwrap())
        .collect();
    assert!(
        formats.contains(&"q4_k") && formats.contains(&"q6_k"),
        "{formats:?}"
    );
    assert_eq!(v[1]["precision"], "q8_0");
    assert_eq!(v[1]["requantized"], true);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("MOSTLY_Q4_K_M"),
        "report.md names the file type"
    );
    // Without it, the file as shipped runs and the run says why there is no quality pass.
    let out2 = tmp.path().join("run2");
    let rec = run_file(&path, &["--precisions", "native"], &out2);
    let why = rec["quality_error"].as_str().unwrap();
    assert!(
        why.contains("already quantized") && why.contains("--requantize"),
        "{why}"
    );
}

#[test]
fn type_names_are_ggml_names() {
    assert_eq!(format_name(quantbench::format::GgmlType::Q4K), "q4_k");
    assert_eq!(
        quantbench::model::source::gguf::ggml_type_name(16),
        "IQ2_XXS"
    );
    assert_eq!(
        quantbench::model::source::gguf::file_type_label(15),
        "MOSTLY_Q4_K_M"
    );
}

/// quantbench's GGUF export of a Hugging Face model at f32 is, tensor for tensor, the
/// file llama.cpp's converter made of the same folder: the same names, types and bytes
/// (Gemma's norms written as `1 + w`, Mixtral's q/k rows permuted, every layer's experts
/// stacked into `ffn_*_exps`), and the same architecture hyper-parameters.
#[test]
fn exports_are_llama_cpps_converter_tensor_for_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, arch) in [
        ("gemma3-window", "gemma3."),
        ("qwen3moe-experts", "qwen3moe."),
        ("mixtral-experts", "llama."),
        ("olmoe-experts", "olmoe."),
        ("phi3-longrope-long", "phi3."),
        ("gpt-oss-experts", "gpt-oss."),
    ] {
        let dir = fixtures().join("families").join(name);
        let out = tmp.path().join(format!("{name}.gguf"));
        let src = model::resolve(&ModelSpec::Local(dir.clone())).unwrap();
        export_gguf(&src, Quantization::new(Precision::F32), &out, false).unwrap();
        let (theirs, ours) = (
            GgufFile::open(&dir.join("model.gguf")).unwrap(),
            GgufFile::open(&out).unwrap(),
        );
        assert_eq!(theirs.tensors.len(), ours.tensors.len(), "{name}");
        for (t, e) in &theirs.tensors {
            let f = ours
                .tensors
                .get(t)
                .unwrap_or_else(|| panic!("{name}: {t} missing"));
            assert_eq!((e.dtype, &e.shape), (f.dtype, &f.shape), "{name}: {t}");
            assert_eq!(
                theirs.read_bytes(t).unwrap(),
                ours.read_bytes(t).unwrap(),
                "{name}: {t}"
            );
        }
        for (key, v) in &theirs.metadata {
            if key.starts_with(arch) {
                assert_eq!(
                    format!("{:?}", Some(v)),
                    format!("{:?}", ours.metadata.get(key)),
                    "{name}: {key}"
                );
            }
        }
    }
}

/// quantbench's own engine makes llama-quantize's mixes byte for byte: its GGUF export of
/// synthetic:tiny-llama (rows of 256 and 512, so the k-quants stay k-quants) at every mix
/// llama-quantize makes without an importance matrix (Q2_K as q2_k_mix, Q3_K_S … Q5_K_M,
/// IQ4_XS, IQ4_NL, IQ3_S, IQ3_M, TQ1_0, TQ2_0, Q1_0, Q2_0, MXFP4_MOE) has, tensor for tensor, the type
/// and the bytes (sha256) of the
/// file llama-quantize made from the same F32 weights (`make_reference.py --only
/// mixes`); and gpt-oss's experts at MXFP4_MOE are llama-quantize's file exactly. The
/// type plan is `format::mix_plan`, the blocks `format::ggml_quants` and `format::mxfp4`.
#[test]
fn own_mixes_are_llama_quantizes_files_byte_for_byte() {
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(gguf_path("mixes-tiny-llama.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let src = model::resolve(&"synthetic:tiny-llama".parse().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mixes = want["mixes"].as_object().unwrap();
    assert_eq!(mixes.len(), 17);
    for (mix, tensors) in mixes {
        let p: Precision = mix.parse().unwrap();
        let out = tmp.path().join(format!("{mix}.gguf"));
        export_gguf(&src, Quantization::new(p), &out, false).unwrap();
        let f = GgufFile::open(&out).unwrap();
        let tensors = tensors.as_object().unwrap();
        assert_eq!(f.tensors.len(), tensors.len(), "{mix}");
        for (name, ty_sha) in tensors {
            let e = &f.tensors[name];
            assert_eq!(e.dtype.name(), ty_sha[0].as_str().unwrap(), "{mix}: {name}");
            let sha = format!("{:x}", Sha256::digest(f.read_bytes(name).unwrap()));
            assert_eq!(sha, ty_sha[1].as_str().unwrap(), "{mix}: {name}'s bytes");
        }
    }
    let dir = fixtures().join("families/gpt-oss-experts");
    let src = model::resolve(&ModelSpec::Local(dir.join("model.gguf"))).unwrap();
    let out = tmp.path().join("gpt-oss-mxfp4_moe.gguf");
    export_gguf(
        &src,
        Quantization::new("mxfp4_moe".parse().unwrap()),
        &out,
        false,
    )
    .unwrap();
    let (ours, theirs) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(&dir.join("model-mxfp4.gguf")).unwrap(),
    );
    assert_eq!(ours.tensors.len(), theirs.tensors.len());
    for (name, e) in &theirs.tensors {
        assert_eq!(ours.tensors[name].dtype, e.dtype, "{name}");
        assert_eq!(
            ours.read_bytes(name).unwrap(),
            theirs.read_bytes(name).unwrap(),
            "{name}"
        );
    }
}

/// With an importance matrix (llama-imatrix's, of synthetic:tiny-llama over the
/// project's essay; tests/fixtures/gguf/tiny-llama.imatrix.gguf and its legacy .dat
/// twin; and quantbench's own of the same, tiny-llama.quantbench.imatrix.gguf), the own
/// engine's mixes are llama-quantize's `--imatrix` files tensor for tensor: the `_impl`
/// quantizers with each matrix's values, the grid i-quants' searches with them, the mixes
/// that require one (Q2_K_S, IQ3_XS, IQ3_XXS, IQ2_*, IQ1_*) allowed, the IQ4 and IQ3_XXS
/// mixes' plans without their no-imatrix rules.
#[test]
fn own_mixes_with_an_importance_matrix_are_llama_quantizes_files_byte_for_byte() {
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(gguf_path("mixes-tiny-llama.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The legacy .dat form is the same matrix: two of its mixes suffice.
    let dat_mixes = ["q4_k_m", "iq2_xxs"];
    for (form, key, n) in [
        ("tiny-llama.imatrix.gguf", "mixes+imatrix", 17),
        ("tiny-llama.imatrix.dat", "mixes+imatrix", 17),
        // quantbench's own (`quantbench imatrix`), which llama-quantize took.
        (
            "tiny-llama.quantbench.imatrix.gguf",
            "mixes+quantbench-imatrix",
            2,
        ),
    ] {
        let mixes = want[key].as_object().unwrap();
        assert_eq!(mixes.len(), n);
        let mut src = model::resolve(&"synthetic:tiny-llama".parse().unwrap()).unwrap();
        src.imatrix = Some(std::sync::Arc::new(
            quantbench::format::imatrix::Imatrix::read(&gguf_path(form)).unwrap(),
        ));
        for (mix, tensors) in mixes {
            if form.ends_with(".dat") && !dat_mixes.contains(&mix.as_str()) {
                continue;
            }
            let p: Precision = mix.parse().unwrap();
            let out = tmp.path().join(format!("{mix}.gguf"));
            export_gguf(&src, Quantization::new(p), &out, true).unwrap();
            let f = GgufFile::open(&out).unwrap();
            let tensors = tensors.as_object().unwrap();
            assert_eq!(f.tensors.len(), tensors.len(), "{form} {mix}");
            for (name, ty_sha) in tensors {
                let e = &f.tensors[name];
                assert_eq!(
                    e.dtype.name(),
                    ty_sha[0].as_str().unwrap(),
                    "{form} {mix}: {name}"
                );
                let sha = format!("{:x}", Sha256::digest(f.read_bytes(name).unwrap()));
                assert_eq!(
                    sha,
                    ty_sha[1].as_str().unwrap(),
                    "{form} {mix}: {name}'s bytes"
                );
            }
        }
    }
    // Without one, the mixes that need one are refused as llama-quantize refuses them,
    // naming a tensor and its type.
    let src = model::resolve(&"synthetic:tiny-llama".parse().unwrap()).unwrap();
    for (mix, ty) in [
        ("q2_k_s", "Q2_K"),
        ("iq3_xs", "IQ3_XXS"),
        ("iq3_xxs", "IQ2_S"),
        ("iq2_m", "IQ2_S"),
        ("iq2_xxs", "IQ2_XXS"),
        ("iq1_s", "IQ1_S"),
        ("iq1_m", "IQ1_M"),
    ] {
        let e = export_gguf(
            &src,
            Quantization::new(mix.parse().unwrap()),
            &tmp.path().join("x.gguf"),
            true,
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("--imatrix") && msg.contains(ty),
            "{mix}: {msg}"
        );
        assert!(!tmp.path().join("x.gguf").exists(), "{mix}");
    }
}

/// `quantbench imatrix` computes what llama-imatrix computes: on synthetic:tiny-llama over
/// the project's essay (8 chunks of 128 tokens, as the fixture was made), the same
/// tensors, the same counts, and sums within the models' arithmetic (1e-3 relative;
/// llama.cpp's products and quantbench's differ in their last bits), in the same GGUF
/// form; and the file reads back as an importance matrix.
#[test]
fn the_importance_matrix_quantbench_computes_is_llama_imatrixs() {
    use quantbench::format::imatrix::Imatrix;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ours.imatrix.gguf");
    let mut src = model::resolve(&"synthetic:tiny-llama".parse().unwrap()).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/eval/default.txt"),
    )
    .unwrap();
    let r = quantbench::run::imatrix::compute(
        &mut src,
        &text,
        "default.txt",
        (128, Some(8)),
        false,
        &out,
    )
    .unwrap();
    assert_eq!((r.chunks, r.tensors), (8, 14));
    let (ours, theirs) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(&gguf_path("tiny-llama.imatrix.gguf")).unwrap(),
    );
    assert_eq!(ours.req_str("general.type").unwrap(), "imatrix");
    let mut names: Vec<&String> = theirs.tensors.keys().collect();
    names.sort();
    assert_eq!(ours.tensors.len(), names.len());
    let f32s = |f: &GgufFile, n: &str| -> Vec<f32> {
        f.read_bytes(n)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    for n in names {
        assert_eq!(ours.tensors[n].shape, theirs.tensors[n].shape, "{n}");
        let (a, b) = (f32s(&ours, n), f32s(&theirs, n));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-3 * y.abs().max(1e-6), "{n}: {x} vs {y}");
        }
    }
    let m = Imatrix::read(&out).unwrap();
    assert_eq!(m.entries.len(), 14);
}

//! Bad input, through the real binary: exit status 2 and a message that names the thing
//! and what would be valid.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::quantbench;

/// Runs `generate` on `model` and expects bad input naming every one of `needles`.
fn expect_bad(args: &[&str], needles: &[&str]) {
    let (code, _, err) = quantbench(args);
    assert_eq!(code, 2, "{args:?} should be bad input; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of the hub-layout fixture with the GPT-2 tokenizer files beside it.
fn model_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2-hub-layout").join(f), dir.join(f)).unwrap();
    }
    quantbench::model::source::tokenizer::write_gpt2_files(&dir).unwrap();
    dir
}

#[test]
fn a_complete_model_directory_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path());
    let (code, out, err) = quantbench(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--new-tokens",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("prompt ids:   [7454, 2402, 257, 640]"),
        "{out}"
    );
}

#[test]
fn unknown_precision_lists_the_valid_names() {
    expect_bad(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--precision",
            "int3",
        ],
        &[
            "int3",
            "f32",
            "q8_0 (int8",
            "q4_0 (int4",
            "q2_k",
            "nf4",
            "llm_int8",
        ],
    );
    expect_bad(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--precision",
            "nf4",
            "--rest",
            "f8",
        ],
        &["'f8'", "f32", "f16", "auto"],
    );
}

#[test]
fn unknown_synthetic_model_and_bad_hub_ids_are_named() {
    expect_bad(
        &["generate", "--model", "synthetic:gpt5"],
        &["gpt5", "synthetic:gpt2-medium"],
    );
    expect_bad(
        &["generate", "--model", "hf:../../etc/passwd"],
        &["../../etc/passwd", "ORG/NAME"],
    );
    expect_bad(
        &["generate", "--model", "hf:org/name@../../x"],
        &["revision '../../x'"],
    );
}

#[test]
fn a_hub_model_that_is_not_cached_offline_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args(["generate", "--model", "hf:openai-community/gpt2"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("hf:openai-community/gpt2")
            && err.contains("not in the local Hugging Face cache"),
        "{err}"
    );
}

#[test]
fn a_model_directory_without_its_files_names_the_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.to_str().unwrap();
    expect_bad(&["generate", "--model", d], &["config.json"]);
    std::fs::copy(
        fixture("gpt2-hub-layout/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    expect_bad(&["generate", "--model", d], &["model.safetensors"]);
    std::fs::write(dir.join("pytorch_model.bin"), b"not really").unwrap();
    expect_bad(
        &["generate", "--model", d],
        &["pytorch_model.bin", "safetensors only"],
    );
    std::fs::copy(
        fixture("gpt2-hub-layout/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    expect_bad(
        &["generate", "--model", d],
        &["tokenizer.json", "vocab.json"],
    );
    expect_bad(
        &["generate", "--model", "/no/such/dir"],
        &["/no/such/dir", "synthetic:gpt2"],
    );
}

#[test]
fn truncated_or_corrupt_safetensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path());
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let d = dir.to_str().unwrap();
    expect_bad(
        &["generate", "--model", d],
        &["model.safetensors", "truncated or corrupt"],
    );
    // A header that claims to be 2^60 bytes long.
    let mut lying = (1u64 << 60).to_le_bytes().to_vec();
    lying.extend_from_slice(b"{}");
    std::fs::write(&weights, lying).unwrap();
    expect_bad(
        &["generate", "--model", d],
        &["model.safetensors", "truncated or corrupt"],
    );
    std::fs::write(&weights, b"").unwrap();
    expect_bad(&["generate", "--model", d], &["model.safetensors"]);
}

#[test]
fn a_config_whose_shapes_do_not_match_the_tensors_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path());
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["n_embd"] = 128.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    expect_bad(
        &["generate", "--model", dir.to_str().unwrap()],
        &["wte.weight", "[8192, 64]", "[8192, 128]", "config.json"],
    );
    std::fs::write(&cfg_path, "{\"n_embd\": 64, \"n_head\": 5}").unwrap();
    expect_bad(
        &["generate", "--model", dir.to_str().unwrap()],
        &["config.json", "n_head"],
    );
    std::fs::write(&cfg_path, "{not json").unwrap();
    expect_bad(
        &["generate", "--model", dir.to_str().unwrap()],
        &["config.json", "not valid JSON"],
    );
}

#[test]
fn a_prompt_that_overflows_the_context_is_refused() {
    // synthetic:tiny has 256 positions; "Once upon a time" is 4 tokens.
    expect_bad(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--new-tokens",
            "300",
        ],
        &[
            "4 tokens plus 300 new tokens",
            "context of 256",
            "at most 253",
        ],
    );
    expect_bad(
        &["generate", "--model", "synthetic:tiny", "--prompt", ""],
        &["prompt is empty"],
    );
}

#[test]
fn a_prompt_beyond_the_model_vocabulary_is_refused() {
    // The fixture model has 8192 tokens; " cute" is token 13779.
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path());
    expect_bad(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "my dog is cute",
        ],
        &["token id 13779", "vocabulary of 8192"],
    );
}

/// A copy of a Llama-family fixture whose config.json is edited by `edit`.
fn llama_dir_with(tmp: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let from = fixture("llama-family").join(name);
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(from.join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    dir
}

fn generate_args(dir: &Path) -> Vec<String> {
    [
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--new-tokens",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn expect_bad_dir(dir: &Path, needles: &[&str]) {
    let args = generate_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_bad(&args, needles);
}

#[test]
fn llama_family_configs_that_cannot_be_honoured_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    // An unsupported model_type: named, and the supported ones listed.
    let dir = llama_dir_with(tmp.path(), "llama-gqa-llama3", |c| {
        c["model_type"] = "gemma3".into()
    });
    expect_bad_dir(
        &dir,
        &[
            "config.json",
            "gemma3",
            "gpt2, llama, mistral, qwen2, qwen3",
        ],
    );
    // A required field missing.
    let dir = llama_dir_with(tmp.path(), "qwen2-bias-tied", |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    expect_bad_dir(&dir, &["config.json", "hidden_size", "missing"]);
    // Query heads that do not group over the key/value heads.
    let dir = llama_dir_with(tmp.path(), "mistral-window", |c| {
        c["num_key_value_heads"] = 3.into()
    });
    expect_bad_dir(
        &dir,
        &[
            "num_attention_heads (4)",
            "num_key_value_heads (3)",
            "multiple",
        ],
    );
    // A rope type quantbench does not compute, in either config form.
    let dir = llama_dir_with(tmp.path(), "llama-gqa-llama3", |c| {
        c["rope_parameters"]["rope_type"] = "proportional".into()
    });
    expect_bad_dir(
        &dir,
        &[
            "rope_parameters",
            "proportional",
            "default, linear, llama3, yarn",
        ],
    );
    let dir = llama_dir_with(tmp.path(), "llama-bf16-linear", |c| {
        c["rope_scaling"]["type"] = "dynamic".into()
    });
    expect_bad_dir(
        &dir,
        &["rope_scaling", "dynamic", "default, linear, llama3"],
    );
}

#[test]
fn llama_family_tensors_missing_or_misshapen_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    // The config promises a wider MLP than the file holds: the tensor, its shape and
    // the expected one are named.
    let dir = llama_dir_with(tmp.path(), "llama-gqa-llama3", |c| {
        c["intermediate_size"] = 160.into()
    });
    expect_bad_dir(
        &dir,
        &[
            "model.layers.0.mlp.gate_proj.weight",
            "[128, 64]",
            "[160, 64]",
        ],
    );
    // Biases the config asks for (attention_bias) that the file lacks.
    let dir = llama_dir_with(tmp.path(), "llama-gqa-llama3", |c| {
        c["attention_bias"] = true.into()
    });
    expect_bad_dir(&dir, &["model.layers.0.self_attn.q_proj.bias", "missing"]);
    // A GPT-2 file under a Llama config: no Llama token embedding.
    let dir = llama_dir_with(tmp.path(), "qwen2-bias-tied", |_| {});
    std::fs::copy(
        fixture("gpt2-hub-layout").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    expect_bad_dir(&dir, &["model.embed_tokens.weight", "qwen2"]);
}

#[test]
fn a_llama_family_directory_generates_with_its_own_tokenizer() {
    let dir = fixture("llama-family").join("qwen3-qknorm");
    let (code, out, err) = quantbench(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--precision",
        "q4_k",
        "--new-tokens",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    // The fixture's own BPE (trained for it), not GPT-2's: "Once upon a time" is 8 ids.
    assert!(
        out.contains("prompt ids:   [47, 78, 328, 353, 80, 284, 259, 489]"),
        "{out}"
    );
    // Rows of 64 do not divide into q4_k's 256: the fallback is reported.
    assert!(out.contains("rows of 64"), "{out}");
}

// ---- GGUF files ----

/// A copy of a GGUF fixture with `edit` applied to its bytes, written into `tmp`.
fn gguf_with(tmp: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(fixture("gguf").join(name)).unwrap();
    edit(&mut bytes);
    let out = tmp.join(format!("edited-{name}"));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// Replace the first occurrence of `from` by `to` (same length).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
}

/// Set the u32 value stored right after a metadata key (its type id, then the value).
fn patch_u32_after_key(bytes: &mut [u8], key: &str, value: u32) {
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .unwrap()
        + key.len();
    assert_eq!(
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()),
        4,
        "{key} is a u32"
    );
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn expect_bad_gguf(path: &Path, needles: &[&str]) {
    expect_bad(
        &[
            "generate",
            "--model",
            path.to_str().unwrap(),
            "--precision",
            "native",
            "--new-tokens",
            "2",
        ],
        needles,
    );
}

#[test]
fn truncated_or_foreign_gguf_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let f = "llama-gqa-llama3-q8_0.gguf";
    // Cut inside the tensor data: the tensor that runs past the end is named.
    let cut = gguf_with(tmp.path(), f, |b| b.truncate(b.len() * 2 / 3));
    expect_bad_gguf(&cut, &["runs past the end", "truncated", "tensor '"]);
    // Cut inside the header.
    let head = gguf_with(tmp.path(), f, |b| b.truncate(3000));
    expect_bad_gguf(&head, &["cannot read the GGUF header", "truncated"]);
    let magic = gguf_with(tmp.path(), f, |b| b[..4].copy_from_slice(b"GGML"));
    expect_bad_gguf(&magic, &["not a GGUF file", "\"GGUF\""]);
    let version = gguf_with(tmp.path(), f, |b| {
        b[4..8].copy_from_slice(&4u32.to_le_bytes())
    });
    expect_bad_gguf(&version, &["GGUF version 4", "1, 2 and 3"]);
    let tiny = tmp.path().join("tiny.gguf");
    std::fs::write(&tiny, b"GGU").unwrap();
    expect_bad_gguf(&tiny, &["too short to be a GGUF file"]);
}

#[test]
fn gguf_metadata_that_cannot_be_honoured_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let f = "llama-gqa-llama3-f32.gguf";
    let missing = gguf_with(tmp.path(), f, |b| {
        patch(b, b"llama.block_count", b"llama.block_cXunt")
    });
    expect_bad_gguf(&missing, &["'llama.block_count' is missing"]);
    // "llama" -> "gemma" as the architecture's value (length 5, after its key).
    let arch = gguf_with(tmp.path(), f, |b| {
        let mut from = b"general.architecture".to_vec();
        from.extend(8u32.to_le_bytes());
        from.extend(5u64.to_le_bytes());
        from.extend(b"llama");
        let mut to = from.clone();
        let n = to.len();
        to[n - 5..].copy_from_slice(b"gemma");
        patch(b, &from, &to);
    });
    expect_bad_gguf(&arch, &["'gemma'", "gpt2, llama", "qwen2, qwen3"]);
    let width = gguf_with(tmp.path(), f, |b| {
        patch_u32_after_key(b, "llama.embedding_length", 65)
    });
    expect_bad_gguf(
        &width,
        &[
            "token_embd.weight",
            "llama.embedding_length = 65",
            "disagree",
        ],
    );
    let ffn = gguf_with(tmp.path(), f, |b| {
        patch_u32_after_key(b, "llama.feed_forward_length", 129)
    });
    expect_bad_gguf(&ffn, &["blk.0.ffn_gate.weight", "[128, 64]", "[129, 64]"]);
}

/// A tensor type quantbench's own engine does not read (I32 here: ggml's integer types
/// hold no weight matrix; every block type is read) is named with its tensor and the
/// types that are supported.
#[test]
fn a_gguf_tensor_type_candle_lacks_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b: Vec<u8> = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata
    let key = b"general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(8u32.to_le_bytes());
    b.extend(5u64.to_le_bytes());
    b.extend(b"llama");
    let name = b"blk.0.attn_q.weight";
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name);
    b.extend(2u32.to_le_bytes());
    b.extend(256u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(26u32.to_le_bytes()); // I32
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + 4096, 0);
    let path = tmp.path().join("iq.gguf");
    std::fs::write(&path, b).unwrap();
    expect_bad_gguf(
        &path,
        &[
            "blk.0.attn_q.weight",
            "I32",
            "does not read yet",
            "Q4_K",
            "MXFP4",
            "IQ2_XXS",
            "TQ1_0",
        ],
    );
}

/// llama-quantize's mixes in the own engine: q2_k_s, iq2_xxs and iq1_m without an
/// importance matrix (which llama-quantize refuses too, naming a tensor's type), a mix
/// under policy linear (a mix decides every tensor): each named, exit 2.
#[test]
fn mixes_the_own_engine_does_not_make_as_asked_are_refused() {
    for (args, needles) in [
        (
            &["--precision", "q2_k_s"][..],
            &["q2_k_s", "importance matrix", "q3_k_s"][..],
        ),
        (
            &["--precision", "q4_k_m", "--policy", "linear"][..],
            &["q4_k_m", "policy linear", "policy at all"][..],
        ),
        (
            &["--precision", "iq2_xxs"][..],
            &["iq2_xxs", "importance matrix", "--imatrix", "IQ2_XXS"][..],
        ),
        (
            &["--precision", "iq1_m"][..],
            &["iq1_m", "importance matrix", "--imatrix", "IQ1_M"][..],
        ),
    ] {
        let mut all = vec![
            "generate",
            "--model",
            "synthetic:tiny-llama",
            "--new-tokens",
            "2",
        ];
        all.extend_from_slice(args);
        expect_bad(&all, needles);
    }
}

#[test]
fn native_and_requantize_are_refused_where_they_mean_nothing() {
    expect_bad(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--precision",
            "native",
        ],
        &["native", "not a GGUF file"],
    );
    let q4 = fixture("gguf").join("llama-wide-q4_k_m.gguf");
    expect_bad(
        &[
            "generate",
            "--model",
            q4.to_str().unwrap(),
            "--precision",
            "q8_0",
        ],
        &["MOSTLY_Q4_K_M", "--requantize", "--precisions native"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.bin");
    expect_bad(
        &[
            "export",
            "--model",
            "synthetic:tiny",
            "--format",
            "gguf",
            "--out",
            out.to_str().unwrap(),
        ],
        &[".gguf extension"],
    );
    expect_bad(
        &[
            "export",
            "--model",
            "synthetic:tiny",
            "--precision",
            "q8_0",
            "--out",
            tmp.path().join("hf").to_str().unwrap(),
        ],
        &["always f32", "--format gguf"],
    );
    let gguf = tmp.path().join("tiny-nf4.gguf");
    expect_bad(
        &[
            "export",
            "--model",
            "synthetic:tiny",
            "--format",
            "gguf",
            "--precision",
            "nf4",
            "--out",
            gguf.to_str().unwrap(),
        ],
        &["nf4", "no GGUF type", "bitsandbytes"],
    );
    assert!(!gguf.exists(), "nothing is written");
}

/// hf:ORG/NAME/FILE.gguf is served from the Hugging Face cache (offline here), and a file
/// the cache lacks is named.
#[test]
fn a_gguf_file_in_the_hub_cache_runs_by_its_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let repo = tmp.path().join("hub/models--org--tiny-gguf");
    let snap = repo.join("snapshots").join(hash);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), hash).unwrap();
    std::fs::copy(
        fixture("gguf").join("qwen3-qknorm-f32.gguf"),
        snap.join("model-F32.gguf"),
    )
    .unwrap();
    let run = |spec: &str| {
        Command::new(env!("CARGO_BIN_EXE_quantbench"))
            .args([
                "generate",
                "--model",
                spec,
                "--precision",
                "native",
                "--new-tokens",
                "3",
            ])
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", tmp.path())
            .output()
            .unwrap()
    };
    let ok = run("hf:org/tiny-gguf/model-F32.gguf");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("new ids"));
    let missing = run("hf:org/tiny-gguf/model-Q4_K_M.gguf");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model-Q4_K_M.gguf") && err.contains("not in the local Hugging Face cache"),
        "{err}"
    );
}

/// The scenario fields of GGUF and real-model runs: a wrong type or value is named, and a
/// text too short for llama-perplexity's chunks is refused before anything loads.
#[test]
fn gguf_and_quality_scenario_fields_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, extra: &str, quality: &str| -> PathBuf {
        let p = tmp.path().join(name);
        std::fs::write(
            &p,
            format!(
                "name = \"s\"\nmodel = \"synthetic:tiny\"\nprecisions = [\"q8_0\"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n{extra}\n[quality]\n{quality}\n"
            ),
        )
        .unwrap();
        p
    };
    let run = |p: &PathBuf, needles: &[&str]| {
        let out = tmp.path().join("out");
        expect_bad(
            &[
                "run",
                p.to_str().unwrap(),
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
            needles,
        );
    };
    run(
        &write("a.toml", "requantize = \"yes\"", ""),
        &["requantize"],
    );
    run(
        &write("b.toml", "", "scoring = \"halves\""),
        &["scoring", "second-half"],
    );
    run(
        &write("c.toml", "", "scoring = \"second-half\"\nstride = 8"),
        &["stride", "second-half"],
    );
    run(
        &write("d.toml", "", "scoring = \"second-half\"\nmax_tokens = 100"),
        &["fewer than one chunk of 256", "whole chunks"],
    );
}

#[test]
fn bad_workload_lists_and_export_requests_are_named() {
    expect_bad(
        &[
            "run",
            "--model",
            "synthetic:tiny",
            "--prompt-tokens",
            "8",
            "--batch",
            "0",
        ],
        &["workload.batch", "1..=256"],
    );
    expect_bad(
        &["run", "--model", "synthetic:tiny", "--depth", "64"],
        &["workload.prompt_tokens", "missing"],
    );
    expect_bad(
        &["run", "--model", "synthetic:tiny", "--prompt-tokens", "8,8"],
        &["workload.prompt_tokens", "twice"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("w.toml");
    std::fs::write(
        &scenario,
        "name = \"w\"\n[workload]\nprompt_tokens = [8]\nbatches = [2]\n",
    )
    .unwrap();
    expect_bad(&["run", scenario.to_str().unwrap()], &["w.toml", "batches"]);
    // A results file is needed, and the two-file format needs a folder.
    let results = tmp.path().join("results.json");
    expect_bad(
        &[
            "export-results",
            results.to_str().unwrap(),
            "--format",
            "bmf",
        ],
        &["results.json"],
    );
    let (code, _, err) = quantbench(&[
        "run",
        "--model",
        "synthetic:tiny",
        "--precisions",
        "f32",
        "--new-tokens",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--no-quality",
        "--quiet",
        "--out",
        tmp.path().join("run").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let run = tmp.path().join("run");
    expect_bad(
        &[
            "export-results",
            run.to_str().unwrap(),
            "--format",
            "github-action-benchmark",
        ],
        &["--out FOLDER"],
    );
    let (code, out, err) =
        quantbench(&["export-results", run.to_str().unwrap(), "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        1,
        "one variant, no workload: the text row only"
    );
    assert!(out.contains("\"test\":\"text\""), "{out}");
}

/// The environment switches are bad input too when their value is not one they know:
/// exit 2, naming the variable, the value and the valid ones, before anything runs.
#[test]
fn environment_switches_with_unknown_values_are_named() {
    for (var, value, valid) in [
        ("QUANTBENCH_KERNELS", "fast", "candle"),
        ("QUANTBENCH_HUGE_PAGES", "yes", "\"1\""),
        ("QUANTBENCH_LEVEL", "sse4", "avx2"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_quantbench"))
            .args(["generate", "--model", "synthetic:tiny", "--new-tokens", "1"])
            .env("HF_HUB_OFFLINE", "1")
            .env(var, value)
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        for n in [var, value, valid] {
            assert!(err.contains(n), "{var}={value}: stderr lacks {n:?}:\n{err}");
        }
    }
}

/// A copy of a tests/fixtures/families model folder with its config.json edited.
fn family_dir_with(tmp: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let from = fixture("families").join(name);
    let dir = tmp.join(format!("{name}-edited"));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(from.join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    dir
}

/// Gemma 3's, the mixtures of experts' and Phi-3's configs: what cannot be honoured is
/// named with what would be valid, exit 2.
#[test]
fn new_families_configs_that_cannot_be_honoured_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "gemma3-window",
            Box::new(|c| c["hidden_activation"] = "silu".into()),
            &["hidden_activation", "silu", "gelu_pytorch_tanh"],
        ),
        (
            "gemma3-window",
            Box::new(|c| c["layer_types"] = serde_json::json!(["full_attention"])),
            &["layer_types has 1 entries for 6 layers"],
        ),
        (
            "gemma3-window",
            Box::new(|c| c["attn_logit_softcapping"] = 50.0.into()),
            &["attn_logit_softcapping"],
        ),
        (
            "qwen3moe-experts",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("num_experts_per_tok");
            }),
            &["num_experts_per_tok", "missing"],
        ),
        (
            "mixtral-experts",
            Box::new(|c| c["num_experts_per_tok"] = 9.into()),
            &["num_experts_per_tok (9)", "exceeds"],
        ),
        (
            "olmoe-experts",
            Box::new(|c| c["clip_qkv"] = 8.0.into()),
            &["clip_qkv", "null"],
        ),
        (
            "phi3-longrope-short",
            Box::new(|c| c["rope_parameters"]["short_factor"] = serde_json::json!([1.0])),
            &["short_factor", "4 frequencies"],
        ),
        (
            "phi3-longrope-short",
            Box::new(|c| c["partial_rotary_factor"] = 0.0.into()),
            &["partial_rotary_factor"],
        ),
        (
            "phi3-longrope-short",
            Box::new(|c| c["rope_parameters"]["attention_factor"] = (-1.0).into()),
            &["attention_factor (-1)", "above 0"],
        ),
        (
            "gpt-oss-experts",
            Box::new(|c| {
                c["layer_types"] = serde_json::json!([
                    "sliding_attention",
                    "chunked_attention",
                    "sliding_attention",
                    "full_attention"
                ])
            }),
            &[
                "layer_types",
                "chunked_attention",
                "sliding_attention, full_attention",
            ],
        ),
        (
            "gpt-oss-experts",
            Box::new(|c| c["layer_types"] = serde_json::json!(["full_attention"])),
            &["layer_types has 1 entries for 4 layers"],
        ),
        (
            "gpt-oss-experts",
            Box::new(|c| c["swiglu_limit"] = 0.0.into()),
            &["swiglu_limit (0)", "above 0"],
        ),
        (
            "gpt-oss-experts",
            Box::new(|c| {
                c["rope_parameters"]
                    .as_object_mut()
                    .unwrap()
                    .remove("original_max_position_embeddings");
            }),
            &["original_max_position_embeddings", "yarn"],
        ),
        (
            "gpt-oss-experts",
            Box::new(|c| c["rope_parameters"]["truncate"] = "no".into()),
            &["truncate", "true or false"],
        ),
        (
            // Experts narrower than the stacked tensors hold: the stacked tensor is named
            // with its shape and the one the config implies.
            "gpt-oss-experts",
            Box::new(|c| c["intermediate_size"] = 16.into()),
            &["mlp.experts.gate_up_proj", "[4, 64, 64]", "[4, 64, 32]"],
        ),
        (
            "gpt-oss-experts",
            Box::new(|c| c["quantization_config"] = serde_json::json!({"quant_method": "mxfp4"})),
            &["quantization_config", "mxfp4", "GGUF"],
        ),
    ];
    for (name, edit, needles) in cases {
        let dir = family_dir_with(tmp.path(), name, edit);
        expect_bad_dir(&dir, needles);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The same families' GGUF keys: a pattern of the wrong length, no experts a token, a
/// rotation wider than the head; each named, exit 2.
#[test]
fn new_families_gguf_keys_that_cannot_be_honoured_are_named() {
    use candle_core::quantized::gguf_file::Value;
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, &str, Value, &[&str])> = vec![
        (
            "gemma3-window",
            "gemma3.attention.sliding_window_pattern",
            Value::Array(vec![Value::Bool(true); 3]),
            &[
                "gemma3.attention.sliding_window_pattern",
                "one bool per layer (6)",
            ],
        ),
        (
            "qwen3moe-experts",
            "qwen3moe.expert_used_count",
            Value::U32(0),
            &["num_experts_per_tok must be at least 1"],
        ),
        (
            "phi3-longrope-short",
            "phi3.rope.dimension_count",
            Value::U32(100),
            &["phi3.rope.dimension_count = 100", "head size"],
        ),
        (
            "gpt-oss-experts",
            "gpt-oss.rope.scaling.type",
            Value::String("su".into()),
            &["gpt-oss.rope.scaling.type = 'su'", "yarn"],
        ),
        (
            "gpt-oss-experts",
            "gpt-oss.attention.sliding_window_pattern",
            Value::Array(vec![Value::Bool(true); 3]),
            &[
                "gpt-oss.attention.sliding_window_pattern",
                "one bool per layer (4)",
            ],
        ),
    ];
    for (name, key, value, needles) in cases {
        let mut g = common::gguf::Gguf::fixture(&format!("../families/{name}/model.gguf"));
        g.set(key, value);
        let path = tmp.path().join(format!("{name}.gguf"));
        g.write(&path);
        expect_bad(
            &[
                "generate",
                "--model",
                path.to_str().unwrap(),
                "--new-tokens",
                "2",
            ],
            needles,
        );
    }
}

/// `--imatrix`: a missing file, a file that is no importance matrix, and one made for
/// another model (its matrices' sizes differ) are each refused naming the file, exit 2;
/// the right one lets the own engine make q2_k_s, which llama-quantize makes only with
/// one.
#[test]
fn importance_matrices_are_checked_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.dat");
    std::fs::write(&junk, b"not an importance matrix").unwrap();
    let other = fixture("llama-engine/qwen3-qknorm.imatrix.gguf");
    let base = [
        "generate",
        "--model",
        "synthetic:tiny-llama",
        "--new-tokens",
        "2",
        "--precision",
        "q4_k_m",
        "--imatrix",
    ];
    let missing = tmp.path().join("none.gguf");
    for (file, needles) in [
        (&missing, &["none.gguf", "does not exist"][..]),
        (&junk, &["junk.dat", "neither a GGUF importance matrix"][..]),
        (&other, &["qwen3-qknorm.imatrix.gguf", "another model"][..]),
    ] {
        let mut args = base.to_vec();
        args.push(file.to_str().unwrap());
        expect_bad(&args, needles);
    }
    let good = fixture("gguf/tiny-llama.imatrix.gguf");
    let mut args = base.to_vec();
    args.push(good.to_str().unwrap());
    args[6] = "q2_k_s";
    let (code, _, err) = quantbench(&args);
    assert_eq!(code, 0, "{err}");
}

/// `quantbench imatrix`: an --out that is no .gguf, one that exists (without --force),
/// a chunk shorter than 16 tokens or longer than the model's context, zero chunks, a text
/// too short for two chunks, a missing text: each refused naming what, exit 2, and no
/// file written.
#[test]
fn imatrix_refuses_bad_input_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let existing = tmp.path().join("there.gguf");
    std::fs::write(&existing, b"keep").unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "a few words").unwrap();
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--out", "m.txt"], vec!["m.txt", ".gguf"]),
        (
            vec!["--out", existing.to_str().unwrap()],
            vec!["exists", "--force"],
        ),
        (vec!["--out", o, "--ctx", "8"], vec!["--ctx 8", "16"]),
        (
            vec!["--out", o, "--ctx", "100000"],
            vec!["--ctx 100000", "context"],
        ),
        (vec!["--out", o, "--chunks", "0"], vec!["--chunks 0"]),
        (
            vec![
                "--out",
                o,
                "--ctx",
                "128",
                "--text",
                short.to_str().unwrap(),
            ],
            vec!["tokens", "two chunks"],
        ),
        (
            vec!["--out", o, "--text", "/nonexistent/t.txt"],
            vec!["--text", "/nonexistent/t.txt"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["imatrix", "--model", "synthetic:tiny-llama"];
        args.extend(extra);
        expect_bad(&args, &needles);
        assert!(!out.exists(), "{args:?} wrote a file");
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
}

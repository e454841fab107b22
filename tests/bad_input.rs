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
    quantbench::model::tokenizer::write_gpt2_files(&dir).unwrap();
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
        &["int3", "f32", "q8_0 (int8", "q4_0 (int4", "q2_k"],
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
        c["rope_parameters"]["rope_type"] = "yarn".into()
    });
    expect_bad_dir(
        &dir,
        &["rope_parameters", "yarn", "default, linear, llama3"],
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

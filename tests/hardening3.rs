//! Hardening, round 3: each test here failed on 15d08be, before its fix (issue #36's
//! items are named in brackets). Through the real binary where the fault was seen there.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file::Value;

mod common;
use common::gguf::Gguf;
use common::quantbench;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> serde_json::Value {
    let p = root().join("reports").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(dir: &Path, name: &str, v: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p
}

/// `generate` on a GGUF file as stored: (exit status, stdout, stderr).
fn generate(path: &Path) -> (i32, String, String) {
    quantbench(&[
        "generate",
        "--model",
        s(path),
        "--precision",
        "native",
        "--new-tokens",
        "2",
    ])
}

/// A GGUF file refused with exit 2, its path and every needle in the message.
fn refused(g: &Gguf, dir: &Path, name: &str, needles: &[&str]) {
    let path = dir.join(format!("{name}.gguf"));
    g.write(&path);
    let (code, out, err) = generate(&path);
    assert_eq!(code, 2, "{name}: exit {code}\n{out}\n{err}");
    assert!(err.contains(s(&path)), "{name}: the file is named: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

const LLAMA: &str = "llama-gqa-llama3-f32.gguf";

// [1] No writer replaces a results.json, a file that is not a regular file, or another
// run's outputs.
#[test]
fn writers_never_replace_results_devices_or_another_runs_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = write_json(
        tmp.path(),
        "run/results.json",
        &example("example/results.json"),
    );
    let before = std::fs::read(&run).unwrap();
    let (code, _, err) = quantbench(&[
        "export-results",
        s(run.parent().unwrap()),
        "--format",
        "jsonl",
        "--out",
        s(&run),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("results file") && err.contains(s(&run)),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&run).unwrap(),
        before,
        "the run's results are intact"
    );
    // A results file under another name is one too, --force or not.
    let renamed = tmp.path().join("kept.json");
    std::fs::write(&renamed, &before).unwrap();
    let (code, _, err) = quantbench(&[
        "export-results",
        s(&run),
        "--format",
        "csv",
        "--out",
        s(&renamed),
        "--force",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(std::fs::read(&renamed).unwrap(), before);
    // A FIFO (and any device) is never replaced by a regular file.
    let fifo = tmp.path().join("pipe");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: mkfifo on a path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec![
            "export-results",
            s(&run),
            "--format",
            "bmf",
            "--out",
            s(&fifo),
        ];
        args.extend(extra);
        let (code, _, err) = quantbench(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
    // An existing file is replaced only with --force.
    let mine = tmp.path().join("mine.csv");
    std::fs::write(&mine, "the user's own").unwrap();
    let (code, _, err) = quantbench(&[
        "export-results",
        s(&run),
        "--format",
        "csv",
        "--out",
        s(&mine),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "the user's own");
    let (code, _, err) = quantbench(&[
        "export-results",
        s(&run),
        "--format",
        "csv",
        "--out",
        s(&mine),
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(std::fs::read_to_string(&mine).unwrap(), "the user's own");
    // github-action-benchmark's two files, likewise.
    let gab = tmp.path().join("gab");
    std::fs::create_dir_all(&gab).unwrap();
    std::fs::write(gab.join("bigger-is-better.json"), "[]").unwrap();
    let (code, _, err) = quantbench(&[
        "export-results",
        s(&run),
        "--format",
        "github-action-benchmark",
        "--out",
        s(&gab),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_to_string(gab.join("bigger-is-better.json")).unwrap(),
        "[]"
    );

    // report A --out B, where B is another run: B's report and charts are kept.
    let other = write_json(
        tmp.path(),
        "other/results.json",
        &example("example/results.json"),
    );
    let (code, _, err) = quantbench(&["report", s(&other)]);
    assert_eq!(code, 0, "{err}");
    let b_report = std::fs::read(other.with_file_name("report.md")).unwrap();
    let mut a = example("example/results.json");
    a["scenario"]["description"] = "run A".into();
    let a = write_json(tmp.path(), "a/results.json", &a);
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["report", s(&a), "--out", s(other.parent().unwrap())];
        args.extend(extra);
        let (code, _, err) = quantbench(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("another run's results.json"), "{err}");
    }
    assert_eq!(
        std::fs::read(other.with_file_name("report.md")).unwrap(),
        b_report
    );
    // Re-rendering a run's own folder is fine.
    let (code, _, err) = quantbench(&["report", s(&other), "--out", s(other.parent().unwrap())]);
    assert_eq!(code, 0, "{err}");
    // A folder of unexplained report files: only with --force.
    let loose = tmp.path().join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    std::fs::write(loose.join("report.md"), "mine").unwrap();
    let (code, _, err) = quantbench(&["report", s(&a), "--out", s(&loose)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_to_string(loose.join("report.md")).unwrap(),
        "mine"
    );
    let (code, _, err) = quantbench(&["report", s(&a), "--out", s(&loose), "--force"]);
    assert_eq!(code, 0, "{err}");
}

// [2] general.alignment is checked before anything reads the data.
#[test]
fn gguf_alignment_is_a_u32_power_of_two_and_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Gguf::fixture(LLAMA);
    let mut g = base.clone();
    g.set("general.alignment", Value::U32(0));
    refused(
        &g,
        tmp.path(),
        "align0",
        &["general.alignment is 0", "power of two"],
    );
    let mut g = base.clone();
    g.set("general.alignment", Value::U32(48));
    refused(&g, tmp.path(), "align48", &["power of two"]);
    let mut g = base.clone();
    g.set("general.alignment", Value::U64(64));
    refused(
        &g,
        tmp.path(),
        "align-u64",
        &["general.alignment holds a u64", "u32"],
    );
    let mut g = base.clone();
    g.set("general.alignment", Value::String("64".into()));
    refused(
        &g,
        tmp.path(),
        "align-str",
        &["general.alignment holds a string"],
    );
    // A file truly aligned to 64 reads its tensors where they are: the same tokens.
    let mut g = base.clone();
    g.set("general.alignment", Value::U32(64));
    g.alignment = 64;
    g.relayout();
    let p64 = tmp.path().join("align64.gguf");
    g.write(&p64);
    let p32 = tmp.path().join("align32.gguf");
    base.write(&p32);
    let (c64, o64, e64) = generate(&p64);
    let (c32, o32, _) = generate(&p32);
    assert_eq!((c64, c32), (0, 0), "{e64}");
    let ids = |o: &str| {
        o.lines()
            .find(|l| l.starts_with("new ids:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(ids(&o64), ids(&o32));
}

// [3] The tensor directory is checked against itself and the file's length.
#[test]
fn gguf_tensor_layout_is_checked_against_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Gguf::fixture(LLAMA);
    let second = base.tensors[1].name.clone();
    let third = base.tensors[2].name.clone();
    // A tensor count one short shifts where the data begins: found, not run.
    let mut g = base.clone();
    g.count_delta = -1;
    refused(&g, tmp.path(), "count-short", &["tensor count", "short"]);
    let mut g = base.clone();
    g.count_delta = 1;
    refused(&g, tmp.path(), "count-long", &[]);
    // Misaligned, overlapping, shared and gapped offsets each name the tensor.
    let mut g = base.clone();
    g.tensor(&second).offset += 4;
    refused(
        &g,
        tmp.path(),
        "misaligned",
        &[&second, "not a multiple of the alignment"],
    );
    let mut g = base.clone();
    g.tensor(&third).offset -= 32;
    refused(&g, tmp.path(), "overlap", &[&third]);
    let mut g = base.clone();
    let first_offset = g.tensors[0].offset;
    g.tensor(&second).offset = first_offset;
    refused(
        &g,
        tmp.path(),
        "same-offset",
        &[
            &second,
            &format!("the offset of tensor '{}'", base.tensors[0].name),
        ],
    );
    let mut g = base.clone();
    let n = g.tensors.len();
    g.tensors[n - 1].offset += 64;
    refused(&g, tmp.path(), "gap", &[&base.tensors[n - 1].name, "gap"]);
    // Two tensors of one name.
    let mut g = base.clone();
    g.tensors[1].name = g.tensors[0].name.clone();
    refused(
        &g,
        tmp.path(),
        "dup-name",
        &["appears twice", &base.tensors[0].name],
    );
    // A type whose size disagrees with the bytes stored (F32 declared F16).
    let mut g = base.clone();
    let last = g.tensors.len() - 1;
    let big = g.tensors[..last]
        .iter()
        .position(|t| t.ty == 0 && t.data.len() >= 256)
        .unwrap();
    let big_name = g.tensors[big].name.clone();
    g.tensors[big].ty = 1;
    refused(&g, tmp.path(), "wrong-type", &[&big_name, "f16"]);
    // A name longer than ggml's 63 bytes.
    let mut g = base.clone();
    g.tensors[0].name = "x".repeat(80);
    refused(&g, tmp.path(), "long-name", &["at most 63"]);
    // The untouched file still runs.
    let ok = tmp.path().join("ok.gguf");
    base.write(&ok);
    assert_eq!(generate(&ok).0, 0);
}

// [4] Metadata that disagrees with the tensors, duplicate keys, non-finite floats.
#[test]
fn gguf_metadata_must_agree_with_the_tensors_and_be_finite() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Gguf::fixture(LLAMA);
    let layers = match base.get("llama.block_count") {
        Some(Value::U32(n)) => *n,
        other => panic!("{other:?}"),
    };
    assert!(layers >= 2);
    let mut g = base.clone();
    g.set("llama.block_count", Value::U32(layers - 1));
    refused(
        &g,
        tmp.path(),
        "blocks",
        &[&format!("blk.{}.", layers - 1), "llama.block_count"],
    );
    // Tensors of a layer that does not exist.
    let mut g = base.clone();
    let mut extra = g
        .tensors
        .iter()
        .find(|t| t.name.starts_with("blk.0.attn_norm"))
        .unwrap()
        .clone();
    extra.name = format!("blk.{layers}.attn_norm.weight");
    g.tensors.push(extra);
    g.relayout();
    refused(
        &g,
        tmp.path(),
        "extra-layer",
        &[
            &format!("blk.{layers}.attn_norm.weight"),
            "belongs to layer",
        ],
    );
    // A key written twice.
    let mut g = base.clone();
    g.kv.push(("llama.context_length".into(), Value::U32(8)));
    refused(
        &g,
        tmp.path(),
        "dup-key",
        &["'llama.context_length' appears twice"],
    );
    // Special ids past the vocabulary.
    let mut g = base.clone();
    g.set("tokenizer.ggml.eos_token_id", Value::U32(1_000_000));
    refused(
        &g,
        tmp.path(),
        "eos",
        &["eos_token_id = 1000000", "outside the vocabulary"],
    );
    let mut g = base.clone();
    g.set("tokenizer.ggml.bos_token_id", Value::U32(1_000_000));
    refused(&g, tmp.path(), "bos", &["bos_token_id = 1000000"]);
    // general.file_type of the wrong type.
    let mut g = base.clone();
    g.set("general.file_type", Value::String("Q4_K_M".into()));
    refused(
        &g,
        tmp.path(),
        "file-type",
        &["general.file_type holds a string"],
    );
    // NaN and infinite hyper-parameters are refused, never replaced by defaults.
    for (key, v) in [
        ("llama.rope.freq_base", Value::F32(f32::NAN)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::INFINITY),
        ),
    ] {
        let mut g = base.clone();
        g.set(key, v);
        refused(&g, tmp.path(), key, &[key, "finite"]);
    }
    // And so export never writes a default in their place.
    let mut g = base.clone();
    g.set("llama.rope.freq_base", Value::F32(f32::NAN));
    let nan = tmp.path().join("nan.gguf");
    g.write(&nan);
    let out = tmp.path().join("out.gguf");
    let (code, _, err) = quantbench(&[
        "export",
        "--model",
        s(&nan),
        "--format",
        "gguf",
        "--out",
        s(&out),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!out.exists());
}

// [5] The known real model is checked by its sha256, not only its size; fetch-models.sh
// refuses a folder where the file goes.
#[test]
fn the_known_model_is_checked_by_sha256_and_the_fetch_script_refuses_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let k = &quantbench::model::source::spec::KNOWN_FILES[0];
    let fake = tmp.path().join(k.file);
    std::fs::File::create(&fake)
        .unwrap()
        .set_len(k.bytes)
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args([
            "generate",
            "--model",
            k.name,
            "--precision",
            "native",
            "--new-tokens",
            "1",
        ])
        .env("QUANTBENCH_MODELS", tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("sha256") && err.contains(k.sha256), "{err}");
    // The script: a folder at the file's path is an error, and the folder is left alone.
    let models = tmp.path().join("models");
    std::fs::create_dir_all(models.join(k.file)).unwrap();
    std::fs::write(models.join(k.file).join("keep"), "mine").unwrap();
    let o = Command::new("bash")
        .arg(root().join("scripts/fetch-models.sh"))
        .env("QUANTBENCH_MODELS", &models)
        .env("PYTHON", "/bin/false")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("in the way"), "{err}");
    assert_eq!(
        std::fs::read_to_string(models.join(k.file).join("keep")).unwrap(),
        "mine"
    );
}

/// The example run as another run of the same thing (a later start).
fn rerun(v: &serde_json::Value, i: usize) -> serde_json::Value {
    let mut v = v.clone();
    v["started_at"] = format!("2026-12-01T10:00:0{i}Z").into();
    v
}

// [6] compare refuses what cannot be compared, and says what differs.
#[test]
fn compare_refuses_different_models_repeated_runs_and_shows_mixed_machines() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt2 = example("example/results.json");
    let a = write_json(tmp.path(), "a/results.json", &gpt2);
    let mut llama = rerun(&gpt2, 1);
    llama["model"]["spec"] = "synthetic:tiny-llama".into();
    llama["model"]["architecture"] = "llama".into();
    llama["model"]["parameters"] = 1234.into();
    let b = write_json(tmp.path(), "b/results.json", &llama);
    let (code, out, err) = quantbench(&["compare", s(&a), s(&b)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("measured different things") && err.contains("synthetic:tiny-llama"),
        "{err}"
    );
    assert!(!out.contains("same machine"), "{out}");
    // Allowed, every row says what differs.
    let (code, out, err) = quantbench(&[
        "compare",
        s(&a),
        s(&b),
        "--allow-different",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = c["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["differs"].as_str().unwrap().contains("tiny-llama")),
        "{out}"
    );
    // A side that mixes models is never pooled, --allow-different or not.
    let a2 = write_json(tmp.path(), "a2/results.json", &rerun(&gpt2, 2));
    let a4 = write_json(tmp.path(), "a4/results.json", &rerun(&gpt2, 4));
    let (code, _, err) = quantbench(&[
        "compare",
        s(&a),
        s(&b),
        "--allow-different",
        "--",
        s(&a2),
        s(&a4),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("base side mixes"), "{err}");
    // One run given twice (the same file, or a copy of it) counts once: refused.
    let (code, _, err) = quantbench(&["compare", s(&a), s(&a), "--", s(&a2), s(&b)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the same file"), "{err}");
    let copy = write_json(tmp.path(), "copy/results.json", &gpt2);
    let (code, _, err) = quantbench(&["compare", s(&a), s(&copy)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("copies of one run"), "{err}");
    // A side that mixes CPUs shows it, though its first runs agree with the other side.
    let mut other_cpu = rerun(&gpt2, 3);
    other_cpu["environment"]["cpu_model"] = "Another CPU".into();
    let c3 = write_json(tmp.path(), "c3/results.json", &other_cpu);
    let (code, out, err) = quantbench(&["compare", s(&a), s(&a4), "--", s(&a2), s(&c3)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cpu_model") && out.contains("Another CPU"),
        "{out}"
    );
    assert!(!out.contains("same machine and build"), "{out}");
}

fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::quantbench_in(args, dir)
}

// [7] Load-time input errors in `run` are bad input (exit 2), found before anything runs.
#[test]
fn run_refuses_load_time_input_errors_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // A tensor missing: renamed away.
    let mut g = Gguf::fixture(LLAMA);
    let victim = g
        .tensors
        .iter()
        .find(|t| t.name.starts_with("blk.1.ffn_up"))
        .unwrap()
        .name
        .clone();
    g.tensor(&victim).name = "blk.1.ffn_upx.weight".into();
    let missing = tmp.path().join("missing.gguf");
    g.write(&missing);
    // A tensor of the wrong shape (one row fewer).
    let mut g = Gguf::fixture(LLAMA);
    let t = g.tensor("output_norm.weight");
    t.ne[0] -= 1;
    t.data.truncate(t.data.len() - 4);
    g.relayout();
    let shape = tmp.path().join("shape.gguf");
    g.write(&shape);
    let q4 = root().join("tests/fixtures/gguf/llama-wide-q4_k_m.gguf");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", s(&missing), "--precisions", "native"],
            "blk.1.ffn_up.weight",
        ),
        (
            vec!["--model", s(&shape), "--precisions", "f32"],
            "output_norm.weight",
        ),
        (
            vec!["--model", s(&q4), "--precisions", "q8_0"],
            "--requantize",
        ),
        (
            vec!["--model", "synthetic:tiny", "--precisions", "native"],
            "not a GGUF file",
        ),
    ];
    for (i, (args, needle)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let mut all = vec![
            "run",
            "--quiet",
            "--no-quality",
            "--new-tokens",
            "2",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--out",
            s(&out),
        ];
        all.extend(args);
        let (code, _, err) = run_in(tmp.path(), &all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert!(!out.join("results.json").exists(), "nothing ran");
    }
}

// [8] native with the linear policy is refused, not recorded as linear.
#[test]
fn native_with_the_linear_policy_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = root().join("tests/fixtures/gguf/llama-gqa-llama3-q8_0.gguf");
    let (code, _, err) = run_in(
        tmp.path(),
        &[
            "run",
            "--quiet",
            "--no-quality",
            "--model",
            s(&f),
            "--precisions",
            "native",
            "--policy",
            "linear",
            "--out",
            "o",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("policy") && err.contains("native"), "{err}");
    let (code, _, err) = quantbench(&[
        "generate",
        "--model",
        s(&f),
        "--precision",
        "native",
        "--policy",
        "linear",
    ]);
    assert_eq!(code, 2, "{err}");
}

/// A scenario of the tiniest run (q8_0 unless `body` names its precisions), then `body`.
fn scenario(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let precisions = if body.contains("precisions") {
        ""
    } else {
        "precisions = [\"q8_0\"]\n"
    };
    std::fs::write(
        &p,
        format!("name = \"{name}\"\ndevice = \"cpu\"\n{precisions}new_tokens = 2\nwarmup = 0\nrepeats = 1\n{body}"),
    )
    .unwrap();
    p
}

// [9] Workloads: duplicate tests, empty tables and lists, products and caches too big,
// and ranges of the flags and environment that run them.
#[test]
fn workloads_and_their_ranges_are_checked_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let bad: Vec<(&str, &str, &str)> = vec![
        ("dup", "model = \"synthetic:tiny\"\n[[workload]]\nprompt_tokens = [8]\nnew_tokens = [0]\n[[workload]]\nprompt_tokens = [8]\nnew_tokens = [0]\n", "'pp8' comes out of the workload twice"),
        ("empty", "model = \"synthetic:tiny\"\n[[workload]]\nprompt_tokens = []\n", "asks for no test"),
        ("no-models", "models = []\n", "models is empty"),
        ("both", "model = \"synthetic:tiny\"\nmodels = [\"synthetic:tiny-llama\"]\n", "both given"),
        ("product", "model = \"synthetic:tiny\"\n[workload]\nprompt_tokens = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\nnew_tokens = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]\ndepth = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]\n", "4352 tests"),
    ];
    for (name, body, needle) in bad {
        let p = scenario(tmp.path(), name, body);
        let start = std::time::Instant::now();
        let (code, _, err) = run_in(
            tmp.path(),
            &["run", s(&p), "--quiet", "--out", &format!("o-{name}")],
        );
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(needle) && err.contains(s(&p)), "{name}: {err}");
        assert!(start.elapsed().as_secs() < 20, "{name}: refused up front");
    }
    let (code, _, err) = run_in(
        tmp.path(),
        &[
            "run",
            "--quiet",
            "--model",
            "synthetic:tiny",
            "--min-seconds",
            "1e300",
            "--out",
            "o-min",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("min_seconds"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args([
            "run",
            "--quiet",
            "--model",
            "synthetic:tiny",
            "--out",
            "o-rayon",
        ])
        .current_dir(tmp.path())
        .env("RAYON_NUM_THREADS", "100000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("RAYON_NUM_THREADS"), "{err}");
    // A test whose KV cache cannot fit (here: the scenario's memory budget) is skipped
    // with the reason, and the others run and are written.
    let p = scenario(
        tmp.path(),
        "kv",
        "model = \"synthetic:tiny\"\nmemory_budget_mb = 150\n[quality]\nenabled = false\n[workload]\nprompt_tokens = [0]\nnew_tokens = [2]\ndepth = [0, 200]\nbatch = [1, 256]\n",
    );
    let (code, _, err) = run_in(tmp.path(), &["run", s(&p), "--quiet", "--out", "o-kv"]);
    assert_eq!(code, 0, "{err}");
    let run = quantbench::report::read_results(&tmp.path().join("o-kv/results.json")).unwrap();
    let tests = &run.variants[0].tests;
    let big = tests.iter().find(|t| t.name == "tg2 @ d200 x256").unwrap();
    assert_eq!(
        big.status,
        quantbench::run::workload::TestStatus::Skipped,
        "{big:?}"
    );
    assert!(
        big.error.as_deref().unwrap().contains("KV cache"),
        "{big:?}"
    );
    assert_eq!(
        tests
            .iter()
            .filter(|t| t.status == quantbench::run::workload::TestStatus::Ok)
            .count(),
        3
    );
}

// [10] The quality pass: windows that score nothing, NaN logits, the gate's csv cell.
#[test]
fn quality_windows_nan_top1_and_the_unevaluated_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let p = scenario(
        tmp.path(),
        "w2",
        "model = \"synthetic:tiny\"\n[quality]\nscoring = \"second-half\"\nwindow = 2\nmax_kl = 10.0\n",
    );
    let (code, _, err) = run_in(tmp.path(), &["run", s(&p), "--quiet", "--out", "o-w2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("quality.window must be at least 3"), "{err}");
    // NaN weights: same-top-1 is absent (argmax over NaN means nothing), as KL is.
    let model = tmp.path().join("nan");
    let (code, _, err) = quantbench(&["export", "--model", "synthetic:tiny", "--out", s(&model)]);
    assert_eq!(code, 0, "{err}");
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for chunk in bytes[8 + n..].chunks_exact_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let p = scenario(
        tmp.path(),
        "nan",
        "model = \"nan\"\nprecisions = [\"f32\", \"q8_0\"]\n[quality]\nwindow = 32\nmax_tokens = 100\nmin_same_top1 = 0.5\n",
    );
    let (code, _, err) = run_in(tmp.path(), &["run", s(&p), "--quiet", "--out", "o-nan"]);
    assert_eq!(code, 3, "a gate on an absent figure does not pass: {err}");
    let run = quantbench::report::read_results(&tmp.path().join("o-nan/results.json")).unwrap();
    for v in &run.variants {
        let q = v.quality.as_ref().unwrap();
        assert_eq!(q.same_top1, None, "{}: {q:?}", v.precision);
        assert!(
            q.notes.iter().any(|n| n.contains("same_top1 is absent")),
            "{:?}",
            q.notes
        );
    }
    // --no-quality with a gate set: the csv says "not evaluated".
    let p = scenario(
        tmp.path(),
        "nq",
        "model = \"synthetic:tiny\"\n[quality]\nmax_kl = 0.5\n",
    );
    let (code, _, err) = run_in(
        tmp.path(),
        &["run", s(&p), "--quiet", "--no-quality", "--out", "o-nq"],
    );
    assert_eq!(code, 0, "{err}");
    let csv = std::fs::read_to_string(tmp.path().join("o-nq/results.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().contains("not evaluated"),
        "{csv}"
    );
}

// [11] Workload and environment figures read back are checked as the variants' are.
#[test]
fn impossible_workload_and_environment_figures_are_refused_on_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let base = example("context-sweep-example/synthetic-gpt2/results.json");
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit, &str)> = vec![
        (
            "median",
            Box::new(|v| {
                v["variants"][0]["tests"][0]["decode_tokens_per_second"]["median"] = (-3.0).into()
            }),
            "decode_tokens_per_second.median = -3",
        ),
        (
            "fraction",
            Box::new(|v| v["variants"][0]["tests"][0]["bandwidth_fraction"] = (-2.0).into()),
            "bandwidth_fraction = -2",
        ),
        (
            "read",
            Box::new(|v| v["environment"]["memory_bandwidth"]["read_gbps"] = 0.0.into()),
            "read_gbps = 0",
        ),
        (
            "batch",
            Box::new(|v| v["variants"][0]["tests"][0]["batch"] = 0.into()),
            "batch = 0",
        ),
        (
            "steps",
            Box::new(|v| {
                v["variants"][0]["tests"][0]["decode_step_seconds"] = serde_json::json!([])
            }),
            "no decode steps",
        ),
        (
            "step",
            Box::new(|v| {
                v["variants"][0]["tests"][0]["decode_step_seconds"][0] = serde_json::json!([])
            }),
            "decode steps where the test takes",
        ),
    ];
    // The edits land on a test with decode steps.
    assert!(
        base["variants"][0]["tests"][0]["decode_step_seconds"][0]
            .as_array()
            .unwrap()
            .len()
            > 1
    );
    for (name, edit, needle) in edits {
        let mut v = base.clone();
        edit(&mut v);
        let f = write_json(tmp.path(), &format!("{name}/results.json"), &v);
        let (code, _, err) = quantbench(&["report", s(&f)]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(needle) && err.contains(s(&f)), "{name}: {err}");
    }
}

// [12] history does not follow a symbolic-link loop round and round.
#[test]
fn history_counts_each_run_once_through_symlink_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_json(&runs, "a/results.json", &example("example/results.json"));
    std::os::unix::fs::symlink(&runs, runs.join("a/loop")).unwrap();
    std::os::unix::fs::symlink(runs.join("a"), runs.join("again")).unwrap();
    let out = tmp.path().join("h");
    let (code, stdout, err) = quantbench(&["history", s(&runs), "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with("3 variant results from 1 files"),
        "{stdout}"
    );
}

/// Run the binary with the file-size limit at `limit` bytes (writes past it fail with
/// "File too large", as a full disk fails with "No space left") and the umask at 022.
fn limited(args: &[&str], cwd: &Path, limit: u64) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quantbench"));
    c.args(args).current_dir(cwd).env("HF_HUB_OFFLINE", "1");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            libc::umask(0o022);
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &r);
            Ok(())
        });
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

// [13] Exports and the quality pass: folders, write errors, modes and leftovers.
#[test]
fn exports_check_up_front_name_the_file_that_failed_take_the_umask_and_sweep_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    // A refused hf export leaves no folder behind.
    let llama3 = root().join("tests/fixtures/gguf").join(LLAMA);
    let hf = tmp.path().join("hf-out");
    let (code, _, err) = quantbench(&["export", "--model", s(&llama3), "--out", s(&hf)]);
    assert_eq!(code, 2, "{err}");
    assert!(!hf.exists(), "no empty folder left");
    // --out a folder for a GGUF export: refused up front.
    let dir = tmp.path().join("model.gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::time::Instant::now();
    let (code, _, err) = quantbench(&[
        "export",
        "--model",
        "synthetic:gpt2",
        "--format",
        "gguf",
        "--out",
        s(&dir),
        "--force",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a folder"), "{err}");
    assert!(start.elapsed().as_secs() < 10, "before exporting");
    // A write that fails names the file; nothing is left.
    let out = tmp.path().join("gguf");
    std::fs::create_dir_all(&out).unwrap();
    let (code, _, err) = limited(
        &[
            "export",
            "--model",
            "synthetic:tiny",
            "--format",
            "gguf",
            "--out",
            "gguf/t.gguf",
        ],
        tmp.path(),
        1 << 20,
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("File too large") && err.contains("gguf/"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left");
    // The export takes the umask's permissions, as every other output.
    let (code, _, err) = limited(
        &[
            "export",
            "--model",
            "synthetic:tiny",
            "--format",
            "gguf",
            "--out",
            "gguf/t.gguf",
        ],
        tmp.path(),
        libc::RLIM_INFINITY,
    );
    assert_eq!(code, 0, "{err}");
    let mode = std::fs::metadata(out.join("t.gguf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    // A killed export's part (its process gone) is swept by the next export there.
    let stale = out.join(".quantbench-export-2147483632-0.part");
    std::fs::write(&stale, vec![0u8; 1000]).unwrap();
    let (code, _, err) = quantbench(&[
        "export",
        "--model",
        "synthetic:tiny",
        "--format",
        "gguf",
        "--out",
        s(&out.join("u.gguf")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!stale.exists());
    // The quality pass's reference lives in the run's folder, a failed write names it,
    // and a killed run's is swept by the next run there.
    let p = scenario(
        tmp.path(),
        "q",
        "model = \"synthetic:tiny\"\n[quality]\nwindow = 64\nmax_tokens = 200\n",
    );
    let (code, _, err) = limited(
        &["run", s(&p), "--quiet", "--out", "o-q"],
        tmp.path(),
        4 << 20,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("quality pass failed")
            && err.contains("File too large")
            && err.contains("o-q/.quantbench-reference-"),
        "{err}"
    );
    let o2 = tmp.path().join("o-q2");
    std::fs::create_dir_all(&o2).unwrap();
    let stale = o2.join(".quantbench-reference-2147483632-0.part");
    std::fs::write(&stale, vec![0u8; 1000]).unwrap();
    let (code, _, err) = run_in(tmp.path(), &["run", s(&p), "--quiet", "--out", "o-q2"]);
    assert_eq!(code, 0, "{err}");
    assert!(!stale.exists());
    let left: Vec<_> = std::fs::read_dir(&o2)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

// [14] Non-UTF-8 settings are refused, not treated as unset; a GGUF that asks for a BOS
// gets it first, as llama.cpp gives it.
#[test]
fn non_utf8_settings_are_refused_and_gguf_bos_is_added_as_asked() {
    use std::os::unix::ffi::OsStrExt;
    for name in ["QUANTBENCH_KERNELS", "QUANTBENCH_LEVEL"] {
        let o = Command::new(env!("CARGO_BIN_EXE_quantbench"))
            .args(["list"])
            .env(name, std::ffi::OsStr::from_bytes(b"avx\xff2"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name) && err.contains("UTF-8"), "{err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    // A SentencePiece file: llama.cpp adds its BOS (1) by default.
    let spm = Gguf::fixture("spm-tiny-f32.gguf");
    assert!(spm.get("tokenizer.ggml.add_bos_token").is_none());
    let ids = |g: &Gguf, name: &str| {
        let p = tmp.path().join(name);
        g.write(&p);
        let (code, out, err) = generate(&p);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .find(|l| l.starts_with("prompt ids:"))
            .unwrap()
            .to_string()
    };
    let default = ids(&spm, "spm.gguf");
    assert!(default.contains("[1, "), "{default}");
    let mut off = spm.clone();
    off.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
    let without = ids(&off, "spm-off.gguf");
    assert!(!without.contains("[1, "), "{without}");
    assert_eq!(
        without.replace("prompt ids:   [", "prompt ids:   [1, "),
        default
    );
    // A byte-level BPE of GPT-2's kind adds none unless it asks.
    let mut gpt2 = Gguf::fixture("gpt2-q8_0.gguf");
    let plain = ids(&gpt2, "gpt2.gguf");
    gpt2.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    gpt2.set("tokenizer.ggml.bos_token_id", Value::U32(7));
    let asked = ids(&gpt2, "gpt2-bos.gguf");
    assert_eq!(
        asked,
        plain.replace("prompt ids:   [", "prompt ids:   [7, ")
    );
}

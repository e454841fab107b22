//! Hardening, round 2: each test here failed before its fix (issue #19's items are named
//! in brackets). Through the real binary where the fault was seen there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{quantbench, quantbench_in};

fn example_results() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/example/results.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(dir: &Path, name: &str, v: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny exported model in `dir` (config, f32 safetensors, tokenizer files).
fn export_tiny(dir: &Path) {
    let (code, _, err) = quantbench(&["export", "--model", "synthetic:tiny", "--out", s(dir)]);
    assert_eq!(code, 0, "{err}");
}

// [1] export onto its own source, into a non-empty folder, and interrupted.
#[test]
fn export_refuses_its_own_source_and_a_non_empty_folder_and_never_leaves_partial_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    export_tiny(&dir);
    let before = std::fs::read(dir.join("model.safetensors")).unwrap();
    // The same folder, spelled another way.
    let spelled = format!("{}/../m/.", s(&dir));
    for out in [s(&dir), spelled.as_str()] {
        let (code, _, err) = quantbench(&["export", "--model", s(&dir), "--out", out, "--force"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("onto itself"), "{err}");
    }
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        before
    );

    // A non-empty destination: refused without --force, the user's file untouched.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), "the user's own").unwrap();
    let (code, _, err) = quantbench(&["export", "--model", "synthetic:tiny", "--out", s(&other)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("config.json")).unwrap(),
        "the user's own"
    );
    let (code, _, err) = quantbench(&[
        "export",
        "--model",
        "synthetic:tiny",
        "--out",
        s(&other),
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(other.join("model.safetensors")).unwrap(),
        before,
        "the same synthetic model, written whole"
    );
    let names: Vec<String> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "no staging left: {names:?}"
    );

    // Interrupted while writing GPT-2 small's 500 MB: no file under a final name.
    let big = tmp.path().join("big");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args(["export", "--model", "synthetic:gpt2", "--out", s(&big)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the staging folder holds a growing safetensors file, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let growing = std::fs::read_dir(&big).ok().and_then(|rd| {
            rd.flatten()
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".quantbench-export-")
                })
                .and_then(|e| std::fs::metadata(e.path().join("model.safetensors")).ok())
                .filter(|m| m.len() > 10_000_000)
        });
        if growing.is_some() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    // The folder the export made is removed with what was in it (#36).
    let left: Vec<String> = std::fs::read_dir(&big)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "an interrupted export leaves nothing: {left:?}"
    );
}

// [3] [17] non-finite figures: a model with NaN weights, run with the quality pass.
#[test]
fn nan_weights_give_absent_figures_a_bounded_chart_and_a_gate_that_does_not_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("nan");
    export_tiny(&model);
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for chunk in bytes[8 + n..].chunks_exact_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let scenario = tmp.path().join("nan.toml");
    std::fs::write(
        &scenario,
        "name = \"nan\"\nmodel = \"nan\"\ndevice = \"cpu\"\nprecisions = [\"f32\", \"q8_0\"]\nnew_tokens = 3\nwarmup = 0\nrepeats = 1\n[quality]\nwindow = 32\nmax_tokens = 200\nmax_kl = 0.1\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let start = std::time::Instant::now();
    let (code, _, err) = quantbench(&["run", s(&scenario), "--out", s(&out), "--quiet"]);
    assert!(start.elapsed().as_secs() < 120, "finished in bounded time");
    assert_eq!(code, 3, "the gate cannot pass on absent figures: {err}");
    assert!(err.contains("quality gate: q8_0/all did not pass"), "{err}");
    let run = quantbench::report::read_results(&out.join("results.json")).unwrap();
    let q = run.variants[1].quality.as_ref().unwrap();
    assert_eq!(q.kl_mean, None);
    assert!(
        q.notes.iter().any(|n| n.contains("kl_mean")),
        "{:?}",
        q.notes
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("n/a"), "{md}");
    assert!(std::fs::metadata(out.join("quality.png")).unwrap().len() < 5_000_000);
    assert!(!out.join(".quantbench.lock").exists());
}

// [3] [8] [17] figures in a results file: null, huge, impossible, the wrong type.
#[test]
fn results_files_with_null_huge_or_impossible_figures() {
    let tmp = tempfile::tempdir().unwrap();
    // null where a number was: read back as n/a.
    let mut v = example_results();
    v["variants"][1]["quality"]["kl_mean"] = serde_json::Value::Null;
    let f = write_json(tmp.path(), "null/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(tmp.path().join("null/report.md")).unwrap();
    assert!(md.contains("| n/a |"), "{md}");
    // A huge KL: the chart's axis stays bounded and report finishes.
    let mut v = example_results();
    v["variants"][1]["quality"]["kl_mean"] = serde_json::json!(1e308);
    v["variants"][2]["timing"]["generate_seconds"]["max"] = serde_json::json!(1e308);
    let f = write_json(tmp.path(), "huge/results.json", &v);
    let start = std::time::Instant::now();
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 0, "{err}");
    assert!(start.elapsed().as_secs() < 30);
    // A negative time is impossible: refused, naming the variant and field.
    let mut v = example_results();
    v["variants"][0]["generate_seconds"][0] = serde_json::json!(-1.0);
    let f = write_json(tmp.path(), "neg/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("variants[0] (f32): generate_seconds[0] = -1"),
        "{err}"
    );
    let (code, _, err) = quantbench(&["compare", s(&f), s(&f)]);
    assert_eq!(code, 2, "{err}");
    // A generation of zero seconds would give infinite rates and speed-ups.
    let mut v = example_results();
    v["variants"][0]["timing"]["generate_seconds"]["min"] = serde_json::json!(0.0);
    let f = write_json(tmp.path(), "zero/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("timing.generate_seconds.min = 0"), "{err}");
    // A field of the wrong type is named by its path.
    let mut v = example_results();
    v["variants"][2]["weights_bytes"] = serde_json::json!("many");
    let f = write_json(tmp.path(), "type/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("variants[2].weights_bytes"), "{err}");
    // "schema_version": "1" is a string, not a missing field.
    let mut v = example_results();
    v["schema_version"] = serde_json::json!("1");
    let f = write_json(tmp.path(), "sv/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("schema_version must be a whole number"),
        "{err}"
    );
    // [18] An interrupted variant is "interrupted" in the csv, not "failed".
    let mut v = example_results();
    v["variants"][2]["status"] = serde_json::json!("interrupted");
    let f = write_json(tmp.path(), "int/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 0, "{err}");
    let csv = std::fs::read_to_string(tmp.path().join("int/results.csv")).unwrap();
    assert!(
        csv.lines().nth(3).unwrap().starts_with("q4_0,interrupted,"),
        "{csv}"
    );
    // A variant that is ok but has no timings is not shown as failed.
    let mut v = example_results();
    v["variants"][0]["timing"] = serde_json::Value::Null;
    let f = write_json(tmp.path(), "nt/results.json", &v);
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(tmp.path().join("nt/report.md")).unwrap();
    assert!(md.contains("no timings recorded"), "{md}");
}

// [4] [17] numbers near the integer limit, and a prompt longer than the context.
#[test]
fn token_counts_that_overflow_and_prompts_longer_than_the_context_are_bad_input() {
    for cmd in ["generate", "run"] {
        let (code, _, err) = quantbench(&[
            cmd,
            "--model",
            "synthetic:tiny",
            "--new-tokens",
            "18446744073709551615",
            if cmd == "run" {
                "--quiet"
            } else {
                "--stop-at-eos"
            },
        ]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("more than the model's context"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let long = "word ".repeat(400);
    let (code, _, err) = quantbench(&["generate", "--model", "synthetic:tiny", "--prompt", &long]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("longer than the model's context") && !err.contains("at most 0"),
        "{err}"
    );
}

// [5] range checks at parse time, before any model loads or a lock is taken.
#[test]
fn quality_and_budget_ranges_are_checked_when_the_scenario_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    for (table, needle) in [
        ("[quality]\nstride = 0", "stride"),
        ("[quality]\nmax_tokens = 1", "max_tokens"),
        ("[quality]\nwindow = 1", "window"),
        ("[quality]\nmax_kl = -1.0", "max_kl"),
        ("[quality]\nmin_same_top1 = 1.5", "min_same_top1"),
        ("memory_budget_mb = 0", "memory_budget_mb"),
        ("memory_budget_mb = -5.0", "memory_budget_mb"),
        ("repeats = 1000000000", "repeats"),
    ] {
        let p = tmp.path().join("range.toml");
        std::fs::write(
            &p,
            format!("name = \"r\"\nmodel = \"synthetic:tiny\"\n{table}\n"),
        )
        .unwrap();
        let out = tmp.path().join("out");
        let (code, _, err) = quantbench(&["run", s(&p), "--out", s(&out)]);
        assert_eq!(code, 2, "{table}: {err}");
        assert!(
            err.contains(needle) && err.contains("line"),
            "{table}: {err}"
        );
        assert!(!out.exists(), "{table}: refused before the output folder");
    }
    // A stride larger than the default window (the model's context) is refused at prepare.
    let p = tmp.path().join("stride.toml");
    std::fs::write(
        &p,
        "name = \"r\"\nmodel = \"synthetic:tiny\"\n[quality]\nstride = 100000\n",
    )
    .unwrap();
    let (code, _, err) = quantbench(&["run", s(&p), "--out", s(&tmp.path().join("o2"))]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("quality.stride (100000) exceeds the window"),
        "{err}"
    );
}

// [6] the quality pass failing is said, recorded, and fails a configured gate.
#[test]
fn a_failed_quality_pass_is_said_and_a_gate_it_leaves_unevaluated_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("q.toml");
    // An already quantized file without --requantize has no f32 reference (#36 moved the
    // reference's scratch file into the run's folder, so TMPDIR no longer breaks it).
    let q4 =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/llama-wide-q4_k_m.gguf");
    std::fs::write(
        &scenario,
        format!("name = \"q\"\nmodel = {:?}\ndevice = \"cpu\"\nprecisions = [\"native\"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n[quality]\nwindow = 32\nmax_tokens = 100\nmin_same_top1 = 0.1\n", s(&q4)),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args(["run", s(&scenario), "--out", s(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("quality pass failed"), "{err}");
    assert!(
        err.contains("quality gate: native/all did not pass: quality gate not evaluated"),
        "{err}"
    );
    assert!(
        stdout.contains("GATE"),
        "the summary table says it: {stdout}"
    );
    let run = quantbench::report::read_results(&out.join("results.json")).unwrap();
    assert!(run.quality_error.is_some());
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.contains("not evaluated"), "{csv}");
}

// [7] compare's thresholds, and a gate that compared nothing; [19] several runs per side.
#[test]
fn compare_validates_thresholds_and_judges_several_runs_per_side() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_json(tmp.path(), "a/results.json", &example_results());
    // Another run of the same thing (#36: one run given twice is refused).
    let rerun = |i: usize| {
        let mut v = example_results();
        v["started_at"] = serde_json::json!(format!("2026-11-24T10:00:0{i}Z"));
        v
    };
    let a2 = write_json(tmp.path(), "a2/results.json", &rerun(9));
    for bad in [
        vec!["--noise", "NaN"],
        vec!["--noise", "inf"],
        vec!["--noise=-1"],
        vec!["--threshold", "generate_seconds=NaN"],
        vec!["--threshold", "generate_seconds=-2"],
    ] {
        let mut args = vec!["compare", s(&a), s(&a2)];
        args.extend(bad.iter());
        let (code, _, err) = quantbench(&args);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    // No shared variant: nothing compared, and a gate on nothing fails.
    let mut other = example_results();
    for v in other["variants"].as_array_mut().unwrap() {
        v["policy"] = serde_json::json!("linear");
    }
    let b = write_json(tmp.path(), "b/results.json", &other);
    let (code, _, err) = quantbench(&["compare", s(&a), s(&b), "--fail-on-regression"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing was compared"), "{err}");
    // Several runs per side, as files and as a folder of runs.
    let runs = tmp.path().join("runs");
    for i in 0..3 {
        write_json(&runs, &format!("r{i}/results.json"), &rerun(i));
    }
    let (code, out, err) = quantbench(&["compare", s(&a), s(&a2), "--", s(&runs)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("spread between runs (2 base, 3 new"), "{out}");
    assert!(out.contains("0 slower"), "{out}");
    let (code, out, _) = quantbench(&["compare", s(&a), s(&a2)]);
    assert_eq!(code, 0);
    assert!(out.contains("NOT seen"), "one run per side says so: {out}");
}

// [9] report never rewrites its input.
#[test]
fn report_leaves_its_results_file_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut v = example_results();
    v["a_field_from_a_newer_build"] = serde_json::json!({"kept": true});
    let f = write_json(tmp.path(), "run/results.json", &v);
    let before = std::fs::read(&f).unwrap();
    let (code, _, err) = quantbench(&["report", s(&f)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), before);
    assert!(tmp.path().join("run/report.md").is_file());
    let (code, _, err) = quantbench(&["report", s(&tmp.path().join("run"))]);
    assert_eq!(code, 0, "a folder stands for its results.json: {err}");
}

// [10] a lock left by a dead run is taken over; one held by a live process is not.
#[test]
fn a_stale_lock_is_taken_over_and_a_live_one_refuses() {
    use std::os::unix::io::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("t.toml");
    std::fs::write(
        &scenario,
        "name = \"t\"\nmodel = \"synthetic:tiny\"\ndevice = \"cpu\"\nprecisions = [\"q8_0\"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n[quality]\nenabled = false\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Left by a process that was SIGKILLed: nobody holds the file lock.
    std::fs::write(out.join(".quantbench.lock"), "4194303\n").unwrap();
    let (code, _, err) = quantbench(&["run", s(&scenario), "--out", s(&out), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("took over the lock") && err.contains("4194303"),
        "{err}"
    );
    assert!(!out.join(".quantbench.lock").exists());

    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let f = std::fs::File::create(busy.join(".quantbench.lock")).unwrap();
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let (code, _, err) = quantbench(&["run", s(&scenario), "--out", s(&busy), "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another quantbench run"), "{err}");
    drop(f);
}

// [11] every path in a scenario resolves once, against the scenario's folder.
#[test]
fn a_relative_scenario_path_and_relative_text_resolve_from_another_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("sc/q");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::write(
        q.join("eval.txt"),
        "Once upon a time there was a small evaluation text.",
    )
    .unwrap();
    std::fs::write(
        q.join("s.toml"),
        "name = \"s\"\nmodel = \"synthetic:tiny\"\ndevice = \"cpu\"\nprecisions = [\"f32\"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n[quality]\ntext = \"eval.txt\"\nwindow = 8\n",
    )
    .unwrap();
    // From the folder above sc/, with a relative scenario path.
    let (code, _, err) = quantbench_in(
        &["run", "sc/q/s.toml", "--out", "out", "--quiet"],
        tmp.path(),
    );
    assert_eq!(code, 0, "{err}");
    let run = quantbench::report::read_results(&tmp.path().join("out/results.json")).unwrap();
    assert_eq!(run.quality_reference.unwrap().text_source, "sc/q/eval.txt");
}

// [12] [13] history with hostile scenario names, and output paths that cannot be written.
#[test]
fn history_survives_long_and_path_like_names_and_output_errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, name) in [
        "x".repeat(240),
        "../../etc/passwd".to_string(),
        "ok".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let mut v = example_results();
        v["scenario"]["name"] = serde_json::json!(name);
        write_json(tmp.path(), &format!("runs/{i}/results.json"), &v);
    }
    let out = tmp.path().join("hist");
    let (code, stdout, err) =
        quantbench(&["history", s(&tmp.path().join("runs")), "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("wrote 25 files"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().contains("rss_peak_bytes"),
        "[18] one name: {csv}"
    );
    for entry in std::fs::read_dir(&out).unwrap() {
        assert!(entry.unwrap().file_name().len() < 120);
    }
    assert!(!tmp.path().join("etc").exists());

    // An output path under a file: exit 2, the path named.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under = file.join("sub");
    let results = tmp.path().join("runs/2/results.json");
    for args in [
        vec!["report", s(&results), "--out", s(&under)],
        vec!["history", s(&tmp.path().join("runs")), "--out", s(&under)],
        vec!["export", "--model", "synthetic:tiny", "--out", s(&under)],
    ] {
        let (code, _, err) = quantbench(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(s(&file)) && err.contains("not a folder"),
            "{args:?}: {err}"
        );
    }
    // [17] an --out that is a symlink loop says so.
    let a = tmp.path().join("loop-a");
    let b = tmp.path().join("loop-b");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let (code, _, err) = quantbench(&["report", s(&results), "--out", s(&a)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("loops"), "{err}");
}

// [14] non-regular files are refused, not read until memory runs out.
#[test]
fn devices_and_folders_are_refused_as_results_files() {
    for args in [
        vec!["report", "/dev/zero"],
        vec!["compare", "/dev/zero", "/dev/zero"],
        vec!["run", "/dev/zero"],
    ] {
        let (code, _, err) = quantbench(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
}

// [15] a closed pipe ends the output quietly.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .arg("list")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe is closed with output still to come.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("engines"), "{first}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// [16] two runs started in the same second get their own default folders.
#[test]
fn default_output_folders_are_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("same.toml");
    std::fs::write(
        &scenario,
        "name = \"same\"\nmodel = \"synthetic:tiny\"\ndevice = \"cpu\"\nprecisions = [\"q8_0\"]\nnew_tokens = 1\nwarmup = 0\nrepeats = 1\n[quality]\nenabled = false\n",
    )
    .unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_quantbench"))
            .args(["run", s(&scenario), "--quiet"])
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(spawn);
        let b = sc.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let folders: Vec<_> = std::fs::read_dir(tmp.path().join("reports"))
        .unwrap()
        .collect();
    assert_eq!(folders.len(), 2);

    // [18] one new token: no decode figure anywhere, rather than 0.0 in one place.
    for f in folders {
        let dir = f.unwrap().path();
        let run = quantbench::report::read_results(&dir.join("results.json")).unwrap();
        let t = run.variants[0].timing.as_ref().unwrap();
        assert!(t.decode_tokens_per_second.is_none() && t.decode_step_seconds.is_none());
        assert_eq!(run.variants[0].memory.peak_sample_interval_ms, Some(5.0));
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("sampled every 5 ms"), "{md}");
    }
}

// [17] misleading messages about model files.
#[test]
fn model_file_messages_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    export_tiny(&dir);
    let gen = |d: &Path| quantbench(&["generate", "--model", s(d), "--new-tokens", "2"]);
    // A byte-order mark before config.json's JSON is accepted.
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), format!("\u{feff}{cfg}")).unwrap();
    let (code, _, err) = gen(&dir);
    assert_eq!(code, 0, "{err}");
    // A JSON array is not "expected a string".
    std::fs::write(dir.join("config.json"), "[1, 2]").unwrap();
    let (code, _, err) = gen(&dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an array"), "{err}");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    // model.safetensors as a symlink loop, or a device: named as such, not "missing".
    let st = dir.join("model.safetensors");
    std::fs::rename(&st, dir.join("real.safetensors")).unwrap();
    std::os::unix::fs::symlink(&st, &st).unwrap();
    let (code, _, err) = gen(&dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("loops"), "{err}");
    std::fs::remove_file(&st).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &st).unwrap();
    let (code, _, err) = gen(&dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    std::fs::remove_file(&st).unwrap();
    // A header that lies about a tensor's byte range names the tensor.
    let mut bytes = std::fs::read(dir.join("real.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let lying = header.replacen("\"shape\":[256]}", "\"shape\":[257]}", 1);
    assert_ne!(lying, header, "the model has a [256] tensor");
    let mut out = (lying.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(lying.as_bytes());
    out.extend_from_slice(&bytes.split_off(8 + n));
    std::fs::write(&st, out).unwrap();
    let (code, _, err) = gen(&dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tensor '") && err.contains("[257]"), "{err}");
}

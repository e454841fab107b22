//! A tiny scenario through the real binary: every output file, the fixed result fields,
//! failures recorded while the run goes on, and the exit statuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use quantbench::record::{RunRecord, RunStatus, VariantStatus};

mod common;
use common::quantbench_in as quantbench;

const TINY: &str = r#"
name = "tiny"
description = "end-to-end test"
model = "synthetic:tiny"
device = "cpu"
precisions = ["f32", "int8", "int4"]
prompt = "Once upon a time"
new_tokens = 8
warmup = 1
repeats = 2
"#;

fn write_scenario(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("scenario.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_tiny_scenario_writes_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = write_scenario(tmp.path(), TINY);
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = quantbench(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("q4_0") && stdout.contains("tok/s"),
        "summary table: {stdout}"
    );

    for f in quantbench::report::OUTPUT_FILES {
        let p = out.join(f);
        assert!(p.is_file(), "{f} missing");
        assert!(
            std::fs::metadata(&p).unwrap().len() > 100,
            "{f} is nearly empty"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // results.json: the fixed names scripts rely on, per variant.
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(raw["schema_version"], 1);
    for key in [
        "cpu_model",
        "logical_cores",
        "ram_bytes",
        "os",
        "quantbench_version",
        "git_commit",
        "candle_version",
        "build_features",
        "device",
        "timestamp",
    ] {
        assert!(
            !raw["environment"][key].is_null(),
            "environment.{key} missing"
        );
    }
    assert_eq!(raw["scenario"]["name"], "tiny");
    let variants = raw["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 3);
    let params = quantbench::model::source::synthetic::Preset::find("tiny")
        .unwrap()
        .config()
        .parameter_count();
    for (v, name) in variants.iter().zip(["f32", "q8_0", "q4_0"]) {
        assert_eq!(v["precision"], name);
        assert_eq!(v["status"], "ok");
        assert!(v["error"].is_null());
        assert_eq!(v["new_tokens"], 8);
        assert_eq!(v["generated_token_ids"].as_array().unwrap().len(), 8);
        assert!(v["generated_text"].is_string());
        assert!(v["weights_bytes"].as_u64().unwrap() > 0);
        let gens = v["generate_seconds"].as_array().unwrap();
        assert_eq!(gens.len(), 2);
        assert!(gens.iter().all(|g| g.as_f64().unwrap() > 0.0));
        assert_eq!(v["tokens_identical_across_repetitions"], true);
        for m in [
            "before_load",
            "after_load",
            "peak_during_generation",
            "after_cleanup",
        ] {
            assert!(
                v["memory"][m]["process_rss_bytes"].as_u64().unwrap() > 0,
                "{name} {m}"
            );
        }
    }
    assert_eq!(
        variants[0]["weights_bytes"].as_u64().unwrap(),
        4 * params as u64
    );

    let run = RunRecord::from_json(&text, "results.json").unwrap();
    assert_eq!(run.status, RunStatus::Complete);
    assert!(run.model.synthetic);

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("precision,status,weights_bytes"));
    assert!(lines[3].starts_with("q4_0,ok,"));

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "| variant | memory after load | 8-token generate | memory after cleanup |",
        "speed-up vs f32",
        "bits/weight",
        "## Generated text",
        "synthetic",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}");
    }

    let png = std::fs::read(out.join("memory.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(out.join("latency.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("q8_0") && svg.contains("tokens per second"));

    // The same folder again is refused before anything runs.
    let (code, _, stderr) = quantbench(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already holds a results.json"), "{stderr}");

    // report re-renders from the results alone, into another folder.
    let again = tmp.path().join("again");
    let (code, _, stderr) = quantbench(
        &[
            "report",
            out.join("results.json").to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(again.join("report.md")).unwrap(),
        md,
        "report.md re-renders identically from results.json"
    );
}

#[test]
fn a_failing_variant_is_recorded_and_the_others_still_run() {
    // f32 synthetic:tiny holds ~55 MB of weights: a 45 MB budget fails it, not int4.
    let tmp = tempfile::tempdir().unwrap();
    let text = TINY.replace(
        "repeats = 2",
        "repeats = 1\nmemory_budget_mb = 45\n[quality]\nenabled = false",
    );
    let scenario = write_scenario(tmp.path(), &text);
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = quantbench(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code, 1, "a failed variant exits 1: {stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    let run = quantbench::report::read_results(&out.join("results.json")).unwrap();
    assert_eq!(run.variants.len(), 3);
    let f32 = &run.variants[0];
    assert_eq!(f32.status, VariantStatus::Failed);
    assert!(
        f32.error
            .as_ref()
            .unwrap()
            .contains("memory_budget_mb of 45"),
        "{:?}",
        f32.error
    );
    assert!(
        f32.memory.after_cleanup.is_some(),
        "memory is read after a failure too"
    );
    assert_eq!(run.variants[2].status, VariantStatus::Ok);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**f32/all**: failed: "), "{md}");
}

#[test]
fn flags_make_a_one_off_scenario_and_bad_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("oneoff");
    let (code, _, stderr) = quantbench(
        &[
            "run",
            "--model",
            "synthetic:tiny",
            "--precisions",
            "q4_k,fp16",
            "--new-tokens",
            "3",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let run = quantbench::report::read_results(&out.join("results.json")).unwrap();
    assert_eq!(run.scenario.name, "one-off");
    let names: Vec<&str> = run.variants.iter().map(|v| v.precision.name()).collect();
    assert_eq!(names, ["q4_k", "f16"]);
    assert!(run
        .variants
        .iter()
        .all(|v| v.generated_token_ids.len() == 3));

    let bad = write_scenario(
        tmp.path(),
        "name = \"x\"\nmodel = \"synthetic:tiny\"\nrepeats = -1\n",
    );
    let (code, _, stderr) = quantbench(&["run", bad.to_str().unwrap()], tmp.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("scenario.toml") && stderr.contains("line 3") && stderr.contains("repeats"),
        "{stderr}"
    );

    let (code, _, stderr) = quantbench(
        &["run", "--device", "cuda", "--model", "synthetic:tiny"],
        tmp.path(),
    );
    if !cfg!(feature = "cuda") {
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("without CUDA"), "{stderr}");
    }
}

#[test]
fn every_committed_scenario_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let files = quantbench::scenario::list_dir(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "quickstart.toml",
        "gpt2-notebook.toml",
        "distilgpt2-footprint.toml",
        "all-precisions.toml",
        "context-sweep.toml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from scenarios/"
        );
    }
    for f in files {
        let s = quantbench::Scenario::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!s.variants().is_empty());
    }
    let q = quantbench::Scenario::load(&dir.join("quickstart.toml")).unwrap();
    assert_eq!(q.model.to_string(), "synthetic:gpt2");
    assert_eq!((q.new_tokens, q.warmup, q.repeats), (50, 1, 5));
    assert_eq!(q.prompt, "Once upon a time");
}

#[test]
fn the_quality_gate_fails_a_variant_and_sets_exit_status_3() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("eval.txt"),
        "A short evaluation text, read from beside the scenario file, long enough for a few windows of tokens to be scored against the reference.",
    )
    .unwrap();
    let text = r#"
name = "gate"
model = "synthetic:tiny"
device = "cpu"
precisions = ["f32", "q4_0"]
new_tokens = 3
warmup = 0
repeats = 1

[quality]
text = "eval.txt"
window = 16
max_kl = 1e-9
min_same_top1 = 0.5
"#;
    let scenario = write_scenario(tmp.path(), text);
    let out = tmp.path().join("out");
    let (code, _, stderr) = quantbench(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ],
        tmp.path(),
    );
    assert_eq!(code, 3, "a failed quality gate exits 3: {stderr}");
    let run = quantbench::report::read_results(&out.join("results.json")).unwrap();
    let r = run.quality_reference.as_ref().unwrap();
    assert!(r.text_source.ends_with("eval.txt"), "{}", r.text_source);
    assert_eq!((r.window, r.stride), (16, 16));
    let gate = |i: usize| {
        run.variants[i]
            .quality
            .as_ref()
            .unwrap()
            .gate
            .clone()
            .unwrap()
    };
    assert!(gate(0).passed);
    assert!(
        !gate(1).passed && gate(1).reasons[0].contains("max_kl"),
        "{:?}",
        gate(1)
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**fail**: mean KL"), "{md}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().nth(2).unwrap().contains(",fail,"), "{csv}");
}

#[test]
fn an_unwritable_output_folder_or_a_held_lock_is_refused_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = write_scenario(tmp.path(), TINY);
    let start = std::time::Instant::now();
    let (code, _, stderr) = quantbench(
        &["run", scenario.to_str().unwrap(), "--out", "/dev/null/out"],
        tmp.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot create output folder /dev/null/out"),
        "{stderr}"
    );
    assert!(
        start.elapsed().as_secs() < 20,
        "refused before any model loaded"
    );

    // A folder another live run is writing into (it holds the lock file's flock).
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join(".quantbench.lock"), "12345\n").unwrap();
    let held = std::fs::File::open(busy.join(".quantbench.lock")).unwrap();
    use std::os::unix::io::AsRawFd;
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let (code, _, stderr) = quantbench(
        &[
            "run",
            scenario.to_str().unwrap(),
            "--out",
            busy.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("another quantbench run (pid 12345) is writing into"),
        "{stderr}"
    );
    assert!(!busy.join("results.json").exists());
}

#[test]
fn two_runs_started_together_on_one_folder_never_interleave() {
    let tmp = tempfile::tempdir().unwrap();
    let text = TINY.replace("repeats = 2", "repeats = 1\n[quality]\nenabled = false");
    let scenario = write_scenario(tmp.path(), &text);
    let out = tmp.path().join("shared");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_quantbench"))
            .args([
                "run",
                scenario.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(codes, [0, 2], "one runs, one is refused");
    let run = quantbench::report::read_results(&out.join("results.json")).unwrap();
    assert_eq!(run.variants.len(), 3);
    assert!(
        !out.join(".quantbench.lock").exists(),
        "the lock is released"
    );
}

#[test]
fn a_scenarios_paths_are_relative_to_the_scenario_file() {
    let tmp = tempfile::tempdir().unwrap();
    // The model beside the scenario, in scenarios/models/small; run from elsewhere.
    let scenarios = tmp.path().join("scenarios");
    let model = scenarios.join("models/small");
    std::fs::create_dir_all(&model).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-hub-layout");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    quantbench::model::source::tokenizer::write_gpt2_files(&model).unwrap();
    std::fs::write(
        scenarios.join("eval.txt"),
        "Once upon a time there was a model that was small.",
    )
    .unwrap();
    let scenario = scenarios.join("small.toml");
    std::fs::write(
        &scenario,
        "name = \"small\"\nmodel = \"models/small\"\ndevice = \"cpu\"\nprecisions = [\"f32\"]\nnew_tokens = 2\nrepeats = 1\n[quality]\ntext = \"eval.txt\"\nwindow = 8\n",
    )
    .unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let (code, _, stderr) = quantbench(
        &["run", scenario.to_str().unwrap(), "--out", "out", "--quiet"],
        &elsewhere,
    );
    assert_eq!(code, 0, "{stderr}");
    let run = quantbench::report::read_results(&elsewhere.join("out/results.json")).unwrap();
    assert!(
        run.model.spec.ends_with("scenarios/models/small"),
        "{}",
        run.model.spec
    );
    assert!(run
        .quality_reference
        .unwrap()
        .text_source
        .ends_with("scenarios/eval.txt"));
}

/// The binary's allocator puts the weights on 2 MB pages as they load (#16: the 1B's
/// dense decode streams faster on them), the record says how many bytes sit there, and
/// `QUANTBENCH_HUGE_PAGES=0` keeps them on 4 KB pages.
#[test]
fn weights_load_onto_huge_pages_unless_turned_off() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |setting: &str| {
        let out = tmp.path().join(format!("hp-{setting}"));
        let o = Command::new(env!("CARGO_BIN_EXE_quantbench"))
            .args([
                "run",
                "--model",
                "synthetic:distilgpt2",
                "--precisions",
                "f16",
            ])
            .args(["--new-tokens", "2", "--warmup", "0", "--repeats", "1"])
            .args(["--no-quality", "--quiet", "--out", out.to_str().unwrap()])
            .env("QUANTBENCH_HUGE_PAGES", setting)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out.join("results.json")).unwrap();
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        let v = &raw["variants"][0];
        (
            v["weights"]["huge_page_bytes"].as_u64().unwrap(),
            v["weights_bytes"].as_u64().unwrap(),
        )
    };
    let (off, _) = run("0");
    assert_eq!(
        off, 0,
        "QUANTBENCH_HUGE_PAGES=0 leaves the weights on 4 KB pages"
    );
    let (on, weights) = run("1");
    assert!(on <= weights, "{on} of {weights}");
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    // Without direct compaction for advised mappings (`defrag` of `defer` or `never`) a
    // fault takes a 4 KB page when no 2 MB one is free, so only the bound above holds.
    let defrag =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/defrag").unwrap_or_default();
    let compacts = ["[always]", "[madvise]", "[defer+madvise]"]
        .iter()
        .any(|d| defrag.contains(d));
    if (thp.contains("[madvise]") || thp.contains("[always]")) && compacts {
        // Every matrix of 768 x 3072 f16 (4.5 MB) and the 50257 x 768 token table are
        // mappings of their own; smaller ones (768 x 768) have a 2 MB page or none.
        assert!(
            on * 2 >= weights,
            "{on} of {weights} weight bytes on huge pages (transparent huge pages: {thp}, defrag: {defrag})"
        );
    }
}

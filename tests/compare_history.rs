//! compare and history through the binary, on result files with known repetitions.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::quantbench;

/// The committed example run, with every variant's repetitions replaced by `reps`
/// (seconds per generation) scaled by the variant's position.
fn results_with(reps: &[f64]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/example/results.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for var in v["variants"].as_array_mut().unwrap() {
        let n = var["new_tokens"].as_u64().unwrap() as usize;
        var["generate_seconds"] = reps.iter().copied().collect();
        var["prefill_seconds"] = reps.iter().map(|r| r / n as f64).collect();
        var["decode_step_seconds"] = reps
            .iter()
            .map(|r| Value::from(vec![r / n as f64; n - 1]))
            .collect();
    }
    v
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("results.json");
    std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
    p
}

const TIGHT: [f64; 5] = [1.00, 1.01, 0.99, 1.005, 0.995];

#[test]
fn a_slowdown_is_caught_and_fails_the_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write(tmp.path(), "base", &results_with(&TIGHT));
    let slow: Vec<f64> = TIGHT.iter().map(|x| x * 1.2).collect();
    let new = write(tmp.path(), "new", &results_with(&slow));
    let (code, out, err) = quantbench(&[
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    let row = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["variant"] == "f32/all" && r["metric"] == "generate_seconds")
        .unwrap();
    assert_eq!(row["verdict"], "slower", "{row}");
    assert!((row["change_percent"].as_f64().unwrap() - 20.0).abs() < 0.5);
    let tps = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["variant"] == "q4_0/all" && r["metric"] == "tokens_per_second")
        .unwrap();
    assert_eq!(tps["verdict"], "slower");
    // Folders work as well as files, and the gate fails.
    let (code, out, _) = quantbench(&[
        "compare",
        base.parent().unwrap().to_str().unwrap(),
        new.parent().unwrap().to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("slower"));
    // A threshold above the change lets it through.
    let (code, _, err) = quantbench(&[
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--fail-on-regression",
        "--threshold",
        "generate_seconds=25",
        "--threshold",
        "tokens_per_second=25",
        "--threshold",
        "decode_tokens_per_second=25",
        "--threshold",
        "prefill_seconds=25",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_same_run_twice_is_same_everywhere_and_differences_are_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write(tmp.path(), "base", &results_with(&TIGHT));
    let mut other = results_with(&TIGHT.map(|x| x * 1.01));
    other["environment"]["cpu_model"] = "Some Other CPU".into();
    other["environment"]["git_commit"] = "0123456789ab".into();
    let new = write(tmp.path(), "new", &other);
    let (code, out, err) = quantbench(&[
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(
        out.contains("comparisons: 21 same, 0 faster, 0 slower"),
        "{out}"
    );
    assert!(
        out.contains("cpu_model") && out.contains("Some Other CPU"),
        "{out}"
    );
    assert!(
        out.contains("git_commit") && !out.contains("timestamp"),
        "{out}"
    );
    let (code, md, _) = quantbench(&[
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--format",
        "md",
    ]);
    assert_eq!(code, 0);
    assert!(
        md.contains("| variant | metric | base | new | change | 95% CI | verdict |"),
        "{md}"
    );
    assert!(md.contains("| cpu_model |"), "{md}");
}

#[test]
fn unreadable_results_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write(tmp.path(), "good", &results_with(&TIGHT));
    let mut newer = results_with(&TIGHT);
    newer["schema_version"] = 99.into();
    let newer = write(tmp.path(), "newer", &newer);
    let (code, _, err) = quantbench(&["compare", good.to_str().unwrap(), newer.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("newer/results.json") && err.contains("schema_version 99 is newer"),
        "{err}"
    );

    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"schema_version\": 1, \"variants\": [").unwrap();
    let (code, _, err) = quantbench(&["compare", good.to_str().unwrap(), broken.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("broken.json") && err.contains("not valid JSON"),
        "{err}"
    );

    let mut old = results_with(&TIGHT);
    old.as_object_mut().unwrap().remove("environment");
    let old = write(tmp.path(), "old", &old);
    let (code, _, err) = quantbench(&["compare", old.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("old/results.json") && err.contains("missing field `environment`"),
        "{err}"
    );
}

#[test]
fn history_groups_runs_and_draws_trends() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for (i, scale) in [1.0, 1.1, 0.9].iter().enumerate() {
        let mut v = results_with(&TIGHT.map(|x| x * scale));
        v["started_at"] = format!("2026-11-2{}T10:00:00Z", i + 1).into();
        if i == 2 {
            v["environment"]["hardware_fingerprint"] = "0000deadbeef".into();
        }
        write(&runs, &format!("run{i}"), &v);
    }
    std::fs::write(runs.join("run1").join("stray.json"), "not results").unwrap();
    std::fs::create_dir_all(runs.join("bad")).unwrap();
    std::fs::write(runs.join("bad/results.json"), "{").unwrap();
    let out = tmp.path().join("history");
    let (code, stdout, err) = quantbench(&[
        "history",
        runs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("bad/results.json"),
        "a malformed file is named: {err}"
    );
    assert!(
        stdout.contains("9 variant results from 3 files (1 skipped)"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 9);
    assert!(rows[0].starts_with("2026-11-21"), "time order: {}", rows[0]);
    assert!(rows.iter().any(|r| r.contains("0000deadbeef")));
    for metric in [
        "generate_seconds",
        "tokens_per_second",
        "weights_bytes",
        "rss_peak_bytes",
    ] {
        for ext in ["svg", "png"] {
            let slug = quantbench::report::history::file_slug("quickstart");
            assert!(slug.starts_with("quickstart-"), "{slug}");
            let f = out.join(format!("history-{slug}-{metric}.{ext}"));
            assert!(
                std::fs::metadata(&f)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{}",
                f.display()
            );
        }
    }
    let svg = std::fs::read_to_string(out.join(format!(
        "history-{}-generate_seconds.svg",
        quantbench::report::history::file_slug("quickstart")
    )))
    .unwrap();
    assert!(
        svg.contains("f32/all @ 0000deadbeef") && svg.contains("hours since 2026-11-21"),
        "one line per fingerprint"
    );
}

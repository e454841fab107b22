//! Helpers shared by the tests: driving the real binary, and (reference) the fixtures
//! of the transformers-equivalence tests.
#![allow(dead_code)] // each test crate uses a part

pub mod gguf;
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

//! Records what build produced the binary: git commit (and whether the tree was dirty),
//! candle's version from Cargo.lock, and the rustc version. Results files carry them.
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit =
        run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    println!(
        "cargo:rustc-env=QB_GIT_COMMIT={commit}{}",
        if dirty { "-dirty" } else { "" }
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=QB_RUSTC_VERSION={version}");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let candle = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=QB_CANDLE_VERSION={candle}");
    let llama = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"llama-cpp-sys-2\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=QB_LLAMA_CPP_SYS_VERSION={llama}");
    #[cfg(feature = "llama-cpp")]
    llama_shim();
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}

/// The llama.cpp engine's C++ shim (harness/engine/llama_cpp/shim.cpp), compiled against
/// the headers llama-cpp-sys-2 installed (its `links = "llama"` gives DEP_LLAMA_ROOT).
#[cfg(feature = "llama-cpp")]
fn llama_shim() {
    let root = std::env::var("DEP_LLAMA_ROOT")
        .expect("llama-cpp-sys-2 tells its dependents where it installed llama.cpp");
    let shim = "harness/engine/llama_cpp/shim.cpp";
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(shim)
        .include(std::path::Path::new(&root).join("include"))
        .warnings(false)
        .compile("quantbench_llama_shim");
    println!("cargo:rerun-if-changed={shim}");
    // Where that llama.cpp is installed (headers, static libraries): the tests build
    // llama.cpp's own reference programs against the very same build.
    println!("cargo:rustc-env=QB_LLAMA_ROOT={root}");
}

//! A stop request from SIGINT or SIGTERM. The runner checks it between repetitions and
//! phases (and the quality pass between chunks), so a run stops at the next safe point
//! with every finished variant written and the interrupted one marked so.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The error a stopped measurement returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal")
    }
}

impl std::error::Error for Interrupted {}

/// Route SIGINT and SIGTERM to a stop request. Installed once per process; later calls
/// (a scenario with several models runs one after another) do nothing.
pub fn install_handler() -> anyhow::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(request).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the signal handler: {e}"))
}

/// Ask the run to stop at the next safe point.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop was requested.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Whether an error chain holds an [`Interrupted`].
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<Interrupted>().is_some())
}

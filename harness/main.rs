//! The `quantbench` command line: a thin dispatcher over the library (`cli/` has one
//! module per subcommand). Exit statuses: 0 success, 1 a failure while running, 2 bad
//! input, 3 a quality gate failed, 130 interrupted.

use std::process::ExitCode;

mod cli;

/// Weights on 2 MB pages, made so as they are loaded (`quantbench::kernel::pages`).
#[global_allocator]
static ALLOC: quantbench::kernel::pages::WeightPages = quantbench::kernel::pages::WeightPages;

fn main() -> ExitCode {
    quantbench::probe::process::configure_allocator();
    quantbench::kernel::configure_threads();
    cli::main()
}

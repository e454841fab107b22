//! `quantbench report`: results.csv, report.md and the charts re-rendered from a
//! results.json, which is read only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{outln, results_path};

#[derive(clap::Args)]
pub struct Args {
    /// A results.json written by `quantbench run`, or the folder holding it.
    results: PathBuf,
    /// Where to write (default: the results file's folder); never a folder holding another run's results.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace report files already in --out that no results.json there explains.
    #[arg(long)]
    force: bool,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let results = results_path(&args.results);
    let run = quantbench::report::read_results(&results)?;
    let dir = args.out.unwrap_or_else(|| {
        results
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."))
    });
    quantbench::report::check_derived_dir(&results, &dir, args.force)?;
    quantbench::fsutil::create_output_dir(&dir)?;
    for f in quantbench::report::write_derived(&run, &dir)? {
        outln!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

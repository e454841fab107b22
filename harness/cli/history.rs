//! `quantbench history`: every results.json under the folders gathered into history.csv
//! and a trend chart per scenario and metric.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use quantbench::analysis::history;

use super::outln;

#[derive(clap::Args)]
pub struct Args {
    /// Folders (searched recursively) or results files.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write.
    #[arg(long, default_value = "reports/history")]
    out: PathBuf,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let Args { dirs, out } = args;
    let files = history::find_results(&dirs);
    let (points, problems) = history::load(&files);
    for (f, p) in &problems {
        eprintln!("skipped {}: {p}", f.display());
    }
    if points.is_empty() {
        quantbench::bad_input!(
            "no readable results.json under {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let written = quantbench::report::history::write(&points, &out)?;
    for s in &written.skipped {
        eprintln!("warning: chart not drawn: {s}");
    }
    outln!(
        "{} variant results from {} files ({} skipped); wrote {} files to {}{}",
        points.len(),
        files.len() - problems.len(),
        problems.len(),
        written.files.len(),
        out.display(),
        if written.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} charts could not be drawn)", written.skipped.len())
        }
    );
    Ok(ExitCode::SUCCESS)
}

//! `quantbench export-results`: a run's figures for benchmark trackers (Bencher's BMF,
//! github-action-benchmark's two arrays, llama-bench-shaped rows).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use quantbench::report::{atomic, export};

use super::{outln, results_path};

#[derive(clap::Args)]
pub struct Args {
    /// A results.json written by `quantbench run`, or the folder holding it.
    results: PathBuf,
    /// bmf, github-action-benchmark, jsonl or csv.
    #[arg(long, value_enum)]
    format: export::Output,
    /// Where to write: a file (default: stdout); a folder for github-action-benchmark (required), which gets smaller-is-better.json and bigger-is-better.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace files already at --out (never a results.json or anything but a regular file).
    #[arg(long)]
    force: bool,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let run = quantbench::report::read_results(&results_path(&args.results))?;
    let text = match args.format {
        export::Output::Bmf => serde_json::to_string_pretty(&export::bmf(&run))? + "\n",
        export::Output::Jsonl => export::jsonl(&run),
        export::Output::Csv => export::csv(&run)?,
        export::Output::GithubActionBenchmark => {
            let Some(dir) = args.out else {
                quantbench::bad_input!(
                    "--format github-action-benchmark writes two files: give --out FOLDER (it gets smaller-is-better.json and bigger-is-better.json)"
                );
            };
            let names = ["smaller-is-better.json", "bigger-is-better.json"];
            for name in names {
                quantbench::fsutil::check_replaceable(&dir.join(name), "--out", args.force)?;
            }
            quantbench::fsutil::create_output_dir(&dir)?;
            let (smaller, bigger) = export::github_action_benchmark(&run);
            for (name, v) in names.into_iter().zip([smaller, bigger]) {
                let path = dir.join(name);
                atomic::write(&path, (serde_json::to_string_pretty(&v)? + "\n").as_bytes())?;
                outln!("wrote {}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match args.out {
        Some(path) => {
            quantbench::fsutil::check_replaceable(&path, "--out", args.force)?;
            atomic::write(&path, text.as_bytes())?;
            outln!("wrote {}", path.display());
        }
        None => outln!("{}", text.trim_end_matches('\n')),
    }
    Ok(ExitCode::SUCCESS)
}

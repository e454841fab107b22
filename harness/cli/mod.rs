//! The subcommands, one module each: their flags (every one with a line of `--help`),
//! the library calls they make and what they print. Errors map to exit statuses here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod compare;
mod export;
mod export_results;
mod generate;
mod history;
mod imatrix;
mod list;
mod report;
mod run;

/// Print a line on stdout; a closed pipe (`quantbench list | head -1`) ends the output
/// quietly instead of panicking, and the command finishes as it would have.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::out_write(format_args!("{}\n", format_args!($($arg)*))) };
}
/// [`outln`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out_write(format_args!($($arg)*)) };
}
pub(crate) use {out, outln};

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn out_write(args: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.flush()) {
        // A closed pipe or any other failure to print: stop printing, keep working.
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(
                std::io::stderr(),
                "note: stdout failed ({e}); output stops here"
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "quantbench",
    version,
    about = "Measures what quantization does to a language model: memory, speed and quality at every precision"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark scenario: every precision loaded, probed, warmed up, timed and
    /// dropped in turn; writes results.json, results.csv, report.md and charts.
    Run(Box<run::Args>),
    /// Write a run's figures for benchmark trackers: Bencher's BMF, github-action-benchmark's
    /// two arrays, or llama-bench-shaped rows (jsonl, csv), one per variant and test.
    ExportResults(export_results::Args),
    /// Re-render results.csv, report.md and the charts from a results.json (which is
    /// read only, never rewritten).
    Report(report::Args),
    /// Generate greedily from one model at one precision, and print the text, the token
    /// ids and the weight bytes: check a model before benchmarking it.
    Generate(generate::Args),
    /// Write a model for other tools to run the same weights: in the Hugging Face layout
    /// (config.json, model.safetensors in f32, tokenizer files), or as one GGUF file at a
    /// precision (the very blocks quantbench measures), which llama.cpp runs.
    Export(export::Args),
    /// Compute an importance matrix of a model over a text, as llama-imatrix does, in its
    /// GGUF form (for --imatrix here and llama-quantize's --imatrix).
    Imatrix(imatrix::Args),
    /// Compare runs: per shared variant and metric, base, new, change and a verdict
    /// (faster / slower / same within noise). `compare BASE NEW` compares two runs;
    /// `compare BASE... -- NEW...` compares several runs per side by the spread between
    /// them (a folder stands for every results.json under it).
    Compare(compare::Args),
    /// Trends over many runs: reads every results.json under the folders, writes
    /// history.csv and a trend chart per scenario and metric (SVG and PNG).
    History(history::Args),
    /// List the precisions, model presets and the scenarios in scenarios/.
    List,
}

/// Parse the command line, run the subcommand, and turn its outcome into an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if quantbench::run::interrupt::is_interrupted(&e) {
                ExitCode::from(130)
            } else if quantbench::is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    check_environment()?;
    match command {
        Command::Run(args) => run::main(*args),
        Command::ExportResults(args) => export_results::main(args),
        Command::Report(args) => report::main(args),
        Command::Generate(args) => generate::main(args),
        Command::Export(args) => export::main(args),
        Command::Imatrix(args) => imatrix::main(args),
        Command::Compare(args) => compare::main(args),
        Command::History(args) => history::main(args),
        Command::List => list::main(),
    }
}

/// The environment variables quantbench (or candle, or rayon underneath it) reads,
/// checked before anything runs: a value that is not UTF-8, or not one the variable
/// takes, is bad input naming it; never treated as unset.
fn check_environment() -> Result<()> {
    fn value(name: &str) -> Result<Option<String>> {
        match std::env::var_os(name) {
            None => Ok(None),
            Some(v) => match v.into_string() {
                Ok(s) => Ok(Some(s)),
                Err(raw) => quantbench::bad_input!(
                    "{name}={:?} is not UTF-8 text; unset it or give one of the values it takes",
                    raw
                ),
            },
        }
    }
    type Check = fn(&str) -> Result<(), String>;
    let checks: [(&str, Check); 3] = [
        (quantbench::kernel::ENV, |v| {
            quantbench::kernel::parse(v).map(|_| ())
        }),
        (quantbench::kernel::LEVEL_ENV, |v| {
            quantbench::kernel::parse_level(v).map(|_| ())
        }),
        (quantbench::kernel::pages::ENV, |v| {
            quantbench::kernel::pages::parse(v).map(|_| ())
        }),
    ];
    for (name, parse) in checks {
        if let Some(v) = value(name)? {
            parse(&v).map_err(quantbench::InputError::new)?;
        }
    }
    // Thread pools: rayon's (every product and test) and candle's (its quantized
    // products); rayon takes 0 as "one per core".
    let most = quantbench::run::workload::MAX_THREADS;
    for name in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if let Some(v) = value(name)? {
            match v.trim().parse::<usize>() {
                Ok(n) if n <= most => {}
                _ => quantbench::bad_input!(
                    "{name}={v:?}: a thread count is a whole number from 1 to {most} (0: one per core)"
                ),
            }
        }
    }
    Ok(())
}

/// A results.json, or the folder holding one.
fn results_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("results.json")
    } else {
        p.to_path_buf()
    }
}

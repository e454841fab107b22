//! `quantbench compare`: verdicts between runs, printed as text, Markdown or JSON;
//! `--fail-on-regression` turns a regression into exit status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use quantbench::analysis::compare;
use quantbench::RunRecord;

use super::{out, outln, results_path};

#[derive(clap::Args)]
pub struct Args {
    /// The base run(s): results.json files or folders; with `--`, every path before it.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The new run(s), after `--`.
    #[arg(last = true)]
    new_runs: Vec<PathBuf>,
    /// text (terminal), md (Markdown, for a CI comment) or json.
    #[arg(long, default_value = "text")]
    format: Output,
    /// A change below this many percent is noise (a finite number >= 0).
    #[arg(long, default_value_t = 3.0, value_parser = parse_percent)]
    noise: f64,
    /// Per-metric noise threshold, METRIC=PERCENT (e.g. generate_seconds=5); repeatable.
    #[arg(long = "threshold", value_parser = parse_threshold)]
    thresholds: Vec<(String, f64)>,
    /// Exit with status 1 when any metric got worse beyond noise, or nothing was compared.
    #[arg(long)]
    fail_on_regression: bool,
    /// Compare sides that measured different models or prompts anyway (every row says what differs).
    #[arg(long)]
    allow_different: bool,
    /// Compare two engines within the runs given, A,B (e.g. quantbench,llama.cpp): A's variants are the base, B's the new, matched by precision.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    between_engines: Option<Vec<quantbench::engine::EngineKind>>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    /// Columns for a terminal.
    Text,
    /// A Markdown table, for a CI comment.
    Md,
    /// The comparison as JSON.
    Json,
}

fn parse_threshold(s: &str) -> Result<(String, f64), String> {
    let (name, pct) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not METRIC=PERCENT"))?;
    if compare::Figure::find(name).is_none() {
        return Err(format!(
            "unknown metric '{name}'; valid: {}",
            compare::FIGURES
                .iter()
                .chain(
                    quantbench::record::figures::TEST_FIGURES
                        .iter()
                        .map(|t| &t.figure)
                )
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok((name.to_string(), parse_percent(pct)?))
}

/// A noise threshold: a finite number of percent >= 0.
fn parse_percent(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of percent"))?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(format!(
            "'{s}': a noise threshold is a finite number of percent >= 0"
        ))
    }
}

/// The results files a compare argument stands for: a file; a folder holding
/// results.json; or a folder of runs (every results.json under it).
fn results_files(p: &Path) -> Vec<PathBuf> {
    if p.is_dir() && !p.join("results.json").exists() {
        let found = quantbench::analysis::history::find_results(&[p.to_path_buf()]);
        if !found.is_empty() {
            return found;
        }
    }
    vec![results_path(p)]
}

/// One side's runs, read, and the label the comparison gives the side.
type Side = (Vec<(PathBuf, RunRecord)>, String);

fn read_side(args: &[PathBuf]) -> Result<Side> {
    let files: Vec<PathBuf> = args.iter().flat_map(|a| results_files(a)).collect();
    let mut out = Vec::new();
    for f in &files {
        out.push((f.clone(), quantbench::report::read_results(f)?));
    }
    let label = if files.len() == 1 {
        files[0].display().to_string()
    } else {
        format!(
            "{} runs ({})",
            files.len(),
            args.iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Ok((out, label))
}

pub fn main(args: Args) -> Result<ExitCode> {
    if let Some(engines) = &args.between_engines {
        let [a, b] = engines.as_slice() else {
            quantbench::bad_input!(
                "--between-engines takes two engines, A,B (e.g. quantbench,llama.cpp); got {}",
                engines.len()
            );
        };
        if a == b {
            quantbench::bad_input!("--between-engines names {a} twice: give two engines");
        }
        let paths: Vec<PathBuf> = args.runs.iter().chain(&args.new_runs).cloned().collect();
        let (runs, label) = read_side(&paths)?;
        compare::check_comparable(&runs, &[], false).map_err(quantbench::InputError::new)?;
        let runs: Vec<RunRecord> = runs.into_iter().map(|(_, r)| r).collect();
        let (base, new) = (
            compare::engine_side(&runs, *a),
            compare::engine_side(&runs, *b),
        );
        for (e, side) in [(a, &base), (b, &new)] {
            if side.is_empty() {
                quantbench::bad_input!("engine {e} ran no variant in {label}");
            }
        }
        let (bl, nl) = (format!("{a} in {label}"), format!("{b} in {label}"));
        return finish(args, base, new, bl, nl);
    }
    let (base_args, new_args) = if args.new_runs.is_empty() {
        match args.runs.as_slice() {
            [b, n] => (vec![b.clone()], vec![n.clone()]),
            _ => quantbench::bad_input!(
                "compare takes two runs (compare BASE NEW) or several per side (compare BASE... -- NEW...); got {} path(s) and no `--`",
                args.runs.len()
            ),
        }
    } else {
        (args.runs.clone(), args.new_runs.clone())
    };
    let (b, bl) = read_side(&base_args)?;
    let (n, nl) = read_side(&new_args)?;
    compare::check_comparable(&b, &n, args.allow_different).map_err(quantbench::InputError::new)?;
    let b: Vec<_> = b.into_iter().map(|(_, r)| r).collect();
    let n: Vec<_> = n.into_iter().map(|(_, r)| r).collect();
    finish(args, b, n, bl, nl)
}

/// Judge, print, and the exit status.
fn finish(
    args: Args,
    b: Vec<RunRecord>,
    n: Vec<RunRecord>,
    bl: String,
    nl: String,
) -> Result<ExitCode> {
    let opts = compare::Options {
        noise_percent: args.noise,
        thresholds: args.thresholds.into_iter().collect(),
        ..Default::default()
    };
    if let Err(e) = opts.validate() {
        quantbench::bad_input!("{e}");
    }
    let c = compare::compare_runs(&b, &n, &bl, &nl, &opts);
    match args.format {
        Output::Text => out!("{}", quantbench::report::compare::render_text(&c)),
        Output::Md => out!("{}", quantbench::report::compare::render_markdown(&c)),
        Output::Json => outln!("{}", serde_json::to_string_pretty(&c)?),
    }
    if c.rows.is_empty() {
        eprintln!(
            "compare: nothing was compared: the two sides share no variant with figures{}",
            if c.unmatched.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.unmatched.join(", "))
            }
        );
        if args.fail_on_regression {
            eprintln!("compare: --fail-on-regression fails when there is nothing to judge");
            return Ok(ExitCode::from(1));
        }
    }
    let regressions = c.regressions();
    if args.fail_on_regression && !regressions.is_empty() {
        for r in &regressions {
            eprintln!(
                "regression: {} {} {:+.1}% ({})",
                r.variant,
                r.metric,
                r.change_percent,
                r.verdict.label()
            );
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

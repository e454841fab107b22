//! Every renderer: a run's outputs, read from its [`RunRecord`] only (results.json,
//! results.csv, report.md, the charts, the exports for trackers), a comparison's tables
//! ([`compare`]) and history's csv and trend charts ([`history`]). Every file is written
//! atomically.

pub mod atomic;
pub mod charts;
pub mod compare;
pub mod csv;
pub mod export;
pub mod history;
pub mod markdown;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::record::{Moment, RunRecord, VariantRecord};

pub use crate::probe::process::RSS;

/// The figures a table row shows for one variant, derived from its record and the f32
/// reference of the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// The variant's key ([`crate::precision::Quantization::key`]).
    pub label: String,
    pub ok: bool,
    pub weights_bytes: Option<u64>,
    pub bits_per_weight: Option<f64>,
    pub load_seconds: Option<f64>,
    pub rss: [Option<u64>; 4],
    pub generate_median: Option<f64>,
    pub generate_min: Option<f64>,
    pub generate_max: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub decode_tokens_per_second: Option<f64>,
    pub prefill_median: Option<f64>,
    pub repetitions: usize,
    /// f32's median generation time over this one's.
    pub speedup_vs_f32: Option<f64>,
    /// 1 - weight bytes / f32's weight bytes.
    pub weight_saving_vs_f32: Option<f64>,
    pub error: Option<String>,
}

impl Headline {
    pub fn of(v: &VariantRecord, run: &RunRecord) -> Self {
        let t = v.timing.as_ref();
        let f32 = run.f32_reference_for(v.engine);
        let gen = t.map(|t| t.generate_seconds.median);
        Headline {
            label: v.key(),
            ok: v.is_ok(),
            weights_bytes: v.weights_bytes,
            bits_per_weight: v.weights.as_ref().map(|w| w.bits_per_weight),
            load_seconds: v.load_seconds,
            rss: Moment::ALL.map(|m| v.memory_at(m, RSS)),
            generate_median: gen,
            generate_min: t.map(|t| t.generate_seconds.min),
            generate_max: t.map(|t| t.generate_seconds.max),
            tokens_per_second: t.map(|t| t.tokens_per_second.median),
            decode_tokens_per_second: t
                .and_then(|t| t.decode_tokens_per_second.as_ref())
                .map(|d| d.median),
            prefill_median: t.map(|t| t.prefill_seconds.median),
            repetitions: v.generate_seconds.len(),
            speedup_vs_f32: f32
                .and_then(|r| r.timing.as_ref())
                .zip(gen)
                .map(|(r, g)| r.generate_seconds.median / g),
            weight_saving_vs_f32: f32
                .and_then(|r| r.weights_bytes)
                .zip(v.weights_bytes)
                .map(|(r, w)| 1.0 - w as f64 / r as f64),
            error: v.error.clone(),
        }
    }
}

/// Bytes as decimal megabytes.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// "12.3" or "-" for a missing value ("n/a" for a non-finite one).
pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        Some(_) => "n/a".into(),
        None => "-".into(),
    }
}

/// The files a run writes, in the order they are written.
pub const OUTPUT_FILES: [&str; 9] = [
    "results.json",
    "results.csv",
    "report.md",
    "memory.svg",
    "memory.png",
    "latency.svg",
    "latency.png",
    "quality.svg",
    "quality.png",
];

/// The files a run with workload tests writes besides [`OUTPUT_FILES`]: every variant ×
/// test as llama-bench-shaped rows, and the two context charts.
pub const TEST_FILES: [&str; 5] = [
    "tests.csv",
    "depth.svg",
    "depth.png",
    "context-memory.svg",
    "context-memory.png",
];

/// Write results.json and results.csv (after every variant).
pub fn write_results(run: &RunRecord, dir: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(run).context("serializing the results")?;
    atomic::write(&dir.join("results.json"), &json)?;
    write_csv(run, dir)
}

fn write_csv(run: &RunRecord, dir: &Path) -> Result<()> {
    atomic::write(&dir.join("results.csv"), csv::render(run)?.as_bytes())
}

/// Write every output of a run: results, report.md and the charts.
pub fn write_all(run: &RunRecord, dir: &Path) -> Result<Vec<PathBuf>> {
    write_results(run, dir)?;
    let mut files = vec![dir.join(OUTPUT_FILES[0])];
    files.extend(write_derived(run, dir)?);
    Ok(files)
}

/// Write what is derived from a results file — results.csv, report.md and the charts —
/// and never results.json itself: `quantbench report` reads a file another build may
/// have written, with fields this build does not know, and must not rewrite it.
pub fn write_derived(run: &RunRecord, dir: &Path) -> Result<Vec<PathBuf>> {
    write_csv(run, dir)?;
    atomic::write(&dir.join("report.md"), markdown::render(run).as_bytes())?;
    charts::memory(run, &dir.join("memory.svg"))?;
    charts::memory(run, &dir.join("memory.png"))?;
    charts::latency(run, &dir.join("latency.svg"))?;
    charts::latency(run, &dir.join("latency.png"))?;
    charts::quality(run, &dir.join("quality.svg"))?;
    charts::quality(run, &dir.join("quality.png"))?;
    let mut written: Vec<PathBuf> = OUTPUT_FILES[1..].iter().map(|f| dir.join(f)).collect();
    if charts::has_tests(run) {
        for f in TEST_FILES {
            let path = dir.join(f);
            match f {
                "tests.csv" => atomic::write(&path, export::csv(run)?.as_bytes())?,
                f if f.starts_with("depth.") => charts::depth(run, &path)?,
                _ => charts::context_memory(run, &path)?,
            }
            written.push(path);
        }
    }
    Ok(written)
}

/// Check that `quantbench report` may write `results`' derived files into `dir`: beside
/// that very results.json; or into a folder that holds no other run's results.json and
/// none of the files it writes (unless `force`). Another run's report and charts are
/// never replaced, whatever `force` says.
pub fn check_derived_dir(results: &Path, dir: &Path, force: bool) -> Result<()> {
    let theirs = dir.join(OUTPUT_FILES[0]);
    if crate::fsutil::exists_at_all(&theirs) {
        if crate::fsutil::same_file(&theirs, results) {
            return Ok(());
        }
        crate::bad_input!(
            "--out {} holds another run's results.json; its report and charts belong to that run and are not replaced: choose a new or empty folder for {}'s report",
            dir.display(),
            results.display()
        );
    }
    if force {
        return Ok(());
    }
    let present: Vec<&str> = OUTPUT_FILES[1..]
        .iter()
        .chain(TEST_FILES.iter())
        .copied()
        .filter(|f| crate::fsutil::exists_at_all(&dir.join(f)))
        .collect();
    if !present.is_empty() {
        crate::bad_input!(
            "--out {} already holds {}; choose a new or empty folder, or pass --force to replace them",
            dir.display(),
            present.join(", ")
        );
    }
    Ok(())
}

/// Read a results.json (a regular file of at most [`crate::fsutil::MAX_TEXT_BYTES`]).
pub fn read_results(path: &Path) -> Result<RunRecord> {
    let text = crate::fsutil::read_text(path, "results file", crate::fsutil::MAX_TEXT_BYTES)?;
    RunRecord::from_json(&text, &path.display().to_string())
}

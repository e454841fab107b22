//! `quantbench run`: the output folder, progress bars on stderr, results written after
//! every variant, the summary table on stdout, and the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use quantbench::probe::Probes;
use quantbench::record::{RunRecord, RunStatus, VariantRecord};
use quantbench::report::{self, fmt_opt, mb, Headline};
use quantbench::runner::{self, Phase, RunObserver};
use quantbench::scenario::{Scenario, Variant};

pub fn run(
    scenario: Scenario,
    scenario_file: Option<&Path>,
    out: Option<PathBuf>,
    quiet: bool,
) -> Result<ExitCode> {
    let dir = out.unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        PathBuf::from("reports").join(format!("{}-{stamp}", scenario.name))
    });
    // Check everything that can be checked before any model loads: the scenario, the
    // model's files, the device, the prompt, and the output folder.
    let prepared = runner::prepare(&scenario, scenario_file)?;
    quantbench::interrupt::install_handler()?;
    let _lock = prepare_dir(&dir)?;
    let (probes, missing) = Probes::for_device(&prepared.device_name);
    for m in &missing {
        if !quiet {
            eprintln!("note: {m}; the run goes on without it");
        }
    }
    let mut observer = Progress {
        dir: dir.clone(),
        bar: None,
        quiet,
    };
    if !quiet {
        eprintln!(
            "quantbench: {} on {} — {} variant(s), {} warm-up + {} timed generations of {} tokens each; writing {}",
            prepared.source.display_name,
            prepared.device_name,
            scenario.precisions.len(),
            scenario.warmup,
            scenario.repeats,
            scenario.new_tokens,
            dir.display()
        );
    }
    let run = runner::run(&prepared, &probes, &mut observer)?;
    report::write_all(&run, &dir)?;
    if !quiet {
        print_summary(&run, &dir);
    }
    Ok(if run.status == RunStatus::Interrupted {
        eprintln!(
            "interrupted: {} finished variant(s) kept in {}",
            run.variants.iter().filter(|v| v.is_ok()).count(),
            dir.display()
        );
        ExitCode::from(130)
    } else if run.any_failed() {
        ExitCode::from(1)
    } else if !run.gate_failures().is_empty() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Held while a run writes into a folder; removed when the run ends.
struct DirLock(PathBuf);

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub const LOCK_FILE: &str = ".quantbench.lock";

/// The output folder must be writable, hold no results, and have no other run writing
/// into it; checked before any model loads. The lock is taken atomically (create_new),
/// so of two runs started together on one folder exactly one proceeds.
fn prepare_dir(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir).map_err(|e| {
        quantbench::InputError::new(format!(
            "cannot create output folder {}: {e}",
            dir.display()
        ))
    })?;
    let lock = dir.join(LOCK_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
    {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())
                .map_err(|e| {
                    quantbench::InputError::new(format!(
                        "output folder {} is not writable: {e}",
                        dir.display()
                    ))
                })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => quantbench::bad_input!(
            "another quantbench run is writing into {} (it holds {}); choose another --out, or remove the lock if no run is alive",
            dir.display(),
            lock.display()
        ),
        Err(e) => quantbench::bad_input!("output folder {} is not writable: {e}", dir.display()),
    }
    let guard = DirLock(lock);
    if dir.join("results.json").exists() {
        quantbench::bad_input!(
            "{} already holds a results.json; choose another --out or remove it",
            dir.display()
        );
    }
    Ok(guard)
}

struct Progress {
    dir: PathBuf,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl RunObserver for Progress {
    fn reference_started(&mut self) {
        if !self.quiet {
            eprintln!("quality: computing the f32 reference over the evaluation text");
        }
    }

    fn variant_started(&mut self, v: &Variant, count: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} {spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("[{}/{count}] {}", v.index + 1, v.label()));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn phase(&mut self, _v: &Variant, phase: Phase) {
        let Some(bar) = &self.bar else { return };
        match phase {
            Phase::Loading => bar.set_message("loading and converting"),
            Phase::WarmingUp { done, total } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message("warming up");
            }
            Phase::Timing { done, total } => {
                bar.set_length(total.max(done + 1) as u64);
                bar.set_position(done as u64);
                bar.set_message("timed repetitions");
            }
            Phase::Quality => bar.set_message("quality pass (KL against f32)"),
            Phase::CleaningUp => bar.set_message("cleaning up"),
        }
    }

    fn variant_finished(&mut self, rec: &VariantRecord, run: &RunRecord) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            let h = Headline::of(rec, run);
            let msg = if h.ok {
                format!(
                    "done: {} s median, {} tok/s",
                    fmt_opt(h.generate_median, 3),
                    fmt_opt(h.tokens_per_second, 1)
                )
            } else {
                format!("{:?}: {}", rec.status, h.error.unwrap_or_default()).to_uppercase()
            };
            bar.finish_with_message(msg);
        }
        report::write_results(run, &self.dir)
    }
}

fn print_summary(run: &RunRecord, dir: &Path) {
    println!(
        "\n{:<7} {:>6} {:>12} {:>6} {:>11} {:>11} {:>13} {:>9} {:>8} {:>8}",
        "variant",
        "status",
        "weights MB",
        "bpw",
        "RSS load MB",
        "RSS clean MB",
        "generate s",
        "± %",
        "tok/s",
        "vs f32"
    );
    for v in &run.variants {
        let h = Headline::of(v, run);
        let spread = v
            .timing
            .as_ref()
            .map(|t| format!("{:.1}", t.generate_seconds.range_percent() / 2.0));
        println!(
            "{:<7} {:>6} {:>12} {:>6} {:>11} {:>11} {:>13} {:>9} {:>8} {:>8}",
            h.label,
            match v.status {
                quantbench::record::VariantStatus::Ok => "ok",
                quantbench::record::VariantStatus::Failed => "FAILED",
                quantbench::record::VariantStatus::Interrupted => "INTERR",
            },
            fmt_opt(h.weights_bytes.map(mb), 1),
            fmt_opt(h.bits_per_weight, 2),
            fmt_opt(h.rss[1].map(mb), 1),
            fmt_opt(h.rss[3].map(mb), 1),
            fmt_opt(h.generate_median, 3),
            spread.unwrap_or_else(|| "-".into()),
            fmt_opt(h.tokens_per_second, 1),
            h.speedup_vs_f32
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into()),
        );
        if let Some(e) = &h.error {
            println!("        error: {e}");
        }
    }
    println!(
        "\nresults in {}/ (report.md, results.json, results.csv, memory.png, latency.png, quality.png)",
        dir.display()
    );
}

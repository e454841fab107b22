//! `quantbench run`: the output folder, progress bars on stderr, results written after
//! every variant, the summary table on stdout, and the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use quantbench::model::ModelSpec;
use quantbench::precision::{Policy, Precision, RestDtype};
use quantbench::probe::Probes;
use quantbench::record::{RunRecord, RunStatus, VariantRecord};
use quantbench::report::{self, fmt_opt, mb, Headline};
use quantbench::run::runner::{self, Phase, RunObserver};
use quantbench::scenario::{DeviceChoice, Scenario, Variant};

use super::outln;

/// Flags of `quantbench run`; each overrides the scenario file's value.
#[derive(clap::Args)]
pub struct Args {
    /// A scenario file (TOML). Without one, the flags make a one-off scenario from the
    /// quickstart's defaults.
    scenario: Option<PathBuf>,
    /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
    #[arg(long)]
    model: Option<ModelSpec>,
    /// Comma-separated engines, each running every precision: quantbench (default), llama.cpp.
    #[arg(long, value_delimiter = ',')]
    engine: Option<Vec<quantbench::engine::EngineKind>>,
    /// llama.cpp: flash attention on or off (default: llama.cpp's auto).
    #[arg(long, value_parser = parse_on_off)]
    flash_attention: Option<bool>,
    /// llama.cpp: map the model file (on, llama.cpp's default) or read it into memory (off).
    #[arg(long, value_parser = parse_on_off)]
    mmap: Option<bool>,
    /// An importance matrix (llama-imatrix's GGUF or .dat) for both engines' quantizers, used as llama-quantize uses it.
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// llama.cpp: threads for generation and batches (default: every core).
    #[arg(long)]
    engine_threads: Option<usize>,
    /// Comma-separated precisions, e.g. f32,int8,int4; native keeps a GGUF file's own types.
    #[arg(long, value_delimiter = ',')]
    precisions: Option<Vec<Precision>>,
    /// Allow precisions other than native from an already quantized GGUF (dequantized, then quantized again; marked requantized).
    #[arg(long)]
    requantize: bool,
    /// What the precisions apply to: all (every weight matrix) or linear (the blocks' linear layers).
    #[arg(long)]
    policy: Option<Policy>,
    /// The dtype of the weights the precisions do not apply to: f32, f16, or auto (f16 beside f16 and bitsandbytes' formats, else f32).
    #[arg(long)]
    rest: Option<RestDtype>,
    /// The prompt every generation continues.
    #[arg(long)]
    prompt: Option<String>,
    /// Exactly this many new tokens per generation.
    #[arg(long)]
    new_tokens: Option<usize>,
    /// Untimed generations before the timed ones.
    #[arg(long)]
    warmup: Option<usize>,
    /// Timed generations (at least).
    #[arg(long)]
    repeats: Option<usize>,
    /// Run every variant this many times, in rounds interleaving the variants and engines.
    #[arg(long)]
    rounds: Option<usize>,
    /// Keep repeating until this many seconds of timed generation are reached too.
    #[arg(long)]
    min_seconds: Option<f64>,
    /// Workload tests: synthetic prompt lengths, e.g. 128,512 (0: generation-only tests).
    #[arg(long, value_delimiter = ',')]
    prompt_tokens: Option<Vec<usize>>,
    /// Workload tests: new tokens per sequence, e.g. 0,32 (default: --new-tokens).
    #[arg(long, value_delimiter = ',')]
    gen_tokens: Option<Vec<usize>>,
    /// Workload tests: tokens already in the KV cache before each test, e.g. 0,512,1024.
    #[arg(long, value_delimiter = ',')]
    depth: Option<Vec<usize>>,
    /// Workload tests: sequences decoded together, e.g. 1,4.
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<usize>>,
    /// Workload tests: threads of the pool each test runs on, e.g. 1,2.
    #[arg(long, value_delimiter = ',')]
    threads: Option<Vec<usize>>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Output folder (default: reports/<scenario>-<timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the quality pass (KL against f32).
    #[arg(long)]
    no_quality: bool,
    /// No progress bars and no summary table.
    #[arg(long)]
    quiet: bool,
}

impl Args {
    fn scenario(&self) -> Result<Scenario> {
        let mut s = match &self.scenario {
            Some(path) => Scenario::load(path)?,
            None => Scenario::quickstart_defaults(),
        };
        if let Some(v) = &self.model {
            s.model = v.clone();
            s.models.clear();
        }
        if let Some(v) = &self.precisions {
            s.precisions = v.clone();
        }
        if let Some(v) = &self.engine {
            s.engines = v.clone();
        }
        if let Some(v) = self.flash_attention {
            s.engine.flash_attention = Some(v);
        }
        if let Some(v) = self.mmap {
            s.engine.mmap = Some(v);
        }
        if let Some(v) = &self.imatrix {
            s.engine.imatrix = Some(v.clone());
        }
        if let Some(v) = self.engine_threads {
            s.engine.threads = Some(v);
        }
        if let Some(v) = self.policy {
            s.policy = v;
        }
        if let Some(v) = self.rest {
            s.rest = v;
        }
        if let Some(v) = &self.prompt {
            s.prompt = v.clone();
        }
        if let Some(v) = self.new_tokens {
            s.new_tokens = v;
        }
        if let Some(v) = self.warmup {
            s.warmup = v;
        }
        if let Some(v) = self.repeats {
            s.repeats = v;
        }
        if let Some(v) = self.rounds {
            s.rounds = v;
        }
        if let Some(v) = self.min_seconds {
            s.min_seconds = Some(v);
        }
        if let Some(v) = self.device {
            s.device = v;
        }
        if self.no_quality {
            s.quality.enabled = false;
        }
        let flags = [
            &self.prompt_tokens,
            &self.gen_tokens,
            &self.depth,
            &self.batch,
            &self.threads,
        ];
        // The flags set the lists of the first workload table (made if there is none).
        if flags.iter().any(|f| f.is_some()) && s.workload.is_empty() {
            s.workload.push(Default::default());
        }
        if let Some(w) = s.workload.first_mut() {
            for (flag, field) in [
                (&self.prompt_tokens, &mut w.prompt_tokens),
                (&self.gen_tokens, &mut w.new_tokens),
                (&self.depth, &mut w.depth),
                (&self.batch, &mut w.batch),
                (&self.threads, &mut w.threads),
            ] {
                if let Some(v) = flag {
                    *field = v.clone();
                }
            }
        }
        if self.requantize {
            s.requantize = true;
        }
        s.validate().map_err(|(field, msg)| {
            quantbench::InputError::new(format!("after applying flags, `{field}`: {msg}"))
        })?;
        Ok(s)
    }
}

/// `on` / `off` (also true/false, 1/0, yes/no) for a flag that switches a setting.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("'{s}' is not on or off")),
    }
}

pub fn main(args: Args) -> Result<ExitCode> {
    let scenario = args.scenario()?;
    run(scenario, args.scenario.as_deref(), args.out, args.quiet)
}

/// Run a scenario; one naming several `models` runs each in turn into its own
/// sub-folder (`<out>/<model>/`), every model checked before the first loads. The exit
/// status is the worst of the models'.
fn run(
    scenario: Scenario,
    scenario_file: Option<&Path>,
    out: Option<PathBuf>,
    quiet: bool,
) -> Result<ExitCode> {
    if scenario.models.is_empty() {
        return run_one(scenario, scenario_file, out, quiet);
    }
    let each = scenario.per_model();
    // Every model checked before the first loads; what this prepares (tokenizers, the
    // evaluation text's tokens) is dropped again and prepared anew for each model's own
    // run, so that no other model's tokenizer sits in a run's memory readings.
    for s in &each {
        runner::prepare(s, scenario_file)?;
    }
    let dir = match out {
        Some(d) => d,
        None => default_dir(Path::new("reports"), &scenario.name)?,
    };
    quantbench::fsutil::create_output_dir(&dir)?;
    let mut worst = 0u8;
    for s in each {
        let sub = dir.join(folder_name(&s.model.to_string()));
        let code = run_one(s, scenario_file, Some(sub), quiet)?;
        // 130 (interrupted) stops the sequence; otherwise the larger status wins.
        let n = exit_number(code);
        worst = worst.max(n);
        if n == 130 {
            break;
        }
    }
    Ok(ExitCode::from(worst))
}

/// A model spec as a folder name: characters other than letters, digits, '.', '_' and
/// '-' become '-'.
fn folder_name(spec: &str) -> String {
    spec.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn exit_number(code: ExitCode) -> u8 {
    [0u8, 1, 3, 130]
        .into_iter()
        .find(|&n| ExitCode::from(n) == code)
        .unwrap_or(1)
}

fn run_one(
    scenario: Scenario,
    scenario_file: Option<&Path>,
    out: Option<PathBuf>,
    quiet: bool,
) -> Result<ExitCode> {
    // Check everything that can be checked before any model loads: the scenario, the
    // model's files, the device, the prompt, and the output folder.
    let mut prepared = runner::prepare(&scenario, scenario_file)?;
    quantbench::run::interrupt::install_handler()?;
    let dir = match out {
        Some(d) => d,
        None => default_dir(Path::new("reports"), &scenario.name)?,
    };
    let _lock = prepare_dir(&dir)?;
    // The quality pass keeps its reference distributions in the run's own folder while
    // the run lasts, where a run killed meanwhile leaves them for the next to sweep.
    prepared.evaluation = prepared
        .evaluation
        .take()
        .map(|e| e.with_scratch_dir(dir.clone()));
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
        let rounds = if scenario.rounds > 1 {
            format!(", in {} interleaved rounds", scenario.rounds)
        } else {
            String::new()
        };
        eprintln!(
            "quantbench: {} on {} — {} variant(s){rounds}, {} warm-up + {} timed generations of {} tokens each; writing {}",
            prepared.model.name,
            prepared.device_name,
            scenario.variants().len(),
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
    // Said on stderr whatever --quiet says: a figure the run promised is missing.
    if let Some(e) = &run.quality_error {
        eprintln!("quality pass failed: {e}");
    }
    let gate = run.gate_failures();
    for (v, why) in &gate {
        eprintln!("quality gate: {} did not pass: {why}", v.key());
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
    } else if !gate.is_empty() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// A fresh folder for a run's outputs under `parent`: `<scenario>-<UTC time>`, with
/// `-2`, `-3` ... appended when another run took that name in the same second. Created
/// here (atomically), so two runs started together never share it.
fn default_dir(parent: &Path, scenario: &str) -> Result<PathBuf> {
    quantbench::fsutil::create_output_dir(parent)?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    for n in 1..=1000 {
        let name = if n == 1 {
            format!("{scenario}-{stamp}")
        } else {
            format!("{scenario}-{stamp}-{n}")
        };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => quantbench::bad_input!("cannot create output folder {}: {e}", dir.display()),
        }
    }
    quantbench::bad_input!(
        "{}: 1000 runs of {scenario} started this second; pass --out",
        parent.display()
    )
}

/// Held while a run writes into a folder: a lock file holding the run's process id, with
/// an advisory lock (flock) on it that the kernel releases when the process ends however
/// it ends. A lock file whose flock is free was left by a run that died (SIGKILL, abort):
/// it is taken over, and the run says so. Removed when the run ends.
struct DirLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still locked; a run waiting on the old file sees it is gone.
        let _ = std::fs::remove_file(&self.path);
    }
}

pub const LOCK_FILE: &str = ".quantbench.lock";

/// Take the lock of `dir`: Ok(None) when another live process holds it.
fn take_lock(dir: &Path) -> Result<Option<DirLock>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let not_writable = |e: std::io::Error| {
        quantbench::InputError::new(format!(
            "output folder {} is not writable: {e}",
            dir.display()
        ))
    };
    for _ in 0..10 {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(not_writable)?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(not_writable(e).into());
        }
        // The file may have been removed (its run finished) between open and flock: then
        // this lock is on a file nobody else will look at; start again.
        let same = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            continue;
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous = previous.trim();
        if !previous.is_empty() {
            eprintln!(
                "note: took over the lock {} left by a run that is no longer alive (pid {previous})",
                path.display()
            );
        }
        file.set_len(0).map_err(not_writable)?;
        file.rewind().map_err(not_writable)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(not_writable)?;
        return Ok(Some(DirLock { path, _file: file }));
    }
    quantbench::bad_input!(
        "could not take the lock {} (it keeps being replaced); is another run starting there?",
        path.display()
    )
}

/// The output folder must be writable, hold no results, and have no other run writing
/// into it; checked before any model loads. Of two runs started together on one folder
/// exactly one proceeds.
fn prepare_dir(dir: &Path) -> Result<DirLock> {
    quantbench::fsutil::create_output_dir(dir)?;
    let Some(guard) = take_lock(dir)? else {
        let lock = dir.join(LOCK_FILE);
        let pid = std::fs::read_to_string(&lock).unwrap_or_default();
        quantbench::bad_input!(
            "another quantbench run (pid {}) is writing into {}; choose another --out",
            pid.trim(),
            dir.display()
        );
    };
    if quantbench::fsutil::exists_at_all(&dir.join("results.json")) {
        quantbench::bad_input!(
            "{} already holds a results.json; choose another --out or remove it",
            dir.display()
        );
    }
    // A run writes these names; files already there are someone else's.
    let theirs: Vec<&str> = report::OUTPUT_FILES
        .iter()
        .chain(report::TEST_FILES.iter())
        .copied()
        .filter(|f| quantbench::fsutil::exists_at_all(&dir.join(f)))
        .collect();
    if !theirs.is_empty() {
        quantbench::bad_input!(
            "{} already holds {}, which a run writes and would replace; choose another --out",
            dir.display(),
            theirs.join(", ")
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
            Phase::Test { done, total, name } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(format!("test {name}"));
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
    let gate = run.gate_failures();
    // The variant column as wide as its longest key.
    let w = run
        .variants
        .iter()
        .map(|v| v.key().chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    outln!(
        "\n{:<w$} {:>6} {:>12} {:>6} {:>11} {:>11} {:>13} {:>9} {:>8} {:>8}",
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
        outln!(
            "{:<w$} {:>6} {:>12} {:>6} {:>11} {:>11} {:>13} {:>9} {:>8} {:>8}",
            h.label,
            match v.status {
                quantbench::record::VariantStatus::Ok
                    if gate.iter().any(|(g, _)| std::ptr::eq(*g, v)) =>
                {
                    "GATE"
                }
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
            outln!("        error: {e}");
        }
        if let Some((_, why)) = gate.iter().find(|(g, _)| std::ptr::eq(*g, v)) {
            outln!("        quality gate: {why}");
        }
    }
    outln!(
        "\nresults in {}/ (report.md, results.json, results.csv, memory.png, latency.png, quality.png)",
        dir.display()
    );
}

//! The `quantbench` command line: parse arguments, call the library, map errors to exit
//! statuses (0 success, 1 a failure while running, 2 bad input).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use quantbench::clock;
use quantbench::generate::{generate, GenerateOptions, NoObserver};
use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Policy, Precision, Quantization, RestDtype};
use quantbench::scenario::{self, DeviceChoice, Scenario};

mod cli_run;

/// Weights on 2 MB pages, made so as they are loaded (`quantbench::kernel::pages`).
#[global_allocator]
static ALLOC: quantbench::kernel::pages::WeightPages = quantbench::kernel::pages::WeightPages;

/// Print a line on stdout; a closed pipe (`quantbench list | head -1`) ends the output
/// quietly instead of panicking, and the command finishes as it would have.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out_write(format_args!("{}\n", format_args!($($arg)*))) };
}
/// [`outln`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out_write(format_args!($($arg)*)) };
}
pub(crate) use outln;

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
    Run(Box<RunArgs>),
    /// Write a run's figures for benchmark trackers: Bencher's BMF, github-action-benchmark's
    /// two arrays, or llama-bench-shaped rows (jsonl, csv), one per variant and test.
    ExportResults {
        /// A results.json written by `quantbench run`, or the folder holding it.
        results: PathBuf,
        /// bmf, github-action-benchmark, jsonl or csv.
        #[arg(long, value_enum)]
        format: quantbench::report::export::ResultsFormat,
        /// Where to write: a file (default: stdout); a folder for github-action-benchmark (required), which gets smaller-is-better.json and bigger-is-better.json.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace files already at --out (never a results.json or anything but a regular file).
        #[arg(long)]
        force: bool,
    },
    /// Re-render results.csv, report.md and the charts from a results.json (which is
    /// read only, never rewritten).
    Report {
        /// A results.json written by `quantbench run`, or the folder holding it.
        results: PathBuf,
        /// Where to write (default: the results file's folder); never a folder holding another run's results.json.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace report files already in --out that no results.json there explains.
        #[arg(long)]
        force: bool,
    },
    /// Generate greedily from one model at one precision, and print the text, the token
    /// ids and the weight bytes: check a model before benchmarking it.
    Generate {
        /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
        #[arg(long, default_value = "synthetic:gpt2")]
        model: ModelSpec,
        /// Precision: f32, f16, bf16, q8_0 (int8), q4_0 (int4), q4_1, q5_0, q5_1, q2_k ... q6_k, or native (a GGUF file as stored).
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// Allow a precision other than native from an already quantized GGUF (dequantized, then quantized again).
        #[arg(long)]
        requantize: bool,
        /// What the precision applies to: all (every weight matrix) or linear (the block's linear layers).
        #[arg(long, default_value = "all")]
        policy: Policy,
        /// The dtype of the weights the precision does not apply to: f32, f16, or auto (f16 beside f16 and bitsandbytes' formats, else f32).
        #[arg(long, default_value = "auto")]
        rest: RestDtype,
        /// The text to continue.
        #[arg(long, default_value = "Once upon a time")]
        prompt: String,
        /// Exactly this many tokens are generated (end-of-text does not stop it).
        #[arg(long, default_value_t = 50)]
        new_tokens: usize,
        /// Stop early if the model emits <|endoftext|>.
        #[arg(long)]
        stop_at_eos: bool,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Write a model for other tools to run the same weights: in the Hugging Face layout
    /// (config.json, model.safetensors in f32, tokenizer files), or as one GGUF file at a
    /// precision (the very blocks quantbench measures), which llama.cpp runs.
    Export {
        /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
        #[arg(long, default_value = "synthetic:gpt2")]
        model: ModelSpec,
        /// Where to write: a directory for hf (created; empty unless --force), a .gguf file for gguf.
        #[arg(long)]
        out: PathBuf,
        /// Replace what is there: the files export writes (hf), or the file (gguf).
        #[arg(long)]
        force: bool,
        /// Output format: hf (config.json + model.safetensors in f32 + tokenizer) or gguf (one file, llama.cpp's layout).
        #[arg(long, default_value = "hf")]
        format: ExportFormat,
        /// The precision of a gguf export (f32 ... q2_k, or native: a GGUF source as stored); hf is always f32.
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// What the precision applies to in a gguf export: all or linear.
        #[arg(long, default_value = "all")]
        policy: Policy,
        /// Allow a precision other than native from an already quantized GGUF (dequantized, then quantized again).
        #[arg(long)]
        requantize: bool,
    },
    /// Compare runs: per shared variant and metric, base, new, change and a verdict
    /// (faster / slower / same within noise). `compare BASE NEW` compares two runs;
    /// `compare BASE... -- NEW...` compares several runs per side by the spread between
    /// them (a folder stands for every results.json under it).
    Compare {
        /// The base run(s): results.json files or folders; with `--`, every path before it.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The new run(s), after `--`.
        #[arg(last = true)]
        new_runs: Vec<PathBuf>,
        /// text (terminal), md (Markdown, for a CI comment) or json.
        #[arg(long, default_value = "text")]
        format: CompareFormat,
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
    },
    /// Trends over many runs: reads every results.json under the folders, writes
    /// history.csv and a trend chart per scenario and metric (SVG and PNG).
    History {
        /// Folders (searched recursively) or results files.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write.
        #[arg(long, default_value = "reports/history")]
        out: PathBuf,
    },
    /// List the precisions, model presets and the scenarios in scenarios/.
    List,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// config.json + model.safetensors (f32) + tokenizer files.
    Hf,
    /// One GGUF file at a precision, as llama.cpp reads it.
    Gguf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompareFormat {
    Text,
    Md,
    Json,
}

fn parse_threshold(s: &str) -> Result<(String, f64), String> {
    let (name, pct) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not METRIC=PERCENT"))?;
    if quantbench::compare::Metric::find(name).is_none() {
        return Err(format!(
            "unknown metric '{name}'; valid: {}",
            quantbench::compare::METRICS
                .iter()
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

/// A results.json, or the folder holding one.
fn results_path(p: &std::path::Path) -> PathBuf {
    if p.is_dir() {
        p.join("results.json")
    } else {
        p.to_path_buf()
    }
}

/// The results files a compare argument stands for: a file; a folder holding
/// results.json; or a folder of runs (every results.json under it).
fn results_files(p: &std::path::Path) -> Vec<PathBuf> {
    if p.is_dir() && !p.join("results.json").exists() {
        let found = quantbench::history::find_results(&[p.to_path_buf()]);
        if !found.is_empty() {
            return found;
        }
    }
    vec![results_path(p)]
}

/// Flags of `quantbench run`; each overrides the scenario file's value.
#[derive(clap::Args)]
struct RunArgs {
    /// A scenario file (TOML). Without one, the flags make a one-off scenario from the
    /// quickstart's defaults.
    scenario: Option<PathBuf>,
    /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
    #[arg(long)]
    model: Option<ModelSpec>,
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

impl RunArgs {
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

fn main() -> ExitCode {
    quantbench::probe::process::configure_allocator();
    quantbench::kernel::configure_threads();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if quantbench::interrupt::is_interrupted(&e) {
                ExitCode::from(130)
            } else if quantbench::is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
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
    let most = quantbench::workload::MAX_THREADS;
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

fn run(cli: Cli) -> Result<ExitCode> {
    check_environment()?;
    match cli.command {
        Command::Run(args) => {
            let scenario = args.scenario()?;
            cli_run::run(scenario, args.scenario.as_deref(), args.out, args.quiet)
        }
        Command::Compare {
            runs,
            new_runs,
            format,
            noise,
            thresholds,
            fail_on_regression,
            allow_different,
        } => {
            use quantbench::compare;
            let (base_args, new_args) = if new_runs.is_empty() {
                match runs.as_slice() {
                    [b, n] => (vec![b.clone()], vec![n.clone()]),
                    _ => quantbench::bad_input!(
                        "compare takes two runs (compare BASE NEW) or several per side (compare BASE... -- NEW...); got {} path(s) and no `--`",
                        runs.len()
                    ),
                }
            } else {
                (runs, new_runs)
            };
            let read_side =
                |args: &[PathBuf]| -> Result<(Vec<(PathBuf, quantbench::RunRecord)>, String)> {
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
                };
            let (b, bl) = read_side(&base_args)?;
            let (n, nl) = read_side(&new_args)?;
            compare::check_comparable(&b, &n, allow_different)
                .map_err(quantbench::InputError::new)?;
            let b: Vec<_> = b.into_iter().map(|(_, r)| r).collect();
            let n: Vec<_> = n.into_iter().map(|(_, r)| r).collect();
            let opts = compare::Options {
                noise_percent: noise,
                thresholds: thresholds.into_iter().collect(),
                ..Default::default()
            };
            if let Err(e) = opts.validate() {
                quantbench::bad_input!("{e}");
            }
            let c = compare::compare_runs(&b, &n, &bl, &nl, &opts);
            match format {
                CompareFormat::Text => out!("{}", compare::render_text(&c)),
                CompareFormat::Md => out!("{}", compare::render_markdown(&c)),
                CompareFormat::Json => outln!("{}", serde_json::to_string_pretty(&c)?),
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
                if fail_on_regression {
                    eprintln!("compare: --fail-on-regression fails when there is nothing to judge");
                    return Ok(ExitCode::from(1));
                }
            }
            let regressions = c.regressions();
            if fail_on_regression && !regressions.is_empty() {
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
        Command::History { dirs, out } => {
            use quantbench::history;
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
            let written = history::write(&points, &out)?;
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
        Command::ExportResults {
            results,
            format,
            out,
            force,
        } => {
            use quantbench::report::{atomic, export};
            let run = quantbench::report::read_results(&results_path(&results))?;
            let text = match format {
                export::ResultsFormat::Bmf => {
                    serde_json::to_string_pretty(&export::bmf(&run))? + "\n"
                }
                export::ResultsFormat::Jsonl => export::jsonl(&run),
                export::ResultsFormat::Csv => export::csv(&run)?,
                export::ResultsFormat::GithubActionBenchmark => {
                    let Some(dir) = out else {
                        quantbench::bad_input!(
                            "--format github-action-benchmark writes two files: give --out FOLDER (it gets smaller-is-better.json and bigger-is-better.json)"
                        );
                    };
                    let names = ["smaller-is-better.json", "bigger-is-better.json"];
                    for name in names {
                        quantbench::fsutil::check_replaceable(&dir.join(name), "--out", force)?;
                    }
                    quantbench::fsutil::create_output_dir(&dir)?;
                    let (smaller, bigger) = export::github_action_benchmark(&run);
                    for (name, v) in names.into_iter().zip([smaller, bigger]) {
                        let path = dir.join(name);
                        atomic::write(
                            &path,
                            (serde_json::to_string_pretty(&v)? + "\n").as_bytes(),
                        )?;
                        outln!("wrote {}", path.display());
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            };
            match out {
                Some(path) => {
                    quantbench::fsutil::check_replaceable(&path, "--out", force)?;
                    atomic::write(&path, text.as_bytes())?;
                    outln!("wrote {}", path.display());
                }
                None => outln!("{}", text.trim_end_matches('\n')),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            results,
            out,
            force,
        } => {
            let results = results_path(&results);
            let run = quantbench::report::read_results(&results)?;
            let dir = out.unwrap_or_else(|| {
                results
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| PathBuf::from("."))
            });
            quantbench::report::check_derived_dir(&results, &dir, force)?;
            quantbench::fsutil::create_output_dir(&dir)?;
            for f in quantbench::report::write_derived(&run, &dir)? {
                outln!("wrote {}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            model,
            precision,
            requantize,
            policy,
            rest,
            prompt,
            new_tokens,
            stop_at_eos,
            device,
        } => {
            let q = Quantization::new(precision)
                .with_policy(policy)
                .with_rest(rest);
            let mut source = model::resolve(&model)?;
            source.requantize = requantize;
            // Check the prompt and the token count against the context before loading.
            let tokenizer = source.tokenizer()?;
            quantbench::generate::check_fits(
                tokenizer.encode_prompt(&prompt)?.len(),
                new_tokens,
                source.config.context_length(),
            )?;
            let (device, device_name) = device.open()?;
            model::check_memory(&source, q, &device)?;
            let t0 = clock::synced_now(&device)?;
            let loaded = model::load(&source, q, &device)?;
            let load_s = clock::synced_seconds_since(&device, t0)?;
            let ids = loaded.tokenizer.encode_prompt(&prompt)?;
            let opts = GenerateOptions {
                new_tokens,
                stop_at_end_of_text: stop_at_eos,
            };
            let g = generate(&loaded, &ids, opts, &mut NoObserver)?;
            // The sum of the generation's steps, each timed with the device synchronised.
            let gen_s = g.total_seconds();
            let fp = &loaded.footprint;
            outln!("model:        {}", loaded.name);
            outln!("quantization: {q}");
            outln!("device:       {device_name}");
            outln!("prompt ids:   {:?}", g.prompt_ids);
            outln!("new ids:      {:?}", g.new_ids);
            outln!("text:         {:?}", g.text);
            outln!(
                "weights:      {} bytes ({:.1} MB, {:.3} bits/weight over {} parameters)",
                fp.total_bytes(),
                fp.total_bytes() as f64 / 1e6,
                fp.bits_per_weight(),
                fp.parameters()
            );
            outln!(
                "  embeddings {} B, linear {} B, norms+biases {} B",
                fp.embeddings.bytes,
                fp.linear.bytes,
                fp.norms_biases.bytes
            );
            for f in &fp.fallbacks {
                outln!("  note: {f}");
            }
            outln!(
                "timing:       load {load_s:.2} s; {} tokens in {gen_s:.3} s (prefill {:.1} ms, decode {} tok/s); one unwarmed run, use `quantbench run` for measurements",
                g.new_ids.len(),
                g.prefill_seconds() * 1e3,
                g.decode_tokens_per_second()
                    .map(|t| format!("{t:.1}"))
                    .unwrap_or_else(|| "-".into())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            model,
            out,
            force,
            format,
            precision,
            policy,
            requantize,
        } => {
            let mut source = model::resolve(&model)?;
            source.requantize = requantize;
            quantbench::interrupt::install_handler()?;
            match format {
                ExportFormat::Hf => {
                    if precision != Precision::F32 {
                        quantbench::bad_input!(
                            "--precision {precision}: an hf export is always f32 safetensors; use --format gguf to write a precision"
                        );
                    }
                    model::export::export(&source, &out, force)?;
                    outln!("wrote {} to {}", source.display_name, out.display());
                }
                ExportFormat::Gguf => {
                    let q = Quantization::new(precision).with_policy(policy);
                    let done = model::gguf_write::export_gguf(&source, q, &out, force)?;
                    outln!(
                        "wrote {} at {} to {} ({} tensors, {} bytes)",
                        source.display_name,
                        precision,
                        out.display(),
                        done.tensors,
                        done.file_bytes
                    );
                    for (ty, bytes) in &done.bytes_by_type {
                        outln!("  {ty:<6} {bytes:>12} bytes");
                    }
                    for n in &done.notes {
                        outln!("  note: {n}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            outln!("precisions (bits per weight of the format):");
            for p in Precision::ALL {
                let aliases = if p.aliases().is_empty() {
                    String::new()
                } else {
                    format!("  also: {}", p.aliases().join(", "))
                };
                let line = format!(
                    "  {:<16} {:>7.4}  {:<12}{aliases}",
                    p.name(),
                    p.bits_per_weight(),
                    p.family().name()
                );
                outln!("{}", line.trim_end());
            }
            outln!(
                "  (the int8 formats' row / tensor scales and double quantization's second level are per matrix: the records give each model's exact bits per weight)"
            );
            outln!(
                "  {:<16} {:>7}  file          also: {}; a GGUF file's tensors as stored (bits per weight: the file's)",
                Precision::Native.name(),
                "-",
                Precision::Native.aliases().join(", ")
            );
            outln!("\nmodel presets (offline, synthetic weights), by architecture:");
            for arch in quantbench::model::arch::ARCHITECTURES {
                outln!("  {}:", arch.title);
                for p in arch.presets {
                    let c = p.config();
                    outln!(
                        "    synthetic:{:<15} [{}] {} ({} parameters)",
                        p.name,
                        c.architecture(),
                        p.about,
                        c.parameter_count()
                    );
                }
            }
            outln!("\nreal models (bash scripts/fetch-models.sh downloads them):");
            for k in quantbench::model::spec::KNOWN_FILES.iter() {
                let path = quantbench::model::spec::models_dir().join(k.file);
                let here = std::fs::metadata(&path).is_ok_and(|m| m.len() == k.bytes);
                outln!(
                    "    {:<25} {} ({})",
                    k.name,
                    k.about,
                    if here {
                        format!("at {}", path.display())
                    } else {
                        "not downloaded".to_string()
                    }
                );
            }
            outln!(
                "\nother models: hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory in the Hugging Face layout"
            );
            outln!("\nscenarios (scenarios/):");
            for path in scenario::list_dir(std::path::Path::new("scenarios")) {
                match Scenario::load(&path) {
                    Ok(s) => outln!(
                        "  {:<34} {} [{}] {}",
                        path.display(),
                        s.model,
                        s.precisions
                            .iter()
                            .map(|p| p.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.description.unwrap_or_default()
                    ),
                    Err(e) => outln!("  {:<34} invalid: {e}", path.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

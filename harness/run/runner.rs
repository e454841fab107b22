//! One variant's life — probe, load, probe, warm up, repeat, drop, probe — and a whole
//! scenario as a sequence of such lives, each recorded whether it succeeds or fails.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use candle_core::Device;

use crate::analysis::stats::Summary;
use crate::engine::{Engine, EngineKind, Loaded, ModelFacts};
use crate::environment::Environment;
use crate::precision::{Precision, Quantization};
use crate::probe::{process::release_freed_memory, Probes};
use crate::record::{
    MemoryMoments, ModelInfo, RunRecord, RunStatus, TimingSummary, VariantRecord, VariantStatus,
    SCHEMA_VERSION,
};
use crate::run::clock::{self, Synchronize};
use crate::run::generate::{generate, GenerateOptions, NoObserver};
use crate::run::interrupt;
use crate::run::quality::{self, Evaluation, QualityRecord, Reference, ReferenceInfo};
use crate::run::workload::{self, TestRecord, TestStatus};
use crate::scenario::{Scenario, Variant};

use crate::scenario::MAX_REPETITIONS;
/// How often the background sampler reads memory during generation.
pub const PEAK_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);

/// Where a variant is in its life, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Loading,
    WarmingUp {
        done: usize,
        total: usize,
    },
    Timing {
        done: usize,
        total: usize,
    },
    /// Workload test `done` of `total` (its name).
    Test {
        done: usize,
        total: usize,
        name: String,
    },
    Quality,
    CleaningUp,
}

/// Hooks the runner calls; `variant_finished` is where results get written.
pub trait RunObserver {
    /// The quality pass's f32 reference is being computed.
    fn reference_started(&mut self) {}
    fn variant_started(&mut self, _variant: &Variant, _count: usize) {}
    fn phase(&mut self, _variant: &Variant, _phase: Phase) {}
    /// Called with the run so far after each variant; an error stops the run.
    fn variant_finished(&mut self, _record: &VariantRecord, _run: &RunRecord) -> Result<()> {
        Ok(())
    }
}

/// An observer that does nothing.
pub struct Silent;
impl RunObserver for Silent {}

/// Everything a run needs, resolved before any variant runs so that bad input fails fast.
pub struct Prepared {
    pub scenario: Scenario,
    /// The file the scenario was read from, for the record.
    pub scenario_file: Option<String>,
    /// The quality pass's tokens and windows, when it is enabled (the reference engine's
    /// tokens: the first engine's).
    pub evaluation: Option<Evaluation>,
    /// The run's engines with the model opened, in the scenario's order; the first one
    /// computes the quality pass's reference.
    pub engines: Vec<PreparedEngine>,
    /// The model as the first engine reads it.
    pub model: ModelInfo,
    pub device: Device,
    pub device_name: String,
}

/// One engine of a run, with the prompt as it tokenizes it.
pub struct PreparedEngine {
    pub engine: Box<dyn Engine>,
    /// The prompt as this engine tokenizes it in deployment (BOS first where the model
    /// asks for one).
    pub prompt_ids: Vec<u32>,
    /// Why this engine's variants get no quality figures although the pass is on (it
    /// tokenizes the evaluation text differently from the reference engine).
    pub quality_refused: Option<String>,
}

impl Prepared {
    /// The prepared engine `kind`.
    pub fn engine(&self, kind: EngineKind) -> &PreparedEngine {
        self.engines
            .iter()
            .find(|e| e.engine.kind() == kind)
            .expect("every variant's engine is prepared")
    }
}

/// Open the model with each engine, open the device, tokenize the prompt and the
/// evaluation text, and check they fit. `scenario_file` anchors the scenario's relative
/// paths.
pub fn prepare(scenario: &Scenario, scenario_file: Option<&Path>) -> Result<Prepared> {
    let (device, device_name) = scenario.device.open()?;
    let mut engines = Vec::new();
    for kind in scenario.engines() {
        let engine = crate::engine::open(kind, scenario, &device)?;
        // What loading each variant would refuse, refused now (exit 2), before any runs:
        // a precision the engine cannot make from this model.
        for v in scenario.variants().iter().filter(|v| v.engine == kind) {
            engine.check_precision(v.quantization)?;
        }
        // As a deployed engine sees it: the BOS first where the model asks for one.
        let prompt_ids = engine.encode(&scenario.prompt)?;
        let facts = engine.facts();
        crate::run::generate::check_fits(
            prompt_ids.len(),
            scenario.new_tokens,
            facts.context_length,
        )?;
        if let Some(&bad) = prompt_ids.iter().find(|&&t| t as usize >= facts.vocab_size) {
            crate::bad_input!(
                "the prompt's token {bad} is outside the model's vocabulary of {}",
                facts.vocab_size
            );
        }
        engines.push(PreparedEngine {
            engine,
            prompt_ids,
            quality_refused: None,
        });
    }
    let evaluation = if scenario.quality.enabled {
        // Scenario::load resolved the text's path against the scenario's folder already.
        let (text, source_name) = scenario.quality.load_text()?;
        let (reference, others) = engines.split_first_mut().expect("at least one engine");
        let tokens = reference.engine.encode(&text)?;
        for other in others {
            if other.engine.encode(&text)? != tokens {
                other.quality_refused = Some(format!(
                    "engine {} tokenizes the evaluation text differently from engine {} (the reference): their distributions would be compared at different positions",
                    other.engine.kind(),
                    reference.engine.kind()
                ));
            }
        }
        let facts = engines[0].engine.facts();
        Some(
            Evaluation::new(&scenario.quality, tokens, source_name, facts.context_length)?
                .with_bos(facts.bos),
        )
    } else {
        None
    };
    let model = engines[0].engine.model_info()?;
    Ok(Prepared {
        scenario: scenario.clone(),
        scenario_file: scenario_file.map(|p| p.display().to_string()),
        evaluation,
        engines,
        model,
        device,
        device_name,
    })
}

/// A fresh run record, before any variant.
pub fn new_record(p: &Prepared) -> RunRecord {
    let environment = Environment::capture(&p.device_name);
    RunRecord {
        schema_version: SCHEMA_VERSION,
        status: RunStatus::Running,
        started_at: environment.timestamp.clone(),
        environment,
        scenario: p.scenario.clone(),
        scenario_file: p.scenario_file.clone(),
        model: p.model.clone(),
        variants: Vec::new(),
        quality_reference: None,
        quality_error: None,
        probes: Vec::new(),
        probe_notes: Vec::new(),
        finished_at: None,
    }
}

/// The f32 reference of the quality pass, computed by the run's first engine: loaded,
/// evaluated once, dropped.
pub fn reference_pass(p: &Prepared, eval: &Evaluation) -> Result<(Reference, ReferenceInfo)> {
    let reference = &p.engines[0];
    let engine = reference.engine.as_ref();
    let file_type = p
        .model
        .file_type
        .clone()
        .unwrap_or_else(|| p.model.source_dtype.clone().unwrap_or_default());
    if engine.is_prequantized() && !p.scenario.requantize {
        crate::bad_input!(
            "no f32 reference: {} is already quantized ({file_type}), so its f32 weights are its own dequantized values, not the original model's; pass --requantize to measure against them anyway (the record says so), or run the quality pass on the model's float file (F16/F32 GGUF or safetensors)",
            p.model.name
        );
    }
    let basis = engine.is_prequantized().then(|| {
        format!(
            "the file's {file_type} weights dequantized to f32, not the original model's floats: KL here measures the change from the file as shipped"
        )
    });
    let f32 = Quantization::new(Precision::F32);
    engine.prepare(f32)?;
    engine.check_memory(f32)?;
    let t0 = clock::synced_now(engine)?;
    let m = engine.load(f32)?;
    let load_seconds = clock::synced_seconds_since(engine, t0)?;
    let generated =
        quality::reference_generation(m.as_ref(), &reference.prompt_ids, p.scenario.new_tokens)?;
    let computed = Reference::compute(m.as_ref(), eval, generated)?;
    drop(m);
    release_freed_memory();
    let info = ReferenceInfo {
        text_source: eval.text_source.clone(),
        tokens: eval.tokens.len(),
        positions: computed.positions,
        window: eval.window,
        stride: eval.stride,
        windows: computed.windows,
        perplexity: computed
            .perplexity
            .is_finite()
            .then_some(computed.perplexity),
        seconds: computed.seconds,
        load_seconds,
        stored_bytes: computed.stored_bytes(),
        generated_token_ids: computed.generated_token_ids.clone(),
        scoring: eval.scoring,
        basis,
        engine: engine.kind(),
    };
    Ok((computed, info))
}

/// Run every variant of a prepared scenario, in order.
pub fn run(p: &Prepared, probes: &Probes, observer: &mut dyn RunObserver) -> Result<RunRecord> {
    crate::probe::process::configure_allocator();
    let mut run = new_record(p);
    run.probes = probes.names();
    if !p.scenario.tests().is_empty() {
        // Measured once, before any model is loaded, on the device the run uses (every
        // core of a CPU); its buffers are returned before the first variant's "before
        // load".
        run.environment.memory_bandwidth = Some(crate::run::bandwidth::measure_on(
            &p.device,
            &p.device_name,
        )?);
        release_freed_memory();
        // A CUDA pool keeps the freed buffers: give them back too.
        let _ = probes.trim_caches();
    }
    let mut reference = None;
    if let Some(eval) = &p.evaluation {
        observer.reference_started();
        match reference_pass(p, eval) {
            Ok((r, info)) => {
                run.quality_reference = Some(info);
                reference = Some(r);
            }
            Err(e) => run.quality_error = Some(format!("{e:#}")),
        }
    }
    let variants = p.scenario.variants();
    let now = || Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let rounds = p.scenario.rounds.max(1);
    let read_gbps = run
        .environment
        .memory_bandwidth
        .as_ref()
        .map(|b| b.read_gbps);
    'rounds: for round in 0..rounds {
        // Rounds alternate the order (forward, then backward) so that a drift in the
        // machine's speed over the run weighs on every variant alike.
        let order: Vec<&Variant> = if round % 2 == 0 {
            variants.iter().collect()
        } else {
            variants.iter().rev().collect()
        };
        for (done, v) in order.into_iter().enumerate() {
            if interrupt::requested() {
                break 'rounds;
            }
            observer.variant_started(v, variants.len());
            // The quality pass is a property of the weights, not of timing: round 1's.
            let r = if round == 0 { reference.as_ref() } else { None };
            let rec = run_variant(p, v, probes, r, read_gbps, observer);
            let at = if round == 0 {
                run.variants.push(rec);
                run.variants.len() - 1
            } else {
                let facts = p.engine(v.engine).engine.facts();
                merge_round(&mut run.variants[v.index], rec, round + 1, facts, read_gbps);
                v.index
            };
            if interrupt::requested() {
                run.status = RunStatus::Interrupted;
                run.finished_at = now();
            } else if round + 1 == rounds && done + 1 == variants.len() {
                run.status = RunStatus::Complete;
                run.finished_at = now();
            }
            run.probe_notes = probes.notes();
            observer.variant_finished(&run.variants[at], &run)?;
        }
    }
    if interrupt::requested() && run.status != RunStatus::Interrupted {
        // Stopped during the reference pass, before any variant.
        run.status = RunStatus::Interrupted;
        run.finished_at = now();
    }
    Ok(run)
}

/// A later round's timings added to the variant's record: its generations' and its
/// tests' samples appended and summarised again (memory, weights and quality stay round
/// 1's). A failure in a later round fails the variant, saying which round.
fn merge_round(
    into: &mut VariantRecord,
    later: VariantRecord,
    round: usize,
    facts: &ModelFacts,
    read_gbps: Option<f64>,
) {
    into.rounds = round;
    if !later.is_ok() {
        if into.is_ok() {
            into.status = later.status;
            into.error = Some(format!(
                "round {round}: {}",
                later.error.as_deref().unwrap_or("failed")
            ));
        }
        return;
    }
    if !into.is_ok() {
        return;
    }
    into.generate_seconds.extend(later.generate_seconds);
    into.prefill_seconds.extend(later.prefill_seconds);
    into.decode_step_seconds.extend(later.decode_step_seconds);
    if let (Some(a), Some(b)) = (
        into.tokens_identical_across_repetitions,
        later.tokens_identical_across_repetitions,
    ) {
        into.tokens_identical_across_repetitions =
            Some(a && b && later.generated_token_ids == into.generated_token_ids);
    }
    if !into.generate_seconds.is_empty() {
        into.timing = Some(summarize(into, into.new_tokens));
    }
    let streamed = into.weights_streamed_bytes_per_step.unwrap_or(0) as usize;
    for t in later.tests {
        if let Some(mine) = into.tests.iter_mut().find(|m| m.name == t.name) {
            if mine.status == TestStatus::Ok && t.status == TestStatus::Ok {
                mine.prefill_seconds.extend(t.prefill_seconds);
                mine.decode_step_seconds.extend(t.decode_step_seconds);
                // A mixture of experts: the test's own routed bytes (round 1's).
                let streamed = mine
                    .weights_streamed_bytes_per_step
                    .map_or(streamed, |b| b as usize);
                mine.summarize(streamed, &|c| facts.kv_cache_bytes(1, c) as f64, read_gbps);
            }
        }
    }
}

/// One variant's whole life. Never fails: an error or a panic is recorded in the result.
/// `read_gbps`: the machine's measured read bandwidth, for the tests' fractions.
pub fn run_variant(
    p: &Prepared,
    v: &Variant,
    probes: &Probes,
    reference: Option<&Reference>,
    read_gbps: Option<f64>,
    observer: &mut dyn RunObserver,
) -> VariantRecord {
    let s = &p.scenario;
    let engine = p.engine(v.engine);
    let mut rec = VariantRecord {
        engine: v.engine,
        precision: v.quantization.precision,
        policy: v.quantization.policy,
        rest: v.quantization.rest,
        status: VariantStatus::Failed,
        error: None,
        new_tokens: s.new_tokens,
        generated_token_ids: Vec::new(),
        generated_text: String::new(),
        tokens_identical_across_repetitions: None,
        prompt_token_ids: engine.prompt_ids.clone(),
        weights_bytes: None,
        weights: None,
        load_seconds: None,
        warmup_repetitions: s.warmup,
        generate_seconds: Vec::new(),
        prefill_seconds: Vec::new(),
        decode_step_seconds: Vec::new(),
        timing: None,
        memory: MemoryMoments::default(),
        quality: None,
        energy_joules_per_token: None,
        requantized: engine.engine.is_prequantized()
            && v.quantization.precision != Precision::Native,
        weights_streamed_bytes_per_step: None,
        experts: None,
        workload_context: None,
        tests: Vec::new(),
        engine_report: None,
        rounds: 1,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        measure(p, v, probes, reference, read_gbps, observer, &mut rec)
    }));
    let mut interrupted = false;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            interrupted = interrupt::is_interrupted(&e);
            Some(format!("{e:#}"))
        }
        Err(panic) => Some(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic")
        )),
    };
    // Whatever happened, the model is gone by now: read memory after cleanup.
    release_freed_memory();
    let _ = Synchronize::synchronize(engine.engine.as_ref());
    rec.memory.after_cleanup = Some(probes.read());
    if probes.trim_caches() {
        let _ = Synchronize::synchronize(engine.engine.as_ref());
        rec.memory.after_pool_trim = Some(probes.read());
    }
    match error {
        None => rec.status = VariantStatus::Ok,
        Some(e) => {
            rec.status = if interrupted {
                VariantStatus::Interrupted
            } else {
                VariantStatus::Failed
            };
            rec.error = Some(e);
        }
    }
    rec
}

fn measure(
    p: &Prepared,
    v: &Variant,
    probes: &Probes,
    reference: Option<&Reference>,
    read_gbps: Option<f64>,
    observer: &mut dyn RunObserver,
    rec: &mut VariantRecord,
) -> Result<()> {
    let prepared = p.engine(v.engine);
    let loaded = load(p, prepared.engine.as_ref(), v, probes, observer, rec)?;
    let loaded = loaded.as_ref();
    record_weights(loaded, rec);
    time_generations(p, &prepared.prompt_ids, v, loaded, probes, observer, rec)?;
    run_tests(p, v, loaded, probes, read_gbps, observer, rec)?;
    if let (Some(r), Some(eval)) = (reference, &p.evaluation) {
        observer.phase(v, Phase::Quality);
        if let Some(why) = &prepared.quality_refused {
            anyhow::bail!("quality pass: {why}");
        }
        let same_as_reference = v.engine == p.engines[0].engine.kind();
        let mut q = quality_pass(v, same_as_reference, loaded, r, eval, rec)?;
        q.apply_gate(&p.scenario.quality);
        if let (Some(agree), Some(e)) = (&q.top_k_agreement, rec.experts.as_mut()) {
            for (l, a) in e.layers.iter_mut().zip(agree) {
                l.top_k_agreement = Some(*a);
            }
        }
        rec.quality = Some(q);
    }
    rec.engine_report = Some(loaded.report());
    observer.phase(v, Phase::CleaningUp);
    Ok(())
}

/// Memory read before loading, the model loaded (timed, its peak sampled) and memory
/// read after.
fn load(
    p: &Prepared,
    engine: &dyn Engine,
    v: &Variant,
    probes: &Probes,
    observer: &mut dyn RunObserver,
    rec: &mut VariantRecord,
) -> Result<Box<dyn Loaded>> {
    let s = &p.scenario;
    interrupt::check()?;
    observer.phase(v, Phase::Loading);
    engine.prepare(v.quantization)?;
    // What earlier work freed (the prompt's tokenizer: tens of MB for a 128k vocabulary)
    // is returned to the OS first, as it is after load: the difference between the two
    // readings is then what loading added.
    release_freed_memory();
    rec.memory.before_load = probes.read();
    engine.check_memory(v.quantization)?;
    // The load's own peak: f32 temporaries of one tensor at a time on top of the
    // weights stored so far (the loader streams; this shows that it does).
    let load_sampler = probes.start_peak_sampler(PEAK_SAMPLE_INTERVAL);
    let t0 = clock::synced_now(engine)?;
    let loaded = engine.load(v.quantization);
    let load_time = clock::synced_seconds_since(engine, t0);
    let (load_peak, _) = load_sampler.finish();
    rec.memory.peak_during_load = Some(load_peak);
    let loaded = loaded?;
    rec.load_seconds = Some(load_time?);
    // Conversion's f32 temporaries are freed by now; return them to the OS so that
    // "after load" is what the loaded model holds, not the allocator's cache.
    release_freed_memory();
    rec.memory.after_load = probes.read();
    check_budget(s, &rec.memory.after_load, "after load")?;
    Ok(loaded)
}

/// The loaded weights' exact bytes, by group, format and part, as the engine holds them.
fn record_weights(loaded: &dyn Loaded, rec: &mut VariantRecord) {
    let mut weights = loaded.weights();
    weights.huge_page_bytes = loaded.huge_page_bytes();
    rec.weights_bytes = Some(weights.total_bytes());
    rec.weights = Some(weights);
}

/// The warm-up generations, then the timed repetitions (at least `repeats`, and
/// `min_seconds` of generation if asked) with the peak memory sampled over them.
fn time_generations(
    p: &Prepared,
    prompt_ids: &[u32],
    v: &Variant,
    loaded: &dyn Loaded,
    probes: &Probes,
    observer: &mut dyn RunObserver,
    rec: &mut VariantRecord,
) -> Result<()> {
    let s = &p.scenario;
    let opts = GenerateOptions::exactly(s.new_tokens);
    let mut all_tokens: Vec<Vec<u32>> = Vec::new();
    for i in 0..s.warmup {
        interrupt::check()?;
        observer.phase(
            v,
            Phase::WarmingUp {
                done: i,
                total: s.warmup,
            },
        );
        let g = generate(loaded, prompt_ids, opts, &mut NoObserver).context("warm-up")?;
        all_tokens.push(g.new_ids);
    }

    const ENERGY: &str = "gpu_energy_millijoules";
    let energy_start = probes.read().get(ENERGY);
    let sampler = probes.start_peak_sampler(PEAK_SAMPLE_INTERVAL);
    rec.memory.peak_sample_interval_ms = Some(PEAK_SAMPLE_INTERVAL.as_secs_f64() * 1e3);
    let min_seconds = s.min_seconds.unwrap_or(0.0);
    let mut measured = 0.0;
    let mut rep = 0;
    // A mixture of experts' routing, counted over the timed repetitions alone.
    loaded.reset_expert_usage();
    while (rep < s.repeats || measured < min_seconds) && rep < MAX_REPETITIONS {
        interrupt::check()?;
        observer.phase(
            v,
            Phase::Timing {
                done: rep,
                total: s.repeats,
            },
        );
        let g = generate(loaded, prompt_ids, opts, &mut NoObserver)
            .with_context(|| format!("timed repetition {}", rep + 1))?;
        anyhow::ensure!(
            g.new_ids.len() == s.new_tokens,
            "repetition {} generated {} tokens, not the {} asked for",
            rep + 1,
            g.new_ids.len(),
            s.new_tokens
        );
        measured += g.total_seconds();
        rec.generate_seconds.push(g.total_seconds());
        rec.prefill_seconds.push(g.prefill_seconds());
        rec.decode_step_seconds.push(g.step_seconds[1..].to_vec());
        if rep == 0 {
            rec.generated_token_ids = g.new_ids.clone();
            rec.generated_text = g.text.clone();
        }
        all_tokens.push(g.new_ids);
        rep += 1;
    }
    let (peak, samples) = sampler.finish();
    let _ = loaded.synchronize();
    if let (Some(e0), Some(e1)) = (energy_start, probes.read().get(ENERGY)) {
        let tokens = rep as f64 * s.new_tokens as f64;
        rec.energy_joules_per_token = Some(e1.saturating_sub(e0) as f64 / 1000.0 / tokens);
    }
    rec.memory.peak_samples = samples;
    if let Some(u) = loaded.expert_usage() {
        rec.experts =
            crate::record::ExpertsRecord::from_usage(&u, loaded.streamed_bytes_per_step());
    }
    let over = check_budget(s, &peak, "during generation");
    rec.memory.peak_during_generation = Some(peak);
    over?;
    rec.tokens_identical_across_repetitions = Some(all_tokens.windows(2).all(|w| w[0] == w[1]));
    rec.timing = Some(summarize(rec, s.new_tokens));
    Ok(())
}

/// The scenario's workload tests: one context filled to the deepest depth that fits
/// (untimed), then each test from a copy of it.
fn run_tests(
    p: &Prepared,
    v: &Variant,
    loaded: &dyn Loaded,
    probes: &Probes,
    read_gbps: Option<f64>,
    observer: &mut dyn RunObserver,
    rec: &mut VariantRecord,
) -> Result<()> {
    let s = &p.scenario;
    let tests = s.tests();
    let facts = p.engine(v.engine).engine.facts();
    // One context for every test of the variant, filled to the deepest depth that fits
    // (untimed) and kept while the tests run; each test starts from a copy of its first
    // `depth` positions.
    let context = facts.context_length;
    let deepest = tests
        .iter()
        .filter(|t| t.does_not_fit(context).is_none())
        .filter(|t| {
            let bytes = facts.kv_cache_bytes(t.batch, t.positions());
            crate::model::kv_cache_does_not_fit(bytes, "", &p.device, s.memory_budget_mb).is_none()
        })
        .map(|t| t.depth)
        .max()
        .unwrap_or(0);
    if let Some(why) = crate::model::kv_cache_does_not_fit(
        facts.kv_cache_bytes(1, deepest),
        &format!("the tests' shared context of depth {deepest}"),
        &p.device,
        s.memory_budget_mb,
    ) {
        crate::bad_input!("{why}");
    }
    let streamed = loaded.streamed_bytes_per_step();
    rec.weights_streamed_bytes_per_step = Some(streamed as u64);
    let base = if deepest > 0 {
        observer.phase(
            v,
            Phase::Test {
                done: 0,
                total: tests.len(),
                name: format!("filling the context to depth {deepest}"),
            },
        );
        let t0 = clock::synced_now(loaded)?;
        let base = workload::fill(loaded, deepest)?;
        rec.workload_context = Some(crate::record::WorkloadContext {
            depth: deepest,
            bytes: facts.kv_cache_bytes(1, deepest),
            fill_seconds: clock::synced_seconds_since(loaded, t0)?,
        });
        base
    } else {
        loaded.new_context(1, 0)?
    };
    for (i, t) in tests.iter().enumerate() {
        interrupt::check()?;
        observer.phase(
            v,
            Phase::Test {
                done: i,
                total: tests.len(),
                name: t.name(),
            },
        );
        rec.tests.push(run_test(
            p,
            facts,
            loaded,
            base.as_ref(),
            t,
            probes,
            (streamed, read_gbps),
        )?);
    }
    drop(base);
    Ok(())
}

/// The variant's quality against the run's f32 reference (the reference's own pass for
/// the f32 variant of the reference's engine, whose weights are the reference's bit for
/// bit).
fn quality_pass(
    v: &Variant,
    same_engine_as_reference: bool,
    loaded: &dyn Loaded,
    r: &Reference,
    eval: &Evaluation,
    rec: &VariantRecord,
) -> Result<QualityRecord> {
    Ok(
        if same_engine_as_reference && v.quantization.is_f32_reference() {
            // The same weights as the reference, bit for bit: its pass was this variant's.
            let mut own = r.own.clone();
            own.leading_tokens_equal_to_f32 = r
                .generated_token_ids
                .iter()
                .zip(&rec.generated_token_ids)
                .take_while(|(a, b)| a == b)
                .count();
            own
        } else {
            r.compare(loaded, eval, &rec.generated_token_ids)
                .context("quality pass")?
        },
    )
}

/// One workload test: its context copied from the variant's filled `base` (untimed),
/// warm up, repeat, each repetition on a fork of that context; memory read before the
/// timed repetitions and sampled for the peak over them. A test that does not fit the
/// model is recorded as skipped, one that fails as failed (the variant's other tests
/// still run); an interruption stops the variant. `streamed`: the weight bytes one
/// step reads; `read_gbps`: the measured read bandwidth.
fn run_test(
    p: &Prepared,
    facts: &ModelFacts,
    loaded: &dyn Loaded,
    base: &dyn crate::engine::Context,
    t: &workload::Test,
    probes: &Probes,
    (streamed, read_gbps): (usize, Option<f64>),
) -> Result<TestRecord> {
    let s = &p.scenario;
    let mut rec = TestRecord::new(t, facts.kv_cache_bytes(t.batch, t.positions()), s.warmup);
    if let Some(why) = t.does_not_fit(facts.context_length) {
        rec.status = TestStatus::Skipped;
        rec.error = Some(why);
        return Ok(rec);
    }
    // Checked as the weights are before loading: a cache larger than the memory left
    // would swap for minutes or be killed with no results written.
    if let Some(why) = crate::model::kv_cache_does_not_fit(
        rec.kv_cache_bytes,
        &format!("test {}", t.name()),
        &p.device,
        s.memory_budget_mb,
    ) {
        rec.status = TestStatus::Skipped;
        rec.error = Some(why);
        return Ok(rec);
    }
    let mut body = || -> Result<()> {
        let t0 = clock::synced_now(loaded)?;
        let filled = workload::context_for(loaded, base, t)?;
        rec.fill_seconds = Some(clock::synced_seconds_since(loaded, t0)?);
        let mut all_tokens = Vec::new();
        for _ in 0..s.warmup {
            interrupt::check()?;
            all_tokens.push(
                workload::run_once(loaded, t, filled.as_ref())
                    .context("warm-up")?
                    .tokens,
            );
        }
        let _ = loaded.synchronize();
        rec.memory_before = Some(probes.read());
        loaded.reset_expert_usage();
        let sampler = probes.start_peak_sampler(PEAK_SAMPLE_INTERVAL);
        let mut result: Result<()> = Ok(());
        for rep in 0..s.repeats {
            if let Err(e) = interrupt::check() {
                result = Err(e.into());
                break;
            }
            match workload::run_once(loaded, t, filled.as_ref())
                .with_context(|| format!("timed repetition {}", rep + 1))
            {
                Ok(r) => {
                    rec.prefill_seconds.extend(r.prefill_seconds);
                    rec.decode_step_seconds.push(r.decode_step_seconds);
                    if rep == 0 {
                        rec.generated_token_ids = r.tokens[0].clone();
                    }
                    all_tokens.push(r.tokens);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let (peak, _) = sampler.finish();
        let over = check_budget(s, &peak, &format!("during test {}", t.name()));
        rec.memory_peak = Some(peak);
        result?;
        over?;
        rec.tokens_identical_across_repetitions = Some(all_tokens.windows(2).all(|w| w[0] == w[1]));
        Ok(())
    };
    let outcome = loaded.with_threads(t.threads, &mut body);
    match outcome {
        Ok(threads) => {
            rec.threads_used = threads;
            rec.status = TestStatus::Ok;
            // Under a mixture of experts a step reads the experts its batch was routed
            // to: this test's own mean, not the variant's.
            let streamed = match loaded.expert_usage() {
                Some(u) => {
                    let (per_step, touched) = u.means();
                    rec.experts_per_step_mean = per_step;
                    rec.experts_touched_mean = Some(touched);
                    u.mean_step_bytes(streamed)
                        .map_or(streamed, |b| b.round() as usize)
                }
                None => streamed,
            };
            rec.weights_streamed_bytes_per_step = Some(streamed as u64);
            rec.summarize(streamed, &|c| facts.kv_cache_bytes(1, c) as f64, read_gbps);
        }
        Err(e) if interrupt::is_interrupted(&e) => return Err(e),
        Err(e) => rec.error = Some(format!("{e:#}")),
    }
    Ok(rec)
}

/// Fails when process memory exceeds the scenario's memory budget.
fn check_budget(s: &Scenario, reading: &crate::probe::Reading, when: &str) -> Result<()> {
    let (Some(budget), Some(rss)) = (s.memory_budget_mb, reading.get(crate::probe::process::RSS))
    else {
        return Ok(());
    };
    let rss_mb = rss as f64 / 1e6;
    anyhow::ensure!(
        rss_mb <= budget,
        "out of memory budget: process memory {when} was {rss_mb:.1} MB, over the scenario's memory_budget_mb of {budget}"
    );
    Ok(())
}

fn summarize(rec: &VariantRecord, new_tokens: usize) -> TimingSummary {
    let reps = 0..rec.generate_seconds.len();
    let per_rep = |f: &dyn Fn(usize) -> f64| -> Summary {
        let v: Vec<f64> = reps.clone().map(f).collect();
        Summary::of(&v).expect("at least one repetition")
    };
    // Decode figures exist only when there are decode steps (more than one new token).
    let decode_rates: Vec<f64> = rec
        .decode_step_seconds
        .iter()
        .filter_map(|d| crate::analysis::stats::decode_tokens_per_second(d))
        .collect();
    let step_means: Vec<f64> = rec
        .decode_step_seconds
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| d.iter().sum::<f64>() / d.len() as f64)
        .collect();
    TimingSummary {
        generate_seconds: per_rep(&|i| rec.generate_seconds[i]),
        prefill_seconds: per_rep(&|i| rec.prefill_seconds[i]),
        decode_step_seconds: Summary::of(&step_means),
        tokens_per_second: per_rep(&|i| new_tokens as f64 / rec.generate_seconds[i]),
        decode_tokens_per_second: Summary::of(&decode_rates),
    }
}

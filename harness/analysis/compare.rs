//! Verdicts between two sides, each one run or several runs of the same thing: for every
//! variant both sides ran and every headline metric, base, new, change, and whether it
//! got better, worse or stayed the same within noise.
//!
//! The rule is criterion's: a bootstrap confidence interval of the relative change in
//! medians is taken, and a change is real only when the *whole* interval lies beyond the
//! noise threshold (above +t or below -t). An interval such as [+0.5%, +8%] around +4%
//! with a 3% threshold is "same": part of what it allows is noise.
//!
//! What the interval is made of decides what noise it can see. On this kind of machine
//! two runs of one build, one after the other, can differ by 25% with tight repetitions
//! inside each (CPU placement, neighbours, page layout are drawn once per process), so an
//! interval over one run's repetitions does not see the noise that matters. With two or
//! more runs per side the samples are the runs' medians and the interval is the spread
//! between runs (Welch's t interval on the runs' log-medians: a percentile bootstrap over
//! 2-5 values is too narrow); with one run per side it falls back to the repetitions and
//! says so. Measured with scripts/compare-noise.sh (40 runs of one build on a 2-vCPU VM):
//! same-build comparisons came out "same" on every metric in 8 of 20 pairs with one run
//! per side, 59 of 60 with 3 or 4 runs per side, 60 of 60 with 5 or 6.
//! Single readings (memory, exact weight bytes, one per run) with one run per side are
//! compared against the threshold alone.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::stats::{self, median};
use crate::record::figures::TEST_FIGURES;
use crate::record::RunRecord;
use crate::run::workload::TestRecord;

/// The figures compare judges are the records' own ([`crate::record::figures`]): one
/// name per figure across compare, history, results.csv and the exports.
pub use crate::record::figures::{Direction, Figure, Kind, FIGURES};

/// The verdict on one metric of one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Faster,
    Slower,
    Smaller,
    Larger,
    /// No change beyond noise.
    Same,
    /// Too few samples on one side to judge.
    Unknown,
}

impl Verdict {
    pub fn is_regression(self) -> bool {
        matches!(self, Verdict::Slower | Verdict::Larger)
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::Smaller => "smaller",
            Verdict::Larger => "larger",
            Verdict::Same => "same",
            Verdict::Unknown => "unknown",
        }
    }
}

/// How `compare` decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// A change smaller than this (percent) is noise, whatever the interval says.
    pub noise_percent: f64,
    /// Per-metric thresholds overriding `noise_percent`.
    pub thresholds: BTreeMap<String, f64>,
    /// Confidence level of the bootstrap interval.
    pub confidence: f64,
    pub resamples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            noise_percent: 3.0,
            thresholds: BTreeMap::new(),
            confidence: 0.95,
            resamples: 10_000,
        }
    }
}

impl Options {
    pub fn threshold(&self, metric: &str) -> f64 {
        self.thresholds
            .get(metric)
            .copied()
            .unwrap_or(self.noise_percent)
    }
}

/// What the samples behind a verdict are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// One median per run, two or more runs per side: the interval sees the noise between
    /// processes.
    BetweenRuns,
    /// The repetitions (or readings) of the runs given, fewer than two runs on a side:
    /// the interval sees only the noise within a process.
    WithinRun,
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub variant: String,
    pub metric: &'static str,
    pub unit: &'static str,
    /// Median of the base run's samples.
    pub base: f64,
    pub new: f64,
    /// (new - base) / base, percent.
    pub change_percent: f64,
    /// Bootstrap confidence interval of the change, percent (None for single readings).
    pub ci_percent: Option<(f64, f64)>,
    pub base_samples: usize,
    pub new_samples: usize,
    pub threshold_percent: f64,
    pub basis: Basis,
    pub verdict: Verdict,
    /// What the two sides measured differently (model, prompt, new tokens), when
    /// `compare --allow-different` let such runs be compared: said on every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differs: Option<String>,
}

/// An environment field that differs between the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvDiff {
    pub field: String,
    pub base: String,
    pub new: String,
}

/// What a run measured, apart from the machine and build: the model and the prompt.
/// Runs that differ here measured different things; their figures are never pooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub model: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

impl Measured {
    pub fn of(r: &RunRecord) -> Self {
        let m = &r.model;
        Measured {
            model: format!(
                "{} ({}, {} parameters, {} layers of width {}, vocabulary {})",
                m.spec, m.architecture, m.parameters, m.n_layer, m.n_embd, m.vocab_size
            ),
            prompt_tokens: r
                .variants
                .first()
                .map(|v| v.prompt_token_ids.len())
                .unwrap_or(0),
            new_tokens: r.scenario.new_tokens,
        }
    }

    /// "model A vs B; new tokens 50 vs 20" for what differs from `other`; empty when
    /// nothing does.
    pub fn differences(&self, other: &Measured) -> Vec<String> {
        let mut d = Vec::new();
        if self.model != other.model {
            d.push(format!("model {} vs {}", self.model, other.model));
        }
        if self.prompt_tokens != other.prompt_tokens {
            d.push(format!(
                "prompt of {} vs {} tokens",
                self.prompt_tokens, other.prompt_tokens
            ));
        }
        if self.new_tokens != other.new_tokens {
            d.push(format!(
                "{} vs {} new tokens",
                self.new_tokens, other.new_tokens
            ));
        }
        d
    }
}

/// Refuse runs that cannot be compared: a run given twice (the same file, or a copy of
/// one run), a side whose runs measured different things (their figures would be pooled
/// into a median no run has), or sides that measured different things unless
/// `allow_different`. Each run comes with the path it was read from. Returns, when the
/// sides differ and that is allowed, what differs.
pub fn check_comparable(
    base: &[(std::path::PathBuf, RunRecord)],
    new: &[(std::path::PathBuf, RunRecord)],
    allow_different: bool,
) -> Result<Option<String>, String> {
    let all: Vec<&(std::path::PathBuf, RunRecord)> = base.iter().chain(new).collect();
    for (i, (p, r)) in all.iter().enumerate() {
        for (q, o) in &all[..i] {
            let same_file = crate::fsutil::same_file(p, q);
            let same_run = r == o;
            if same_file || same_run {
                return Err(format!(
                    "{} and {} are {}: a run counts once (give each run one path)",
                    q.display(),
                    p.display(),
                    if same_file {
                        "the same file"
                    } else {
                        "copies of one run (the same record, field for field)"
                    }
                ));
            }
        }
    }
    for (side, runs) in [("base", base), ("new", new)] {
        let Some((first_path, first)) = runs.first() else {
            continue;
        };
        let m = Measured::of(first);
        for (p, r) in &runs[1..] {
            let d = m.differences(&Measured::of(r));
            if !d.is_empty() {
                return Err(format!(
                    "the {side} side mixes runs that measured different things ({} against {}: {}); a side's runs are repeats of one measurement, pooled into one median: give them as separate comparisons",
                    first_path.display(),
                    p.display(),
                    d.join("; ")
                ));
            }
        }
    }
    let (Some((bp, b)), Some((np, n))) = (base.first(), new.first()) else {
        return Ok(None);
    };
    let d = Measured::of(b).differences(&Measured::of(n));
    if d.is_empty() {
        return Ok(None);
    }
    let said = d.join("; ");
    if !allow_different {
        return Err(format!(
            "{} and {} measured different things ({said}); compare judges one measurement across runs. Pass --allow-different to compare them anyway (every row then says what differs)",
            bp.display(),
            np.display()
        ));
    }
    Ok(Some(said))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub base_label: String,
    pub new_label: String,
    /// What the sides measured differently, when compared anyway (also on every row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differs: Option<String>,
    /// Runs on each side.
    pub base_runs: usize,
    pub new_runs: usize,
    pub environment_differences: Vec<EnvDiff>,
    pub rows: Vec<Row>,
    /// Variants only one side ran.
    pub unmatched: Vec<String>,
}

impl Comparison {
    pub fn regressions(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.verdict.is_regression())
            .collect()
    }
}

impl Options {
    /// Check the thresholds: each a finite number of percent >= 0.
    pub fn validate(&self) -> Result<(), String> {
        let check = |what: &str, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be a finite number of percent >= 0 (got {x})"
                ))
            }
        };
        check("--noise", self.noise_percent)?;
        for (m, t) in &self.thresholds {
            check(&format!("--threshold {m}"), *t)?;
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(format!(
                "the confidence level must be between 0 and 1 (got {})",
                self.confidence
            ));
        }
        Ok(())
    }
}

/// One engine's side of a comparison between engines: each run with only `engine`'s
/// variants, each called by its precision alone (as the own engine calls a variant with
/// policy all and the rest in f32), so that two engines' variants of one precision meet
/// in [`compare_runs`]. Runs where the engine ran nothing are left out.
pub fn engine_side(runs: &[RunRecord], engine: crate::engine::EngineKind) -> Vec<RunRecord> {
    runs.iter()
        .filter_map(|r| {
            let mut r = r.clone();
            r.variants.retain(|v| v.engine == engine);
            for v in &mut r.variants {
                v.engine = crate::engine::EngineKind::default();
                v.policy = crate::precision::Policy::All;
                v.rest = crate::precision::RestDtype::F32;
            }
            (!r.variants.is_empty()).then_some(r)
        })
        .collect()
}

/// Compare two runs variant by variant, metric by metric.
pub fn compare(
    base: &RunRecord,
    new: &RunRecord,
    base_label: &str,
    new_label: &str,
    opts: &Options,
) -> Comparison {
    compare_runs(
        std::slice::from_ref(base),
        std::slice::from_ref(new),
        base_label,
        new_label,
        opts,
    )
}

/// Compare two sides of one or more runs each. Variants are matched by precision, policy
/// and rest; the order is the first base run's.
pub fn compare_runs(
    base: &[RunRecord],
    new: &[RunRecord],
    base_label: &str,
    new_label: &str,
    opts: &Options,
) -> Comparison {
    let mut keys: Vec<String> = Vec::new();
    for r in base.iter().chain(new) {
        for v in &r.variants {
            if !keys.contains(&v.key()) {
                keys.push(v.key());
            }
        }
    }
    let ran = |runs: &[RunRecord], key: &str| {
        runs.iter()
            .any(|r| r.variants.iter().any(|v| v.key() == key))
    };
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    for key in &keys {
        match (ran(base, key), ran(new, key)) {
            (true, true) => {}
            (true, false) => {
                unmatched.push(format!("{key} (base only)"));
                continue;
            }
            _ => {
                unmatched.push(format!("{key} (new only)"));
                continue;
            }
        }
        let per_run = |runs: &[RunRecord], m: Figure| -> Vec<Vec<f64>> {
            runs.iter()
                .filter_map(|r| r.variants.iter().find(|v| v.key() == *key))
                .map(|v| m.samples(v))
                .filter(|xs| !xs.is_empty())
                .collect()
        };
        for m in FIGURES {
            let (bs, ns) = (per_run(base, m), per_run(new, m));
            if bs.is_empty() || ns.is_empty() {
                continue;
            }
            rows.push(judge_runs(key, m, &bs, &ns, opts));
        }
        // The workload tests both sides ran, in the first base run's order.
        let tests: Vec<String> = base
            .iter()
            .chain(new)
            .filter_map(|r| r.variants.iter().find(|v| v.key() == *key))
            .flat_map(|v| v.tests.iter().map(|t| t.name.clone()))
            .fold(Vec::new(), |mut acc, n| {
                if !acc.contains(&n) {
                    acc.push(n);
                }
                acc
            });
        for test in &tests {
            let per_run = |runs: &[RunRecord], f: fn(&TestRecord) -> Vec<f64>| {
                runs.iter()
                    .filter_map(|r| r.variants.iter().find(|v| v.key() == *key))
                    .filter_map(|v| v.tests.iter().find(|t| t.name == *test))
                    .map(f)
                    .filter(|xs| !xs.is_empty())
                    .collect::<Vec<_>>()
            };
            for t in TEST_FIGURES {
                let (m, f) = (t.figure, t.samples);
                let (bs, ns) = (per_run(base, f), per_run(new, f));
                if bs.is_empty() || ns.is_empty() {
                    continue;
                }
                rows.push(judge_runs(&format!("{key} {test}"), m, &bs, &ns, opts));
            }
        }
    }
    let differs = match (base.first(), new.first()) {
        (Some(b), Some(n)) => {
            let d = Measured::of(b).differences(&Measured::of(n));
            (!d.is_empty()).then(|| d.join("; "))
        }
        _ => None,
    };
    for r in &mut rows {
        r.differs = differs.clone();
    }
    Comparison {
        base_label: base_label.to_string(),
        new_label: new_label.to_string(),
        differs,
        base_runs: base.len(),
        new_runs: new.len(),
        environment_differences: environment_differences_of(base, new),
        rows,
        unmatched,
    }
}

/// The verdict on one metric from each side's runs (each run's samples of the metric).
/// Two or more runs on both sides: the samples are the runs' medians. Otherwise the
/// samples of all runs given are pooled.
pub fn judge_runs(
    variant: &str,
    m: Figure,
    base: &[Vec<f64>],
    new: &[Vec<f64>],
    opts: &Options,
) -> Row {
    if base.len() >= 2 && new.len() >= 2 {
        let medians = |runs: &[Vec<f64>]| runs.iter().map(|xs| median(xs)).collect::<Vec<_>>();
        let (b, n) = (medians(base), medians(new));
        // Few runs per side: a percentile bootstrap over 2-5 values is too narrow (with
        // 3 runs a side, 3 of 20 same-build comparisons got a verdict here); Welch's t
        // interval on the runs' log-medians widens as it should with few runs. The
        // bootstrap only where Welch cannot be taken (a figure that is not positive).
        judge_with(variant, m, &b, &n, opts, Basis::BetweenRuns, || {
            stats::welch_ratio_interval(&b, &n, opts.confidence).unwrap_or_else(|| {
                stats::bootstrap_change_ci(&b, &n, opts.confidence, opts.resamples)
            })
        })
    } else {
        let pool = |runs: &[Vec<f64>]| runs.concat();
        judge(variant, m, &pool(base), &pool(new), opts)
    }
}

/// The verdict on one metric from the two sides' samples: criterion's rule, the whole
/// confidence interval of the change beyond the noise threshold.
pub fn judge(variant: &str, m: Figure, base: &[f64], new: &[f64], opts: &Options) -> Row {
    judge_with(variant, m, base, new, opts, Basis::WithinRun, || {
        stats::bootstrap_change_ci(base, new, opts.confidence, opts.resamples)
    })
}

/// [`judge`] with the interval of the change (percent) from `interval`, which is only
/// called when both sides have more than one sample.
fn judge_with(
    variant: &str,
    m: Figure,
    base: &[f64],
    new: &[f64],
    opts: &Options,
    basis: Basis,
    interval: impl FnOnce() -> (f64, f64),
) -> Row {
    let (b, n) = (median(base), median(new));
    let change = if b != 0.0 { (n - b) / b * 100.0 } else { 0.0 };
    let threshold = opts.threshold(m.name);
    let repeated = base.len() > 1 && new.len() > 1;
    let ci = repeated.then(interval);
    let real = match ci {
        // Every change the interval allows is beyond the threshold, on one side.
        Some((lo, hi)) => lo > threshold || hi < -threshold,
        None => change.abs() > threshold,
    };
    let verdict = if m.kind == Kind::Time && !repeated {
        Verdict::Unknown
    } else {
        verdict_of(m, change, real)
    };
    Row {
        variant: variant.to_string(),
        metric: m.name,
        unit: m.unit,
        base: b,
        new: n,
        change_percent: change,
        ci_percent: ci,
        base_samples: base.len(),
        new_samples: new.len(),
        threshold_percent: threshold,
        basis,
        verdict,
        differs: None,
    }
}

/// The verdict on a change judged `real` (or not) for metric `m`.
fn verdict_of(m: Figure, change: f64, real: bool) -> Verdict {
    if !real {
        return Verdict::Same;
    }
    let worse = match m.direction {
        Direction::LowerIsBetter => change > 0.0,
        Direction::HigherIsBetter => change < 0.0,
    };
    match (m.kind, worse) {
        (Kind::Time, true) => Verdict::Slower,
        (Kind::Time, false) => Verdict::Faster,
        (Kind::Memory, true) => Verdict::Larger,
        (Kind::Memory, false) => Verdict::Smaller,
    }
}

/// The environment fields whose values differ, side by side.
pub fn environment_differences(base: &RunRecord, new: &RunRecord) -> Vec<EnvDiff> {
    environment_differences_of(std::slice::from_ref(base), std::slice::from_ref(new))
}

/// The environment fields whose values differ between the sides or within one (every
/// run of each side read): each side's values, " / " between a side's several.
pub fn environment_differences_of(base: &[RunRecord], new: &[RunRecord]) -> Vec<EnvDiff> {
    let side = |runs: &[RunRecord]| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in runs {
            for (k, v) in flat_environment(r) {
                let vals = m.entry(k).or_default();
                if !vals.contains(&v) {
                    vals.push(v);
                }
            }
        }
        m
    };
    let (b, n) = (side(base), side(new));
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(n.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let bv = b.get(k).cloned().unwrap_or_default();
            let nv = n.get(k).cloned().unwrap_or_default();
            (bv != nv || bv.len() > 1 || nv.len() > 1).then(|| EnvDiff {
                field: k.clone(),
                base: bv.join(" / "),
                new: nv.join(" / "),
            })
        })
        .collect()
}

fn flat_environment(r: &RunRecord) -> BTreeMap<String, String> {
    let flat = |r: &RunRecord| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let serde_json::Value::Object(o) =
            serde_json::to_value(&r.environment).unwrap_or_default()
        {
            for (k, v) in o {
                // Measured figures, not a description of the machine or build.
                if k == "timestamp" || k == "memory_bandwidth" {
                    continue;
                }
                let s = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(k, s);
            }
        }
        m
    };
    flat(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen() -> Figure {
        Figure::find("generate_seconds").unwrap()
    }

    /// Samples around `center` with a relative spread of +-`spread`.
    fn samples(center: f64, spread: f64) -> Vec<f64> {
        [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
            .iter()
            .map(|k| center * (1.0 + k * spread))
            .collect()
    }

    #[test]
    fn a_20_percent_slowdown_with_tight_repetitions_is_slower() {
        let r = judge(
            "f32",
            gen(),
            &samples(1.0, 0.01),
            &samples(1.2, 0.01),
            &Options::default(),
        );
        assert_eq!(r.verdict, Verdict::Slower, "{r:?}");
        assert!((r.change_percent - 20.0).abs() < 1e-9);
        let (lo, hi) = r.ci_percent.unwrap();
        assert!(lo > 15.0 && hi < 25.0, "{lo} {hi}");
        let r = judge(
            "f32",
            gen(),
            &samples(1.2, 0.01),
            &samples(1.0, 0.01),
            &Options::default(),
        );
        assert_eq!(r.verdict, Verdict::Faster);
    }

    #[test]
    fn a_1_percent_change_inside_noise_is_same() {
        let r = judge(
            "f32",
            gen(),
            &samples(1.0, 0.02),
            &samples(1.01, 0.02),
            &Options::default(),
        );
        assert_eq!(r.verdict, Verdict::Same, "{r:?}");
        // Even perfectly tight: 1% is under the 3% noise threshold.
        let r = judge(
            "f32",
            gen(),
            &samples(1.0, 0.0001),
            &samples(1.01, 0.0001),
            &Options::default(),
        );
        assert_eq!(r.verdict, Verdict::Same, "{r:?}");
        // ... unless the threshold is lowered for that metric.
        let mut opts = Options::default();
        opts.thresholds.insert("generate_seconds".into(), 0.5);
        let r = judge(
            "f32",
            gen(),
            &samples(1.0, 0.0001),
            &samples(1.01, 0.0001),
            &opts,
        );
        assert_eq!(r.verdict, Verdict::Slower, "{r:?}");
    }

    #[test]
    fn wide_noise_is_never_slower() {
        // Medians 20% apart, but each side spreads over a factor of two.
        for shift in [1.05, 1.1, 1.2, 1.3] {
            let r = judge(
                "f32",
                gen(),
                &samples(1.0, 0.6),
                &samples(shift, 0.6),
                &Options::default(),
            );
            assert_eq!(r.verdict, Verdict::Same, "shift {shift}: {r:?}");
        }
    }

    #[test]
    fn higher_is_better_metrics_flip_the_verdict() {
        let tps = Figure::find("tokens_per_second").unwrap();
        let r = judge(
            "q4_0",
            tps,
            &samples(100.0, 0.01),
            &samples(80.0, 0.01),
            &Options::default(),
        );
        assert_eq!(r.verdict, Verdict::Slower);
        assert!(r.verdict.is_regression());
    }

    #[test]
    fn memory_readings_use_the_threshold_alone() {
        let w = Figure::find("weights_bytes").unwrap();
        let opts = Options::default();
        assert_eq!(
            judge("q8_0", w, &[100.0], &[100.0], &opts).verdict,
            Verdict::Same
        );
        assert_eq!(
            judge("q8_0", w, &[100.0], &[110.0], &opts).verdict,
            Verdict::Larger
        );
        assert_eq!(
            judge("q8_0", w, &[100.0], &[90.0], &opts).verdict,
            Verdict::Smaller
        );
        assert_eq!(
            judge("q8_0", w, &[100.0], &[101.0], &opts).verdict,
            Verdict::Same
        );
        // A single timing cannot be judged.
        assert_eq!(
            judge("f32", gen(), &[1.0], &[2.0], &opts).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn the_interval_is_reproducible() {
        let (b, n) = (samples(1.0, 0.05), samples(1.1, 0.05));
        let opts = Options::default();
        assert_eq!(
            stats::bootstrap_change_ci(&b, &n, opts.confidence, opts.resamples),
            stats::bootstrap_change_ci(&b, &n, opts.confidence, opts.resamples)
        );
    }

    #[test]
    fn an_interval_that_reaches_inside_the_threshold_is_same() {
        // The case: about +4% with an interval of roughly [+0.5%, +8%]: part of
        // what the interval allows is noise, so no verdict (it was "slower" before).
        let base = samples(1.0, 0.08);
        let new = samples(1.04, 0.08);
        let opts = Options::default();
        let r = judge("f32", gen(), &base, &new, &opts);
        let (lo, hi) = r.ci_percent.unwrap();
        assert!(lo < 3.0 && hi > 3.0, "{lo} {hi}");
        assert!(r.change_percent > 3.0);
        assert_eq!(r.verdict, Verdict::Same, "{r:?}");
        // The whole interval above the threshold: slower.
        let r = judge(
            "f32",
            gen(),
            &samples(1.0, 0.002),
            &samples(1.05, 0.002),
            &opts,
        );
        let (lo, _) = r.ci_percent.unwrap();
        assert!(lo > 3.0, "{r:?}");
        assert_eq!(r.verdict, Verdict::Slower);
    }

    #[test]
    fn the_threshold_itself_is_not_beyond_it() {
        // Identical samples on each side: the interval is one point, exactly +5%.
        let opts = Options {
            noise_percent: 5.0,
            ..Default::default()
        };
        let r = judge("f32", gen(), &[1.0, 1.0, 1.0], &[1.05, 1.05, 1.05], &opts);
        let (lo, hi) = r.ci_percent.unwrap();
        assert!(
            (lo - 5.0).abs() < 1e-9 && (hi - 5.0).abs() < 1e-9,
            "{lo} {hi}"
        );
        // 1.05 / 1.0 is a hair above 5% in floating point; use 4.999 to stay exact.
        let opts = Options {
            noise_percent: 5.000001,
            ..Default::default()
        };
        assert_eq!(
            judge("f32", gen(), &[1.0, 1.0, 1.0], &[1.05, 1.05, 1.05], &opts).verdict,
            Verdict::Same
        );
        let opts = Options {
            noise_percent: 4.999,
            ..Default::default()
        };
        assert_eq!(
            judge("f32", gen(), &[1.0, 1.0, 1.0], &[1.05, 1.05, 1.05], &opts).verdict,
            Verdict::Slower
        );
    }

    #[test]
    fn several_runs_per_side_judge_by_the_spread_between_runs() {
        // Tight repetitions inside each run, but the runs' medians spread by 25%: the
        // between-run interval sees it and calls a 10% change "same".
        let run = |c: f64| samples(c, 0.002);
        let base = vec![run(1.0), run(1.25), run(1.1)];
        let new = vec![run(1.1), run(1.0), run(1.22)];
        let opts = Options::default();
        let r = judge_runs("f32", gen(), &base, &new, &opts);
        assert_eq!(r.basis, Basis::BetweenRuns);
        assert_eq!((r.base_samples, r.new_samples), (3, 3));
        assert_eq!(r.verdict, Verdict::Same, "{r:?}");
        // One run per side of the same data: within-run, and a (wrong) verdict it cannot
        // help, which is why the output says what it rests on.
        let r = judge_runs("f32", gen(), &base[..1], &new[..1], &opts);
        assert_eq!(r.basis, Basis::WithinRun);
        assert_eq!(r.verdict, Verdict::Slower);
        // A real 40% slowdown across all runs is still found between runs.
        let new = vec![run(1.5), run(1.6), run(1.55)];
        let r = judge_runs("f32", gen(), &base, &new, &opts);
        assert_eq!(r.verdict, Verdict::Slower, "{r:?}");
    }

    #[test]
    fn thresholds_must_be_finite_and_not_negative() {
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let o = Options {
                noise_percent: bad,
                ..Default::default()
            };
            assert!(o.validate().unwrap_err().contains("--noise"), "{bad}");
            let mut o = Options::default();
            o.thresholds.insert("generate_seconds".into(), bad);
            assert!(
                o.validate().unwrap_err().contains("generate_seconds"),
                "{bad}"
            );
        }
        assert!(Options::default().validate().is_ok());
    }
}

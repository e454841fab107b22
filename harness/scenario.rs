//! Scenarios: what to run, read from TOML, checked, and expanded into variants.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::model::ModelSpec;
use crate::precision::{Policy, Precision, Quantization, RestDtype};

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA GPU when the binary has CUDA and one exists, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    InputError::new(format!(
                        "unknown device '{s}'; valid: auto, cpu, cuda, cuda:N"
                    ))
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl DeviceChoice {
    /// Open the device; asking for CUDA from a build without it is bad input.
    pub fn open(self) -> Result<(Device, String)> {
        match self {
            DeviceChoice::Cpu => Ok((Device::Cpu, "cpu".into())),
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok((d, "cuda:0".into()));
                    }
                }
                Ok((Device::Cpu, "cpu".into()))
            }
            DeviceChoice::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    crate::bad_input!(
                        "device cuda:{n} was asked for, but this quantbench was built without CUDA; rebuild with `--features cuda` (see README, \"Running on a GPU\") or use device = \"cpu\""
                    );
                }
                let d = Device::new_cuda(n).with_context(|| format!("opening cuda:{n}"))?;
                Ok((d, format!("cuda:{n}")))
            }
        }
    }
}

/// The most timed (or warm-up) repetitions a variant runs, however long `min_seconds` asks.
pub const MAX_REPETITIONS: usize = 100_000;

/// The longest `min_seconds` a scenario asks for: a day of timed generation per variant.
pub const MAX_MIN_SECONDS: f64 = 86_400.0;

fn default_model() -> ModelSpec {
    ModelSpec::default_synthetic()
}
fn default_precisions() -> Vec<Precision> {
    vec![Precision::F32, Precision::Q8_0, Precision::Q4_0]
}
fn default_prompt() -> String {
    "Once upon a time".into()
}
fn default_new_tokens() -> usize {
    50
}
fn default_warmup() -> usize {
    1
}
fn default_repeats() -> usize {
    5
}
fn default_rounds() -> usize {
    1
}
fn is_one_round(n: &usize) -> bool {
    *n == 1
}
/// The most rounds a scenario may ask for.
pub const MAX_ROUNDS: usize = 1000;

/// A benchmark scenario, as written in scenarios/*.toml. Every field but `name` has the
/// quickstart's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "default_model")]
    pub model: ModelSpec,
    /// Several models, each run in turn (every precision and test) into its own
    /// sub-folder of the output; takes the place of `model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelSpec>,
    #[serde(default)]
    pub device: DeviceChoice,
    /// The engines that run every precision, in turn: "quantbench" (the default) and
    /// "llama.cpp" (a cargo feature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<crate::engine::EngineKind>,
    /// Settings of the engines (llama.cpp's flash attention, mmap, importance matrix,
    /// threads): `[engine]` in a scenario; one the run's engines cannot honour is refused.
    #[serde(
        default,
        skip_serializing_if = "crate::engine::EngineSettings::is_empty"
    )]
    pub engine: crate::engine::EngineSettings,
    #[serde(default = "default_precisions")]
    pub precisions: Vec<Precision>,
    /// What the precisions apply to: "all" or "linear".
    #[serde(default)]
    pub policy: Policy,
    /// The dtype of the unquantized rest: "f32", "f16", or "auto" (the default: f16 beside
    /// f16 and bitsandbytes' formats, f32 otherwise).
    #[serde(default)]
    pub rest: RestDtype,
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// Exactly this many new tokens per generation.
    #[serde(default = "default_new_tokens")]
    pub new_tokens: usize,
    /// Untimed generations before the timed ones.
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// Timed generations, at least.
    #[serde(default = "default_repeats")]
    pub repeats: usize,
    /// Run every variant this many times, in rounds that interleave the variants (and
    /// engines) in one timeline, alternating their order; each variant's record holds
    /// every round's timings (its memory, weights and quality are round 1's).
    #[serde(default = "default_rounds", skip_serializing_if = "is_one_round")]
    pub rounds: usize,
    /// Keep repeating until both `repeats` and this many seconds of timed generation are
    /// reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_seconds: Option<f64>,
    /// A variant whose process memory (RSS) exceeds this many megabytes after loading or
    /// during generation is stopped and recorded as failed ("out of memory budget").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<f64>,
    /// The quality pass: KL divergence, same-top-1 and perplexity against f32.
    #[serde(default)]
    pub quality: crate::run::quality::QualityConfig,
    /// Seed of a synthetic model's weights (generation itself is greedy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Allow precisions other than `native` from an already quantized GGUF file: its
    /// tensors are dequantized, then quantized again, and each variant is marked
    /// `requantized`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requantize: bool,
    /// Workload tests run by every variant after its generation: one `[workload]` table
    /// or several `[[workload]]` tables, each a set of lists (prompt tokens, new tokens,
    /// depth, batch, threads) expanded as a cartesian product; the tables' tests run in
    /// order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::run::workload::one_or_many"
    )]
    pub workload: Vec<crate::run::workload::WorkloadConfig>,
}

/// One precision of a scenario: loaded, probed, run and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub index: usize,
    pub engine: crate::engine::EngineKind,
    pub quantization: Quantization,
}

impl Variant {
    /// The variant's one name ([`crate::engine::variant_key`]).
    pub fn label(&self) -> String {
        crate::engine::variant_key(self.engine, self.quantization)
    }
}

impl Scenario {
    /// The scenario a bare `quantbench run` uses: the quickstart's defaults.
    pub fn quickstart_defaults() -> Self {
        toml::from_str("name = \"one-off\"").expect("defaults parse")
    }

    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::fsutil::read_text(path, "scenario", crate::fsutil::MAX_TEXT_BYTES)?;
        let mut s = Self::parse(&text, &path.display().to_string())?;
        // Every path in a scenario is relative to the scenario file, not the working
        // folder, and is resolved here, once: later readers take the result as it stands.
        let base = path.parent().unwrap_or(Path::new(""));
        if let ModelSpec::Local(dir) = &s.model {
            s.model = ModelSpec::Local(resolve_path(base, dir));
        }
        for m in &mut s.models {
            if let ModelSpec::Local(dir) = m {
                *m = ModelSpec::Local(resolve_path(base, dir));
            }
        }
        if let Some(text) = &s.quality.text {
            s.quality.text = Some(resolve_path(base, text));
        }
        if let Some(imatrix) = &s.engine.imatrix {
            s.engine.imatrix = Some(resolve_path(base, imatrix));
        }
        Ok(s)
    }

    /// Parse and check scenario TOML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let s: Scenario = toml::from_str(text)
            .map_err(|e| InputError::new(format!("{origin}: {}", e.to_string().trim_end())))?;
        // What the typed form cannot tell apart from a default: `models` written empty,
        // and `model` beside `models` (which would be ignored).
        if let Ok(table) = toml::from_str::<toml::Table>(text) {
            let problem = match (table.get("model"), table.get("models")) {
                (_, Some(toml::Value::Array(a))) if a.is_empty() => Some(
                    "models is empty: list the models to run, or give one `model` instead".to_string(),
                ),
                (Some(m), Some(_)) => Some(format!(
                    "model ({m}) and models are both given, and models would replace model: give one model, or list them all in models"
                )),
                _ => None,
            };
            if let Some(msg) = problem {
                return Err(InputError::new(locate(text, origin, "models", &msg)).into());
            }
        }
        s.validate()
            .map_err(|(field, msg)| InputError::new(locate(text, origin, field, &msg)))?;
        Ok(s)
    }

    /// Check the values that types alone cannot: (field, problem) on failure.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err((
                "name",
                format!(
                    "name '{}' must be letters, digits, '-', '_' or '.' (it names the output folder)",
                    self.name
                ),
            ));
        }
        if self.precisions.is_empty() {
            return Err((
                "precisions",
                format!("precisions is empty; valid: {}", Precision::valid_names()),
            ));
        }
        for (i, m) in self.models.iter().enumerate() {
            if self.models[..i].contains(m) {
                return Err(("models", format!("model {m} is listed twice")));
            }
        }
        for (i, p) in self.precisions.iter().enumerate() {
            if self.precisions[..i].contains(p) {
                return Err(("precisions", format!("precision {p} is listed twice")));
            }
        }
        self.validate_engines()?;
        if self.policy == Policy::Linear && self.precisions.contains(&Precision::Native) {
            return Err((
                "policy",
                "policy linear with precision native: native keeps every tensor as the file stores it, so the policy would change nothing while the record said linear; leave policy at all (or run native in a scenario of its own)".into(),
            ));
        }
        if self.prompt.is_empty() {
            return Err(("prompt", "prompt is empty".into()));
        }
        if self.new_tokens == 0 {
            return Err(("new_tokens", "new_tokens must be at least 1".into()));
        }
        if self.repeats == 0 || self.repeats > MAX_REPETITIONS {
            return Err((
                "repeats",
                format!(
                    "repeats must be between 1 and {MAX_REPETITIONS} (got {})",
                    self.repeats
                ),
            ));
        }
        if self.warmup > MAX_REPETITIONS {
            return Err((
                "warmup",
                format!(
                    "warmup must be between 0 and {MAX_REPETITIONS} (got {})",
                    self.warmup
                ),
            ));
        }
        if let Some(b) = self.memory_budget_mb {
            if !(b.is_finite() && b > 0.0) {
                return Err((
                    "memory_budget_mb",
                    format!("memory_budget_mb must be a finite number of megabytes > 0 (got {b})"),
                ));
            }
        }
        self.quality.validate()?;
        for (i, w) in self.workload.iter().enumerate() {
            if w.is_empty() {
                return Err((
                    "workload.prompt_tokens",
                    format!(
                        "workload table {} asks for no test (its lists are empty): list workload.prompt_tokens (0 for generation-only tests), or remove the table",
                        i + 1
                    ),
                ));
            }
            w.validate()?;
        }
        let planned = self
            .workload
            .iter()
            .map(|w| w.test_count())
            .fold(0u128, |a, n| a.saturating_add(n));
        if planned > crate::run::workload::MAX_TESTS as u128 {
            return Err((
                "workload.prompt_tokens",
                format!(
                    "the workload's lists multiply to {planned} tests per variant, more than the {} a run takes; shorten the lists",
                    crate::run::workload::MAX_TESTS
                ),
            ));
        }
        let tests = self.tests();
        for (i, t) in tests.iter().enumerate() {
            if tests[..i].iter().any(|u| u.name() == t.name()) {
                return Err((
                    "workload.prompt_tokens",
                    format!(
                        "test '{}' comes out of the workload twice (two tables ask for it); each test runs once, and its figures are keyed by its name",
                        t.name()
                    ),
                ));
            }
        }
        if let Some(t) = self.min_seconds {
            if !(t.is_finite() && (0.0..=MAX_MIN_SECONDS).contains(&t)) {
                return Err((
                    "min_seconds",
                    format!(
                        "min_seconds must be a finite number of seconds from 0 to {MAX_MIN_SECONDS} (a day; got {t})"
                    ),
                ));
            }
        }
        if let (
            Some(seed),
            ModelSpec::Synthetic {
                seed: spec_seed, ..
            },
        ) = (self.seed, &self.model)
        {
            let default = crate::model::source::synthetic::DEFAULT_SEED;
            if *spec_seed != default && *spec_seed != seed {
                return Err((
                    "seed",
                    format!("seed {seed} disagrees with the model spec's @{spec_seed}"),
                ));
            }
        }
        Ok(())
    }

    /// The engines: none twice, and no setting an engine would ignore.
    fn validate_engines(&self) -> Result<(), (&'static str, String)> {
        for (i, e) in self.engines.iter().enumerate() {
            if self.engines[..i].contains(e) {
                return Err(("engines", format!("engine {e} is listed twice")));
            }
        }
        let engines = self.engines();
        {
            let untaken = self
                .engine
                .set_names()
                .into_iter()
                .find(|n| !engines.iter().any(|e| e.takes_setting(n)));
            if let Some(name) = untaken {
                let takers: Vec<&str> = crate::engine::EngineKind::ALL
                    .iter()
                    .filter(|e| e.takes_setting(name))
                    .map(|e| e.name())
                    .collect();
                return Err((
                    "engine",
                    format!(
                        "engine setting '{name}' is {}'s, and this run's engines ({}) have no such setting (it would be ignored): remove it, or add --engine {}",
                        takers.join(" or "),
                        engines.iter().map(|e| e.name()).collect::<Vec<_>>().join(", "),
                        takers.join(",")
                    ),
                ));
            }
        }
        if !engines.iter().any(|e| e.chooses_policy_and_rest()) {
            // Policy and rest are choices of quantbench's own loader: llama.cpp's
            // quantizer decides which tensors keep which type (its mixes).
            if self.policy != Policy::All {
                return Err((
                    "policy",
                    format!(
                        "policy {} is a choice of quantbench's own engine; engine {} quantizes as llama-quantize decides (its mixes), so the setting would be ignored: remove it",
                        self.policy, engines[0]
                    ),
                ));
            }
            if self.rest != RestDtype::Auto {
                return Err((
                    "rest",
                    format!(
                        "rest {} is a choice of quantbench's own engine; engine {} keeps norms and biases as its quantizer does (f32), so the setting would be ignored: remove it",
                        self.rest, engines[0]
                    ),
                ));
            }
        }
        if self.rounds == 0 || self.rounds > MAX_ROUNDS {
            return Err((
                "rounds",
                format!(
                    "rounds must be from 1 to {MAX_ROUNDS} (got {})",
                    self.rounds
                ),
            ));
        }
        if let Some(t) = self.engine.threads {
            if t == 0 || t > crate::run::workload::MAX_THREADS {
                return Err((
                    "engine.threads",
                    format!(
                        "engine.threads must be from 1 to {} (got {t})",
                        crate::run::workload::MAX_THREADS
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The model spec with the scenario's seed applied to a synthetic model.
    pub fn model_spec(&self) -> ModelSpec {
        match (&self.model, self.seed) {
            (ModelSpec::Synthetic { preset, .. }, Some(seed)) => ModelSpec::Synthetic {
                preset: preset.clone(),
                seed,
            },
            (m, _) => m.clone(),
        }
    }

    /// One scenario per model: itself when it names one `model`, else one per entry of
    /// `models` (each with that model, in order).
    pub fn per_model(&self) -> Vec<Scenario> {
        if self.models.is_empty() {
            return vec![self.clone()];
        }
        self.models
            .iter()
            .map(|m| Scenario {
                model: m.clone(),
                models: Vec::new(),
                ..self.clone()
            })
            .collect()
    }

    /// The workload tests every variant runs (none without a `[workload]` table).
    pub fn tests(&self) -> Vec<crate::run::workload::Test> {
        self.workload
            .iter()
            .flat_map(|w| w.tests(self.new_tokens))
            .collect()
    }

    /// One variant per engine and precision, engine by engine, precisions in the order
    /// given. Policy and rest are the own engine's choices; another engine's variants
    /// keep the defaults (a scenario that sets them for such an engine is refused).
    pub fn variants(&self) -> Vec<Variant> {
        self.engines()
            .into_iter()
            .flat_map(|engine| {
                self.precisions.iter().map(move |&p| {
                    let q = if engine.chooses_policy_and_rest() {
                        Quantization::new(p)
                            .with_policy(self.policy)
                            .with_rest(self.rest)
                    } else {
                        Quantization::new(p)
                    };
                    (engine, q)
                })
            })
            .enumerate()
            .map(|(index, (engine, quantization))| Variant {
                index,
                engine,
                quantization,
            })
            .collect()
    }

    /// The engines the scenario runs, in order (quantbench's own when it names none).
    pub fn engines(&self) -> Vec<crate::engine::EngineKind> {
        if self.engines.is_empty() {
            vec![crate::engine::EngineKind::default()]
        } else {
            self.engines.clone()
        }
    }
}

/// The one rule for a path written in a scenario file: relative to the file's folder.
pub fn resolve_path(scenario_dir: &Path, p: &Path) -> PathBuf {
    if p.is_relative() {
        scenario_dir.join(p)
    } else {
        p.to_path_buf()
    }
}

/// "FILE, line N, field `F`: message" when the field is written in the file.
fn locate(text: &str, origin: &str, field: &str, msg: &str) -> String {
    let line = text.lines().position(|l| {
        let l = l.trim_start();
        l.strip_prefix(field)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    match line {
        Some(n) => format!("{origin}, line {}, field `{field}`: {msg}", n + 1),
        None => format!("{origin}, field `{field}`: {msg}"),
    }
}

/// The scenario files in a folder, sorted by name.
pub fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_scenario_gets_the_quickstart_defaults() {
        let s = Scenario::parse("name = \"x\"", "x.toml").unwrap();
        assert_eq!(s.model, ModelSpec::default_synthetic());
        assert_eq!(s.precisions, default_precisions());
        assert_eq!((s.new_tokens, s.warmup, s.repeats), (50, 1, 5));
        assert_eq!(s.variants().len(), 3);
        assert_eq!(s.variants()[1].label(), "q8_0/all");
    }

    #[test]
    fn aliases_and_every_field_parse() {
        let s = Scenario::parse(
            r#"
name = "full"
description = "all fields"
model = "synthetic:tiny"
device = "cpu"
precisions = ["fp32", "int8", "q4_k"]
policy = "linear"
rest = "f16"
prompt = "Hi"
new_tokens = 7
warmup = 0
repeats = 2
min_seconds = 0.5
seed = 3
"#,
            "full.toml",
        )
        .unwrap();
        assert_eq!(
            s.precisions,
            vec![Precision::F32, Precision::Q8_0, Precision::Q4K]
        );
        assert_eq!(s.device, DeviceChoice::Cpu);
        assert_eq!(s.variants()[2].quantization.policy, Policy::Linear);
        assert_eq!(
            s.model_spec(),
            ModelSpec::Synthetic {
                preset: "tiny".into(),
                seed: 3
            }
        );
    }

    fn err(text: &str) -> String {
        Scenario::parse(text, "scenarios/bad.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_scenarios_name_the_file_line_and_field() {
        let e = err("name = \"x\"\nrepeat = 3\n");
        assert!(
            e.contains("scenarios/bad.toml") && e.contains("line 2") && e.contains("repeat"),
            "{e}"
        );
        let e = err("name = \"x\"\nnew_tokens = \"fifty\"\n");
        assert!(e.contains("line 2") && e.contains("new_tokens"), "{e}");
        let e = err("name = \"x\"\nprecisions = [\"f32\", \"int3\"]\n");
        assert!(
            e.contains("line 2") && e.contains("int3") && e.contains("q4_k"),
            "{e}"
        );
        let e = err("name = \"x\"\n\nrepeats = 0\n");
        assert!(
            e.contains("line 3, field `repeats`") && e.contains("between 1 and"),
            "{e}"
        );
        let e = err("name = \"x\"\ndevice = \"tpu\"\n");
        assert!(e.contains("line 2") && e.contains("cuda:N"), "{e}");
        let e = err("name = \"x\"\npolicy = \"some\"\n");
        assert!(e.contains("line 2") && e.contains("linear"), "{e}");
        let e = err("name = \"x\"\nprecisions = [\"f32\", \"fp32\"]\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("name = \"a b\"\n");
        assert!(e.contains("line 1, field `name`"), "{e}");
        let e = err("precisions = []\n");
        assert!(e.contains("name"), "{e}");
        let e = err("name = \"x\"\nmodel = \"synthetic:gpt9\"\n");
        assert!(e.contains("line 2") && e.contains("gpt9"), "{e}");
    }

    #[test]
    fn workload_tables_and_models_lists_parse() {
        let one = Scenario::parse(
            "name = \"w\"\n[workload]\nprompt_tokens = [0, 8]\ndepth = [16]\n",
            "w.toml",
        )
        .unwrap();
        assert_eq!(one.workload.len(), 1);
        assert_eq!(one.tests().len(), 2);
        let many = Scenario::parse(
            "name = \"w\"\nmodels = [\"synthetic:tiny\", \"synthetic:tiny-llama\"]\n[[workload]]\nprompt_tokens = [8]\nnew_tokens = [0]\n[[workload]]\nprompt_tokens = [0]\nbatch = [1, 2]\n",
            "w.toml",
        )
        .unwrap();
        let names: Vec<String> = many.tests().iter().map(|t| t.name()).collect();
        assert_eq!(names, ["pp8", "tg50", "tg50 x2"]);
        let each = many.per_model();
        assert_eq!(each.len(), 2);
        assert_eq!(each[1].model.to_string(), "synthetic:tiny-llama");
        assert!(each.iter().all(|s| s.models.is_empty()));
        // results.json writes the tables as an array and reads it back.
        let json = serde_json::to_string(&many).unwrap();
        let back: Scenario = serde_json::from_str(&json).unwrap();
        assert_eq!(back, many);
        assert!(
            err("name = \"w\"\nmodels = [\"synthetic:tiny\", \"synthetic:tiny\"]\n")
                .contains("twice")
        );
        let e = err("name = \"w\"\n[workload]\nprompt_tokens = [8]\nbatches = [2]\n");
        assert!(e.contains("batches") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn devices_parse() {
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!(
            "CUDA".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_build_without_cuda_runs_on_the_cpu_and_refuses_cuda() {
        assert_eq!(DeviceChoice::Auto.open().unwrap().1, "cpu");
        let e = DeviceChoice::Cuda(0).open().unwrap_err();
        assert!(
            crate::is_input_error(&e) && e.to_string().contains("without CUDA"),
            "{e}"
        );
    }
}

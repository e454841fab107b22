//! quantbench measures what quantization does to a language model: how much memory each
//! precision takes, how fast it generates, and what it costs in quality.
//!
//! The flow, one folder per stage: a [`scenario::Scenario`] expands into variants (one
//! per engine and precision); in [`run`], the [`run::runner`] gives each variant a life —
//! memory read by the [`probe`]s, the model loaded by its [`engine`] at its
//! [`precision::Quantization`], warmed up, timed over repeated
//! [`run::generate::generate`] calls (every clock read through
//! [`run::clock::synced_now`]), dropped, memory read again — and every measurement lands
//! in one [`record::VariantRecord`] of a [`record::RunRecord`]. A scenario's
//! [`run::workload`] adds test rows per variant (prompt length, new tokens, context
//! depth, batch, threads), each against the machine's measured [`run::bandwidth`], and
//! [`run::quality`] scores each variant against the run's f32 reference. The runner
//! measures; an [`engine`] executes (quantbench's own, or llama.cpp in process). [`analysis`] holds every statistic, compare's verdicts
//! and history's trends; [`report`] renders results.json, results.csv, report.md, the
//! charts, comparisons and history from records alone.
//!
//! The model side: [`model::source`] (where weights come from), [`model::arch`] (one
//! file per architecture, listed once), [`model::write`] (GGUF and Hugging Face
//! writers), [`format`](mod@format) (one file per kind of weight format) and [`kernel`] (the CPU
//! products).

pub mod analysis;
pub mod engine;
pub mod environment;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod kernel;
pub mod model;
pub mod precision;
pub mod probe;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;

pub use error::{is_input_error, InputError};
pub use model::{load, resolve, LoadedModel, ModelSpec};
pub use precision::{Policy, Precision, Quantization, RestDtype};
pub use record::{RunRecord, VariantRecord};
pub use run::generate::{generate, GenerateOptions, Generation, Step, StepKind, StepObserver};
pub use scenario::Scenario;

//! quantbench measures what quantization does to a language model: how much memory each
//! precision takes, how fast it generates, and what it costs in quality.
//!
//! The flow: a [`scenario::Scenario`] expands into variants (one per precision); the
//! [`runner`] gives each variant a life — memory read by the [`probe`]s, the model
//! [`model::load`]ed at its [`precision::Quantization`], warmed up, timed over repeated
//! [`generate::generate`] calls (every clock read through [`clock::synced_now`]),
//! dropped, memory read again — and every measurement lands in one
//! [`record::VariantRecord`] of a [`record::RunRecord`]. The [`report`] module renders
//! results.json, results.csv, report.md and charts from the record alone. A scenario's
//! [`workload`] adds test rows per variant (prompt length, new tokens, context depth,
//! batch, threads), each against the machine's measured [`bandwidth`].

pub mod bandwidth;
pub mod clock;
pub mod compare;
pub mod environment;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod generate;
pub mod history;
pub mod interrupt;
pub mod kernel;
pub mod model;
pub mod precision;
pub mod probe;
pub mod quality;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod workload;

pub use error::{is_input_error, InputError};
pub use generate::{generate, GenerateOptions, Generation, Step, StepKind, StepObserver};
pub use model::{load, resolve, LoadedModel, ModelSpec};
pub use precision::{Policy, Precision, Quantization, RestDtype};
pub use record::{RunRecord, VariantRecord};
pub use scenario::Scenario;

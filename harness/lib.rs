//! quantbench measures what quantization does to a language model: how much memory each
//! precision takes, how fast it generates, and what it costs in quality.
//!
//! The flow: a [`model::ModelSpec`] is resolved to a [`model::ModelSource`]; loading it
//! at a [`precision::Quantization`] gives a [`model::LoadedModel`], which
//! [`generate::generate`] runs greedily for exactly N tokens, timing every step with
//! [`clock::synced_now`].

pub mod clock;
pub mod error;
pub mod generate;
pub mod model;
pub mod precision;

pub use error::{is_input_error, InputError};
pub use generate::{generate, GenerateOptions, Generation, Step, StepKind, StepObserver};
pub use model::{load, resolve, LoadedModel, ModelSpec};
pub use precision::{Policy, Precision, Quantization, RestDtype};

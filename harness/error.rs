//! The one error kind the harness distinguishes: bad input from the user.
//!
//! Everything else travels as `anyhow::Error` with context. The CLI maps an error whose
//! chain holds an [`InputError`] to exit status 2, so "you asked for something invalid"
//! is told apart from "the run failed".

use std::fmt;

/// The user asked for something invalid: a message naming the file, field or value and
/// what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(String);

impl InputError {
    pub fn new(message: impl Into<String>) -> Self {
        InputError(message.into())
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Whether an error was caused by bad input anywhere along its chain.
pub fn is_input_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
}

/// Shorthand for returning an [`InputError`].
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => {
        return Err($crate::error::InputError::new(format!($($arg)*)).into())
    };
}
